"""The data a training run draws from: train/validation split and the per-step batch streams.

Stage 1 draws one classification stream; stage 2 draws three independent streams of the same
batch size (METHOD §3.2): real EBM images, OOD seeds, classification images.
"""

from __future__ import annotations

import tarfile
import zlib
from typing import Any

import numpy as np
import torch

from ..data import (
    ImageDataset,
    load_cifar,
    load_image_folder,
    noise_seeds,
    train_val_split,
)
from ..data.folders import EmptyClassError
from ..data.seeds import NOISE_KINDS
from ..data.streams import BatchStream
from .config import TrainConfig


def load_dataset(spec: str, split: str, image_size: int, root: str = "data", cache_dir: str = "",
                 lazy: bool = False, allow_empty_classes: bool = False) -> ImageDataset:
    """`cifar10` / `cifar100` (official archives under `root`) or a class-folder dir / archive
    (`lazy`: a directory's files are decoded per batch instead of up front; `allow_empty_classes`:
    see `load_image_folder`)."""
    if spec in ("cifar10", "cifar100"):
        return load_cifar(spec, root, split)
    try:
        return load_image_folder(spec, split=split or None, image_size=image_size, cache_dir=cache_dir or None,
                                 lazy=lazy, allow_empty_classes=allow_empty_classes)
    except (tarfile.TarError, EOFError, zlib.error) as e:  # a truncated or garbled archive
        raise ValueError(f"cannot read the archive {spec}: {_first_line(e)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).splitlines()
    return f"{type(error).__name__}: {text[0].rstrip(':') if text else 'unreadable'}"


def load_train_val(cfg: TrainConfig, seed: int | None = None) -> tuple[ImageDataset, ImageDataset]:
    """(train, validation): `data.val_size` images carved from train with `seed` (default: cfg.seed);
    val_size = 0 trains on every image and the validation set is empty."""
    d = cfg.data
    try:
        full = load_dataset(d.dataset, d.train_split, d.image_size, d.root, d.cache_dir, d.lazy,
                            d.allow_empty_classes)
    except EmptyClassError as e:
        raise EmptyClassError(f"{e} (in the config: data.allow_empty_classes=true)") from None
    if full.images.shape[-1] != d.image_size:
        raise ValueError(f"{d.dataset} has {full.images.shape[-1]}px images but data.image_size={d.image_size}")
    if d.val_size >= len(full):
        raise ValueError(f"data.val_size={d.val_size} leaves no training images of the {len(full)} in {d.dataset}")
    seed = cfg.seed if seed is None else seed
    if not d.val_size:
        return full, full.subset([])
    train, val = train_val_split(full, d.val_size, seed=seed)
    if full.labeled and not d.allow_empty_classes:   # the folder check saw images that the carve-out then took
        had = torch.bincount(full.labels, minlength=len(full.class_names))
        kept = torch.bincount(train.labels, minlength=len(full.class_names))
        lost = [f"{full.class_names[c]} ({int(had[c])})" for c in range(len(had)) if had[c] and not kept[c]]
        if lost:
            raise EmptyClassError(f"data.val_size={d.val_size} carves every training image of {', '.join(lost)}: "
                                  "lower data.val_size, add images, or set data.allow_empty_classes=true")
    return train, val


def ood_split(cfg: TrainConfig, seed: int | None = None) -> tuple[ImageDataset, ImageDataset | None]:
    """(seeds, held-out) OOD images; the held-out part and the seed bank (`ood_seed_bank`) never serve as
    contrastive seeds."""
    seeds, holdout, _ = ood_parts(cfg, seed)
    return seeds, holdout


def ood_parts(cfg: TrainConfig, seed: int | None = None) -> tuple[ImageDataset, ImageDataset | None,
                                                                 ImageDataset | None]:
    """(seeds, held-out, seed bank): the holdout is carved first (so it does not depend on the bank), then the
    bank from what is left with a different seed; the three are disjoint."""
    d = cfg.data
    try:
        ood = load_image_folder(d.ood, labeled=False, image_size=d.image_size, cache_dir=d.cache_dir or None,
                                lazy=d.lazy)
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise ValueError(f"cannot read the OOD archive {d.ood}: {_first_line(e)}") from None
    seed = cfg.seed if seed is None else seed
    if d.ood_holdout + d.ood_seed_bank >= len(ood):
        raise ValueError(f"data.ood_holdout={d.ood_holdout} and data.ood_seed_bank={d.ood_seed_bank} leave no seeds "
                         f"of the {len(ood)} images in {d.ood}")
    seeds, holdout = train_val_split(ood, d.ood_holdout, seed=seed) if d.ood_holdout else (ood, None)
    seeds, bank = train_val_split(seeds, d.ood_seed_bank, seed=seed + 1) if d.ood_seed_bank else (seeds, None)
    return seeds, holdout, bank


class NoiseStream:
    """Endless synthetic OOD seeds (uniform or low-frequency noise), resumable through its RNG."""

    def __init__(self, kind: str, batch_size: int, image_size: int, seed: int, device: torch.device):
        self.kind, self.batch_size, self.image_size, self.device = kind, batch_size, image_size, device
        self.generator = torch.Generator().manual_seed(seed)

    def __next__(self) -> torch.Tensor:
        x = noise_seeds(self.batch_size, self.image_size, self.kind, generator=self.generator)
        return x.to(self.device, non_blocking=True)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    def close(self) -> None:
        """Nothing runs in the background."""


class Wrapped:
    """A stream around another: its state and its background thread are the inner stream's."""

    def __init__(self, stream: Any):
        self.stream = stream

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)

    def close(self) -> None:
        self.stream.close()


