"""Seeds for PGD sampling and contrastive samples: the one definition of the seed kinds.

- `bank`: out-of-distribution photos (how DAT samples, METHOD §4): the shipped seed bank in assets/seeds/,
  Tiny-ImageNet images carved out of training's OOD seeds (`data.ood_seed_bank`), so no model trained with
  that carve-out has seen them.
- `gaussian`: a class-conditional Gaussian fitted on training images at low resolution, upsampled (the
  "single robust classifier" synthesis recipe of Santurkar et al. 2019); needs the target classes.
- `uniform` pixel noise and `lowfreq` (smooth) noise are synthetic; training also takes seed images
  from an out-of-distribution image set (`data.ood` in the training config).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..assets import ASSETS_DIR
from ..files import replacing
from .datasets import ImageDataset

NOISE_KINDS = ("uniform", "lowfreq")
"""Synthetic seed kinds (noise_seeds); every CLI, config and the app take their names from here."""
SEED_KINDS = ("bank", "gaussian", *NOISE_KINDS)
"""Every named seed kind for sampling (`seeds_for`); the default is the first."""
DEFAULT_SEED_KIND = SEED_KINDS[0]

SEEDS_DIR = ASSETS_DIR / "seeds"
SEED_BANK = SEEDS_DIR / "tinyimagenet32-bank.safetensors"
CLASS_GAUSSIANS = SEEDS_DIR / "cifar10-class-gaussians.safetensors"
MAX_SEED_FILE_BYTES = 64 * 2 ** 20


def noise_seeds(n: int, image_size: int, kind: str = "uniform", seed: int = 0,
                generator: torch.Generator | None = None, low_res: int = 8) -> torch.Tensor:
    """n x 3 x S x S float seeds in [0,1]: `uniform` pixel noise, or `lowfreq` = uniform noise at
    low_res x low_res upsampled bilinearly (smooth blobs, closer to natural image statistics)."""
    if n < 0 or image_size < 1 or low_res < 1:   # image_size 0 gave n images of no pixels
        raise ValueError(f"need n >= 0, image_size >= 1 and low_res >= 1, got {n}, {image_size}, {low_res}")
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    if kind == "uniform":
        return torch.rand(n, 3, image_size, image_size, generator=g)
    if kind == "lowfreq":
        low = torch.rand(n, 3, low_res, low_res, generator=g)
        return _resize(low, image_size)
    raise ValueError(f"kind must be one of {', '.join(NOISE_KINDS)}, got {kind!r}")


def noise_dataset(n: int, image_size: int, kind: str = "uniform", seed: int = 0) -> ImageDataset:
    """noise_seeds quantized to uint8 as an unlabeled ImageDataset, so noise feeds a BatchStream."""
    x = noise_seeds(n, image_size, kind, seed)
    return ImageDataset(x.mul(255).round_().to(torch.uint8), torch.full((n,), -1, dtype=torch.long), [])


def _resize(x: torch.Tensor, image_size: int) -> torch.Tensor:
    if x.shape[-1] == image_size and x.shape[-2] == image_size:
        return x
    return F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False,
                         antialias=x.shape[-1] > image_size).clamp_(0, 1)


# ---------------------------------------------------------------- files (safetensors: never a pickle)

def _read(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a seed file, read once while the file is unchanged (the app asks per request)."""
    path = Path(path)
    return _cached_read(str(path), path.stat().st_mtime_ns if path.is_file() else 0, what)


@lru_cache(maxsize=8)
def _cached_read(name: str, mtime_ns: int, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"the {what} file {path.name} is missing (assets/seeds/ ships it; "
                                "`python -m train seeds --help` writes one)")
    if path.stat().st_size > MAX_SEED_FILE_BYTES:
        raise ValueError(f"the {what} file {path.name} is larger than {MAX_SEED_FILE_BYTES >> 20} MB")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"the {what} file {path.name} is not a safetensors file ({type(e).__name__})") from None


