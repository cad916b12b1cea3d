"""Data layer: CIFAR archives, class-folder archives and lazy directories, splits, noise seeds,
augmentations, batch streams."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import re
import tarfile
import threading
from dataclasses import replace
from functools import partial
from http.server import HTTPServer, SimpleHTTPRequestHandler

import numpy as np
import pytest
import torch
from PIL import Image

from dat_core import data
from dat_core.data import (
    FileImageDataset,
    ImageDataset,
    LazyImages,
    cifar,
    folders,
    load_cifar,
    load_image_folder,
    noise_dataset,
    noise_seeds,
    train_val_split,
)
from dat_core.data.augment import augment, cutout, hflip, random_crop, random_resized_crop
from dat_core.data.pickle_reader import PickleDataError, read_pickle_data
from dat_core.data.streams import BatchStream
from dat_core.evaluation import as_batches
from dat_core.training.config import load_config
from dat_core.training.data import load_train_val, ood_split

# --------------------------------------------------------------------------- fixtures

def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def _cifar_batch(n: int, label_key: str, offset: int, protocol: int) -> bytes:
    rng = np.random.default_rng(offset)
    d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
         label_key.encode(): [(offset + i) % 10 for i in range(n)], b"batch_label": b"x"}
    return pickle.dumps(d, protocol=protocol)


def _make_cifar(tmp_path, name: str = "cifar10", protocol: int = 2, evil: bytes | None = None):
    src = data.CIFAR_SOURCES[name]
    path = tmp_path / src.filename
    folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    with tarfile.open(path, "w:gz") as tar:
        for i, m in enumerate(src.members["train"]):
            _add(tar, f"{folder}/{m}", evil or _cifar_batch(4, src.label_key, 10 * i, protocol))
        _add(tar, f"{folder}/{src.members['test'][0]}", _cifar_batch(3, src.label_key, 99, protocol))
        names = [f"class{k}".encode() for k in range(10 if name == "cifar10" else 100)]
        _add(tar, f"{folder}/{src.meta}", pickle.dumps({src.names_key.encode(): names}, protocol=protocol))
    return path, hashlib.md5(path.read_bytes()).hexdigest()


def _jpeg(color: tuple[int, int, int], size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "JPEG", quality=95)
    return buf.getvalue()


CLASSES = ["bird", "cat", "dog"]


def _make_folder_tar(tmp_path, top: str = "toy_jpg", corrupt: bool = False):
    """top/{train,test}/<class>/NNNN.jpg, class k colored (80k, 0, 0); plus a 16-bit and a palette PNG."""
    path = tmp_path / "toy.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for split, n in (("train", 4), ("test", 2)):
            for k, c in enumerate(CLASSES):
                for i in range(n):
                    _add(tar, f"{top}/{split}/{c}/{i:04d}.jpg", _jpeg((80 * k, 0, 0)))
        buf = io.BytesIO()
        Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(buf, "PNG")  # 16-bit gray: white
        _add(tar, f"{top}/test/dog/9998.png", buf.getvalue())
        buf = io.BytesIO()
        Image.new("P", (8, 8), 0).save(buf, "PNG")
        _add(tar, f"{top}/test/dog/9999.png", buf.getvalue())
        if corrupt:
            _add(tar, f"{top}/train/cat/broken.jpg", b"\xff\xd8 not really a jpeg")
    return path


# --------------------------------------------------------------------------- CIFAR archives

@pytest.mark.parametrize("name,protocol", [("cifar10", 2), ("cifar100", pickle.HIGHEST_PROTOCOL)])
def test_cifar_archive_loads_shapes_labels(tmp_path, name, protocol):
    path, md5 = _make_cifar(tmp_path, name, protocol)
    train = load_cifar(name, tmp_path, "train", download=False, md5=md5)  # directory holding the archive
    test = load_cifar(name, path, "test", download=False, md5=md5)        # the archive itself
    n_train = 4 * len(data.CIFAR_SOURCES[name].members["train"])
    assert train.images.shape == (n_train, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (3, 3, 32, 32) and test.labels.dtype == torch.int64
    assert test.labels.tolist() == [99 % 10, 100 % 10, 101 % 10]
    assert len(train.class_names) == (10 if name == "cifar10" else 100) and train.class_names[1] == "class1"
    raw = pickle.loads(_cifar_batch(4, data.CIFAR_SOURCES[name].label_key, 0, 2))[b"data"]
    assert torch.equal(train.images[:4], torch.from_numpy(raw.reshape(4, 3, 32, 32)))
    img, label = train[1]
    assert img.shape == (3, 32, 32) and label == 1


def test_cifar_md5_mismatch_names_file_and_both_hashes(tmp_path):
    path, md5 = _make_cifar(tmp_path)
    with pytest.raises(ValueError) as e:
        load_cifar("cifar10", tmp_path, download=False)  # the official md5 cannot match a toy archive
    msg = str(e.value)
    assert "md5 mismatch" in msg and str(path) in msg and md5 in msg
    assert data.CIFAR_SOURCES["cifar10"].md5 in msg


def test_cifar_missing_offline_gives_hint(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="pass the local file"):
        load_cifar("cifar10", tmp_path, download=False)
    src = data.CIFAR_SOURCES["cifar10"]
    monkeypatch.setitem(data.CIFAR_SOURCES, "cifar10", replace(src, url="http://127.0.0.1:9/x"))
    with pytest.raises(RuntimeError, match="could not download.*offline"):
        load_cifar("cifar10", tmp_path / "dl")
    assert not (tmp_path / "dl").exists()  # no partial file, nor the folder made for it, left behind


def test_cifar_download_from_loopback_then_md5_check(tmp_path, monkeypatch):
    serve = tmp_path / "serve"
    serve.mkdir()
    _, md5 = _make_cifar(serve)
    server = HTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(serve)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        src = data.CIFAR_SOURCES["cifar10"]
        url = f"http://127.0.0.1:{server.server_port}/{src.filename}"
        monkeypatch.setitem(data.CIFAR_SOURCES, "cifar10", replace(src, url=url))
        ds = load_cifar("cifar10", tmp_path / "dl", "test", md5=md5)
    finally:
        server.shutdown()
        server.server_close()
    assert (tmp_path / "dl" / src.filename).read_bytes() == (serve / src.filename).read_bytes()
    assert ds.images.shape == (3, 3, 32, 32)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_refuses_malicious_pickle_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({b"data": _Evil(str(marker))}, protocol=2)
    _, md5 = _make_cifar(tmp_path, evil=evil)
    with pytest.raises(PickleDataError, match="system"):
        load_cifar("cifar10", tmp_path, download=False, md5=md5)
    assert not marker.exists()
    with pytest.raises(PickleDataError):  # and no codec trickery through _codecs.encode
        read_pickle_data(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x03\x00\x00\x00hex\x86R.")


def test_cifar_batches_are_read_as_data_never_unpickled(tmp_path):
    """The batches went through a restricted pickle.Unpickler: it still called the functions it allowed, and a
    BUILD on the allowed `_codecs.encode` stand-in set its __defaults__ for the rest of the process. Now no
    unpickler runs at all, and what the reader gives equals what pickle gives for every protocol."""
    path, md5 = _make_cifar(tmp_path)
    assert load_cifar("cifar10", path, "test", download=False, md5=md5).images.shape == (3, 3, 32, 32)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        obj = {b"data": np.arange(24, dtype=np.uint8).reshape(2, 12), "labels": [1, 2**40, -3], "f": 1.5,
               "t": (b"x", None, True), "be": np.arange(3, dtype=">i4"), "s": np.float32(2.5), "F": np.ones((2, 3)).T}
        got = read_pickle_data(pickle.dumps(obj, protocol=protocol))
        assert got.keys() == obj.keys() and got["labels"] == obj["labels"] and got["t"] == obj["t"]
        for k in (b"data", "be", "F"):
            assert got[k].dtype == obj[k].dtype and np.array_equal(got[k], obj[k]), (protocol, k)
        assert got["s"] == np.float32(2.5) and got["f"] == 1.5
    # the official batches: written by Python 2 (str keys and data as BINSTRING, I00 for False), read as bytes
    py2 = (b"\x80\x02}q\x01(U\x04dataq\x02cnumpy.core.multiarray\n_reconstruct\nq\x03cnumpy\nndarray\nq\x04K\x00"
           b"\x85U\x01b\x87Rq\x05(K\x01K\x01K\x03\x86cnumpy\ndtype\nq\x06U\x02u1K\x00K\x01\x87Rq\x07(K\x03U\x01|NNNJ"
           b"\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tbI00\nT\x03\x00\x00\x00\x01\x02\xfftbU\x06labelsq\x08]q\t(K\x07e"
           b"u.")
    assert pickle.loads(py2, encoding="bytes")[b"labels"] == [7]
    got = read_pickle_data(py2)
    assert got[b"labels"] == [7] and got[b"data"].tolist() == [[1, 2, 255]]
    # BUILD on a named global (the stand-in's __defaults__), object arrays, other callables: refused
    for bad in (b"\x80\x02c_codecs\nencode\nN}X\x0c\x00\x00\x00__defaults__X\x04\x00\x00\x00utf8\x85s\x86b.",
                pickle.dumps(np.array([{}], dtype=object), protocol=2), pickle.dumps(print, protocol=2),
                b"\x80\x02]q\x00h\x00a.", b"\x80\x02K\x01"):
        with pytest.raises(PickleDataError):
            read_pickle_data(bad)


@pytest.mark.parametrize("fault,message", [
    ("label", "labels must be 0–9"), ("width", "not \\(N, 3072\\) uint8"), ("names", "names 3 classes"),
    ("count", "labels for 4 images"), ("key", "no 'labels' entry")])
def test_cifar_contents_of_another_shape_are_refused_by_name(tmp_path, fault, message):
    """Labels 10 or -3 for CIFAR-10 (-3 then read as "unlabeled"), 1024-wide rows (a numpy error) and 3 class
    names were taken from an archive whose md5 the caller vouched for."""
    batch = {b"data": np.zeros((4, 1024 if fault == "width" else 3072), np.uint8),
             b"labels": [0, 1, 10 if fault == "label" else 2, 3][: 3 if fault == "count" else 4]}
    if fault == "key":
        del batch[b"labels"]
    src = data.CIFAR_SOURCES["cifar10"]
    path = tmp_path / src.filename
    with tarfile.open(path, "w:gz") as tar:
        for m in (*src.members["train"], *src.members["test"]):
            _add(tar, f"cifar-10-batches-py/{m}", pickle.dumps(batch, protocol=2))
        names = [f"c{k}".encode() for k in range(3 if fault == "names" else 10)]
        _add(tar, f"cifar-10-batches-py/{src.meta}", pickle.dumps({b"label_names": names}, protocol=2))
    with pytest.raises(ValueError, match=message):
        load_cifar("cifar10", path, "test", download=False, md5=hashlib.md5(path.read_bytes()).hexdigest())


# --------------------------------------------------------------------------- class-folder archives

def test_folder_tar_splits_labels_and_mode_conversion(tmp_path):
    path = _make_folder_tar(tmp_path)
    train = load_image_folder(path, split="train", progress=False)
    test = load_image_folder(path, split="test", progress=False)
    assert train.class_names == CLASSES and train.images.shape == (12, 3, 8, 8)
    assert train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert (train.images[:, 0].float().mean((1, 2)) - 80 * train.labels.float()).abs().max() < 4  # red = 80*k
    assert test.labels.tolist() == [0, 0, 1, 1, 2, 2, 2, 2] and test.skipped == []
    assert test.images[-2].min() == 255 and test.images[-1].max() == 0  # 16-bit white, palette black
    resized = load_image_folder(path, split="test", image_size=4, progress=False)
    assert resized.images.shape == (8, 3, 4, 4)
    ood = load_image_folder(path, labeled=False, split="test", progress=False)  # every image of the split
    assert len(ood) == 8 and (ood.labels == -1).all()


def test_folder_directory_top_level_classes_and_class_names(tmp_path):
    for k, c in enumerate(["b", "a"]):
        (tmp_path / "tiny32" / c).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "tiny32" / c / f"{c}_{i}.jpg").write_bytes(_jpeg((0, 100 * k, 0)))
    ds = load_image_folder(tmp_path, progress=False)  # one extra top folder, then <class>/
    assert ds.class_names == ["a", "b"] and ds.labels.tolist() == [0, 0, 1, 1]
    ds = load_image_folder(tmp_path, class_names=["b", "a"], progress=False)
    assert ds.labels.tolist() == [0, 0, 1, 1] and ds.images[0, 1].float().mean() < 5  # "b" is green 0
    with pytest.raises(ValueError, match=r"missing \['c'\]"):
        load_image_folder(tmp_path, class_names=["a", "b", "c"], progress=False)


def test_folder_layout_errors(tmp_path):
    path = _make_folder_tar(tmp_path)
    with pytest.raises(ValueError, match="not classes; pass split"):
        load_image_folder(path, progress=False)
    with pytest.raises(ValueError, match="split 'val' not found.*'test', 'train'"):
        load_image_folder(path, split="val", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found.*expected layout"):
        load_image_folder(tmp_path / "empty", progress=False)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.jpg").write_bytes(_jpeg((1, 2, 3)))
    with pytest.raises(ValueError, match="no <class>/ folders; pass labeled=False"):
        load_image_folder(tmp_path / "flat", progress=False)
    assert load_image_folder(tmp_path / "flat", labeled=False, progress=False).labels.tolist() == [-1]


def test_corrupt_image_is_skipped_and_named(tmp_path, caplog):
    path = _make_folder_tar(tmp_path, corrupt=True)
    with caplog.at_level(logging.WARNING, logger="dat_core.data.folders"):
        ds = load_image_folder(path, split="train", progress=False)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert re.search(r"skipped 1 unreadable.*train/cat/broken\.jpg", caplog.records[0].getMessage())
    assert len(ds) == 12 and len(ds.skipped) == 1 and str(path) in ds.skipped[0]


def _make_class_folders(root, case: str, archive: bool):
    """train/{bird,cat,dog}: bird and dog readable, cat empty ("empty") or all unreadable ("unreadable")."""
    d = root / "src" / "train"
    for c in CLASSES:
        (d / c).mkdir(parents=True)
        if c != "cat":
            for i in range(2):
                (d / c / f"{i}.jpg").write_bytes(_jpeg((10, 20, 30)))
        elif case == "unreadable":
            for i in range(2):
                (d / c / f"{i}.jpg").write_bytes(b"\xff\xd8 broken")
    if not archive:
        return root / "src"
    path = root / "src.tar"
    with tarfile.open(path, "w") as tar:
        tar.add(root / "src", arcname="src")  # directory entries included, the empty folder too
    return path


@pytest.mark.parametrize("archive", [False, True], ids=["dir", "tar"])
@pytest.mark.parametrize("case", ["empty", "unreadable"])
def test_a_class_without_usable_images_is_an_error_unless_allowed(tmp_path, case, archive, caplog):
    path = _make_class_folders(tmp_path, case, archive)
    caplog.set_level(logging.WARNING, logger="dat_core.data.folders")
    with pytest.raises(ValueError, match=r"class folder\(s\) cat .*no usable image.*allow_empty_classes=True"):
        load_image_folder(path, split="train", progress=False)
    assert any("skipped 2 unreadable" in r.getMessage() for r in caplog.records) == (case == "unreadable")
    caplog.clear()
    ds = load_image_folder(path, split="train", progress=False, allow_empty_classes=True)
    assert any("cat" in r.getMessage() and "kept as classes without images" in r.getMessage() for r in caplog.records)
    assert ds.class_names == CLASSES and ds.labels.tolist() == [0, 0, 2, 2]
    if not archive:  # lazy directories know an empty folder up front (unreadable files raise when read)
        if case == "empty":
            with pytest.raises(ValueError, match="cat"):
                load_image_folder(path, split="train", image_size=8, progress=False, lazy=True)
        cfg = load_config(None, **{"data.dataset": str(path), "data.image_size": 8, "data.val_size": 2})
        with pytest.raises(ValueError, match=r"data\.allow_empty_classes=true"):
            load_train_val(cfg)
        cfg = load_config(None, **{"data.dataset": str(path), "data.image_size": 8, "data.val_size": 2,
                                   "data.allow_empty_classes": True})
        caplog.clear()
        train, val = load_train_val(cfg)
        assert any("kept as classes without images" in r.getMessage() for r in caplog.records)
        assert train.class_names == CLASSES and len(train) + len(val) == 4


def test_cache_roundtrip(tmp_path, monkeypatch):
    path = _make_folder_tar(tmp_path)
    first = load_image_folder(path, split="train", cache_dir=tmp_path / "cache", progress=False)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    monkeypatch.setattr(folders, "_decode", lambda *a: 1 / 0)  # a cache hit decodes nothing
    second = load_image_folder(path, split="train", cache_dir=tmp_path / "cache", progress=False)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert second.class_names == CLASSES
    monkeypatch.undo()
    load_image_folder(path, split="test", cache_dir=tmp_path / "cache", progress=False)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2  # split is part of the key



def test_two_writers_of_one_cache_file_both_succeed(tmp_path, monkeypatch):
    """Runs (or DDP ranks) sharing a cache dir build the same cache file at once: one writer finishing
    between the other's write and rename must not take the other's file away (it did: one shared .tmp name)."""
    path = _make_folder_tar(tmp_path)
    real_savez, nested = np.savez, []

    def savez_then_another_writer(f, **arrays):
        real_savez(f, **arrays)
        if not nested:  # while this writer is between its write and its rename, a second one runs start to end
            nested.append(None)
            nested[0] = load_image_folder(path, split="train", cache_dir=tmp_path / "cache", progress=False)

    monkeypatch.setattr(folders.np, "savez", savez_then_another_writer)
    first = load_image_folder(path, split="train", cache_dir=tmp_path / "cache", progress=False)
    assert torch.equal(first.images, nested[0].images)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [p.name for p in (tmp_path / "cache").glob("*.npz")]
    monkeypatch.undo()
    again = load_image_folder(path, split="train", cache_dir=tmp_path / "cache", progress=False)
    assert torch.equal(again.images, first.images) and [type(n) for n in again.class_names] == [str] * len(CLASSES)

# --------------------------------------------------------------------------- noise, split

@pytest.mark.parametrize("kind", ["uniform", "lowfreq"])
def test_noise_seeds_deterministic_in_range(kind):
    a, b, c = noise_seeds(4, 16, kind, seed=1), noise_seeds(4, 16, kind, seed=1), noise_seeds(4, 16, kind, seed=2)
    assert a.shape == (4, 3, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c) and a.min() >= 0 and a.max() <= 1
    neighbour_diff = (a[..., 1:] - a[..., :-1]).abs().mean()
    assert (neighbour_diff < 0.2) == (kind == "lowfreq")  # low-frequency noise is smooth
    ds = noise_dataset(4, 16, kind, seed=1)
    assert ds.images.dtype == torch.uint8 and (ds.labels == -1).all()
    assert (ds.images.float() / 255 - a).abs().max() <= 0.5 / 255 + 1e-6


def _toy(n_per_class=(10, 10, 6)) -> ImageDataset:
    labels = torch.cat([torch.full((n,), k) for k, n in enumerate(n_per_class)])
    images = torch.arange(len(labels), dtype=torch.uint8)[:, None, None, None].expand(-1, 3, 2, 2).clone()
    return ImageDataset(images, labels, ["a", "b", "c"])


def test_train_val_split_exact_disjoint_stratified_deterministic():
    ds = _toy()
    train, val = train_val_split(ds, 0.25, seed=3)
    assert len(val) == round(0.25 * 26) and len(train) + len(val) == 26
    ids_t, ids_v = set(train.images[:, 0, 0, 0].tolist()), set(val.images[:, 0, 0, 0].tolist())
    assert not ids_t & ids_v and len(ids_t | ids_v) == 26
    # proportional shares 2.31, 2.31, 1.38: floors 2, 2, 1, the spare one to the largest remainder
    assert torch.bincount(val.labels).tolist() == [2, 2, 2]
    _, again = train_val_split(ds, 0.25, seed=3)
    assert torch.equal(again.images, val.images)
    assert not torch.equal(train_val_split(ds, 7, seed=4)[1].images, train_val_split(ds, 7, seed=3)[1].images)
    with pytest.raises(ValueError):
        train_val_split(ds, 26)


# --------------------------------------------------------------------------- lazy directories

def _make_png_dir(root, corrupt: bool = False):
    """root/{a,b,c}/NN.png: 12 PNGs of different sizes and modes (RGB, gray, RGBA, palette)."""
    rng = np.random.default_rng(0)
    sizes = [(8, 8), (12, 9), (9, 16), (20, 11), (7, 7), (30, 30), (10, 14), (16, 8), (9, 9), (25, 13),
             (8, 21), (11, 11)]
    modes = ["RGB", "L", "RGBA", "P"]
    for i, (w, h) in enumerate(sizes):
        folder = root / "abc"[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(modes[i % 4])
        img.save(folder / f"{i:02d}.png")
    if corrupt:
        (root / "b" / "99.png").write_bytes(b"not a png")
    return root


def test_lazy_folder_matches_eager_and_stays_lazy(tmp_path, monkeypatch):
    root = _make_png_dir(tmp_path / "pngs")
    eager = load_image_folder(root, image_size=8, progress=False)
    lazy = load_image_folder(root, image_size=8, progress=False, lazy=True)
    assert isinstance(lazy, FileImageDataset) and isinstance(lazy.images, LazyImages)
    assert len(lazy) == 12 and lazy.images.shape == eager.images.shape == (12, 3, 8, 8)
    assert lazy.class_names == eager.class_names == ["a", "b", "c"] and torch.equal(lazy.labels, eager.labels)
    assert torch.equal(lazy.images[torch.arange(12)], eager.images)
    assert torch.equal(lazy.images[2:7], eager.images[2:7]) and torch.equal(lazy.images[-1], eager.images[-1])
    assert torch.equal(lazy.images[lazy.labels == 1], eager.images[eager.labels == 1])
    assert lazy.images[[]].shape == (0, 3, 8, 8) and torch.equal(lazy[3][0], eager[3][0])
    for (xa, ya), (xb, yb) in zip(as_batches(eager, 5), as_batches(lazy, 5), strict=True):  # evaluate's batches
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    for workers in (0, 1):  # the same batches, decoded in the calling thread or the prefetch thread
        a = BatchStream(eager, 4, seed=2, augment="flip", num_workers=workers)
        b = BatchStream(lazy, 4, seed=2, augment="flip", num_workers=workers)
        for _ in range(4):
            (xa, ya), (xb, yb) = next(a), next(b)
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
        a.close(), b.close()

    monkeypatch.setattr(folders, "_decode", lambda *a: 1 / 0)  # splitting and subsetting decode nothing
    train, val = train_val_split(lazy, 3, seed=1)
    part = train.subset([4, 0])
    assert all(isinstance(d, FileImageDataset) for d in (train, val, part))
    monkeypatch.undo()
    eager_train, eager_val = train_val_split(eager, 3, seed=1)
    assert torch.equal(val.images[:], eager_val.images) and torch.equal(train.labels, eager_train.labels)
    assert torch.equal(part.images[:], eager_train.images[[4, 0]])

    unlabeled = load_image_folder(root, labeled=False, image_size=8, progress=False, lazy=True)
    assert (unlabeled.labels == -1).all() and not unlabeled.labeled and unlabeled.class_names == []


def test_lazy_folder_errors(tmp_path):
    root = _make_png_dir(tmp_path / "pngs", corrupt=True)
    lazy = load_image_folder(root, image_size=8, progress=False, lazy=True)
    assert len(lazy) == 13  # unreadable files are found when read, not skipped up front
    with pytest.raises(ValueError, match=r"cannot decode .*99\.png"):
        lazy.images[torch.arange(13)]
    with pytest.raises(ValueError, match="needs image_size"):
        load_image_folder(root, progress=False, lazy=True)
    with pytest.raises(ValueError, match="directories only"):
        load_image_folder(_make_folder_tar(tmp_path), split="train", image_size=8, progress=False, lazy=True)


def test_data_lazy_config_key_reaches_loaders(tmp_path):
    root = _make_png_dir(tmp_path / "pngs")
    cfg = load_config(None, **{"data.dataset": str(root), "data.train_split": "", "data.image_size": 8,
                               "data.val_size": 3, "data.ood": str(root), "data.ood_holdout": 2, "data.lazy": True})
    train, val = load_train_val(cfg)
    seeds, held_out = ood_split(cfg)
    assert all(isinstance(d, FileImageDataset) for d in (train, val, seeds, held_out))
    assert (len(train), len(val), len(seeds), len(held_out)) == (9, 3, 10, 2)


# --------------------------------------------------------------------------- augmentations

def test_random_crop_shifts_content():
    x = torch.rand(16, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    y = random_crop(x, padding=2, generator=g)
    assert y.shape == x.shape
    g = torch.Generator().manual_seed(0)
    dy, dx = torch.randint(0, 5, (16,), generator=g), torch.randint(0, 5, (16,), generator=g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(16):
        assert torch.equal(y[i], padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8])
    assert not torch.equal(y, x)


def test_cutout_fills_one_square_and_hflip_flips():
    x = torch.ones(64, 3, 32, 32)
    y = cutout(x, size=16, generator=torch.Generator().manual_seed(0))
    holes = y[:, 0] == 0
    assert torch.equal(holes, (y == 0).all(1))  # same square in every channel
    for h in holes:
        rows, cols = h.any(1).nonzero().flatten(), h.any(0).nonzero().flatten()
        assert 8 <= len(rows) <= 16 and 8 <= len(cols) <= 16 and h.sum() == len(rows) * len(cols)
        assert rows[-1] - rows[0] + 1 == len(rows) and cols[-1] - cols[0] + 1 == len(cols)
    assert (holes.sum((1, 2)) == 256).any()
    x = torch.rand(64, 3, 4, 4)
    y = hflip(x, p=0.5, generator=torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(a, b.flip(2)) for a, b in zip(y, x)])
    kept = torch.tensor([torch.equal(a, b) for a, b in zip(y, x)])
    assert (flipped | kept).all() and 10 < flipped.sum() < 54
    assert torch.equal(hflip(x, p=1.0), x.flip(3))


def test_pipelines_shapes_and_rrc():
    x = torch.rand(4, 3, 16, 16)
    for name in ("none", "flip", "crop_flip", "crop_flip_cutout", "rrc_flip"):
        y = augment(name, x, torch.Generator().manual_seed(0))
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    full = random_resized_crop(x, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.allclose(full, x, atol=1e-6)  # the whole image, resized to its own size
    assert random_resized_crop(x, 8).shape == (4, 3, 8, 8)
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment("autoaugment", x)


def test_flip_pipeline_only_mirrors():
    x = torch.rand(64, 3, 4, 4)
    y = augment("flip", x, torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(a, b.flip(2)) for a, b in zip(y, x)])
    kept = torch.tensor([torch.equal(a, b) for a, b in zip(y, x)])
    assert (flipped | kept).all() and 10 < flipped.sum() < 54
    again = augment("flip", x, torch.Generator().manual_seed(0))
    assert torch.equal(y, again)  # the flips come from the generator


# --------------------------------------------------------------------------- batch streams

@pytest.mark.parametrize("num_workers", [0, 2])
def test_batch_stream_resume_is_exact(num_workers):
    ds = _toy()
    stream = BatchStream(ds, 8, seed=5, augment="crop_flip_cutout", num_workers=num_workers)
    assert stream.batches_per_epoch == 3
    for _ in range(4):  # cross an epoch boundary
        next(stream)
    state = stream.state_dict()
    assert (state["epoch"], state["index"]) == (1, 1)
    expected = [next(stream) for _ in range(5)]
    stream.close()
    resumed = BatchStream(ds, 8, seed=5, augment="crop_flip_cutout", num_workers=num_workers)
    resumed.load_state_dict(state)
    for (x, y), (rx, ry) in zip(expected, resumed):
        assert torch.equal(x, rx) and torch.equal(y, ry)
        assert x.dtype == torch.float32 and x.shape == (8, 3, 2, 2) and y.dtype == torch.int64
    resumed.close()
    start = BatchStream(ds, 8, seed=5, augment="crop_flip_cutout", start_epoch=1, start_index=1)
    assert torch.equal(next(start)[1], expected[0][1])  # start_* positions without the aug RNG state
    noise = ImageDataset(torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8), torch.zeros(16), ["a"])
    fixed = BatchStream(noise, 8, shuffle=False, augment="crop_flip")
    first, _, again = (next(fixed)[0] for _ in range(3))  # same images, one epoch apart
    assert not torch.equal(first, again)  # the augmentation RNG advances across batches


def test_batch_stream_epochs_cover_dataset_and_ddp_ranks_split_global_batch():
    ds = _toy((8, 8, 8))
    def ids(x):
        return (x[:, 0, 0, 0] * 255).round().long().tolist()
    single = BatchStream(ds, 6, seed=1)
    epoch0 = [ids(next(single)[0]) for _ in range(4)]
    assert sorted(sum(epoch0, [])) == list(range(24))  # one epoch = a permutation of the data
    epoch1 = [ids(next(single)[0]) for _ in range(4)]
    assert epoch1 != epoch0
    ranks = [BatchStream(ds, 6, seed=1, rank=r, world_size=3) for r in range(3)]
    for b in range(8):
        parts = [ids(next(s)[0]) for s in ranks]
        assert all(len(p) == 2 for p in parts)
        assert sorted(sum(parts, [])) == sorted((epoch0 + epoch1)[b])  # disjoint, union = global batch
    with pytest.raises(ValueError):
        BatchStream(ds, 6, world_size=4)


def test_batch_stream_no_shuffle_keep_last():
    ds = _toy((5, 0, 0)[:1])
    stream = BatchStream(ds, 2, shuffle=False, drop_last=False)
    assert [next(stream)[0].shape[0] for _ in range(4)] == [2, 2, 1, 2]


def test_train_eval_offline_without_the_archive_is_one_line(tmp_path, monkeypatch, capsys):
    from train.__main__ import main

    src = cifar.CIFAR_SOURCES["cifar10"]
    monkeypatch.setitem(cifar.CIFAR_SOURCES, "cifar10", replace(src, url="http://127.0.0.1:9/x"))
    from dat_core import build_model, save_model

    save_model(build_model("wrn-10-1"), tmp_path / "m")
    assert main(["eval", "--model", str(tmp_path / "m"), "--data", "cifar10", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "could not download" in err and "Traceback" not in err


def _orders(stream: BatchStream, epochs: int) -> list[list[int]]:
    """The image order of each of the first `epochs` epochs (labels hold each image's index)."""
    return [[int(i) for i in torch.cat([next(stream)[1] for _ in range(stream.batches_per_epoch)])]
            for _ in range(epochs)]


def test_streams_of_neighbouring_seeds_do_not_replay_each_others_epochs():
    """Each epoch was shuffled with `seed + epoch`, and stage 2's streams have seeds 3s+1 (clf) and 3s+2 (real): the
    clf stream's epoch e+1 was the real stream's epoch e, and run seed 1's clf epoch 0 was seed 0's clf epoch 3."""
    n = 40
    ds = data.ImageDataset(torch.zeros(n, 3, 4, 4, dtype=torch.uint8), torch.arange(n), [str(i) for i in range(n)])
    orders = {seed: _orders(BatchStream(ds, 8, seed=seed), 4) for seed in (1, 2, 4)}
    seen = [tuple(o) for epochs in orders.values() for o in epochs]
    assert len(set(seen)) == len(seen)


def test_a_stream_state_saved_before_the_new_shuffle_resumes_with_the_old_one():
    """States written by earlier versions (no "order" key) keep their shuffle, so their runs resume exactly."""
    n = 40
    ds = data.ImageDataset(torch.zeros(n, 3, 4, 4, dtype=torch.uint8), torch.arange(n), [str(i) for i in range(n)])
    stream = BatchStream(ds, 8, seed=3)
    old = {k: v for k, v in stream.state_dict().items() if k != "order"}
    stream.load_state_dict({**old, "epoch": 2})
    legacy = torch.randperm(n, generator=torch.Generator().manual_seed(3 + 2)).tolist()
    assert _orders(stream, 1)[0] == legacy
    assert "order" not in stream.state_dict()   # and it is saved as such again


def test_a_pickle_of_shared_references_is_read_in_linear_time():
    """Shared objects were rebuilt per reference: 174 bytes of `x = [x, x]` nested 24 deep took 40 s (2**24 lists)."""
    import time

    x: list = []
    for _ in range(60):
        x = [x, x]
    data = pickle.dumps(x, protocol=2)
    t0 = time.monotonic()
    got = read_pickle_data(data)
    assert time.monotonic() - t0 < 1 and len(data) < 1000
    for _ in range(59):
        assert got[0] is got[1]
        got = got[0]
