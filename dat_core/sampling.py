"""Class-conditional generation: PGD ascent on the class logit from seed images (METHOD §4).

eps = inf, per-sample L2-normalized steps, no noise: exactly the contrastive-sample routine,
with evaluation defaults (CIFAR step 0.2, ~33 steps).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from .files import replacing
from .pgd import OnStep, PGDResult, pgd, threat_model

# METHOD §4: eval step size 0.2 and 33 steps at 32x32; 8.0 and 13-24 steps at ImageNet sizes (20 here).
SMALL_SAMPLING_STEPS, IMAGENET_SAMPLING_STEPS = 33, 20
IMAGENET_MIN_SIZE = 128
"""Models at this resolution or above are ImageNet-size: they take the paper's ImageNet budgets (sampling here,
counterfactuals in explain.params), not the 32-px ones scaled."""


def default_step_size(image_size: int) -> float:
    """0.2 at 32 px, growing like sqrt(pixel count) below IMAGENET_MIN_SIZE; the paper's 8.0 at ImageNet sizes."""
    return 8.0 if image_size >= IMAGENET_MIN_SIZE else 0.2 * image_size / 32


def default_steps(image_size: int) -> int:
    """33 below IMAGENET_MIN_SIZE, the paper's ImageNet 20 from it (with `default_step_size`'s 8.0 at any size)."""
    return IMAGENET_SAMPLING_STEPS if image_size >= IMAGENET_MIN_SIZE else SMALL_SAMPLING_STEPS


def balanced_targets(n: int, num_classes: int) -> torch.Tensor:
    """y_i = i mod K: exactly class-balanced, as in the official FID sampling."""
    return torch.arange(n) % num_classes


def sample(model: nn.Module, seeds: torch.Tensor, targets: torch.Tensor, steps: int | None = None,
           step_size: float | None = None, record_every: int = 0, autocast: bool = False,
           on_step: OnStep | None = None) -> PGDResult:
    """PGD on f(x)[y] from `seeds` toward `targets` with eps = inf (`on_step` as in `pgd`)."""
    size = seeds.shape[-1]
    steps = default_steps(size) if steps is None else steps
    step_size = default_step_size(size) if step_size is None else step_size
    return pgd(model, seeds, targets.to(seeds.device), threat_model("L2", math.inf, step_size), steps,
               objective="target_logit", record_every=record_every, autocast=autocast, on_step=on_step)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N,C,H,W) float [0,1] -> (N,H,W,C) uint8 (round to nearest)."""
    return (images.detach().float().clamp(0, 1).mul(255).add(0.5).floor().byte()
            .permute(0, 2, 3, 1).cpu().numpy())


def make_grid(images: torch.Tensor | np.ndarray, nrow: int, pad: int = 2, scale: int = 1,
              fill: int = 255) -> np.ndarray:
    """Tile (N,C,H,W) floats or (N,H,W,C) uint8 into one uint8 image; `scale` upsamples without blur."""
    arr = to_uint8(images) if isinstance(images, torch.Tensor) else np.asarray(images, dtype=np.uint8)
    if scale > 1:
        arr = arr.repeat(scale, axis=1).repeat(scale, axis=2)
    n, h, w, c = arr.shape
    ncol = max(1, nrow)
    nrows = math.ceil(n / ncol)
    grid = np.full((nrows * (h + pad) + pad, ncol * (w + pad) + pad, c), fill, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, ncol)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = arr[i]
    return grid


def save_png(array: np.ndarray, path) -> None:
    """Whole or not at all (`dat_core.files.replacing`): a stop mid-write keeps the previous image."""
    with replacing(Path(path)) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
