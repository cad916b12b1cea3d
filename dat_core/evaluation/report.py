"""Calibration, fidelity of class-conditional samples, and `evaluate`: every measure of METHOD §6 in one
report (data forms as in `dat_core.evaluation.batches`)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
from matplotlib.figure import Figure
from tqdm import tqdm

from ..data.seeds import DEFAULT_SEED_KIND, check_seeds, seeds_for
from ..energy import marginal_energy
from ..files import replacing
from ..pgd import attack_mode, threat_model
from ..runtime import model_device, seeded
from ..sampling import (
    balanced_targets,
    default_step_size,
    default_steps,
    make_grid,
    sample,
    save_png,
)
from .accuracy import ROBUST, rng_stream, robust_correct, robust_settings
from .batches import _bar, _collect, _forward, _unpack
from .generative import (
    KID_SUBSET_SIZE,
    KID_SUBSETS,
    check_feature_size,
    features_of,
    frechet_from_features,
    kernel_distance_from_features,
    within_class_diversity,
)
from .metrics import energy_quantiles, expected_calibration_error, roc_auc
from .ood import ATTACK_OBJECTIVE, OOD_SCORES, adversarial_ood_settings, ood_logits, ood_scores, uniform_ood

# --------------------------------------------------------------------------- calibration

MAX_GRID_ROWS = 10
MAX_GRID_IMAGES = 256
"""samples.png shows at most this many rows / images: 10,000 samples made a 342 x 34,002 px strip."""


def calibration(model: nn.Module, batches: Any, n_bins: int = 15, autocast: bool = False,
                progress: bool = False) -> dict[str, Any]:
    """{"ece": float, "bins": per-bin stats} with equal-width confidence bins (see metrics)."""
    logits, labels = _collect(model, batches, autocast, progress, "calibration")
    if labels is None:
        raise ValueError("calibration needs labels")
    ece, bins = expected_calibration_error(torch.softmax(logits, 1), labels, n_bins)
    return {"ece": ece, "bins": bins}


def plot_reliability(bins: Mapping[str, list], path: str | Path | None = None,
                     title: str | None = None) -> Figure:
    """Reliability diagram: per-bin accuracy bars against the diagonal, gaps to the mean
    confidence in red, and the bin counts below. Saved as PNG when `path` is given."""
    lower, upper = bins["lower"], bins["upper"]
    width = [u - lo for lo, u in zip(lower, upper)]
    count = bins["count"]
    used = [c > 0 for c in count]
    acc = [a if u else 0.0 for a, u in zip(bins["accuracy"], used)]
    conf = [c if u else 0.0 for c, u in zip(bins["confidence"], used)]
    total = max(sum(count), 1)
    ece = sum(c / total * abs(a - f) for c, a, f in zip(count, acc, conf))

    fig = Figure(figsize=(4.2, 5.0), layout="constrained")
    ax, ax_n = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.bar(lower, acc, width=width, align="edge", color="#4c72b0", edgecolor="white", label="accuracy")
    ax.bar(lower, [f - a for a, f in zip(acc, conf)], bottom=acc, width=width, align="edge",
           color="#dd8452", alpha=0.5, edgecolor="#c44e52", hatch="//", label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=title or "Reliability diagram")
    ax.text(0.04, 0.93, f"ECE = {ece:.2%}", transform=ax.transAxes, va="top")
    ax.legend(loc="lower right", fontsize="small")
    ax_n.bar(lower, [c / total for c in count], width=width, align="edge", color="#8c8c8c", edgecolor="white")
    ax_n.set(xlabel="confidence", ylabel="fraction")
    if path is not None:
        with replacing(Path(path)) as tmp:   # whole or not at all
            fig.savefig(tmp, format="png", dpi=120)
    return fig


# --------------------------------------------------------------------------- samples

def check_judge(model: nn.Module, judge: nn.Module) -> None:
    """ValueError unless `judge` (its config, where it has one) classifies the model's classes, in the model's order,
    at its image size: its verdict on target i is read at index i."""
    mine, theirs = getattr(model, "config", {}), getattr(judge, "config", {})
    for key, what in (("num_classes", "classes"), ("class_names", "classes"), ("image_size", "image size")):
        a, b = mine.get(key), theirs.get(key)
        if a is None or b is None or a == b:
            continue
        if key == "class_names" and len(a) == len(b):
            i = next(i for i, (u, v) in enumerate(zip(a, b)) if u != v)
            raise ValueError(f"the judge's classes are not the model's: class {i} is {b[i]!r} for the judge, "
                             f"{a[i]!r} for the model")
        shown = (len(b), len(a)) if key == "class_names" else (b, a)
        raise ValueError(f"the judge's {what} ({shown[0]}) are not the model's ({shown[1]}): it must judge the "
                         "model's classes on the model's images")


def sample_fidelity(model: nn.Module, judge: nn.Module, n: int, image_size: int, num_classes: int,
                    seed: int = 0, steps: int | None = None, step_size: float | None = None,
                    seeds_kind: str = DEFAULT_SEED_KIND, autocast: bool = False, batch_size: int = 128,
                    progress: bool = False, class_names: list[str] | None = None) -> dict[str, Any]:
    """Generate n class-balanced samples (targets i mod K) from seeds (`seeds_for`: default the bank of
    out-of-distribution photos) by `sampling.sample` and ask `judge` (e.g. a standard classifier) whether
    each shows its target class.

    Returns fraction_judged_target, mean_target_confidence (judge's softmax at the target),
    images (n, 3, S, S CPU floats) and targets. Deterministic for a given seed.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    check_judge(model, judge)
    targets = balanced_targets(n, num_classes)
    seeds = seeds_for(seeds_kind, targets, image_size, torch.Generator().manual_seed(seed), class_names)
    device, judge_device = model_device(model), model_device(judge)
    images, hit, conf = [], [], []
    with attack_mode(judge):
        for i in tqdm(range(0, n, batch_size), desc="samples", disable=not progress, leave=False):
            t = targets[i:i + batch_size]
            x = sample(model, seeds[i:i + batch_size].to(device), t.to(device), steps=steps,
                       step_size=step_size, autocast=autocast).x
            p = torch.softmax(_forward(judge, x.to(judge_device), autocast), 1).cpu()
            if p.shape[1] != num_classes:
                raise ValueError(f"the judge has {p.shape[1]} classes, the model {num_classes}: it must judge the "
                                 "model's classes")
            images.append(x.cpu())
            hit.append(p.argmax(1) == t)
            conf.append(p.gather(1, t.view(-1, 1)).squeeze(1))
    return {"fraction_judged_target": float(torch.cat(hit).float().mean()),
            "mean_target_confidence": float(torch.cat(conf).mean()),
            "images": torch.cat(images), "targets": targets}


def sample_realism(feature_model: nn.Module, real: Any, real_labels: torch.Tensor, samples: torch.Tensor,
                   targets: torch.Tensor) -> dict[str, Any]:
    """Fréchet distance and within-class diversity of `samples` against `real` images in `feature_model`'s
    penultimate features (a fixed, offline feature space; the distance is not FID)."""
    real_f, gen_f = features_of(feature_model, real), features_of(feature_model, samples)
    if len(real_f) != len(real_labels):
        raise ValueError("sample realism reads the data a second time: pass a dataset or tensors, not a one-shot "
                         "iterator")
    real_div = within_class_diversity(real_f, real_labels)
    gen_div = within_class_diversity(gen_f, targets)
    size = min(KID_SUBSET_SIZE, len(real_f), len(gen_f))   # a mean over random subsets: the report says which
    kid, kid_std = kernel_distance_from_features(real_f, gen_f, KID_SUBSETS, size, seed=0)
    return {"feature_space": f"penultimate features of {_name(feature_model)}",
            "frechet_distance": frechet_from_features(real_f, gen_f),
            "kernel_distance": kid, "kernel_distance_std": kid_std, "kernel_distance_subsets": KID_SUBSETS,
            "kernel_distance_subset_size": size, "kernel_distance_seed": 0,
            "within_class_diversity_samples": gen_div, "within_class_diversity_real": real_div,
            "diversity_ratio": gen_div / real_div if real_div > 0 else None,
            "n_real": len(real_f), "n_samples": len(gen_f)}


# --------------------------------------------------------------------------- everything at once

PLOT_FILES = {"reliability": "reliability.png", "samples": "samples.png"}
"""The figures `evaluate` may write into its `out_dir`, by the report's `files` key."""


def write_figures(out: Path, figures: Mapping[str, Any]) -> dict[str, str]:
    """Write each figure (a function of its path) as its `PLOT_FILES` name in `out`; the others an earlier run
    wrote there are removed first, so the folder never holds figures of two runs (other files stay)."""
    out.mkdir(parents=True, exist_ok=True)
    for key, name in PLOT_FILES.items():
        if key not in figures:
            (out / name).unlink(missing_ok=True)
    files = {key: str(out / PLOT_FILES[key]) for key in figures}
    for key, write in figures.items():
        write(files[key])
    return files


def _name(judge: nn.Module | None) -> str:
    if judge is None:
        return "self"
    config = getattr(judge, "config", None)
    return str(config.get("arch", type(judge).__name__)) if isinstance(config, dict) else type(judge).__name__


def check_options(model: nn.Module, *, ood: Mapping[str, Any] | None, robust: Mapping[str, Any] | None,
                  robust_strong: Mapping[str, Any] | None, n_bins: int, samples: int, judge: nn.Module | None,
                  feature_model: nn.Module | None, sample_seeds: str, sample_step_size: float | None) -> None:
    """ValueError for options `evaluate` cannot honour, before its pass over the data: each of these was refused only
    after PGD had run on every image (hours on a full test split), and a strong check without the standard one it
    builds on was dropped without a word. The samples come last, so their options are checked here too."""
    config = getattr(model, "config", {})
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if robust_strong is not None and robust is None:
        raise ValueError("robust_strong builds on robust (its settings, and the images that survive it): pass robust")
    for name, data in (ood or {}).items():
        if isinstance(data, str) and data != "uniform":
            raise ValueError(f"OOD set {name!r}: the only named set is 'uniform' (else pass images or a dataset), "
                             f"got {data!r}")
    if samples <= 0:
        return
    check_seeds(sample_seeds, config.get("class_names"))
    if judge is not None:
        check_judge(model, judge)
    if sample_step_size is not None:
        threat_model("L2", math.inf, sample_step_size)   # its step check
    k = config.get("num_classes")
    if feature_model is not None and isinstance(k, int) and samples <= k:
        raise ValueError(f"sample realism needs at least {k + 1} samples: they cycle over the {k} classes, and "
                         f"within-class diversity needs two of one class (got {samples})")
    if feature_model is not None:   # a bare model says its size with its first batch: `evaluate` checks it again then
        check_feature_size(feature_model, config.get("image_size"))


def evaluate(model: nn.Module, batches: Any, *, ood: Mapping[str, Any] | None = None,
             robust: Mapping[str, Any] | None = ROBUST, robust_strong: Mapping[str, Any] | None = None,
             judge: nn.Module | None = None, samples: int = 0, out_dir: str | Path | None = None,
             progress: bool = True, autocast: bool = False, n_bins: int = 15, seed: int = 0,
             batch_size: int = 256, sample_steps: int | None = None,
             sample_step_size: float | None = None, feature_model: nn.Module | None = None,
             sample_seeds: str = DEFAULT_SEED_KIND, ood_adversarial: bool = True) -> dict[str, Any]:
    """Evaluate a classifier on labeled `batches` in one pass; returns a JSON-safe dict.

    - `robust`: PGD settings (keys of `ROBUST`, missing ones defaulted); None skips the attack.
    - `robust_strong`: overrides applied on top of `robust` (e.g. `ROBUST_STRONG`; steps and restarts never
      below `robust`'s), reported separately as `robust_strong_accuracy`: the images that survive both attacks.
    - `ood`: {name: batches}; the value "uniform" means uniform noise like the data (at most 1024
      images). AUROC with in-distribution = positive, energy score (`ood_auroc`) and MSP (`ood_auroc_msp`); with
      `ood_adversarial` also after each score's attack on the first 1024 OOD images of each set, as the official
      code reports (`ood_auroc_adversarial`, `ood_auroc_msp_adversarial`; settings in `ood_adversarial`).
    - `samples` > 0: class-conditional samples from `sample_seeds` (the seed bank by default) judged by `judge`
      (None: the model judges itself, reported as judge "self").
    - `feature_model` with `samples` > 0: how real the samples look in that fixed classifier's penultimate
      features (e.g. a standard model): Fréchet distance to the evaluated images (not FID: no Inception) and
      within-class diversity of samples vs real images (`sample_realism`); needs data that can be read twice.
    - `out_dir`: writes reliability.png (and samples.png when samples > 0: at most `MAX_GRID_ROWS` rows of one
      sample per class, or `MAX_GRID_IMAGES` samples for many classes; all of them are measured) once all is
      measured, and removes the one of these an earlier run left there that this run does not write.
    - `batch_size`: used where data comes as tensors or a dataset (see `as_batches`) and for samples. The report's
      `batch_size` is the largest batch the attacks ran on: restarts draw their random starts per batch.
    """
    start = time.perf_counter()
    check_options(model, ood=ood, robust=robust, robust_strong=robust_strong, n_bins=n_bins, samples=samples,
                  judge=judge, feature_model=feature_model, sample_seeds=sample_seeds,
                  sample_step_size=sample_step_size)
    realism = samples > 0 and feature_model is not None   # within-class diversity: two images of one class
    device = model_device(model)
    settings = None if robust is None else robust_settings(robust)
    strong = None if robust_strong is None or settings is None else robust_settings(
        settings, **{k: max(v, settings[k]) if k in ("steps", "restarts") else v for k, v in robust_strong.items()})
    logits, labels, hits, strong_hits, strong_rng, largest = [], [], 0, 0, {}, 0
    with attack_mode(model), seeded(seed, device):
        for batch in _bar(batches, "evaluate", progress, batch_size):
            x, y = _unpack(batch, device, model)
            if y is None:
                raise ValueError("evaluate needs labeled batches")
            out = _forward(model, x, autocast, y)
            pred = out.argmax(1)
            if settings is not None:
                held = robust_correct(model, x, y, pred, settings, autocast)
                hits += int(held.sum())
            if strong is not None:   # the worst case of both attacks (only survivors are attacked again)
                with rng_stream(strong_rng, seed, device):   # its random starts leave the standard check's alone
                    strong_hits += int(robust_correct(model, x, y, pred.where(held, -1), strong, autocast).sum())
            logits.append(out.cpu())
            labels.append(y.cpu())
            image_size, largest = x.shape[-1], max(largest, len(x))
    if not logits:
        raise ValueError("no data: the batches were empty")
    logits, labels = torch.cat(logits), torch.cat(labels)
    if realism:
        check_feature_size(feature_model, image_size)
    if realism and not bool((torch.bincount(labels) >= 2).any()):
        raise ValueError(f"sample realism needs two real images of one class (within-class diversity), and the "
                         f"{labels.numel()} evaluated images are of {labels.numel()} classes: evaluate more")
    n, num_classes = labels.numel(), logits.shape[1]
    ece, bins = expected_calibration_error(torch.softmax(logits, 1), labels, n_bins)
    energies = marginal_energy(logits)
    result: dict[str, Any] = {
        "n": n, "num_classes": num_classes, "image_size": int(image_size), "autocast": autocast, "seed": seed,
        "batch_size": largest,
        "clean_accuracy": float((logits.argmax(1) == labels).float().mean()),
        "robust_accuracy": None if settings is None else hits / n, "robust": settings,
        "robust_strong_accuracy": None if strong is None else strong_hits / n,
        "robust_strong": None if strong is None else {**strong, "counts": "images surviving the standard attack too"},
        "ece": ece, "n_bins": n_bins, "calibration_bins": bins,
        "energy_quantiles": energy_quantiles(energies), "mean_energy": float(energies.mean()),
        "ood_auroc": {}, "ood_auroc_msp": {}, "ood_n": {},
    }
    for name, data in (ood or {}).items():
        if isinstance(data, str):   # "uniform" (`check_options`)
            data = uniform_ood(n, int(image_size), seed)
        out_logits, attacked = ood_logits(model, data, OOD_SCORES if ood_adversarial else (), autocast, progress,
                                          batch_size)
        result["ood_n"][name] = out_logits.shape[0]
        for score, key in (("energy", "ood_auroc"), ("msp", "ood_auroc_msp")):
            result[key][name] = roc_auc(ood_scores(logits, score), ood_scores(out_logits, score))
            if ood_adversarial:
                result.setdefault(f"{key}_adversarial", {})[name] = roc_auc(ood_scores(logits, score),
                                                                             ood_scores(attacked[score], score))
        if ood_adversarial:
            result.setdefault("ood_adversarial_n", {})[name] = attacked["energy"].shape[0]
            result["ood_adversarial"] = {**adversarial_ood_settings(int(image_size)), "objective": ATTACK_OBJECTIVE}

    figures = {}   # written once everything is measured
    if out_dir is not None:
        figures["reliability"] = lambda path: plot_reliability(bins, path, title=f"Reliability (n={n}, ECE {ece:.2%})")
    if samples > 0:
        fid = sample_fidelity(model, model if judge is None else judge, samples, int(image_size), num_classes,
                              seed=seed, steps=sample_steps, step_size=sample_step_size, seeds_kind=sample_seeds,
                              autocast=autocast, batch_size=batch_size, progress=progress,
                              class_names=getattr(model, "config", {}).get("class_names"))
        result["sample_fidelity"] = {
            "n": samples, "judge": _name(judge),
            "fraction_judged_target": fid["fraction_judged_target"],
            "mean_target_confidence": fid["mean_target_confidence"],
            "steps": default_steps(image_size) if sample_steps is None else sample_steps,
            "step_size": default_step_size(image_size) if sample_step_size is None else sample_step_size,
            "seeds": sample_seeds}
        if feature_model is not None:
            result["sample_realism"] = sample_realism(feature_model, batches, labels, fid["images"], fid["targets"])
        if out_dir is not None:  # a picture, not an archive: the first rows of the (class-cycling) samples
            ncol = num_classes if num_classes <= 16 else math.ceil(math.sqrt(min(samples, MAX_GRID_IMAGES)))
            shown = fid["images"][:min(samples, ncol * MAX_GRID_ROWS, MAX_GRID_IMAGES)]
            figures["samples"] = lambda path: save_png(make_grid(shown, nrow=min(ncol, len(shown))), path)
    files = {} if out_dir is None else write_figures(Path(out_dir), figures)
    result["files"] = files
    result["time_s"] = round(time.perf_counter() - start, 3)
    return result
