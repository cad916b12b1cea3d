"""Datasets: CIFAR python batches, class-folder dirs/archives, noise seeds, train/val split.

Images are decoded once into an in-memory uint8 tensor (4x smaller than float, and indexing a
tensor beats a DataLoader with workers for 32x32 images); batches (`dat_core.streams`) become
float [0,1] on the device. Directories too large for memory load lazily (`FileImageDataset`).
"""

from __future__ import annotations

import codecs
import hashlib
import importlib
import io
import os
import pickle
import tarfile
import urllib.error
import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

__all__ = ["ImageDataset", "FileImageDataset", "LazyImages", "load_cifar", "load_image_folder", "noise_seeds",
           "noise_dataset", "train_val_split", "CIFAR_SOURCES", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_SPLIT_NAMES = {"train", "test", "val", "valid", "validation"}


class ImageDataset(torch.utils.data.Dataset):
    """In-memory images: `images` uint8 Nx3xHxW, `labels` int64 N (-1 = unlabeled), `class_names`."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, class_names: list[str],
                 skipped: list[str] | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 Nx3xHxW, got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels shape {tuple(labels.shape)} does not match {images.shape[0]} images")
        self.images, self.labels = images, labels.long()
        self.class_names = list(class_names)
        self.skipped = list(skipped or [])  # paths of images that could not be decoded

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    @property
    def labeled(self) -> bool:
        return bool((self.labels >= 0).all())

    def subset(self, indices: torch.Tensor | np.ndarray | list[int]) -> ImageDataset:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageDataset(self.images[idx], self.labels[idx], self.class_names)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n={len(self)}, shape={tuple(self.images.shape[1:])}, "
                f"classes={len(self.class_names)})")


# --------------------------------------------------------------------------- CIFAR python batches

@dataclass(frozen=True)
class CifarSource:
    filename: str
    url: str
    md5: str
    members: dict[str, tuple[str, ...]]  # split -> batch file names inside the archive
    meta: str
    label_key: str
    names_key: str


CIFAR_SOURCES = {
    "cifar10": CifarSource("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                           "c58f30108f718f92721af3b95e74349a",
                           {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
                           "batches.meta", "labels", "label_names"),
    "cifar100": CifarSource("cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                            "eb9058c3a382ffc7106e4002c42a8d85", {"train": ("train",), "test": ("test",)},
                            "meta", "fine_labels", "fine_label_names"),
}


def _numpy_global(module: str, name: str) -> object:
    """numpy 2 moved numpy.core to numpy._core; resolve either spelling without a deprecation warning."""
    for mod in (module.replace("numpy.core", "numpy._core"), module):
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"cannot resolve {module}.{name}")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Protocol-2 pickles of bytes call _codecs.encode(str, "latin1"); allow nothing else.
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR batches: only the globals numpy arrays need; anything else is refused
    before it can run (the batches come from the internet)."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
                ("numpy", "ndarray"), ("numpy", "dtype"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if (module, name) in self._ALLOWED:
            return _numpy_global(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name}")


def _safe_unpickle(data: bytes) -> object:
    return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, dest: Path, hint: str) -> None:
    """Download to `dest.part` with a progress bar, then rename (no half files under the real name)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}") as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    f.write(chunk)
                    bar.update(len(chunk))
        tmp.replace(dest)
    except (urllib.error.URLError, OSError) as e:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"could not download {url} ({e}). {hint}") from e


def _get(d: dict, key: str) -> object:
    return d[key.encode()] if key.encode() in d else d[key]


def load_cifar(name: str, root: str | Path, split: str = "train", download: bool = True,
               md5: str | None = None) -> ImageDataset:
    """CIFAR-10/100 from the official python-batch archive (`root`: its directory or the file itself).

    A missing archive is downloaded from the official URL; its md5 (default: the official one) is
    checked before anything is read, and the pickled batches go through a numpy-only unpickler.
    CIFAR-100 uses the 100 fine labels.
    """
    if name not in CIFAR_SOURCES:
        raise ValueError(f"unknown CIFAR dataset {name!r}; choose one of {sorted(CIFAR_SOURCES)}")
    src = CIFAR_SOURCES[name]
    if split not in src.members:
        raise ValueError(f"split must be one of {sorted(src.members)}, got {split!r}")
    root = Path(root).expanduser()
    archive = root if root.is_file() or root.name.endswith((".tar.gz", ".tgz")) else root / src.filename
    hint = (f"If this machine is offline, download {src.url} (md5 {src.md5}) elsewhere and pass the "
            f"local file: load_cifar({name!r}, '/path/to/{src.filename}').")
    if not archive.is_file():
        if not download:
            raise FileNotFoundError(f"{archive} not found and download=False. {hint}")
        _download(src.url, archive, hint)
    expected = (md5 or src.md5).lower()
    actual = _md5(archive)
    if actual != expected:
        raise ValueError(f"md5 mismatch for {archive}: expected {expected}, got {actual}. The file is "
                         f"corrupt, incomplete or not {src.filename}; delete it and download again. {hint}")
    wanted = (*src.members[split], src.meta)
    with tarfile.open(archive, "r:*") as tar:  # read each member as the scan reaches it: one pass over the .gz
        raw = {Path(m.name).name: tar.extractfile(m).read()
               for m in tqdm(tar, desc=f"reading {name} {split}", unit=" files")
               if m.isfile() and Path(m.name).name in wanted}
    for member in wanted:
        if member not in raw:
            raise ValueError(f"{archive} has no member {member!r}; is it the official {src.filename}?")
    batches = [_safe_unpickle(raw[m]) for m in src.members[split]]
    names = _get(_safe_unpickle(raw[src.meta]), src.names_key)
    class_names = [n.decode() if isinstance(n, bytes) else n for n in names]
    data = np.concatenate([np.asarray(_get(b, "data"), dtype=np.uint8) for b in batches])
    labels = np.concatenate([np.asarray(_get(b, src.label_key), dtype=np.int64) for b in batches])
    return ImageDataset(torch.from_numpy(data.reshape(-1, 3, 32, 32)), torch.from_numpy(labels), class_names)


