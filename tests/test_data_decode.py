"""The training/eval loader decodes image files under the same policy as explanations (`dat_core.images`):
pixel cap and extreme proportions, alpha on white and EXIF orientation, 16-bit depth as declared; and lists
class folders the same way everywhere (symlinks followed, hidden folders ignored, names NFC, splits not mixed)."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import tarfile
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from dat_core.data import folders, load_image_folder
from dat_core.images import decode_rgb
from dat_core.training.config import load_config
from dat_core.training.data import ood_split
from explain.image import to_model_input, to_rgb

ROOT = Path(__file__).resolve().parents[1]


def _png(image: Image.Image, path: Path | None = None, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", **kw)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.getvalue())
    return buf.getvalue()


def _img(path: Path, colour: tuple[int, int, int] = (10, 20, 30)) -> None:
    _png(Image.new("RGB", (8, 8), colour), path)


def _tar(src: Path, path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        tar.add(src, arcname=src.name)
    return path


# --------------------------------------------------------------------------- 1. memory bombs

def test_an_image_over_the_pixel_cap_is_skipped_and_named_like_a_corrupt_one(tmp_path, caplog):
    """A 120 KB 10000x10000 PNG was decoded (+470 MB, only Pillow's warning); 8 lazy threads could do it at once.
    The header is checked first; eagerly the file is skipped and named, lazily reading it raises naming it."""
    _img(tmp_path / "d" / "cat" / "a.png")
    _img(tmp_path / "d" / "dog" / "a.png")
    _png(Image.new("L", (8000, 6000), 7), tmp_path / "d" / "dog" / "huge.png")   # 48 MP > MAX_PIXELS
    with caplog.at_level(logging.WARNING, logger="dat_core.data.folders"):
        ds = load_image_folder(tmp_path / "d", image_size=8, progress=False)
    assert len(ds) == 2 and len(ds.skipped) == 1
    assert "huge.png" in ds.skipped[0] and "8000x6000" in ds.skipped[0] and "pixels" in ds.skipped[0]
    assert any("skipped 1 unreadable" in r.getMessage() and "huge.png" in r.getMessage() for r in caplog.records)
    lazy = load_image_folder(tmp_path / "d", image_size=8, progress=False, lazy=True)
    with pytest.raises(ValueError, match=r"huge\.png.*8000x6000.*pixels"):
        lazy.images[[1, 2]]


def test_a_strip_of_extreme_proportions_is_cropped_before_the_loader_resizes_it(tmp_path):
    """A 664-byte 200000x1 PNG took 3.6 s and +800 MB: its shorter side was resized to S before the crop."""
    a = np.zeros((1, 400_000, 3), np.uint8)
    a[:, 199_999:200_001] = 255                      # the centre: what the crop keeps
    _png(Image.fromarray(a), tmp_path / "d" / "strip" / "a.png")
    _img(tmp_path / "d" / "other" / "a.png")
    code = """
import sys, time
from dat_core.data import load_image_folder
def peak_mb():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]) // 1024
before, t0 = peak_mb(), time.monotonic()
ds = load_image_folder(sys.argv[1], image_size=32, progress=False)
print("MEAN", float(ds.images[1].float().mean()) / 255, "SECONDS", time.monotonic() - t0)
print("GROWN_MB", peak_mb() - before)
"""
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "d")], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert "MEAN" in out.stdout, out.stdout + out.stderr
    assert float(out.stdout.split("MEAN ")[1].split()[0]) > 0.5, out.stdout          # the centre, not the black
    assert float(out.stdout.split("SECONDS ")[1].split()[0]) < 2, out.stdout
    assert int(out.stdout.split("GROWN_MB ")[1]) < 100, out.stdout


# --------------------------------------------------------------------------- 2. one decoding for both

def test_the_loader_and_explanations_see_the_same_pixels_of_a_file(tmp_path):
    """Transparency became black and EXIF orientation was ignored in training, while the app put it on white
    and stood the photo upright: a model was trained on other pixels than it was explained on."""
    d = tmp_path / "d"
    rgba = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    rgba.putpixel((16, 16), (255, 0, 0, 255))
    _png(rgba, d / "a" / "transparent.png")
    _png(Image.new("LA", (32, 32), (0, 0)), d / "a" / "la.png")
    half = np.zeros((32, 48, 3), np.uint8)
    half[:16] = 255                                  # top white as stored; orientation 6 turns it to the right
    photo = Image.fromarray(half)
    exif = photo.getexif()
    exif[0x0112] = 6
    (d / "b").mkdir()
    photo.save(d / "b" / "rotated.jpg", "JPEG", exif=exif, quality=95)
    ds = load_image_folder(d, image_size=32, progress=False)
    for i, file in enumerate([d / "a" / "la.png", d / "a" / "transparent.png", d / "b" / "rotated.jpg"]):
        explained = (to_model_input(file, 32)[0] * 255).round().byte()
        assert np.array_equal(ds.images[i].numpy(), explained.numpy()), file.name
    assert ds.images[1, :, 0, 0].tolist() == [255, 255, 255]      # transparent.png: the background is white
    assert ds.images[2, :, 0, -1].tolist() == [255, 255, 255] and ds.images[2, :, 0, 0].max() < 10   # upright


def test_a_cache_written_under_the_old_decoding_is_not_reused(tmp_path):
    """Cached .npz arrays are keyed on the archive and the options: without the decoding policy in the key, a
    cache decoded the old way (alpha on black) would be served after the decoding changed."""
    src = tmp_path / "src"
    _png(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), src / "a" / "clear.png")
    _img(src / "b" / "x.png")
    path = _tar(src, tmp_path / "src.tar")
    st = path.stat()
    old = folders._cache_file(tmp_path / "cache", path, f"{st.st_size}-{st.st_mtime_ns}", (None, None, (), True))
    old.parent.mkdir()
    np.savez(old, images=np.zeros((2, 3, 8, 8), np.uint8), labels=np.array([0, 1]),
             class_names=np.array(["a", "b"]), skipped=np.array([], dtype=str))
    ds = load_image_folder(path, cache_dir=tmp_path / "cache", progress=False)
    assert ds.images[0].min() == 255                 # decoded now (on white), not the stale black cache
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


# --------------------------------------------------------------------------- 3. symlinked folders

def test_symlinked_class_and_split_folders_are_read_and_a_loop_ends(tmp_path):
    store = tmp_path / "store"
    _img(store / "dogs" / "a.png")
    _img(store / "dogs" / "b.png")
    d = tmp_path / "sym"
    _img(d / "cat" / "a.png")
    os.symlink(store / "dogs", d / "dog")
    os.symlink(d / "cat", d / "cat" / "again")       # a loop: must end, and not count cat twice
    ds = load_image_folder(d, progress=False)
    assert ds.class_names == ["cat", "dog"] and ds.labels.tolist() == [0, 1, 1]
    _img(store / "split" / "cat" / "a.png")
    _img(store / "split" / "dog" / "a.png")
    (tmp_path / "data").mkdir()
    os.symlink(store / "split", tmp_path / "data" / "train")
    train = load_image_folder(tmp_path / "data", split="train", progress=False)
    assert train.class_names == ["cat", "dog"] and len(train) == 2


# --------------------------------------------------------------------------- 4. 16-bit depth

def _grey16(values: np.ndarray) -> bytes:
    return _png(Image.fromarray(values.astype(np.uint16)))


def test_16_bit_greyscale_is_scaled_by_its_declared_depth_not_by_its_pixels(tmp_path, monkeypatch):
    """Pillow versions that open 16-bit PNG as mode "I" read a dark one (max <= 255) 257x too bright, unlike the
    same image with one bright pixel."""
    monkeypatch.setitem(PngImagePlugin._MODES, (16, 0), ("I", "I;16B"))   # how older Pillow opens 16-bit grey
    dark = np.full((8, 8), 200)
    bright = dark.copy()
    bright[0, 0] = 65535
    for name, values in (("dark", dark), ("bright", bright)):
        (tmp_path / "d" / name).mkdir(parents=True)
        (tmp_path / "d" / name / "x.png").write_bytes(_grey16(values))
    with Image.open(tmp_path / "d" / "dark" / "x.png") as im:
        assert im.mode == "I"
    ds = load_image_folder(tmp_path / "d", progress=False)
    assert ds.class_names == ["bright", "dark"]
    assert ds.images[0, 0, 1, 1] == ds.images[1, 0, 1, 1] == 1            # round(200 / 257)
    pgm = tmp_path / "dark.pgm"                       # 16-bit PGM: Pillow opens it as "I" in every version
    pgm.write_bytes(b"P5 8 8 65535\n" + dark.astype(">u2").tobytes())
    with Image.open(pgm) as im:
        assert im.mode == "I"
    assert decode_rgb(pgm.read_bytes(), None)[1, 1, 0] == 1
    assert round(float(to_model_input(pgm, 8)[0, 0, 1, 1]) * 255) == 1
    in_memory = np.asarray(to_rgb(Image.fromarray(dark.astype(np.int32))))   # no file to declare a depth: values
    assert in_memory.shape == (8, 8, 3) and (in_memory == 200).all()         # up to 255 are 8-bit ones, as
    assert (np.asarray(to_rgb(Image.new("L", (4, 4), 200).convert("I"))) == 200).all()   # convert("I") holds them
    assert (np.asarray(to_rgb(Image.fromarray(bright.astype(np.int32))))[1, 1] == 1).all()   # above 255: 16-bit
    assert (np.asarray(to_rgb(Image.fromarray(dark.astype(np.uint16)))) == 1).all()       # I;16 is 16-bit


# --------------------------------------------------------------------------- 5. OOD splits

@pytest.mark.parametrize("archive", [False, True], ids=["dir", "tar"])
def test_unlabeled_images_of_several_splits_are_refused_not_mixed(tmp_path, archive):
    src = tmp_path / "ood"
    for split in ("train", "test"):
        for c in ("x", "y"):
            _img(src / split / c / "a.png")
    path = _tar(src, tmp_path / "ood.tar") if archive else src
    with pytest.raises(ValueError, match=r"holds splits \['test', 'train'\].*mix.*train"):
        load_image_folder(path, labeled=False, progress=False)
    assert len(load_image_folder(path, labeled=False, split="test", progress=False)) == 2
    if not archive:
        assert len(load_image_folder(src / "train", labeled=False, progress=False)) == 2
        cfg = load_config(None, **{"data.dataset": str(src / "train"), "data.ood": str(path), "data.image_size": 8})
        with pytest.raises(ValueError, match="holds splits"):
            ood_split(cfg)


# --------------------------------------------------------------------------- 6. hidden folders

@pytest.mark.parametrize("archive", [False, True], ids=["dir", "tar"])
def test_hidden_and_dunder_folders_are_never_classes_nor_images(tmp_path, archive):
    src = tmp_path / "d"
    for c in ("cat", "dog", ".ipynb_checkpoints", "__MACOSX", "cat/.ipynb_checkpoints"):
        _img(src / c / "a.png")
    path = _tar(src, tmp_path / "d.tar") if archive else src
    ds = load_image_folder(path, progress=False)
    assert ds.class_names == ["cat", "dog"] and ds.labels.tolist() == [0, 1]
    assert len(load_image_folder(path, labeled=False, progress=False)) == 2


# --------------------------------------------------------------------------- 7. Unicode names

@pytest.mark.parametrize("form", ["NFC", "NFD"])
def test_class_names_are_nfc_whatever_the_file_system_stores(tmp_path, form):
    for c in ("éclair", "zebra"):
        _img(tmp_path / unicodedata.normalize(form, c) / "a.png")
    ds = load_image_folder(tmp_path, progress=False)
    assert ds.class_names == ["zebra", unicodedata.normalize("NFC", "éclair")]
    again = load_image_folder(tmp_path, progress=False, class_names=[unicodedata.normalize("NFD", "éclair"), "zebra"])
    assert again.labels.tolist() == [0, 1] and again.class_names[0] == unicodedata.normalize("NFC", "éclair")
