"""What an eval report says about itself, and what is refused where one is written or published: `python -m train
eval --json / --model-info` and `python -m train push --eval-json` on tiny checkpoints and a loopback Hub."""

import json

import pytest
import torch
from fakehub import FakeHub
from huggingface_hub import ModelCard

from dat_core import build_model, save_model
from train.__main__ import main

CLASSES = ["class0", "class1", "class2"]


def _tiny(path, seed=0, **overrides):
    torch.manual_seed(seed)
    options = {"num_classes": 3, "image_size": 16, "class_names": CLASSES, **overrides}
    return save_model(build_model("wrn-10-1", **options).eval(), path)


@pytest.fixture
def tiny_dir(tmp_path):
    return _tiny(tmp_path / "tiny")


def _eval_json(model, toy, out, *extra):
    assert main(["eval", "--model", str(model), "--data", str(toy), "--split", "test", "--steps", "0",
                 "--json", str(out), *extra]) == 0
    return json.loads(out.read_text())


@pytest.mark.parametrize("where", ["model_info.json", "sub/../model_info.json"])
def test_eval_refuses_a_json_that_model_info_would_overwrite(toy, tiny_dir, tmp_path, capsys, where):
    """--model-info writes model_info.json beside --json: a --json of that very path lost the report to it."""
    (tmp_path / "sub").mkdir()
    target = tmp_path / where
    assert main(["eval", "--model", str(tiny_dir), "--data", str(toy), "--split", "test", "--steps", "0",
                 "--eps", "2", "--autoattack-attacks", "apgd-ce", "--model-info", "--json", str(target)]) == 2
    err = capsys.readouterr().err
    assert "model_info.json" in err and "--json" in err and len(err.strip().splitlines()) == 1
    assert "evaluate" not in err and not (tmp_path / "model_info.json").exists()   # refused before the work


def test_push_publishes_the_report_of_its_own_model(toy, tiny_dir, tmp_path):
    report = _eval_json(tiny_dir, toy, tmp_path / "report.json")
    assert report["arch"] == "wrn-10-1" and report["class_names"] == CLASSES and len(report["weights_sha256"]) == 64
    copy = _tiny(tmp_path / "copy")   # the same weights in another folder: the same model
    with FakeHub() as hub:
        assert main(["push", "--model", str(copy), "--repo-id", "me/tiny", "--endpoint", hub.url, "--token", "hf_test",
                     "--eval-json", str(tmp_path / "report.json")]) == 0
        card = ModelCard(hub.files("me/tiny")["README.md"].decode())
    assert {r.metric_name: r.metric_value for r in card.data.eval_results}["Clean accuracy"] == \
        round(report["clean_accuracy"], 4)


@pytest.mark.parametrize("other, says", [
    ("weights", "weights_sha256"),                  # another checkpoint of the same architecture
    ("old report", "weights"),                      # a report without weights_sha256 naming another checkpoint
    ("hand-made", "num_classes is 100"),
    ("classes", "class_names"),
    ("nothing", "records nothing about its model")])
def test_push_refuses_the_report_of_another_model(toy, tiny_dir, tmp_path, capsys, other, says):
    """A report of another checkpoint, or a hand-made one for a 100-class 32 px model, went into this model's card
    and onto the Hub."""
    path = tmp_path / "report.json"
    if other in ("weights", "old report"):
        report = _eval_json(_tiny(tmp_path / "other", seed=1), toy, path)
        if other == "old report":
            path.write_text(json.dumps({k: v for k, v in report.items()
                                        if k not in ("weights_sha256", "arch", "class_names")}))
    elif other == "classes":
        report = {k: v for k, v in _eval_json(tiny_dir, toy, path).items() if k != "weights_sha256"}
        path.write_text(json.dumps({**report, "class_names": ["cat", "dog", "cow"]}))
    elif other == "hand-made":
        path.write_text(json.dumps({"clean_accuracy": 0.99, "num_classes": 100, "image_size": 32, "split": "test"}))
    else:
        path.write_text(json.dumps({"clean_accuracy": 0.99, "split": "test"}))
    (tiny_dir / "README.md").write_text("# mine\n")
    capsys.readouterr()   # the evaluation's progress
    with FakeHub() as hub:
        assert main(["push", "--model", str(tiny_dir), "--repo-id", "me/tiny", "--endpoint", hub.url,
                     "--token", "hf_test", "--eval-json", str(path)]) == 2
        assert not hub.requests   # nothing reached the Hub
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --eval-json {path}") and says in err and len(err.splitlines()) == 1, err
    assert (tiny_dir / "README.md").read_text() == "# mine\n"