# --------------------------------------------------------------------------- class-folder dirs and archives

def _decode(data: bytes, image_size: int | None) -> np.ndarray:
    """Bytes -> HxWx3 uint8 RGB; 16-bit grayscale is scaled, not clipped; optional resize + center crop."""
    img = Image.open(io.BytesIO(data))
    img.load()
    if img.mode.startswith("I"):  # 16/32-bit grayscale: scale 0..65535 to 0..255
        arr = np.asarray(img, dtype=np.float64)
        scale = 257.0 if img.mode.startswith("I;16") or arr.max() > 255 else 1.0
        img = Image.fromarray(np.clip(arr / scale + 0.5, 0, 255).astype(np.uint8))
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # avoids PIL's palette-transparency warning
    img = img.convert("RGB")
    if image_size is not None and img.size != (image_size, image_size):
        w, h = img.size
        s = image_size / min(w, h)
        nw, nh = max(image_size, round(w * s)), max(image_size, round(h * s))
        img = img.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - image_size) // 2, (nh - image_size) // 2
        img = img.crop((left, top, left + image_size, top + image_size))
    return np.asarray(img, dtype=np.uint8)


# PIL releases the GIL while decoding and resizing, so threads decode a batch in parallel.
_DECODE_POOL = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="dat-decode")


class LazyImages:
    """Image files that index like a uint8 Nx3xSxS tensor: `images[idx]` reads and decodes just
    those files (in a small thread pool), resized on the shorter side to S and center-cropped.

    `idx` may be an int, a slice, or a list / array / tensor of indices or a boolean mask.
    """

    dtype = torch.uint8
    ndim = 4

    def __init__(self, files: list[Path], image_size: int):
        self.files, self.image_size = list(files), image_size

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
        self.class_names = list(class_names)
        self.skipped: list[str] = []

    def subset(self, indices: torch.Tensor | np.ndarray | list[int]) -> FileImageDataset:
        positions = self.images.positions(indices)
        files = LazyImages([self.images.files[i] for i in positions], self.images.image_size)
        return FileImageDataset(files, self.labels[positions], self.class_names)


def _select(names: list[str], split: str | None, labeled: bool, where: str) -> list[tuple[str, str | None]]:
    """Pick the images of `split` and their class folder from relative paths (see load_image_folder)."""
    parts = [n.split("/") for n in names]
    depth = (1 if split else 0) + (2 if labeled else 1)
    tops = {p[0] for p in parts}
    if len(tops) == 1 and split not in tops and all(len(p) > depth for p in parts):
        parts = [p[1:] for p in parts]  # one extra top-level folder, e.g. cifar10_jpg/
    if split is not None:
        found = sorted({p[0] for p in parts if len(p) > 1})
        if split not in found:
            raise ValueError(f"split {split!r} not found in {where}; top-level folders: {found[:20]}")
        keep = [i for i, p in enumerate(parts) if p[0] == split and len(p) > 1]
        names, parts = [names[i] for i in keep], [parts[i][1:] for i in keep]
    if not labeled:
        return [(n, None) for n in names]
    folders = {p[0] for p in parts if len(p) > 1}
    if split is None and folders and folders <= _SPLIT_NAMES and all(len(p) > 2 for p in parts):
        raise ValueError(f"{where} holds splits {sorted(folders)}, not classes; pass split=...")
    chosen = [(n, p[0]) for n, p in zip(names, parts) if len(p) > 1]
    if names and not chosen:
        raise ValueError(f"{where} has {len(names)} images but no <class>/ folders; pass labeled=False "
                         f"to load them unlabeled")
    return chosen


