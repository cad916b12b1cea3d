"""The official CIFAR-10/100 python-batch archives: download, md5 check, and a numpy-only unpickler."""

from __future__ import annotations

import codecs
import hashlib
import importlib
import io
import pickle
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
               for m in progress_bar(tar, desc=f"reading {name} {split}", unit=" files")
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
