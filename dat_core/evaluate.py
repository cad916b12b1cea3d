"""Model evaluation (METHOD §6): clean and PGD-robust accuracy, calibration, OOD AUROC of the
energy score, fidelity of class-conditional samples, and stored energy quantiles.

Data arguments ("batches") may be any of:
- an iterable of `(x, y)` batches (x: [0,1] float or uint8 NCHW, y: int64 labels),
- an iterable of image tensors (unlabeled, e.g. OOD sets),
- a `(images, labels)` pair of tensors, a bare image tensor, or any object with `.images` and
  `.labels` (such as `dat_core.data.ImageDataset`); these are cut into batches by `iterate`.
Every pass runs in eval mode (restored afterwards); all attacks go through `dat_core.pgd.pgd`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import torch
import torch.nn as nn
from matplotlib.figure import Figure
from tqdm import tqdm

from .data import noise_seeds
from .energy import marginal_energy
from .metrics import energy_quantiles, expected_calibration_error, roc_auc
from .pgd import attack_mode, pgd, threat_model
from .runtime import model_device, seeded
from .sampling import balanced_targets, default_step_size, default_steps, make_grid, sample, save_png

ROBUST = {"norm": "L2", "eps": 0.5, "steps": 20, "step_size": 0.1, "restarts": 0}
"""Standard robust-accuracy check (METHOD §6, CIFAR: L2 eps 0.5, step 0.1)."""

ROBUST_STRONG = {"steps": 50, "restarts": 2}
"""The stronger check, applied on top of the standard settings: 50 steps, 2 random restarts."""

OOD_SCORES = ("energy", "msp")


# --------------------------------------------------------------------------- data plumbing

def iterate(images: torch.Tensor, labels: torch.Tensor | None = None,
            batch_size: int = 256) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Yield `(x, y)` batches with x float in [0,1] (uint8 images are divided by 255)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for i in range(0, images.shape[0], batch_size):
        x = images[i:i + batch_size]
        yield _to_float(x), None if labels is None else labels[i:i + batch_size]


def _to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


def as_batches(data: Any, batch_size: int = 256) -> Iterable:
    """Normalize the accepted data forms (module docstring) to an iterable of batches."""
    if isinstance(data, torch.Tensor):
        return iterate(data, None, batch_size)
    if hasattr(data, "images") and hasattr(data, "labels"):
        return iterate(data.images, data.labels, batch_size)
    if (isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor)
            and data[0].dim() == 4 and isinstance(data[1], torch.Tensor) and data[1].dim() == 1):
        return iterate(data[0], data[1], batch_size)
    return data


def _unpack(batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    x, y = (batch, None) if isinstance(batch, torch.Tensor) else (batch[0], batch[1])
    x = _to_float(x.to(device))
    return x, None if y is None else torch.as_tensor(y).to(device).long()


def _bar(data: Any, desc: str, progress: bool, batch_size: int = 256) -> Iterable:
    batches = as_batches(data, batch_size)
    total = len(batches) if hasattr(batches, "__len__") else None
    if total is None and batches is not data:  # cut by `iterate`: count the images
        images = data if isinstance(data, torch.Tensor) else getattr(data, "images", None)
        images = data[0] if images is None else images
        total = math.ceil(len(images) / batch_size)
    return tqdm(batches, desc=desc, total=total, disable=not progress, leave=False, unit="batch")


def _forward(model: nn.Module, x: torch.Tensor, autocast: bool) -> torch.Tensor:
    with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        return model(x).float()


def _collect(model: nn.Module, data: Any, autocast: bool, progress: bool, desc: str,
             batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One no-grad pass: (N, K) float32 CPU logits and the labels (None if unlabeled)."""
    device, logits, labels = model_device(model), [], []
    with attack_mode(model):
        for batch in _bar(data, desc, progress, batch_size):
            x, y = _unpack(batch, device)
            logits.append(_forward(model, x, autocast).cpu())
            if y is not None:
                labels.append(y.cpu())
    if not logits:
        raise ValueError("no data: the batches were empty")
    return torch.cat(logits), torch.cat(labels) if len(labels) == len(logits) else None


# --------------------------------------------------------------------------- accuracy

def predict(model: nn.Module, batches: Any, autocast: bool = False, progress: bool = False) -> torch.Tensor:
    """(N, K) float32 CPU logits of every image, no grad, eval mode."""
    return _collect(model, batches, autocast, progress, "predict")[0]


