"""`python -m train eval --val-size N` evaluates the validation carve-out training held out (where settings are
chosen), and `--sample-seeds` picks the seeds of the samples."""

import json

import pytest
import torch

from dat_core import build_model, load_model, save_model
from dat_core.training.config import load_config
from dat_core.training.data import load_train_val
from train.__main__ import main


@pytest.fixture
def tiny_dir(tmp_path):
    torch.manual_seed(0)
    model = build_model("wrn-10-1", num_classes=3, image_size=16, class_names=["class0", "class1", "class2"])
    return save_model(model.eval(), tmp_path / "tiny")


def test_val_size_evaluates_exactly_the_images_training_held_out(toy, tiny_dir, tmp_path):
    out = tmp_path / "val.json"
    assert main(["eval", "--model", str(tiny_dir), "--data", str(toy), "--split", "train", "--val-size", "12",
                 "--seed", "5", "--steps", "0", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    cfg = load_config(None, **{"data.dataset": str(toy), "data.image_size": 16, "data.val_size": 12, "seed": 5})
    _, val = load_train_val(cfg)
    model = load_model(tiny_dir)
    with torch.no_grad():
        accuracy = float((model(val.images[:].float() / 255).argmax(1) == val.labels).float().mean())
    assert report["n"] == 12 and report["clean_accuracy"] == pytest.approx(accuracy)


def test_val_size_out_of_range_is_one_line(toy, tiny_dir, capsys):
    assert main(["eval", "--model", str(tiny_dir), "--data", str(toy), "--split", "train", "--val-size",
                 "5000"]) == 2
    assert "--val-size must be in 1..119" in capsys.readouterr().err


def test_sample_seeds_are_recorded(toy, tiny_dir, tmp_path):
    for kind in ("bank", "lowfreq"):
        out = tmp_path / f"{kind}.json"
        assert main(["eval", "--model", str(tiny_dir), "--data", str(toy), "--split", "test", "--steps", "0",
                     "--samples", "3", "--sample-steps", "2", "--sample-seeds", kind, "--json", str(out)]) == 0
        assert json.loads(out.read_text())["sample_fidelity"]["seeds"] == kind
