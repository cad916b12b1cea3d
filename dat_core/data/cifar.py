"""The official CIFAR-10/100 python-batch archives: download, md5 check, and the batches read as data (never
unpickled: `pickle_reader`), checked for the shape CIFAR has."""

from __future__ import annotations

import hashlib
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..files import replacing
from ..logs import progress_bar
from .datasets import ImageDataset
from .pickle_reader import read_pickle_data


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


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class DownloadError(FileNotFoundError, RuntimeError):
    """The archive is not here and could not be fetched (offline?): a missing file, said in one line by the CLIs."""


def _download(url: str, dest: Path, hint: str) -> None:
    """Download to a private file beside `dest` with a progress bar, then rename (no half files under the real
    name; ranks or runs downloading at once do not clash). A failed download leaves no folder it made."""
    made = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]   # deepest first
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with replacing(dest) as tmp, urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            with progress_bar(total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}") as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    f.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as e:
        for folder in made:
            try:
                folder.rmdir()   # only while empty: another run may be downloading there too
            except OSError:
                break
        raise DownloadError(f"could not download {url} ({e}). {hint}") from e


def _get(d: dict, key: str) -> object:
    return d[key.encode()] if key.encode() in d else d[key]


def load_cifar(name: str, root: str | Path, split: str = "train", download: bool = True,
               md5: str | None = None) -> ImageDataset:
    """CIFAR-10/100 from the official python-batch archive (`root`: its directory or the file itself).

    A missing archive is downloaded from the official URL; its md5 (default: the official one) is
    checked before anything is read, and the pickled batches are read as data, never unpickled
    (`pickle_reader`); their contents are checked for CIFAR's shape.
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
               for m in progress_bar(tar, desc=f"reading {name} {split}", unit=" files")
               if m.isfile() and Path(m.name).name in wanted}
    for member in wanted:
        if member not in raw:
            raise ValueError(f"{archive} has no member {member!r}; is it the official {src.filename}?")
    batches = [_batch(read_pickle_data(raw[m]), m, src) for m in src.members[split]]
    class_names = _class_names(read_pickle_data(raw[src.meta]), name, src)
    data = np.concatenate([d for d, _ in batches])
    labels = np.concatenate([y for _, y in batches])
    if labels.size and not (0 <= labels.min() and labels.max() < len(class_names)):
        raise ValueError(f"{archive}: labels must be 0–{len(class_names) - 1}, found {labels.min()}–{labels.max()}")
    return ImageDataset(torch.from_numpy(data.reshape(-1, 3, 32, 32)), torch.from_numpy(labels), class_names)


def _batch(d: object, member: str, src: CifarSource) -> tuple[np.ndarray, np.ndarray]:
    """A batch's (N, 3072) uint8 pixels and N labels, refused when it is not shaped so."""
    try:
        data, labels = np.asarray(_get(d, "data")), np.asarray(_get(d, src.label_key))
    except (KeyError, TypeError) as e:
        raise ValueError(f"CIFAR batch {member!r} has no {e} entry; is it the official {src.filename}?") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"CIFAR batch {member!r} holds {data.dtype} pixels of shape {data.shape}, not (N, 3072) "
                         f"uint8; is it the official {src.filename}?")
    if labels.ndim != 1 or len(labels) != len(data) or labels.dtype.kind not in "iu":
        raise ValueError(f"CIFAR batch {member!r} has {labels.shape} labels for {len(data)} images")
    return data, labels.astype(np.int64)


def _class_names(meta: object, name: str, src: CifarSource) -> list[str]:
    try:
        names = list(_get(meta, src.names_key))
    except (KeyError, TypeError):
        raise ValueError(f"{src.meta} has no {src.names_key!r}; is it the official {src.filename}?") from None
    expected = 10 if name == "cifar10" else 100
    if len(names) != expected or not all(isinstance(n, (bytes, str)) for n in names):
        raise ValueError(f"{src.meta} names {len(names)} classes; {name} has {expected}")
    return [n.decode() if isinstance(n, bytes) else n for n in names]
