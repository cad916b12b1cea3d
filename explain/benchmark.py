"""Counterfactual benchmark: many (image, target) pairs per PGD batch, for a grid of radii, with the metrics
of the counterfactual literature (validity, closeness, realism, transfer; minimal radius to flip).

Every pair of one radius runs in a pool of `batch_size` PGD paths (`run_paths`: one batch, a label per row;
a path that ends frees its row for the next pair). Each `batch_size` ended pairs are saved as one part under
`parts/` of the output folder, so a stopped run continues where it stopped when the same command runs again
(`run.json` holds the settings, `benchmark_parts`; a folder holding another benchmark is refused).
The realism reference is a fixed, offline feature space: another
classifier's penultimate layer (`Classifier.features`), so a Fréchet distance there is named for that model,
never FID.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from dat_core.energy import marginal_energy, probabilities
from dat_core.evaluation.generative import features_of, frechet_from_features
from dat_core.guidance import CONE_ANGLE, ConeGuide
from dat_core.pgd import attack_mode, logits_at, pgd_step, threat_model

from .benchmark_parts import read_parts, read_radii, save_part, save_radii
from .params import resolve_class
from .trajectory import minimal_counterfactual, model_info

CHANGED = 2 / 255
"""A pixel value counts as changed when it moved by more than this (JPEG-level noise is ~2/255)."""


# ---------------------------------------------------------------- pairs

def read_pairs(path: str | Path, class_names: Sequence[str]) -> set[tuple[int, int]]:
    """Class pairs from a CSV of `source,target` lines (names or indices, quoted or not; '#' comments, a
    `source,target` header and a spreadsheet's byte-order mark are skipped). Errors name the file and line."""
    import csv

    name = Path(path).name
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{name} is not UTF-8 text of 'source,target' lines") from None
    pairs = set()
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        cells = [c.strip() for c in next(csv.reader([line], skipinitialspace=True))]
        if [c.lower() for c in cells] == ["source", "target"]:
            continue
        if len(cells) != 2:
            raise ValueError(f"{name} line {n}: expected 'source,target', got {line!r}")
        try:
            s, t = (resolve_class(c, class_names) for c in cells)
        except ValueError as e:
            raise ValueError(f"{name} line {n}: {e}") from None
        if s == t:
            raise ValueError(f"{name} line {n}: source and target are the same class")
        pairs.add((s, t))
    if not pairs:
        raise ValueError(f"{name} holds no class pairs")
    return pairs


RANDOM_OTHER = "random-other"
"""One target per image, y' = (y + u) mod K with u uniform in 1..K-1: the official counterfactual evaluation's draw
(`generate_indist_adv_images`), seeded here."""


def make_jobs(labels: Sequence[int], num_classes: int,
              pairs: set[tuple[int, int]] | str | None = None, seed: int = 0) -> np.ndarray:
    """(P, 3) int rows (image index, source class, target class), image-major: every other class
    (`pairs=None`, "all-others"), the targets `pairs` allow for the image's class, or with `pairs=RANDOM_OTHER`
    one random other class per image (from `seed`)."""
    if pairs == RANDOM_OTHER:
        shifts = np.random.default_rng(seed).integers(1, num_classes, size=len(labels)) if num_classes > 1 else []
        rows = [(i, s, (s + int(u)) % num_classes) for i, (s, u) in enumerate(zip(labels, shifts))]
    else:
        rows = [(i, s, t) for i, s in enumerate(labels) for t in range(num_classes)
                if t != s and (pairs is None or (s, t) in pairs)]
    if not rows:
        raise ValueError("no (image, target) pairs: no image has a class that --pairs lists as a source")
    return np.asarray(rows, dtype=np.int64)


# ---------------------------------------------------------------- one batch

@dataclass
class Judges:
    """The models that judge a counterfactual besides the explained one: `features` gives the fixed
    feature space for realism, `transfer` an independent classifier (either may be None)."""

    features: nn.Module | None = None
    features_name: str = ""
    transfer: nn.Module | None = None
    transfer_name: str = ""


def pool_rows(pairs: int, batch_size: int) -> int:
    """The rows of a path pool for `pairs` pairs at most `batch_size` at once: equal batches where paths run in
    step (10 pairs at 4: 4 rows, then 4, then 2 of 4)."""
    return math.ceil(pairs / math.ceil(pairs / min(batch_size, pairs))) if pairs else 1


def run_paths(model: nn.Module, images: torch.Tensor, image_index: np.ndarray, targets: np.ndarray, *, rows: int,
              norm: str, eps: float, step_size: float, steps: int, objective: str, autocast: bool,
              guide: nn.Module | None = None, cone_angle: float = CONE_ANGLE, stop_at: float | None = None,
              ) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The PGD path of every pair (images[image_index[i]], targets[i]), run `rows` at a time; yields
    (pair indices, x_0, counterfactuals, the step each was taken at) as paths end.

    A path ends after `steps` steps or, with `stop_at`, at its first iterate x_t whose p(target) reaches it
    (the equal-confidence comparison: the DAT paper reports realism at ~0.89 target confidence; METHOD.md
    runs every step). Its row then takes the next pair, so every step is one batch of one shape (one compiled
    graph) and a path that ends early frees its row for new work instead of idling until its batch ends.
    Rows are independent (eval-mode BatchNorm): a pair's path is the one a lone `pgd` call gives, up to float
    rounding; `rows` is the batch of every step, as given (`pool_rows`: a resume must run the shape the first
    run ran, or its gradients round differently). `guide`: each step follows `model`'s gradient turned to
    within `cone_angle` of this DAT model's.
    """
    if stop_at is not None and not 0 < stop_at < 1:
        raise ValueError(f"the confidence to stop at must lie in (0, 1), got {stop_at:g}")
    n = len(targets)
    if n == 0:
        return
    _, _, device = model_info(model)
    threat = threat_model(norm, eps, step_size)
    owner = torch.full((rows,), -1, dtype=torch.long, device=device)   # each row's pair (-1: none, it idles)
    age = torch.zeros(rows, dtype=torch.long, device=device)
    x0 = torch.zeros(rows, *images.shape[1:], device=device)
    y = torch.zeros(rows, dtype=torch.long, device=device)
    xt, started = x0.clone(), 0

    def end(where: torch.Tensor) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]:
        out = owner[where].cpu().numpy(), x0[where], xt[where], age[where]
        owner[where] = -1
        return out

    with attack_mode(model), attack_mode(guide) if guide is not None else nullcontext():
        while True:
            free = torch.nonzero(owner < 0).flatten()[:n - started]
            if len(free):                                  # the next pairs take the free rows
                new = np.arange(started, started + len(free))
                started += len(free)
                owner[free], age[free] = torch.from_numpy(new).to(device), 0
                x0[free] = xt[free] = images[torch.from_numpy(image_index[new])].to(device, torch.float32)
                y[free] = torch.from_numpy(targets[new]).to(device)
            done = (owner >= 0) & (age >= steps)
            if done.any():
                yield end(done)
                continue
            if not (owner >= 0).any():
                return
            steer = None if guide is None else ConeGuide(guide, y, objective, cone_angle, autocast)
            x_next, logits = pgd_step(model, xt, x0, y, threat, objective, autocast, steer)
            if stop_at is not None:
                hit = (owner >= 0) & (probabilities(logits).gather(1, y[:, None]).squeeze(1) >= stop_at)
                if hit.any():
                    yield end(hit)
            xt, age = x_next, age + 1


def part_keys(judges: Judges) -> set[str]:
    """The arrays every saved part of a radius holds (`judge`'s, and the pairs' `job`): a part without one is
    damaged, and its pairs run again."""
    return {"job", "p_target", "prediction", "energy", "l1", "l2", "linf", "changed", "step", "images"} \
        | ({"transfer_prediction"} if judges.transfer is not None else set()) \
        | ({"features"} if judges.features is not None else set())


def judge(model: nn.Module, x0: torch.Tensor, xt: torch.Tensor, targets: torch.Tensor, step: torch.Tensor,
          judges: Judges) -> dict[str, np.ndarray]:
    """Per-pair metrics of counterfactuals xt of x0 (validity etc. judged in fp32) and the images as uint8."""
    logits = logits_at(model, xt)
    delta = (xt - x0).flatten(1)
    out = {"p_target": probabilities(logits).gather(1, targets[:, None]).squeeze(1),
           "prediction": logits.argmax(1), "energy": marginal_energy(logits),
           "l1": delta.abs().sum(1), "l2": delta.norm(dim=1), "linf": delta.abs().amax(1),
           "changed": (delta.abs() > CHANGED).float().mean(1), "step": step}
    if judges.transfer is not None:
        out["transfer_prediction"] = logits_at(judges.transfer, xt).argmax(1)
    if judges.features is not None:
        out["features"] = features_of(judges.features, xt).float()
    out = {k: v.detach().cpu().numpy() for k, v in out.items()}
    out["images"] = (xt.detach().clamp(0, 1).mul(255).add(0.5).floor().byte().cpu().numpy())  # (N,3,H,W) uint8
    return out


def run_batch(model: nn.Module, x0: torch.Tensor, targets: torch.Tensor, *, judges: Judges,
              **request: Any) -> dict[str, np.ndarray]:
    """Counterfactuals of one batch of pairs (x0[i] -> targets[i]) in one `run_paths` pool, judged, in order."""
    ended = list(run_paths(model, x0, np.arange(len(x0)), targets.cpu().numpy(), rows=len(x0), **request))
    order = np.argsort(np.concatenate([e[0] for e in ended]))
    x_0, xt, step = (torch.cat([e[k] for e in ended])[torch.from_numpy(order)] for k in (1, 2, 3))
    return judge(model, x_0, xt, targets.to(xt.device), step, judges)


# ---------------------------------------------------------------- the run (resumable)

def run_radius(model: nn.Module, images: torch.Tensor, jobs: np.ndarray, parts: Path, tag: str, *,
               batch_size: int, judges: Judges, progress: Callable[[int], None] | None = None,
               on_work: Callable[[], None] | None = None, **request: Any) -> dict[str, np.ndarray]:
    """Every job at one radius: paths run `batch_size` at a time (`run_paths`), and each `batch_size` ended
    pairs are judged and saved as one part in `parts`; pairs already saved there are read back, not rerun (a
    stop loses at most the pairs in flight). `on_work` is called before pairs that are not read back run.
    Returns the per-pair arrays in job order."""
    parts.mkdir(parents=True, exist_ok=True)
    keys = part_keys(judges)
    saved = read_parts(parts, tag, keys)["job"]
    if progress is not None and len(saved):
        progress(len(saved))
    todo = np.setdiff1d(np.arange(len(jobs)), saved)
    if len(todo) and on_work is not None:
        on_work()
    names = iter(p for k in range(1 << 30) if not (p := parts / f"{tag}-p{k:05d}.npz").exists())
    ended: list[tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def save() -> None:
        pos = np.concatenate([e[0] for e in ended])
        x0, xt, step = (torch.cat([e[k] for e in ended]) for k in (1, 2, 3))
        arrays = judge(model, x0, xt, torch.from_numpy(jobs[todo[pos], 2]).to(xt.device), step, judges)
        save_part(next(names), {**arrays, "job": todo[pos]})
        ended.clear()

    rows = pool_rows(len(jobs), batch_size)   # of all the radius' pairs, not of those left: a resume runs alike
    for e in run_paths(model, images, jobs[todo, 0], jobs[todo, 2], rows=rows, **request):
        ended.append(e)
        if sum(len(p) for p, *_ in ended) >= batch_size:
            save()
        if progress is not None:
            progress(len(e[0]))
    if ended:
        save()
    result = read_parts(parts, tag, keys)
    if not np.array_equal(result["job"], np.arange(len(jobs))):
        raise RuntimeError(f"{parts.name}: the saved parts of {tag} do not hold each pair once")
    return result


def minimal_radii(model: nn.Module, images: torch.Tensor, jobs: np.ndarray, parts: Path, *, autocast: bool,
                  chunk: int = 16, progress: Callable[[int], None] | None = None,
                  on_work: Callable[[], None] | None = None) -> np.ndarray:
    """The minimal L2 radius at which p(target) >= 0.5 (`minimal_counterfactual`; NaN: never reached) of each
    job. Each `chunk` jobs share one file, saved again after every search, so a resume runs only the search that
    was in flight. `on_work` is called before the first search that is not read back."""
    parts.mkdir(parents=True, exist_ok=True)
    out = []
    for b, start in enumerate(range(0, len(jobs), chunk)):
        path = parts / f"minimal-b{b:05d}.npy"
        rows = jobs[start:start + chunk]
        saved = read_radii(path)
        radii = [] if saved is None or len(saved) > len(rows) else list(saved)   # the searches ended so far
        if progress is not None and radii:
            progress(len(radii))
        for i, _, t in rows[len(radii):]:
            if on_work is not None:
                on_work()
            r = minimal_counterfactual(model, images[i:i + 1], int(t), (0.5,), autocast=autocast).results[0].radius
            radii.append(math.nan if r is None else r)
            save_radii(path, np.asarray(radii, dtype=np.float64))
            if progress is not None:
                progress(1)
        out.append(np.asarray(radii, dtype=np.float64))
    return np.concatenate(out) if out else np.zeros(0)


def spread(n_jobs: int, n: int) -> np.ndarray:
    """n job indices spread evenly over all jobs (every class pair gets its share)."""
    return np.unique(np.linspace(0, n_jobs - 1, min(n, n_jobs)).round().astype(np.int64)) if n > 0 else \
        np.zeros(0, dtype=np.int64)


# ---------------------------------------------------------------- metrics per radius

def _mean(a: np.ndarray) -> float | None:
    return float(np.mean(a)) if len(a) else None


def energy_band(config: dict[str, Any], lo: str = "0.05", hi: str = "0.95") -> tuple[float, float] | None:
    """(E_lo, E_hi): the model's real validation energy quantiles from its config, or None when absent."""
    q = (config or {}).get("energy_quantiles") or {}
    return (float(q[lo]), float(q[hi])) if lo in q and hi in q else None


def is_valid(result: dict[str, np.ndarray], jobs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Per pair: x_T reached p(target) >= threshold and is classified as the target (a valid counterfactual)."""
    return (result["p_target"] >= threshold) & (result["prediction"] == jobs[:, 2])


def summarize(eps: float, result: dict[str, np.ndarray], jobs: np.ndarray, real_features: np.ndarray | None,
              real_labels: np.ndarray, *, threshold: float = 0.5, band: tuple[float, float] | None = None,
              feature_space: str = "") -> dict[str, Any]:
    """The JSON entry of one radius: validity, confidence, closeness, realism, transfer (None: not measured)."""
    targets = jobs[:, 2]
    valid = is_valid(result, jobs, threshold)
    entry: dict[str, Any] = {
        "eps": "inf" if math.isinf(eps) else eps, "pairs": int(len(jobs)),
        "validity": _mean(valid), "mean_target_confidence": _mean(result["p_target"]),
        "closeness": {"mean_l1": _mean(result["l1"]), "mean_l2": _mean(result["l2"]),
                      "median_l2": float(np.median(result["l2"])), "mean_linf": _mean(result["linf"]),
                      "fraction_changed": _mean(result["changed"])},
        "energy_band": None if band is None else {"band": list(band), "fraction_inside": _mean(
            (result["energy"] >= band[0]) & (result["energy"] <= band[1]))},
        "transfer": None, "realism": None,
    }
    if "step" in result:  # older part files lack it
        entry["mean_steps"] = _mean(result["step"])
    if "transfer_prediction" in result:
        hit = result["transfer_prediction"] == targets
        entry["transfer"] = {"fraction": _mean(hit), "fraction_of_valid": _mean(hit[valid])}
    if "features" in result and real_features is not None:
        entry["realism"] = realism(result["features"], jobs, real_features, real_labels, feature_space)
    return entry


def class_conditional_frechet(cf_features: np.ndarray, targets: np.ndarray, real_features: np.ndarray,
                              real_labels: np.ndarray, original_features: np.ndarray) -> dict[str, Any] | None:
    """Per target class c: the Fréchet distance of the counterfactuals aimed at c to the real images of c, and of
    their originals (images of other classes) to the same real images: where the paths started. Averaged over
    the classes with at least 2 of each. Unlike the pooled distance, an unchanged image scores its distance
    from the target class, so a change the feature space does not see (an attack on another model) scores
    high, as it should. Small per-class sets bias each value upward: compare runs on equal sets. None when
    no class qualifies. `mean_term` is the part of each distance that the class means make, |mu_real -
    mu_cf|^2 (the rest is the covariances'): counterfactuals that overshoot, further along the class direction
    than real images of c lie, score a large mean term even when their spread matches. `progress` tells the two
    apart: the share of the way from the originals' feature mean to the class's that the counterfactuals' mean
    went (projected on that line; 0 = stayed, 1 = reached it, above 1 = went past it)."""
    per_class, start, mean_term, mean_term_start, progress = {}, {}, [], [], []
    for c in np.unique(targets):
        mine, real = targets == c, real_features[real_labels == c]
        if mine.sum() >= 2 and len(real) >= 2:
            real_t = torch.from_numpy(real).double()
            per_class[int(c)] = frechet_from_features(real_t, torch.from_numpy(cf_features[mine]).double())
            start[int(c)] = frechet_from_features(real_t, torch.from_numpy(original_features[mine]).double())
            centre, moved, began = (f.astype(np.float64).mean(0) for f in (real, cf_features[mine],
                                                                            original_features[mine]))
            mean_term.append(float(((moved - centre) ** 2).sum()))
            mean_term_start.append(float(((began - centre) ** 2).sum()))
            way = centre - began
            progress.append(float((moved - began) @ way / (way @ way)) if way @ way > 0 else float("nan"))
    if not per_class:
        return None
    return {"frechet_distance": float(np.mean(list(per_class.values()))),
            "frechet_distance_originals": float(np.mean(list(start.values()))),
            "mean_term": float(np.mean(mean_term)), "mean_term_originals": float(np.mean(mean_term_start)),
            "progress": float(np.nanmean(progress)) if not np.isnan(progress).all() else None,
            "classes": len(per_class), "per_class": per_class}


def realism(cf_features: np.ndarray, jobs: np.ndarray, real_features: np.ndarray, real_labels: np.ndarray,
            feature_space: str) -> dict[str, Any] | None:
    """Fréchet distance of the counterfactuals to the real images of their target classes, and of the unchanged
    originals to the same set as a reference point, pooled over all pairs and per target class
    (`class_conditional`). Pooled: only pairs whose target class has real images count; the real set holds the
    target classes in the counterfactuals' proportions (cycling through each class's images); with
    `--pairs all-others` the originals score ~0 by construction (every class is as often source as target).
    None when fewer than 2 pairs qualify."""
    per_class = np.bincount(real_labels, minlength=int(jobs[:, 2].max()) + 1)
    keep = per_class[jobs[:, 2]] > 0
    if keep.sum() < 2:
        return None
    jobs, cf_features = jobs[keep], cf_features[keep]
    counts = np.bincount(jobs[:, 2], minlength=len(per_class))
    index = np.concatenate([np.flatnonzero(real_labels == c)[np.arange(n) % per_class[c]]
                            for c, n in enumerate(counts) if n])
    real = torch.from_numpy(real_features[index]).double()
    return {"feature_space": feature_space, "n": int(len(cf_features)),
            "frechet_distance": frechet_from_features(real, torch.from_numpy(cf_features).double()),
            "frechet_distance_originals": frechet_from_features(
                real, torch.from_numpy(real_features[jobs[:, 0]]).double()),
            "class_conditional": class_conditional_frechet(cf_features, jobs[:, 2], real_features, real_labels,
                                                           real_features[jobs[:, 0]])}


def minimal_summary(radii: np.ndarray, jobs: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Median minimal radius over the measured pairs and per (source, target) class pair (None: none reached)."""
    k = len(class_names)
    matrix = np.full((k, k), math.nan)
    for s in range(k):
        for t in range(k):
            r = radii[(jobs[:, 1] == s) & (jobs[:, 2] == t)]
            if len(r) and np.isfinite(r).any():
                matrix[s, t] = float(np.nanmedian(r))
    ok = radii[np.isfinite(radii)]
    return {"confidence": 0.5, "pairs": int(len(radii)), "reached": _mean(np.isfinite(radii)),
            "median": float(np.median(ok)) if len(ok) else None,
            "per_class_pair": [[None if math.isnan(v) else round(float(v), 4) for v in row] for row in matrix]}