def _cache_file(cache_dir: str | Path, path: Path, stamp: str, options: tuple) -> Path:
    key = hashlib.sha1(repr((str(path.resolve()), stamp, options)).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{path.name.split('.')[0]}-{key}.npz"


def _warn_skipped(skipped: list[str]) -> None:
    if skipped:
        more = f" (and {len(skipped) - 20} more)" if len(skipped) > 20 else ""
        warnings.warn(f"skipped {len(skipped)} unreadable image(s): " + ", ".join(skipped[:20]) + more,
                      stacklevel=3)


def load_image_folder(path: str | Path, split: str | None = None, image_size: int | None = None,
                      class_names: list[str] | None = None, cache_dir: str | Path | None = None,
                      labeled: bool = True, progress: bool = True, lazy: bool = False) -> ImageDataset:
    """Images from a directory or .tar/.tar.gz archive laid out as `[top/][<split>/]<class>/*.jpg`.

    `labeled=False` takes every image under `[top/][<split>/]` recursively with label -1 (OOD seeds).
    Classes are the sorted folder names (or `class_names`, which must match them); files are sorted
    by name. Archives are streamed, never extracted. Unreadable images are skipped and named in a
    warning and in `.skipped`. With `cache_dir`, an archive's decoded arrays are saved as .npz keyed
    by its path, size, mtime and the options, so a 60k-image archive decodes once (directories are
    always re-read). `lazy=True` (directories only, needs `image_size`) decodes nothing up front and
    returns a FileImageDataset; unreadable files then raise when read instead of being skipped.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if lazy and not path.is_dir():
        raise ValueError(f"lazy=True reads directories only, and {path} is a file: extract the archive, "
                         f"or load it into memory with lazy=False")
    if lazy and image_size is None:
        raise ValueError("lazy=True needs image_size (every image is resized to it when read)")
    exts = ",".join(e[1:] for e in IMAGE_EXTENSIONS)
    layout = f"[top/]{'[<split>/]' if split else ''}{'<class>/' if labeled else '**/'}*.{{{exts}}}"
    options = (split, image_size, tuple(class_names or ()), labeled)
    cache = None
    if cache_dir is not None and path.is_file():
        st = path.stat()
        cache = _cache_file(cache_dir, path, f"{st.st_size}-{st.st_mtime_ns}", options)
        if cache.is_file():
            with np.load(cache, allow_pickle=False) as z:
                _warn_skipped(list(z["skipped"]))
                return ImageDataset(torch.from_numpy(z["images"]), torch.from_numpy(z["labels"]),
                                    list(z["class_names"]), list(z["skipped"]))

    def is_image(name: str) -> bool:
        base = name.rsplit("/", 1)[-1]
        return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)

    tar = tarfile.open(path, "r:*") if path.is_file() else None
    try:
        if tar is not None:
            scan = tqdm(tar, desc=f"scanning {path.name}", unit=" files", disable=not progress)
            members = {m.name.removeprefix("./"): m for m in scan if m.isfile() and is_image(m.name)}
        else:
            members = {p.relative_to(path).as_posix(): p for p in
                       tqdm(sorted(path.rglob("*")), desc=f"scanning {path}", unit=" files", disable=not progress)
                       if p.is_file() and is_image(p.name)}
        chosen = _select(sorted(members), split, labeled, str(path))
        folders = sorted({c for _, c in chosen if c is not None})
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
            files = LazyImages([members[n] for n, _ in chosen], image_size)
            return FileImageDataset(files, labels, classes if labeled else list(class_names or []))
        order = range(len(chosen))
        if tar is not None:  # read in archive order: a .tar.gz is decompressed once more, front to back
            order = sorted(order, key=lambda i: members[chosen[i][0]].offset_data)
        arrays: list[np.ndarray | None] = [None] * len(chosen)
        skipped = []
        for i in tqdm(order, desc=f"decoding {path.name}", unit=" img", disable=not progress):
            name = chosen[i][0]
            where = f"{path}::{name}" if tar is not None else str(path / name)
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
    dataset = ImageDataset(images, labels, classes if labeled else list(class_names or []), skipped)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp.npz")
        np.savez(tmp, images=images.numpy(), labels=labels.numpy(), class_names=np.array(dataset.class_names,
                 dtype=str), skipped=np.array(skipped, dtype=str))
        tmp.replace(cache)
    return dataset


# --------------------------------------------------------------------------- synthetic OOD seeds

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
    raise ValueError(f"kind must be 'uniform' or 'lowfreq', got {kind!r}")


def noise_dataset(n: int, image_size: int, kind: str = "uniform", seed: int = 0) -> ImageDataset:
    """noise_seeds quantized to uint8 as an unlabeled ImageDataset, so noise feeds a BatchStream."""
    x = noise_seeds(n, image_size, kind, seed)
    return ImageDataset(x.mul(255).round_().to(torch.uint8), torch.full((n,), -1, dtype=torch.long), [])


# --------------------------------------------------------------------------- validation split

def train_val_split(dataset: ImageDataset, val_size: int | float, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
    """Deterministic, disjoint (train, val) carved from train data; `val_size` is a count or a fraction.

    Labeled data is stratified: each class gives its proportional share (largest-remainder rounding,
    so the total is exact and balanced classes are all represented). Both parts keep the original order.
    """
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
    is_val = np.zeros(n, dtype=bool)
    is_val[val] = True
    return dataset.subset(np.flatnonzero(~is_val)), dataset.subset(np.flatnonzero(is_val))