def _write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, object]) -> Path:
    from safetensors.torch import save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = save({k: v.contiguous() for k, v in tensors.items()},
                metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    with replacing(path) as tmp:   # the shipped file is rewritten in place: a stop mid-write keeps the old one
        tmp.write_bytes(data)
    return path


# ---------------------------------------------------------------- the seed bank

@dataclass(frozen=True)
class SeedBank:
    """Out-of-distribution seed photos: uint8 N x 3 x S x S and how they were picked."""

    images: torch.Tensor
    metadata: dict[str, str]

    def __len__(self) -> int:
        return len(self.images)

    def draw(self, n: int, image_size: int, generator: torch.Generator) -> torch.Tensor:
        """n float seeds in [0,1] at `image_size`: distinct images while n <= len(bank), then repeats."""
        if n < 0:
            raise ValueError(f"cannot draw {n} seeds")
        if n == 0:   # as the other kinds: an empty batch (torch.cat of no permutation raised)
            return torch.empty(0, 3, image_size, image_size)
        order = torch.cat([torch.randperm(len(self), generator=generator)
                           for _ in range(-(-n // len(self)))])[:n]
        return _resize(self.images[order].float().div_(255), image_size)


def write_seed_bank(path: str | Path, images: torch.Tensor, metadata: dict[str, object]) -> Path:
    """Save uint8 N x 3 x S x S seed images with the story of how they were picked."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3 or not len(images):
        raise ValueError(f"a seed bank is uint8 N x 3 x S x S with N > 0, got {images.dtype} {tuple(images.shape)}")
    return _write(Path(path), {"images": images}, metadata)


def load_seed_bank(path: str | Path | None = None) -> SeedBank:
    """The seed bank at `path` (default: the shipped one)."""
    path = Path(path) if path is not None else SEED_BANK
    tensors, metadata = _read(path, "seed bank")
    images = tensors.get("images")
    if images is None or images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3 or not len(images):
        raise ValueError(f"the seed bank {path.name} holds no uint8 N x 3 x S x S `images`")
    return SeedBank(images, metadata)


# ---------------------------------------------------------------- class-conditional Gaussians

@dataclass(frozen=True)
class ClassGaussians:
    """Per-class N(mean, L L^T) over images at `resolution` px (flattened 3*r*r), fitted on training data."""

    mean: torch.Tensor         # (K, D)
    scale_tril: torch.Tensor   # (K, D, D) Cholesky factors
    class_names: list[str]
    resolution: int

    def draw(self, targets: torch.Tensor, image_size: int, generator: torch.Generator) -> torch.Tensor:
        """One float seed in [0,1] per target class index, upsampled to `image_size`."""
        bad = targets[(targets < 0) | (targets >= len(self.mean))]
        if bad.numel():   # name the class that is out of range (the largest was named, even for class -1)
            raise ValueError(f"gaussian seeds know {len(self.mean)} classes; got class {int(bad[0])}")
        z = torch.randn(len(targets), self.mean.shape[1], 1, generator=generator)
        x = self.mean[targets] + (self.scale_tril[targets] @ z).squeeze(-1)
        return _resize(x.view(-1, 3, self.resolution, self.resolution).clamp(0, 1), image_size)


def fit_class_gaussians(dataset: ImageDataset, resolution: int = 8, shrinkage: float = 1e-3,
                        batch: int = 4096) -> ClassGaussians:
    """Mean and covariance per class of the training images downsampled to `resolution` px (area pooling);
    `shrinkage` * mean variance is added to the diagonal so every covariance is positive definite."""
    if not dataset.labeled:
        raise ValueError("class-conditional Gaussians need a labeled dataset")
    k, d = len(dataset.class_names), 3 * resolution * resolution
    sums, outer, counts = torch.zeros(k, d, dtype=torch.float64), torch.zeros(k, d, d, dtype=torch.float64), \
        torch.zeros(k, dtype=torch.float64)
    for start in range(0, len(dataset), batch):
        idx = torch.arange(start, min(start + batch, len(dataset)))
        x = dataset.images[idx].float().div_(255)
        x = F.adaptive_avg_pool2d(x, resolution).flatten(1).double()
        y = dataset.labels[idx]
        sums.index_add_(0, y, x)
        for c in y.unique().tolist():   # x^T x per class: d x d at a time, never batch x d x d
            xc = x[y == c]
            outer[c] += xc.T @ xc
        counts.index_add_(0, y, torch.ones(len(y), dtype=torch.float64))
    if (counts < 2).any():
        raise ValueError("every class needs at least 2 images to fit a Gaussian")
    mean = sums / counts[:, None]
    cov = outer / counts[:, None, None] - mean[:, :, None] * mean[:, None, :]
    ridge = shrinkage * cov.diagonal(dim1=1, dim2=2).mean(1)
    cov = cov + ridge[:, None, None] * torch.eye(d, dtype=torch.float64)
    return ClassGaussians(mean.float(), torch.linalg.cholesky(cov).float(), list(dataset.class_names), resolution)


def write_class_gaussians(path: str | Path, g: ClassGaussians, metadata: dict[str, object]) -> Path:
    return _write(Path(path), {"mean": g.mean, "scale_tril": g.scale_tril},
                  {**metadata, "class_names": g.class_names, "resolution": g.resolution})


def load_class_gaussians(path: str | Path | None = None) -> ClassGaussians:
    """The fitted Gaussians at `path` (default: the shipped CIFAR-10 ones)."""
    path = Path(path) if path is not None else CLASS_GAUSSIANS
    tensors, meta = _read(path, "class Gaussians")
    try:
        mean, tril = tensors["mean"].float(), tensors["scale_tril"].float()
        names, res = json.loads(meta["class_names"]), int(json.loads(meta["resolution"]))
        ok = mean.ndim == 2 and tril.shape == (*mean.shape, mean.shape[1]) and mean.shape[1] == 3 * res * res \
            and isinstance(names, list) and len(names) == len(mean)
    except (KeyError, ValueError, TypeError):
        ok = False
    if not ok:
        raise ValueError(f"the class Gaussians file {path.name} is malformed")
    return ClassGaussians(mean, tril, [str(n) for n in names], res)


# ---------------------------------------------------------------- one entry point

def seeds_for(kind: str, targets: Sequence[int] | torch.Tensor, image_size: int,
              generator: torch.Generator, class_names: Sequence[str] | None = None,
              bank: str | Path | None = None, gaussians: str | Path | None = None) -> torch.Tensor:
    """Float seeds in [0,1], one per entry of `targets` (class indices), of a named kind (SEED_KINDS).

    `gaussian` checks that the fitted classes are the model's (`class_names`), so CIFAR-10 statistics never
    seed another label set by accident.
    """
    n = len(targets)
    if kind in NOISE_KINDS:
        return noise_seeds(n, image_size, kind, generator=generator)
    if kind == "bank":
        return load_seed_bank(bank).draw(n, image_size, generator)
    if kind == "gaussian":
        g = load_class_gaussians(gaussians)
        if class_names is not None and list(class_names) != g.class_names:
            raise ValueError("gaussian seeds were fitted on other classes than this model's "
                             f"({', '.join(g.class_names[:4])}, …): use bank, uniform or lowfreq seeds")
        return g.draw(torch.as_tensor(targets, dtype=torch.long), image_size, generator)
    raise ValueError(f"seeds must be one of {', '.join(SEED_KINDS)}, got {str(kind)[:60]!r}")


def check_seeds(kind: str, class_names: Sequence[str] | None = None, bank: str | Path | None = None,
                gaussians: str | Path | None = None) -> None:
    """Raise now the error `seeds_for` would raise later (unknown kind, missing file, another class set):
    training and evaluation draw their seeds at the end of long work, so they ask first."""
    seeds_for(kind, [0], 8, torch.Generator(), class_names, bank, gaussians)
