"""The data forms every evaluation accepts, cut into batches, and one no-grad pass that collects logits.

Data arguments ("batches") may be any of:
- an iterable of `(x, y)` batches (x: [0,1] float or uint8 NCHW, y: int64 labels),
- an iterable of image tensors (unlabeled, e.g. OOD sets),
- a `(images, labels)` pair of tensors, a bare image tensor, or any object with `.images` and
  `.labels` (such as `dat_core.data.ImageDataset`); these are cut into batches by `iterate`.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Iterator

import torch
import torch.nn as nn
from tqdm import tqdm

from ..pgd import attack_mode, check_images, check_labels
from ..runtime import model_device


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


def _unpack(batch: Any, device: torch.device, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One batch on `device`, checked as PGD checks its inputs: images 0..255 as floats, or labels past the
    model's classes, would otherwise give a silently wrong accuracy."""
    x, y = (batch, None) if isinstance(batch, torch.Tensor) else (batch[0], batch[1])
    x = _to_float(x.to(device))
    check_images(x)
    if y is None:
        return x, None
    y = torch.as_tensor(y).to(device)
    check_labels(model, x, y)
    return x, y.long()


def _bar(data: Any, desc: str, progress: bool, batch_size: int = 256) -> Iterable:
    batches = as_batches(data, batch_size)
    total = len(batches) if hasattr(batches, "__len__") else None
    if total is None and batches is not data:  # cut by `iterate`: count the images
        images = data if isinstance(data, torch.Tensor) else getattr(data, "images", None)
        images = data[0] if images is None else images
        total = math.ceil(len(images) / batch_size)
    return tqdm(batches, desc=desc, total=total, disable=not progress, leave=False, unit="batch")


def _forward(model: nn.Module, x: torch.Tensor, autocast: bool, y: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 logits, no grad; with labels `y`, checked against the logits' classes (`check_classes`)."""
    with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        logits = model(x).float()
    check_classes(logits.shape[1], y)
    return logits


def check_classes(num_classes: int, y: torch.Tensor | None) -> None:
    """Labels inside the model's outputs: `_unpack` reads the classes from a config, which a bare nn.Module has not,
    and a label past its outputs counted as a wrong answer, silently."""
    if y is not None and y.numel() and int(y.max()) >= num_classes:
        raise ValueError(f"labels out of range: got {int(y.max())} for {num_classes} classes (the model's outputs)")


def _collect(model: nn.Module, data: Any, autocast: bool, progress: bool, desc: str,
             batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One no-grad pass: (N, K) float32 CPU logits and the labels (None if unlabeled)."""
    device, logits, labels = model_device(model), [], []
    with attack_mode(model):
        for batch in _bar(data, desc, progress, batch_size):
            x, y = _unpack(batch, device, model)
            logits.append(_forward(model, x, autocast, y).cpu())
            if y is not None:
                labels.append(y.cpu())
    if not logits:
        raise ValueError("no data: the batches were empty")
    return torch.cat(logits), torch.cat(labels) if len(labels) == len(logits) else None
