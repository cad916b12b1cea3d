"""Audit 29 of the model registry and zoo: `build_model` refuses what a checkpoint cannot hold before it builds
anything, and the zoo's remembered weight hashes follow the file, not its size and mtime."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dat_core import zoo
from dat_core.checkpoint import load_checkpoint_dir, save_model
from dat_core.models import build_model
from dat_core.models.config import validate_model_config

REFUSED = [
    ({"mean": [0.5]}, "mean"),                      # broadcast over 3 channels; the saved config.json did not load
    ({"mean": ()}, "mean"),                         # silently replaced by the registered default
    ({"std": [0.0, 0.0, 0.0]}, "std"),              # every logit NaN
    ({"temperature": 0}, "temperature"),            # every logit inf or NaN
    ({"temperature": -1.0}, "temperature"),         # flipped every prediction
    ({"temperature": float("nan")}, "temperature"),
    ({"image_size": -5}, "image_size"),             # built, trained, saved; refused only on load
    ({"image_size": 0}, "image_size"),              # silently replaced by the registered default
    ({"image_size": 4}, "image_size"),
    ({"num_classes": True}, "num_classes"),         # a TypeError deep inside nn.Linear
    ({"class_names": "abcdefghij"}, "class_names"), # split into ten one-letter class names
]


@pytest.mark.parametrize("change,field", REFUSED, ids=[f"{f}={v!r}" for c, f in REFUSED for v in c.values()])
def test_build_model_refuses_what_a_checkpoint_cannot_hold(change, field):
    """build_model checked only the class names: a model it built could be NaN everywhere, or train for hours
    and then write a config.json that `load_model` refuses."""
    with pytest.raises(ValueError, match=field):
        build_model("wrn-10-1", **{"num_classes": 10, **change})


def test_a_huge_class_count_is_refused_before_anything_is_made():
    """num_classes=10**8 made 10**8 default class names (a MemoryError after seconds) before any check, then
    a 6.4-billion-parameter head."""
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="num_classes"):
        build_model("wrn-10-1", num_classes=10**8)
    assert time.monotonic() - t0 < 5


def test_what_build_model_accepts_saves_and_loads_again(tmp_path):
    """Tuples, arrays and tensors still work where lists do; the result round-trips through a checkpoint."""
    model = build_model("wrn-10-1", num_classes=3, class_names=("a", "b", "c"), mean=np.array([0.5, 0.5, 0.5]),
                        std=torch.tensor([0.25, 0.25, 0.25]), image_size=16, temperature=2).eval()
    assert model.config["mean"] == [0.5, 0.5, 0.5] and model.config["class_names"] == ["a", "b", "c"]
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(load_checkpoint_dir(save_model(model, tmp_path / "m"))(x), model(x))
    assert build_model("wrn-10-1").config["image_size"] == 32   # None still means the registered default


def test_a_weights_file_replaced_with_the_same_size_and_mtime_is_hashed_again(tmp_path):
    """`cp -p`, `rsync -a` or `tar x` put other bytes under the old size and mtime; the remembered sha256 of the
    old bytes then passed a changed bundled copy as the pinned weights."""
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"A" * 1000)
    assert zoo.weights_sha256(weights) == hashlib.sha256(b"A" * 1000).hexdigest()
    stat = weights.stat()
    other = Path(tmp_path / "other")
    other.write_bytes(b"B" * 1000)
    os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(other, weights)
    assert weights.stat().st_size == stat.st_size and weights.stat().st_mtime_ns == stat.st_mtime_ns
    assert zoo.weights_sha256(weights) == hashlib.sha256(b"B" * 1000).hexdigest()


@pytest.mark.parametrize("arch", ["wrn-016-02", "wrn-16-02", "wrn-000016-2"])
def test_a_wrn_has_one_name(arch):
    """wrn-016-02 built a WRN-16-2 under that name: stage 2 then refused model.arch=wrn-16-2 for its init, and the
    app and model card showed a name no other checkpoint of that model carries."""
    with pytest.raises(ValueError, match="wrn-16-2"):
        build_model(arch)
    with pytest.raises(ValueError, match="wrn-16-2"):
        validate_model_config({"arch": arch, "num_classes": 10})
    assert build_model("WRN-16-2").config["arch"] == "wrn-16-2"


def test_an_unknown_architecture_is_named_briefly():
    """A training TOML's arch of 100,000 characters came back whole in the error, 100 kB of it."""
    with pytest.raises(ValueError, match="unknown architecture") as e:
        build_model("x" * 100_000)
    assert len(str(e.value)) < 1000
