"""The in-memory dataset every loader returns, and the deterministic train/validation split."""

from __future__ import annotations

import numpy as np
import torch


class ImageDataset(torch.utils.data.Dataset):
    """In-memory images: `images` uint8 Nx3xHxW, `labels` int64 N (-1 = unlabeled), `class_names`."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, class_names: list[str],
                 skipped: list[str] | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 Nx3xHxW, got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels shape {tuple(labels.shape)} does not match {images.shape[0]} images")
        self.images, self.labels = images, labels.long()
        self.class_names = [str(n) for n in class_names]  # plain str: NumPy strings would poison state files
        self.skipped = list(skipped or [])  # paths of images that could not be decoded

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    @property
    def labeled(self) -> bool:
        return bool((self.labels >= 0).all())

    def subset(self, indices: torch.Tensor | np.ndarray | list[int]) -> ImageDataset:
        """The images at `indices`, or where a boolean mask is True (as `FileImageDataset.subset`: cast to long,
        a mask read as the indices 0 and 1)."""
        idx = torch.as_tensor(indices)
        idx = idx if idx.dtype == torch.bool else idx.long()
        return ImageDataset(self.images[idx], self.labels[idx], self.class_names)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n={len(self)}, shape={tuple(self.images.shape[1:])}, "
                f"classes={len(self.class_names)})")


def train_val_split(dataset: ImageDataset, val_size: int | float, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
    """Deterministic, disjoint (train, val) carved from train data; `val_size` is a count or a fraction.

    Labeled data is stratified: each class gives its proportional share (largest-remainder rounding,
    so the total is exact and balanced classes are all represented). Both parts keep the original order.
    """
    is_val = np.zeros(len(dataset), dtype=bool)
    is_val[val_indices(dataset, val_size, seed)] = True
    return dataset.subset(np.flatnonzero(~is_val)), dataset.subset(np.flatnonzero(is_val))


def val_indices(dataset: ImageDataset, val_size: int | float, seed: int = 0) -> np.ndarray:
    """The indices `train_val_split` holds out (unsorted). A smaller size is not always a subset of a larger one:
    the per-class shares are rounded by largest remainder."""
    n = len(dataset)
    n_val = round(val_size * n) if isinstance(val_size, float) else int(val_size)
    if not 0 < n_val < n:
        raise ValueError(f"val_size {val_size} gives {n_val} of {n} images; need 0 < val < {n}")
    rng = np.random.default_rng(seed)
    labels = dataset.labels.numpy()
    if not dataset.labeled:
        val = rng.permutation(n)[:n_val]
    else:
        classes, counts = np.unique(labels, return_counts=True)
        exact = counts * n_val / n
        take = np.floor(exact).astype(int)
        take[np.argsort(-(exact - take), kind="stable")[:n_val - take.sum()]] += 1
        val = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)])
    return val
