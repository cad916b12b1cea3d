"""What `python -m explain benchmark` writes besides benchmark.json: plots against the radius, a class-pair
heatmap of the minimal radius, best/worst galleries, a Markdown report, and the DiME/ACE folder layout.

ACE layout (`--layout ace`), the folders DiME's and ACE's metric scripts read, one tree per radius::

    ace/eps_<r>/Original/{Correct,Incorrect}/NNNNNNN.png      x_0 (Correct: the model classified it right)
    ace/eps_<r>/Results/benchmark/{CC,IC}/{CCF,ICF}/CF/NNNNNNN.png    x_T
    ace/eps_<r>/Results/benchmark/{CC,IC}/{CCF,ICF}/Info/NNNNNNN.txt  label, pred, target, cf pred

CC/IC: the original was classified correctly/incorrectly; CCF/ICF: the counterfactual is valid (flipped to
the target) or not. NNNNNNN numbers the (image, target) pair, so an original is written once per target and
the two trees line up by file name (their FID scripts copy `Original/*` and `Results/*/*/CCF/CF/*`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from dat_core.files import replacing_dir, write_text
from dat_core.sampling import make_grid, save_png

from .export import save_figure
from .params import eps_name, eps_text
from .plots import new_figure


def plot_curves(radii: Sequence[dict[str, Any]], norm: str, path: Path) -> Path:
    """Validity / confidence / transfer / energy band, realism, and closeness against the radius."""
    x, ticks = radius_positions([r["eps"] for r in radii], norm)
    fig = new_figure(13, 3.6)
    a, b, c = fig.subplots(1, 3)
    series = {"validity": [r["validity"] for r in radii],
              "mean p(target)": [r["mean_target_confidence"] for r in radii],
              "transfer": [r["transfer"] and r["transfer"]["fraction"] for r in radii],
              "E(x) in band": [r["energy_band"] and r["energy_band"]["fraction_inside"] for r in radii]}
    for label, ys in series.items():
        if all(y is not None for y in ys):
            a.plot(x, ys, marker="o", label=label)
    a.set(xlabel=f"{norm} radius", ylim=(0, 1.02), title="validity")
    a.legend(fontsize=8)
    if all(r["realism"] for r in radii):
        b.plot(x, [r["realism"]["frechet_distance"] for r in radii], marker="o", label="pooled")
        if all(r["realism"].get("class_conditional") for r in radii):
            cc = [r["realism"]["class_conditional"] for r in radii]
            b.plot(x, [c["frechet_distance"] for c in cc], marker="s", label="per target class")
            b.plot(x, [c["frechet_distance_originals"] for c in cc], ls="--", label="per class, originals")
        b.set_title(f"Fréchet distance in {radii[0]['realism']['feature_space']}", fontsize=9)
        b.legend(fontsize=8)
    else:
        b.set_title("realism: not measured")
    b.set(xlabel=f"{norm} radius")
    c.plot(x, [r["closeness"]["mean_l2"] for r in radii], marker="o", label="mean L2")
    c.set(xlabel=f"{norm} radius", ylabel="L2", title="closeness")
    c2 = c.twinx()
    c2.plot(x, [r["closeness"]["fraction_changed"] for r in radii], marker="s", color="C3",
            label="pixels changed > 2/255")
    c2.set(ylabel="fraction of pixel values", ylim=(0, 1.02))
    c.legend(loc="upper left", fontsize=8)
    c2.legend(loc="lower right", fontsize=8)
    if ticks:
        for ax in (a, b, c):
            ax.set_xticks(list(ticks), list(ticks.values()))
    fig.tight_layout()
    return save_figure(fig, path)


def radius_positions(radii: Sequence[float | str], norm: str) -> tuple[list[float], dict[float, str]]:
    """Where each radius goes on a plot's x axis, and, when one is infinite (matplotlib drops x = inf), the ticks
    to label them by: the infinite one sits a quarter of the range past the largest finite radius, labelled ∞
    (no ticks: the axis' own)."""
    eps = [math.inf if r == "inf" else float(r) for r in radii]
    finite = [e for e in eps if math.isfinite(e)]
    if len(finite) == len(eps):
        return eps, {}
    top = max(finite, default=0.0)
    place = top + (0.25 * (top - min(finite)) or 0.25 * top or 1.0) if finite else 1.0
    ticks = {e: eps_name(e, norm) for e in finite} | {place: "∞"}
    return [place if math.isinf(e) else e for e in eps], ticks


def plot_minimal_heatmap(matrix: Sequence[Sequence[float | None]], class_names: Sequence[str], path: Path) -> Path:
    """Median minimal L2 radius per (source row, target column) class pair; blank: not measured."""
    m = np.array([[math.nan if v is None else v for v in row] for row in matrix], dtype=float)
    k = len(class_names)
    fig = new_figure(1.2 + 0.55 * k, 0.8 + 0.5 * k)
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(m), cmap="viridis")
    ax.set(xticks=range(k), yticks=range(k), xlabel="target", ylabel="source",
           title="median minimal L2 radius to p(target) >= 0.5")
    ax.set_xticklabels(class_names, rotation=60, ha="right", fontsize=7)
    ax.set_yticklabels(class_names, fontsize=7)
    top = np.nanmax(m) if np.isfinite(m).any() else 1.0
    for (i, j), v in np.ndenumerate(m):
        if np.isfinite(v):  # dark text on the bright (large) end of viridis
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=6, color="k" if v > 0.6 * top else "w")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return save_figure(fig, path)