@pytest.mark.parametrize("extra, val_size, limit, n", [((), None, None, 24), (("--limit", "5"), None, 5, 5),
                                                      (("--split", "train", "--val-size", "30"), 30, None, 30)])
def test_eval_report_records_val_size_and_limit(toy, tiny_dir, tmp_path, extra, val_size, limit, n):
    """A validation carve-out of train read as "30 images of the train split": the report did not say which."""
    report = _eval_json(tiny_dir, toy, tmp_path / "report.json", *extra)
    assert (report["val_size"], report["limit"], report["n"]) == (val_size, limit, n)


@pytest.mark.parametrize("noise", ["uniform", "lowfreq"])
def test_seeds_says_the_bank_needs_images_not_noise(toy, tmp_path, capsys, noise):
    """`data.ood=uniform data.ood_seed_bank=4` said "error: uniform does not exist"."""
    config = tmp_path / "cfg.toml"
    config.write_text(f'data.dataset = "{toy}"\ndata.image_size = 16\nmodel.arch = "wrn-10-1"\n')
    assert main(["seeds", "--config", str(config), "--bank-out", str(tmp_path / "bank.safetensors"),
                 "--gaussians-out", str(tmp_path / "g.safetensors"), f"data.ood={noise}",
                 "data.ood_seed_bank=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"data.ood = {noise}" in err and "image folder or archive" in err and "does not exist" not in err
    assert len(err.splitlines()) == 1 and not list(tmp_path.glob("*.safetensors"))


def test_a_card_says_its_numbers_come_from_a_validation_carve_out():
    """A report on `--val-size 30` of train read "on 30 images of the train split" in the card and its
    model-index: the held-out images training chose settings on, not the split."""
    from dat_core.cards import build_card

    config = {"arch": "wrn-10-1", "num_classes": 3, "image_size": 16}
    report = {"clean_accuracy": 0.5, "n": 30, "split": "train", "val_size": 30, "seed": 0}
    card = str(build_card(config, report))
    assert "on 30 images of the validation carve-out of the train split (val-size 30, seed 0)" in card
    assert "val_size: 30" in card
    whole = str(build_card(config, {**report, "val_size": None}))
    assert "on 30 images of the train split" in whole and "carve-out" not in whole


def test_push_takes_the_report_of_a_checkpoint_whose_config_leaves_fields_to_their_defaults(toy, tmp_path):
    """A config.json without image_size (filled in from the architecture when loaded) was compared raw: its own
    report was 'the report of another model: its image_size is 32, ...'s is None'."""
    folder = save_model(build_model("wrn-10-1", num_classes=3, class_names=CLASSES).eval(), tmp_path / "sparse")
    config = json.loads((folder / "config.json").read_text())
    config.pop("image_size")
    (folder / "config.json").write_text(json.dumps(config))
    report = tmp_path / "report.json"
    assert main(["eval", "--model", str(folder), "--data", str(toy), "--split", "test", "--steps", "0",
                 "--json", str(report)]) == 0
    with FakeHub() as hub:
        assert main(["push", "--model", str(folder), "--repo-id", "me/sparse", "--endpoint", hub.url,
                     "--token", "hf_test", "--eval-json", str(report)]) == 0
