"""The checkpoints shipped in assets/models/: what `python app.py` starts on, offline, for every newcomer."""

from pathlib import Path

import numpy as np
import pytest
import torch

from dat_core.checkpoint import WEIGHTS_NAME, read_config
from dat_core.loading import DEFAULT_MODEL_DIR, default_model_dir, load_model
from dat_core.models import CIFAR10_CLASSES
from explain.image import to_model_input

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "assets" / "examples").glob("*.jpg"))
BUNDLED = ("dat-cifar10-wrn16-2", "standard-cifar10-wrn16-2")


def example_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The bundled example images (test-split picks named `<class>-<NNNN>.jpg`) and their labels."""
    x = torch.cat([to_model_input(p, 32) for p in EXAMPLES])
    y = torch.tensor([CIFAR10_CLASSES.index(p.stem.rsplit("-", 1)[0]) for p in EXAMPLES])
    return x, y


def test_examples_cover_every_class():
    assert 10 <= len(EXAMPLES) <= 20
    _, y = example_batch()
    assert set(y.tolist()) == set(range(10))


def test_default_is_the_dat_model():
    assert default_model_dir() == DEFAULT_MODEL_DIR / BUNDLED[0]
    model = load_model("default")
    assert model.config["arch"] == "wrn-16-2" and not model.training


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_config_carries_what_the_app_needs(name):
    directory = DEFAULT_MODEL_DIR / name
    config = read_config(directory / "config.json")
    assert config["class_names"] == list(CIFAR10_CLASSES)
    assert config["image_size"] == 32 and config["num_classes"] == 10
    assert len(config["mean"]) == 3 and len(config["std"]) == 3 and min(config["std"]) > 0
    quantiles = config["energy_quantiles"]
    levels = sorted(float(q) for q in quantiles)
    values = [quantiles[k] for k in sorted(quantiles, key=float)]
    assert levels[0] <= 0.01 and levels[-1] >= 0.99
    assert all(np.isfinite(values)) and values == sorted(values)
    assert (directory / WEIGHTS_NAME).stat().st_size <= 20 * 2**20
    card = (directory / "README.md").read_text()
    assert card.startswith("---") and "python -m train" in card and "CIFAR-10 (JPEG copy)" in card


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_model_classifies_most_examples(name):
    model = load_model(DEFAULT_MODEL_DIR / name)
    x, y = example_batch()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy >= 0.6, f"{name}: {accuracy:.0%} of the bundled examples"