def clean_accuracy(model: nn.Module, batches: Any, autocast: bool = False, progress: bool = False) -> float:
    logits, labels = _collect(model, batches, autocast, progress, "clean")
    if labels is None:
        raise ValueError("clean_accuracy needs labels")
    return float((logits.argmax(1) == labels).float().mean())


def _robust_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clean_pred: torch.Tensor,
                    settings: Mapping[str, Any], autocast: bool) -> torch.Tensor:
    """Per-sample bool: correct clean AND after the no-random-start PGD run AND after every
    random-start restart. Only samples still standing are attacked again."""
    threat = threat_model(settings["norm"], settings["eps"], settings["step_size"])
    alive = clean_pred == y
    for run in range(settings["restarts"] + 1):
        idx = alive.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        adv = pgd(model, x[idx], y[idx], threat, settings["steps"], objective="ce",
                  random_start=run > 0, autocast=autocast).x
        alive[idx] = _forward(model, adv, autocast).argmax(1) == y[idx]
    return alive


def _robust_settings(base: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    s = {**ROBUST, **base, **overrides}
    unknown = set(s) - set(ROBUST)
    if unknown:
        raise ValueError(f"unknown robust settings {sorted(unknown)}; use {sorted(ROBUST)}")
    s = {"norm": threat_model(s["norm"], s["eps"], s["step_size"]).norm, "eps": float(s["eps"]),
         "steps": int(s["steps"]), "step_size": float(s["step_size"]), "restarts": int(s["restarts"])}
    if s["restarts"] < 0:
        raise ValueError(f"restarts must be >= 0, got {s['restarts']}")
    return s


def robust_accuracy(model: nn.Module, batches: Any, norm: str = "L2", eps: float = 0.5, steps: int = 20,
                    step_size: float = 0.1, restarts: int = 0, autocast: bool = False,
                    seed: int | None = 0, progress: bool = False) -> float:
    """Fraction of samples classified correctly under untargeted PGD-CE with the true labels.

    One run without random start plus `restarts` random-start runs; a sample counts only if it
    survives all of them (and is correct clean). `seed` fixes the random starts (None: global RNG).
    """
    settings = _robust_settings({}, norm=norm, eps=eps, steps=steps, step_size=step_size, restarts=restarts)
    device, hits, n = model_device(model), 0, 0
    with attack_mode(model), seeded(seed, device):
        for batch in _bar(batches, "robust", progress):
            x, y = _unpack(batch, device)
            if y is None:
                raise ValueError("robust_accuracy needs labels")
            pred = _forward(model, x, autocast).argmax(1)
            hits += int(_robust_correct(model, x, y, pred, settings, autocast).sum())
            n += y.numel()
    if n == 0:
        raise ValueError("no data: the batches were empty")
    return hits / n


def torchattacks_robust_accuracy(model: nn.Module, batches: Any, norm: str = "L2", eps: float = 0.5,
                                 attack: str = "apgd", steps: int = 100, restarts: int = 1, seed: int = 0,
                                 progress: bool = False) -> float:
    """Optional cross-check with torchattacks' APGD-CE (`attack="apgd"`) or standard AutoAttack
    (`attack="autoattack"`); robust = correct clean and on the returned adversarial image."""
    try:
        import torchattacks
    except ImportError as e:
        raise ImportError("the APGD/AutoAttack cross-check needs the optional package torchattacks: "
                          "pip install torchattacks") from e
    device, hits, n = model_device(model), 0, 0
    with attack_mode(model):
        for batch in _bar(batches, attack, progress):
            x, y = _unpack(batch, device)
            if y is None:
                raise ValueError("robust accuracy needs labels")
            if attack == "apgd":
                atk = torchattacks.APGD(model, norm=norm, eps=eps, steps=steps, n_restarts=restarts,
                                        seed=seed, loss="ce")
            elif attack == "autoattack":
                num_classes = _forward(model, x[:1], False).shape[1]
                atk = torchattacks.AutoAttack(model, norm=norm, eps=eps, version="standard",
                                              n_classes=num_classes, seed=seed)
            else:
                raise ValueError(f"attack must be 'apgd' or 'autoattack', got {attack!r}")
            adv = atk(x, y)
            ok = (_forward(model, x, False).argmax(1) == y) & (_forward(model, adv, False).argmax(1) == y)
            hits, n = hits + int(ok.sum()), n + y.numel()
    return hits / max(n, 1)


# --------------------------------------------------------------------------- calibration

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
        fig.savefig(path, dpi=120)
    return fig


# --------------------------------------------------------------------------- OOD and energies

def ood_scores(logits: torch.Tensor, score: str = "energy") -> torch.Tensor:
    """Higher = more in-distribution: -E(x) = logsumexp f(x) ("energy") or max softmax ("msp")."""
    if score == "energy":
        return -marginal_energy(logits.float())
    if score == "msp":
        return torch.softmax(logits.float(), 1).amax(1)
    raise ValueError(f"unknown OOD score {score!r}; use one of {OOD_SCORES}")


def ood_auroc(model: nn.Module, in_batches: Any, out_batches: Any, score: str = "energy",
              autocast: bool = False, progress: bool = False) -> float:
    """AUROC for telling in-distribution (positive) from OOD images by `ood_scores`."""
    if score not in OOD_SCORES:
        raise ValueError(f"unknown OOD score {score!r}; use one of {OOD_SCORES}")
    s_in = ood_scores(_collect(model, in_batches, autocast, progress, "in-dist")[0], score)
    s_out = ood_scores(_collect(model, out_batches, autocast, progress, "ood")[0], score)
    return roc_auc(s_in, s_out)


# --------------------------------------------------------------------------- samples

def sample_fidelity(model: nn.Module, judge: nn.Module, n: int, image_size: int, num_classes: int,
                    seed: int = 0, steps: int | None = None, step_size: float | None = None,
                    seeds_kind: str = "uniform", autocast: bool = False, batch_size: int = 128,
                    progress: bool = False) -> dict[str, Any]:
    """Generate n class-balanced samples (targets i mod K) from noise seeds by `sampling.sample`
    and ask `judge` (e.g. a standard classifier) whether each shows its target class.

    Returns fraction_judged_target, mean_target_confidence (judge's softmax at the target),
    images (n, 3, S, S CPU floats) and targets. Deterministic for a given seed.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    seeds = noise_seeds(n, image_size, kind=seeds_kind, seed=seed)
    targets = balanced_targets(n, num_classes)
    device, judge_device = model_device(model), model_device(judge)
    images, hit, conf = [], [], []
    with attack_mode(judge):
        for i in tqdm(range(0, n, batch_size), desc="samples", disable=not progress, leave=False):
            t = targets[i:i + batch_size]
            x = sample(model, seeds[i:i + batch_size].to(device), t.to(device), steps=steps,
                       step_size=step_size, autocast=autocast).x
            p = torch.softmax(_forward(judge, x.to(judge_device), autocast), 1).cpu()
            images.append(x.cpu())
            hit.append(p.argmax(1) == t)
            conf.append(p.gather(1, t.view(-1, 1)).squeeze(1))
    return {"fraction_judged_target": float(torch.cat(hit).float().mean()),
            "mean_target_confidence": float(torch.cat(conf).mean()),
            "images": torch.cat(images), "targets": targets}


# --------------------------------------------------------------------------- everything at once

def _name(judge: nn.Module | None) -> str:
    if judge is None:
        return "self"
    config = getattr(judge, "config", None)
    return str(config.get("arch", type(judge).__name__)) if isinstance(config, dict) else type(judge).__name__


def evaluate(model: nn.Module, batches: Any, *, ood: Mapping[str, Any] | None = None,
             robust: Mapping[str, Any] | None = ROBUST, robust_strong: Mapping[str, Any] | None = None,
             judge: nn.Module | None = None, samples: int = 0, out_dir: str | Path | None = None,
             progress: bool = True, autocast: bool = False, n_bins: int = 15, seed: int = 0,
             batch_size: int = 256, sample_steps: int | None = None,
             sample_step_size: float | None = None) -> dict[str, Any]:
    """Evaluate a classifier on labeled `batches` in one pass; returns a JSON-safe dict.

    - `robust`: PGD settings (keys of `ROBUST`, missing ones defaulted); None skips the attack.
    - `robust_strong`: overrides applied on top of `robust` (e.g. `ROBUST_STRONG`), reported
      separately as `robust_strong_accuracy`.
    - `ood`: {name: batches}; the value "uniform" means uniform noise like the data (at most 1024
      images). AUROC with in-distribution = positive, energy score (`ood_auroc`) and MSP (`ood_auroc_msp`).
    - `samples` > 0: class-conditional samples from uniform noise judged by `judge` (None: the
      model judges itself, reported as judge "self").
    - `out_dir`: writes reliability.png (and samples.png when samples > 0).
    - `batch_size`: used where data comes as tensors or a dataset (see `as_batches`) and for samples.
    """
    start = time.perf_counter()
    device = model_device(model)
    settings = None if robust is None else _robust_settings(robust)
    strong = None if robust_strong is None or settings is None else _robust_settings(settings, **robust_strong)
    logits, labels, hits, strong_hits = [], [], 0, 0
    with attack_mode(model), seeded(seed, device):
        for batch in _bar(batches, "evaluate", progress, batch_size):
            x, y = _unpack(batch, device)
            if y is None:
                raise ValueError("evaluate needs labeled batches")
            out = _forward(model, x, autocast)
            pred = out.argmax(1)
            if settings is not None:
                hits += int(_robust_correct(model, x, y, pred, settings, autocast).sum())
            if strong is not None:
                strong_hits += int(_robust_correct(model, x, y, pred, strong, autocast).sum())
            logits.append(out.cpu())
            labels.append(y.cpu())
            image_size = x.shape[-1]
    if not logits:
        raise ValueError("no data: the batches were empty")
    logits, labels = torch.cat(logits), torch.cat(labels)
    n, num_classes = labels.numel(), logits.shape[1]
    ece, bins = expected_calibration_error(torch.softmax(logits, 1), labels, n_bins)
    energies = marginal_energy(logits)
    result: dict[str, Any] = {
        "n": n, "num_classes": num_classes, "image_size": int(image_size), "autocast": autocast, "seed": seed,
        "clean_accuracy": float((logits.argmax(1) == labels).float().mean()),
        "robust_accuracy": None if settings is None else hits / n, "robust": settings,
        "robust_strong_accuracy": None if strong is None else strong_hits / n, "robust_strong": strong,
        "ece": ece, "n_bins": n_bins, "calibration_bins": bins,
        "energy_quantiles": energy_quantiles(energies), "mean_energy": float(energies.mean()),
        "ood_auroc": {}, "ood_auroc_msp": {}, "ood_n": {},
    }
    for name, data in (ood or {}).items():
        if isinstance(data, str):
            if data != "uniform":
                raise ValueError(f"OOD set {name!r}: the only named set is 'uniform', got {data!r}")
            data = noise_seeds(min(n, 1024), int(image_size), kind="uniform", seed=seed + 1)
        out_logits = _collect(model, data, autocast, progress, f"ood {name}", batch_size)[0]
        result["ood_auroc"][name] = roc_auc(ood_scores(logits, "energy"), ood_scores(out_logits, "energy"))
        result["ood_auroc_msp"][name] = roc_auc(ood_scores(logits, "msp"), ood_scores(out_logits, "msp"))
        result["ood_n"][name] = out_logits.shape[0]

    out = None if out_dir is None else Path(out_dir)
    files = {}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        files["reliability"] = str(out / "reliability.png")
        plot_reliability(bins, files["reliability"], title=f"Reliability (n={n}, ECE {ece:.2%})")
    if samples > 0:
        fid = sample_fidelity(model, model if judge is None else judge, samples, int(image_size), num_classes,
                              seed=seed, steps=sample_steps, step_size=sample_step_size,
                              autocast=autocast, batch_size=batch_size, progress=progress)
        result["sample_fidelity"] = {
            "n": samples, "judge": _name(judge),
            "fraction_judged_target": fid["fraction_judged_target"],
            "mean_target_confidence": fid["mean_target_confidence"],
            "steps": default_steps(image_size) if sample_steps is None else sample_steps,
            "step_size": default_step_size(image_size) if sample_step_size is None else sample_step_size,
            "seeds": "uniform"}
        if out is not None:
            files["samples"] = str(out / "samples.png")
            ncol = num_classes if num_classes <= 16 else math.ceil(math.sqrt(samples))
            save_png(make_grid(fid["images"], nrow=min(ncol, samples)), files["samples"])
    result["files"] = files
    result["time_s"] = round(time.perf_counter() - start, 3)
    return result
