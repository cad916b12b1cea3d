"""What a training run measures on its held-out validation split (EMA weights, rank 0)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..data import ImageDataset, seeds_for, train_val_split
from ..energy import marginal_energy
from ..evaluation.accuracy import clean_accuracy, predict, robust_accuracy
from ..evaluation.metrics import energy_quantiles
from ..sampling import balanced_targets, make_grid, sample, save_png
from .config import TrainConfig


def evaluate_run(cfg: TrainConfig, model: torch.nn.Module, val: ImageDataset, out: Path, step: int,
                 autocast: bool) -> dict[str, Any]:
    """Clean and PGD robust accuracy on the first `eval_size` validation images, plus a sample grid."""
    metrics: dict[str, Any] = {}
    n = min(cfg.eval_size, len(val))
    if n:
        part = spread_subset(val, n)
        a = cfg.attack
        metrics["clean_accuracy"] = clean_accuracy(model, part, autocast=autocast)
        metrics["robust_accuracy"] = robust_accuracy(model, part, norm=a.norm, eps=a.eps, steps=cfg.eval_attack_steps,
                                                     step_size=a.step_size, autocast=autocast)
    if cfg.sample_grid:
        k = model.config["num_classes"]
        per_class = max(1, min(10, 100 // k))
        device = next(model.parameters()).device
        targets = balanced_targets(per_class * k, k)
        seeds = seeds_for(cfg.sample_seeds, targets, cfg.data.image_size, torch.Generator().manual_seed(cfg.seed),
                          model.config.get("class_names")).to(device)
        targets = targets.to(device)
        x = sample(model, seeds, targets, autocast=autocast).x
        # column c shows class c: sample i has target i mod K
        (out / "samples").mkdir(parents=True, exist_ok=True)
        save_png(make_grid(x, nrow=k, scale=2), out / "samples" / f"step{step:07d}.png")
    return metrics


def spread_subset(data: ImageDataset, n: int) -> ImageDataset:
    """`n` images drawn across the classes of `data`, the same at every evaluation of a run: the first n of a
    class-sorted folder dataset were its first classes only (and best/ was chosen on them)."""
    return data if n >= len(data) else train_val_split(data, n, seed=0)[1]


def energy_statistics(model: torch.nn.Module, val: ImageDataset, autocast: bool) -> dict[str, float]:
    """Quantiles of E(x) on the validation split, stored in config.json for the app's typicality read-out."""
    if len(val) == 0:
        return {}
    return energy_quantiles(marginal_energy(predict(model, val, autocast=autocast)))
