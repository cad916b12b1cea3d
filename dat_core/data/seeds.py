"""Seeds for PGD sampling and contrastive samples: the one definition of the seed kinds.

`uniform` pixel noise and `lowfreq` (smooth) noise are synthetic; training also takes seed images
from an out-of-distribution image set (`data.ood` in the training config).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .datasets import ImageDataset

NOISE_KINDS = ("uniform", "lowfreq")
"""Synthetic seed kinds (noise_seeds); every CLI, config and the app take their names from here."""


def noise_seeds(n: int, image_size: int, kind: str = "uniform", seed: int = 0,
                generator: torch.Generator | None = None, low_res: int = 8) -> torch.Tensor:
    """n x 3 x S x S float seeds in [0,1]: `uniform` pixel noise, or `lowfreq` = uniform noise at
    low_res x low_res upsampled bilinearly (smooth blobs, closer to natural image statistics)."""
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    if kind == "uniform":
        return torch.rand(n, 3, image_size, image_size, generator=g)
    if kind == "lowfreq":
        low = torch.rand(n, 3, low_res, low_res, generator=g)
        return F.interpolate(low, size=(image_size, image_size), mode="bilinear", align_corners=False).clamp_(0, 1)
    raise ValueError(f"kind must be one of {', '.join(NOISE_KINDS)}, got {kind!r}")


def noise_dataset(n: int, image_size: int, kind: str = "uniform", seed: int = 0) -> ImageDataset:
    """noise_seeds quantized to uint8 as an unlabeled ImageDataset, so noise feeds a BatchStream."""
    x = noise_seeds(n, image_size, kind, seed)
    return ImageDataset(x.mul(255).round_().to(torch.uint8), torch.full((n,), -1, dtype=torch.long), [])
