"""Class-folder directories and .tar/.tar.gz archives (`[top/][<split>/]<class>/*.jpg`), eager or lazy.

Images are decoded once into an in-memory uint8 tensor (4x smaller than float, and indexing a
tensor beats a DataLoader with workers for 32x32 images); batches (`dat_core.data.streams`) become
float [0,1] on the device. Directories too large for memory load lazily (`FileImageDataset`).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..files import replacing
from ..images import POLICY_VERSION, decode_rgb
from ..logs import get_logger, progress_bar
from .datasets import ImageDataset

log = get_logger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_SPLIT_NAMES = {"train", "test", "val", "valid", "validation"}
_LISTING_VERSION = 2
"""Bump when the rules for which files and classes a folder holds change: archive caches are keyed on it."""


def _hidden(name: str) -> bool:
    """A hidden or tool folder/file (.ipynb_checkpoints, .git, __MACOSX, ._x.jpg): never a class, never an image."""
    return name.startswith((".", "__"))


def _walk(root: Path, progress: bool) -> tuple[dict[str, Path], list[str]]:
    """(relative NFC name -> path of every file, relative NFC names of folders) under `root`, following
    symlinked folders (a symlinked class or split is as real as any) and entering each folder once (loops end);
    hidden folders are not entered."""
    files: dict[str, Path] = {}
    dirs: list[str] = []
    seen: set[tuple[int, int]] = set()
    walk = os.walk(root, followlinks=True)
    for top, subdirs, names in progress_bar(walk, desc=f"scanning {root}", unit=" folders", disable=not progress):
        st = os.stat(top)
        if (st.st_dev, st.st_ino) in seen:
            subdirs.clear()
            continue
        seen.add((st.st_dev, st.st_ino))
        subdirs[:] = [d for d in subdirs if not _hidden(d)]
        rel = Path(top).relative_to(root).as_posix()
        if rel != ".":
            dirs.append(unicodedata.normalize("NFC", rel))
        for n in names:
            files[unicodedata.normalize("NFC", n if rel == "." else f"{rel}/{n}")] = Path(top) / n
    return files, dirs


def _decode(data: bytes, image_size: int | None) -> np.ndarray:
    """Bytes -> HxWx3 uint8 RGB under `dat_core.images` (the policy explanations use): a file above the pixel
    cap raises like a corrupt one, so it is skipped and named (or, lazily, named when read)."""
    return decode_rgb(data, image_size, name="the file")


# PIL releases the GIL while decoding and resizing, so threads decode a batch in parallel.
_DECODE_POOL = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="dat-decode")


def check_image_size(image_size: object) -> None:
    """Refuse a size of no pixels before any file is read: image_size=0 decoded every file, then named each one
    unreadable (or, lazily, at the first batch)."""
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer))
                                   or image_size < 1):
        raise ValueError(f"image_size must be a whole number of pixels >= 1 (or None: the files' own size), "
                         f"got {image_size!r}")


class LazyImages:
    """Image files that index like a uint8 Nx3xSxS tensor: `images[idx]` reads and decodes just
    those files (in a small thread pool), resized on the shorter side to S and center-cropped.

    `idx` may be an int, a slice, or a list / array / tensor of indices or a boolean mask.
    """

    dtype = torch.uint8
    ndim = 4

    def __init__(self, files: list[Path], image_size: int):
        check_image_size(image_size)
        self.files, self.image_size = list(files), int(image_size)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.files), 3, self.image_size, self.image_size))

    def __len__(self) -> int:
        return len(self.files)

    def positions(self, index: object) -> list[int]:
        """The file positions an index selects (nothing is decoded)."""
        if isinstance(index, slice):
            return list(range(len(self.files))[index])
        idx = torch.as_tensor(index)
        if idx.dtype == torch.bool and idx.shape != (len(self.files),):   # as a tensor's mask: no silent prefix
            raise IndexError(f"a mask of shape {tuple(idx.shape)} for {len(self.files)} images")
        return (idx.nonzero() if idx.dtype == torch.bool else idx.long()).flatten().tolist()

    def _read(self, path: Path) -> np.ndarray:
        try:
            return _decode(path.read_bytes(), self.image_size)
        except Exception as e:  # no skipping at this point: name the file and stop
            raise ValueError(f"cannot decode {path} ({type(e).__name__}: {e}); remove or replace it") from e

    def _stack(self, arrays: list[np.ndarray]) -> torch.Tensor:
        if not arrays:
            return torch.empty((0, *self.shape[1:]), dtype=torch.uint8)
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    def __getitem__(self, index: object) -> torch.Tensor:
        if isinstance(index, (int, np.integer)) or (torch.is_tensor(index) and index.ndim == 0):
            return self._stack([self._read(self.files[int(index)])])[0]  # no pool: safe in forked workers
        return self._stack(list(_DECODE_POOL.map(self._read, [self.files[i] for i in self.positions(index)])))


class FileImageDataset(ImageDataset):
    """An ImageDataset over files (a directory too large for memory: ImageNet at 256 px is ~250 GB
    as uint8): `images` is LazyImages, so a batch is decoded only when indexed, and `subset` /
    train_val_split stay lazy. A BatchStream with num_workers > 0 decodes the next batch in its
    background thread while the current one trains. Unreadable files raise when first read."""

    def __init__(self, images: LazyImages, labels: torch.Tensor, class_names: list[str]):
        if labels.shape != (len(images),):
            raise ValueError(f"labels shape {tuple(labels.shape)} does not match {len(images)} files")
        self.images, self.labels = images, labels.long()
        self.class_names = [str(n) for n in class_names]  # plain str: NumPy strings would poison state files
        self.skipped: list[str] = []

    def subset(self, indices: torch.Tensor | np.ndarray | list[int]) -> FileImageDataset:
        positions = self.images.positions(indices)
        files = LazyImages([self.images.files[i] for i in positions], self.images.image_size)
        return FileImageDataset(files, self.labels[positions], self.class_names)


def _select(names: list[str], split: str | None, labeled: bool,
            where: str) -> tuple[list[tuple[str, str | None]], tuple[str, ...]]:
    """Pick the images of `split` and their class folder from relative paths (see load_image_folder);
    also returns the folders above the class level (an extra top folder, the split)."""
    parts = [n.split("/") for n in names]
    depth = (1 if split else 0) + (2 if labeled else 1)
    tops = {p[0] for p in parts}
    prefix: tuple[str, ...] = ()
    if len(tops) == 1 and split not in tops and all(len(p) > depth for p in parts):
        prefix = (parts[0][0],)
        parts = [p[1:] for p in parts]  # one extra top-level folder, e.g. cifar10_jpg/
    if split is not None:
        found = sorted({p[0] for p in parts if len(p) > 1})
        if split not in found:
            raise ValueError(f"split {split!r} not found in {where}; top-level folders: {found[:20]}")
        keep = [i for i, p in enumerate(parts) if p[0] == split and len(p) > 1]
        names, parts, prefix = [names[i] for i in keep], [parts[i][1:] for i in keep], (*prefix, split)
    if not labeled:
        splits = sorted({p[0] for p in parts if len(p) > 1} & _SPLIT_NAMES) if split is None else []
        if len(splits) > 1:
            raise ValueError(f"{where} holds splits {splits}, whose images would be mixed into one unlabeled set: "
                             f"point at one split's folder ({'/'.join((*prefix, splits[-1]))}/ in it; extract an "
                             f"archive first) or pass split=...")
        return [(n, None) for n in names], prefix
    folders = {p[0] for p in parts if len(p) > 1}
    if split is None and folders and folders <= _SPLIT_NAMES and all(len(p) > 2 for p in parts):
        raise ValueError(f"{where} holds splits {sorted(folders)}, not classes; pass split=...")
    chosen = [(n, p[0]) for n, p in zip(names, parts) if len(p) > 1]
    if names and not chosen:
        raise ValueError(f"{where} has {len(names)} images but no <class>/ folders; pass labeled=False "
                         f"to load them unlabeled")
    return chosen, prefix


def _class_dirs(dirs: list[str], prefix: tuple[str, ...]) -> set[str]:
    """The folders at the class level (under `prefix`), images or not; hidden and __X folders are not classes."""
    out = set()
    for d in dirs:
        parts = d.strip("/").split("/")
        if len(parts) > len(prefix) and tuple(parts[:len(prefix)]) == prefix:
            name = parts[len(prefix)]
            if not _hidden(name):
                out.add(name)
    return out


class EmptyClassError(ValueError):
    """A class folder without a single usable image (empty, or every image unreadable)."""


def _check_classes(labels: torch.Tensor, classes: list[str], where: Path, allow: bool) -> None:
    counts = torch.bincount(labels[labels >= 0], minlength=len(classes)).tolist() if classes else []
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if not empty:
        return
    what = (f"class folder(s) {', '.join(empty)} in {where} have no usable image (empty, or every image "
            f"unreadable)")
    if not allow:
        raise EmptyClassError(f"{what}: such a class would be trained with zero images; remove the folder(s), "
                              f"or pass allow_empty_classes=True to keep them as classes without images")
    log.warning("%s; kept as classes without images (allow_empty_classes=True)", what)


def _cache_file(cache_dir: str | Path, path: Path, stamp: str, options: tuple) -> Path:
    key = hashlib.sha1(repr((str(path.resolve()), stamp, options)).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{path.name.split('.')[0]}-{key}.npz"


def _warn_skipped(skipped: list[str]) -> None:
    if skipped:
        more = f" (and {len(skipped) - 20} more)" if len(skipped) > 20 else ""
        log.warning("skipped %d unreadable image(s): %s%s", len(skipped), ", ".join(skipped[:20]), more)


def load_image_folder(path: str | Path, split: str | None = None, image_size: int | None = None,
                      class_names: list[str] | None = None, cache_dir: str | Path | None = None,
                      labeled: bool = True, progress: bool = True, lazy: bool = False,
                      allow_empty_classes: bool = False) -> ImageDataset:
    """Images from a directory or .tar/.tar.gz archive laid out as `[top/][<split>/]<class>/*.jpg`.

    `labeled=False` takes every image under `[top/][<split>/]` recursively with label -1 (OOD seeds); a folder
    holding several splits needs `split` (their images would be mixed). Classes are the sorted folder names,
    NFC-normalized (or `class_names`, which must match them); files are sorted by name. Symlinked folders are
    followed (each folder read once); hidden and `__X` folders and files are ignored. Archives are streamed, never
    extracted. Pixels follow `dat_core.images` (as explanations do). Unreadable images, and images above its
    pixel cap, are skipped and named in a logged warning (rank 0) and in `.skipped`. With `cache_dir`, an
    archive's decoded arrays are saved as .npz keyed by its path, size, mtime, the options and the decoding and
    listing versions, so a 60k-image archive decodes once (directories are always re-read). `lazy=True`
    (directories only, needs `image_size`) decodes nothing up front and returns a FileImageDataset; unreadable
    or over-cap files then raise when read instead of being skipped.
    A class folder that is empty, or whose images are all unreadable, raises EmptyClassError unless
    `allow_empty_classes=True` (then it is a class without images, named in a logged warning).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if lazy and not path.is_dir():
        raise ValueError(f"lazy=True reads directories only, and {path} is a file: extract the archive, "
                         f"or load it into memory with lazy=False")
    if lazy and image_size is None:
        raise ValueError("lazy=True needs image_size (every image is resized to it when read)")
    check_image_size(image_size)
    image_size = None if image_size is None else int(image_size)   # np.int64(32) keys the same cache as 32
    exts = ",".join(e[1:] for e in IMAGE_EXTENSIONS)
    layout = f"[top/]{'[<split>/]' if split else ''}{'<class>/' if labeled else '**/'}*.{{{exts}}}"
    if class_names is not None:
        class_names = [unicodedata.normalize("NFC", str(c)) for c in class_names]
    options = (split, image_size, tuple(class_names or ()), labeled, POLICY_VERSION, _LISTING_VERSION)
    cache = None
    if cache_dir is not None and path.is_file():
        st = path.stat()
        cache = _cache_file(cache_dir, path, f"{st.st_size}-{st.st_mtime_ns}", options)
        if cache.is_file():
            with np.load(cache, allow_pickle=False) as z:
                _warn_skipped(list(z["skipped"]))
                cached = ImageDataset(torch.from_numpy(z["images"]), torch.from_numpy(z["labels"]),
                                      [str(n) for n in z["class_names"]],
                                      [str(n) for n in z["skipped"]])
            if labeled:
                _check_classes(cached.labels, cached.class_names, path, allow_empty_classes)
            return cached

    def is_image(name: str) -> bool:
        return not any(map(_hidden, name.split("/"))) and name.lower().endswith(IMAGE_EXTENSIONS)

    tar = tarfile.open(path, "r:*") if path.is_file() else None
    try:
        if tar is not None:
            scan = list(progress_bar(tar, desc=f"scanning {path.name}", unit=" files", disable=not progress))
            named = [(unicodedata.normalize("NFC", m.name.removeprefix("./")), m) for m in scan]
            members = {n: m for n, m in named if m.isfile() and is_image(n)}
            dirs = [n for n, m in named if m.isdir()]
        else:
            found, dirs = _walk(path, progress)
            members = {n: p for n, p in found.items() if is_image(n) and p.is_file()}
        chosen, prefix = _select(sorted(members), split, labeled, str(path))
        folders = sorted({c for _, c in chosen if c is not None} | (_class_dirs(dirs, prefix) if chosen else set()))
        if class_names is not None and labeled:
            missing, extra = sorted(set(class_names) - set(folders)), sorted(set(folders) - set(class_names))
            if missing or extra:
                raise ValueError(f"class folders in {path} do not match class_names: missing {missing}, "
                                 f"unexpected {extra}")
        classes = list(class_names) if class_names is not None else folders
        label_of = {c: i for i, c in enumerate(classes)}
        chosen.sort(key=lambda nc: (label_of.get(nc[1], -1), nc[0]))
        if not chosen:
            raise ValueError(f"no images found in {path}" + (f" (split {split!r})" if split else "")
                             + f"; expected layout {layout}")
        if lazy:
            labels = torch.tensor([label_of.get(c, -1) for _, c in chosen], dtype=torch.long)
            if labeled:
                _check_classes(labels, classes, path, allow_empty_classes)
            files = LazyImages([members[n] for n, _ in chosen], image_size)
            return FileImageDataset(files, labels, classes if labeled else list(class_names or []))
        order = range(len(chosen))
        if tar is not None:  # read in archive order: a .tar.gz is decompressed once more, front to back
            order = sorted(order, key=lambda i: members[chosen[i][0]].offset_data)
        arrays: list[np.ndarray | None] = [None] * len(chosen)
        skipped = []
        for i in progress_bar(order, desc=f"decoding {path.name}", unit=" img", disable=not progress):
            name = chosen[i][0]
            where = f"{path}::{name}" if tar is not None else str(members[name])
            try:
                data = tar.extractfile(members[name]).read() if tar is not None else members[name].read_bytes()
                arrays[i] = _decode(data, image_size)
            except Exception as e:  # any decoder failure: report the file, keep the run going
                skipped.append(f"{where} ({type(e).__name__}: {e})")
    finally:
        if tar is not None:
            tar.close()
    skipped.sort()
    _warn_skipped(skipped)
    good = [i for i, a in enumerate(arrays) if a is not None]
    if not good:
        raise ValueError(f"none of the {len(chosen)} images in {path} could be decoded; first: {skipped[0]}")
    shapes = {arrays[i].shape for i in good}
    if len(shapes) > 1:
        raise ValueError(f"images in {path} have different sizes {sorted(shapes)[:5]}; pass image_size=")
    images = torch.from_numpy(np.stack([arrays[i] for i in good])).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([label_of.get(chosen[i][1], -1) for i in good], dtype=torch.long)
    if labeled:
        _check_classes(labels, classes, path, allow_empty_classes)
    dataset = ImageDataset(images, labels, classes if labeled else list(class_names or []), skipped)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with replacing(cache) as tmp, open(tmp, "wb") as f:  # other runs may be writing the same cache
            np.savez(f, images=images.numpy(), labels=labels.numpy(), class_names=np.array(dataset.class_names,
                     dtype=str), skipped=np.array(skipped, dtype=str))
    return dataset