def gallery(originals: np.ndarray, result: dict[str, np.ndarray], jobs: np.ndarray, picked: np.ndarray,
            path: Path, scale: int = 3) -> Path:
    """One row per picked pair: x_0, x_T and |x_T - x_0| amplified x4."""
    x0 = originals[jobs[picked, 0]].astype(np.int16)
    xt = result["images"][picked].astype(np.int16)
    diff = np.clip(np.abs(xt - x0) * 4, 0, 255)
    tiles = np.stack([x0, xt, diff], axis=1).reshape(-1, *x0.shape[1:]).astype(np.uint8)
    save_png(make_grid(tiles.transpose(0, 2, 3, 1), nrow=3, scale=scale), path)
    return path


def best_and_worst(result: dict[str, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k pairs with the highest p(target) (ties: the closest) and the k with the lowest."""
    order = np.lexsort((result["l2"], -result["p_target"]))
    return order[:k], order[::-1][:k]


def gallery_rows(picked: np.ndarray, result: dict[str, np.ndarray], jobs: np.ndarray, names: Sequence[str],
          class_names: Sequence[str]) -> list[str]:
    """Markdown table rows captioning a gallery."""
    return [f"| {n + 1} | {names[jobs[i, 0]]} | {class_names[jobs[i, 1]]} → {class_names[jobs[i, 2]]} | "
            f"{result['p_target'][i]:.3f} | {result['l2'][i]:.2f} |" for n, i in enumerate(picked)]


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "–" if v is None else format(v, spec)


def _sessions(report: dict[str, Any]) -> str:
    """How much of a resumed run's time its last process took (nothing when one process did it all, or when the
    last one only read a finished run back: it added no time)."""
    last = report.get("seconds_this_process", report["seconds"])
    return f" over several sessions ({last:.0f} s in the last)" if 0 < last < report["seconds"] - 1 else ""


def _subset(report: dict[str, Any]) -> str:
    """Which images of a dataset archive: its validation carve-out (as training carves it) or a whole split."""
    split, val = report.get("split"), report.get("val_size")
    if split is None:
        return ""
    if not val:
        return f", {split} split"
    return f", validation carve-out of {split} (val-size {val}, seed {report.get('seed')})"


def write_markdown(report: dict[str, Any], galleries: dict[str, tuple[str, list[str]]], path: Path) -> Path:
    """report.md: settings, one table row per radius, the plots and the galleries with their captions."""
    fs = next((r["realism"]["feature_space"] for r in report["radii"] if r["realism"]), None)
    lines = [f"# Counterfactual benchmark: {report['model']}", "",
             f"{report['images']} images ({report['image_source']}{_subset(report)}), "
             f"{report['pairs']} (image, target) pairs "
             f"({report.get('pairs_from', 'all-others')}), "
             f"norm {report['norm']}, {report['steps']} steps of {eps_text(report['step_size'], report['norm'])}, "
             f"objective {report['objective']}, bf16 autocast {'on' if report['autocast'] else 'off'}"
             + (f", on {report['device']}" if report.get("device") else "")
             + (f", guided by {report['guide']} (cone of {report['cone_angle']:g}°)" if report.get("guide") else "")
             + (f"; each counterfactual is the first iterate of its path with p(target) >= {report['stop_at']:g}"
                if report.get("stop_at") else "")
             + f"; {report['seconds']:.0f} s{_sessions(report)}.", "",
             "Validity: p(target) >= 0.5 and argmax = target at the counterfactual. Changed: share of pixel values "
             "moved by more than 2/255. " + (f"Transfer: share that {report['transfer_model']} also classifies "
                                              "as the target. " if report["transfer_model"] else "") + (
                 "The feature model is the explained model: its counterfactuals attack these features, so realism "
                 "here is not comparable with another model's. " if report.get("feature_model_is_explained_model")
                 else "") + (
                 f"Realism: Fréchet distance in {fs} (not FID) to real images of the target classes, pooled over "
                 "all pairs and per target class (averaged); originals: the unchanged x_0 (pooled ~0 when every "
                 "class is as often source as target; per class, how far the paths started). \"of which means\": "
                 "the part of the per-class distance that the class means make, |mu_real - mu_cf|^2 "
                 "(counterfactuals that overshoot the class score high there); \"progress\": how far the "
                 "counterfactuals' feature mean went from their originals' toward the class's (1 = reached it, "
                 "above 1 = went past it)." if fs else ""),
             "", "| radius | validity | mean p(target) | mean steps | mean L2 | mean L1 | mean Linf | changed | "
                 "transfer | E(x) in band | Fréchet pooled | per class | of which means | progress | "
                 "per class (originals) |",
             "|" + "---|" * 15]
    for r in report["radii"]:
        c, re = r["closeness"], r["realism"] or {}
        cc = re.get("class_conditional") or {}
        lines.append(f"| {eps_name(r['eps'], report['norm'])} | {_fmt(r['validity'])} | "
                     f"{_fmt(r['mean_target_confidence'])} | {_fmt(r.get('mean_steps'), '.1f')} | "
                     f"{_fmt(c['mean_l2'])} | {_fmt(c['mean_l1'])} | "
                     f"{_fmt(c['mean_linf'])} | "
                     f"{_fmt(c['fraction_changed'])} | {_fmt(r['transfer'] and r['transfer']['fraction'])} | "
                     f"{_fmt(r['energy_band'] and r['energy_band']['fraction_inside'])} | "
                     f"{_fmt(re.get('frechet_distance'), '.2f')} | {_fmt(cc.get('frechet_distance'), '.2f')} | "
                     f"{_fmt(cc.get('mean_term'), '.2f')} | {_fmt(cc.get('progress'), '.2f')} | "
                     f"{_fmt(cc.get('frechet_distance_originals'), '.2f')} |")
    lines += ["", "![validity, realism and closeness against the radius](curves.png)", ""]
    m = report.get("minimal_radius")
    if m:
        lines += [f"Minimal L2 radius to p(target) >= 0.5 over {m['pairs']} pairs: median {_fmt(m['median'])}, "
                  f"reached by {_fmt(m['reached'])} of them.", "",
                  "![minimal radius per class pair](minimal_radius.png)", ""]
    for title, (image, rows) in galleries.items():
        lines += [f"## {title}", "", "Each row: x_0, x_T, |x_T - x_0| x4.", "", f"![{title}]({image})", "",
                  "| row | image | source → target | p(target) | L2 |", "|---|---|---|---|---|", *rows, ""]
    return write_text(path, "\n".join(lines))


def write_ace_layout(root: Path, originals: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
                     result: dict[str, np.ndarray], jobs: np.ndarray, valid: np.ndarray) -> int:
    """The DiME/ACE tree for one radius (module docstring), whole or not at all: it replaces an earlier tree at
    `root` only once every file is written. Returns the number of pairs written."""
    with replacing_dir(root) as tree:
        for n, (i, _, target) in enumerate(jobs):
            correct = predictions[i] == labels[i]
            orig = tree / "Original" / ("Correct" if correct else "Incorrect")
            res = tree / "Results" / "benchmark" / ("CC" if correct else "IC") / ("CCF" if valid[n] else "ICF")
            for d in (orig, res / "CF", res / "Info"):
                d.mkdir(parents=True, exist_ok=True)
            name = f"{n:07d}"
            Image.fromarray(originals[i].transpose(1, 2, 0)).save(orig / f"{name}.png")
            Image.fromarray(result["images"][n].transpose(1, 2, 0)).save(res / "CF" / f"{name}.png")
            (res / "Info" / f"{name}.txt").write_text(
                f"label: {labels[i]}\npred: {predictions[i]}\ntarget: {target}\ncf pred: {result['prediction'][n]}\n",
                encoding="utf-8")
    return len(jobs)