class WithNoise(Wrapped):
    """An OOD image stream with a fixed share of each batch replaced by noise seeds (uniform and lowfreq
    alternating), so the energy also learns to reject pixel noise; resumable through its own RNG."""

    def __init__(self, stream: Any, fraction: float, seed: int):
        super().__init__(stream)
        self.fraction = fraction
        self.generator = torch.Generator().manual_seed(seed)

    def __next__(self) -> torch.Tensor:
        x = next(self.stream)
        k = round(self.fraction * len(x))
        if k:
            x = x.clone()
            kinds = [NOISE_KINDS[i % len(NOISE_KINDS)] for i in range(k)]
            for kind in NOISE_KINDS:
                rows = [i for i, name in enumerate(kinds) if name == kind]
                if rows:
                    noise = noise_seeds(len(rows), x.shape[-1], kind, generator=self.generator)
                    x[rows] = noise.to(x.device, x.dtype)
        return x

    def state_dict(self) -> dict[str, Any]:
        return {"stream": self.stream.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state["stream"])
        self.generator.set_state(state["generator"])


class ImagesOnly(Wrapped):
    """An unlabeled BatchStream that yields images only."""

    def __next__(self) -> torch.Tensor:
        return next(self.stream)[0]


class ChannelsLast(Wrapped):
    """Hands batches over in channels_last memory format (faster convolutions)."""

    def __next__(self) -> Any:
        item = next(self.stream)
        if isinstance(item, tuple):
            return (item[0].contiguous(memory_format=torch.channels_last), *item[1:])
        return item.contiguous(memory_format=torch.channels_last)


def stage_ood_seeds(cfg: TrainConfig, data_seed: int | None = None) -> tuple[ImageDataset | None, int]:
    """The OOD seed images a stage-2 run draws from data.ood, and how many images data.ood holds (the hold-out and
    the seed bank are drawn from them); (None, 0) for stage 1 or noise seeds."""
    if cfg.stage != "stage2" or cfg.data.ood in NOISE_KINDS:
        return None, 0
    parts = ood_parts(cfg, data_seed)
    return parts[0], sum(len(p) for p in parts if p is not None)


def rank_seed(seed: int, stream: str, rank: int) -> int:
    """The seed of one random stream (`stream`: its name) of one rank, mixed from (seed, stream, rank) through
    SeedSequence: with seed*1000 + rank for the OOD noise and seed*1000 + 7 + rank for the chains, rank 7's noise
    drew rank 0's chain numbers (8 ranks, the official setting). A resumed run restores its generators' states."""
    name = int.from_bytes(stream.encode(), "little")
    return int(np.random.SeedSequence([seed, name, rank]).generate_state(1, np.uint64)[0]) >> 1


def build_streams(cfg: TrainConfig, train_set: ImageDataset, device: torch.device, rank: int,
                  world: int, data_seed: int | None = None, ood_seeds: ImageDataset | None = None) -> dict[str, Any]:
    """Per-rank streams; each holds batch_size // world images of the global batch (`data_seed`: the
    seed of the OOD hold-out split, default cfg.seed; `ood_seeds`: `stage_ood_seeds`, when already loaded)."""
    d, b = cfg.data, cfg.batch_size
    if len(train_set) < b:
        raise ValueError(f"batch_size={b} is larger than the {len(train_set)} training images of {d.dataset}")
    common = dict(rank=rank, world_size=world, device=device, num_workers=1)
    streams: dict[str, Any] = {"clf": BatchStream(train_set, b, seed=cfg.seed * 3 + 1, augment=d.clf_augment, **common)}
    if cfg.stage == "stage2":
        streams["real"] = BatchStream(train_set, b, seed=cfg.seed * 3 + 2, augment=d.gen_augment, **common)
        if d.ood in NOISE_KINDS:
            noise_seed = rank_seed(cfg.seed, "ood-noise", rank)
            streams["ood"] = NoiseStream(d.ood, b // world, d.image_size, noise_seed, device)
        else:
            seeds = ood_seeds if ood_seeds is not None else stage_ood_seeds(cfg, data_seed)[0]
            if len(seeds) < b:
                raise ValueError(f"batch_size={b} is larger than the {len(seeds)} OOD seed images of data.ood={d.ood}")
            streams["ood"] = ImagesOnly(BatchStream(seeds, b, seed=cfg.seed * 3 + 3, augment=d.ood_augment, **common))
            if d.ood_noise_fraction:
                streams["ood"] = WithNoise(streams["ood"], d.ood_noise_fraction, rank_seed(cfg.seed, "ood-mix", rank))
    if cfg.channels_last:
        streams = {k: ChannelsLast(s) for k, s in streams.items()}
    return streams
