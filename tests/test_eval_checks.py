"""`python -m train eval` and `train calibrate`: inputs refused before the work, and numbers labelled for what
they are (bad AutoAttack settings, a judge of other classes, OOD folders, the strong PGD check, bf16 numbers on
cards, reports of a recalibrated model, carve-outs that overlap training images, radii that bound nothing)."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from test_train_cli_reports import CLASSES, _tiny

import train.eval_cli as eval_cli
from dat_core import build_model, load_model
from dat_core.cards import build_card
from dat_core.evaluation import autoattack_accuracy, evaluate, model_info, sample_fidelity
from train.__main__ import main


@pytest.fixture
def tiny_dir(tmp_path):
    return _tiny(tmp_path / "tiny")


def _one_error(capsys) -> str:
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize("extra, says", [
    (["--norm", "L1", "--eps", "5"], "AutoAttack norm must be L2 or Linf"),
    (["--eps", "0"], "AutoAttack eps must be > 0"),
    (["--eps", "0.5"], "need at least 4 classes"),   # the toy model has 3 classes; targeted attacks read a 4th logit
])
def test_autoattack_settings_are_refused_before_the_evaluation_runs(toy, tiny_dir, tmp_path, capsys, monkeypatch,
                                                                    extra, says):
    """They were refused inside AutoAttack, after PGD on every image, the OOD attacks and the samples had run, and
    no report was written: hours of work lost on a full test split."""
    ran = []
    monkeypatch.setattr(eval_cli, "evaluate", lambda *a, **k: ran.append(1) or {})
    assert main(["eval", "--model", str(tiny_dir), "--data", str(toy), "--split", "test", "--autoattack",
                 "--json", str(tmp_path / "r.json"), *extra]) == 2
    assert says in _one_error(capsys) and not ran


@pytest.mark.parametrize("judge, says", [
    (dict(num_classes=2, class_names=["class0", "class1"]), "classes"),
    (dict(class_names=["class2", "class1", "class0"]), "classes"),
    (dict(image_size=32), "image size"),
])
def test_a_judge_of_other_classes_or_size_is_refused(judge, says):
    """A 2-class judge crashed in `gather` at the very end of the run; one with the classes in another order was
    taken, and its "fraction judged target" compared unrelated class indices."""
    torch.manual_seed(0)
    model = build_model("wrn-10-1", num_classes=3, image_size=16, class_names=CLASSES).eval()
    other = build_model("wrn-10-1", **{"num_classes": 3, "image_size": 16, "class_names": CLASSES, **judge}).eval()
    with pytest.raises(ValueError, match=says):
        sample_fidelity(model, other, 3, 16, 3, seeds_kind="uniform", steps=1)


def test_the_cli_refuses_a_judge_of_other_classes_before_the_evaluation(toy, tiny_dir, tmp_path, capsys, monkeypatch):
    judge = _tiny(tmp_path / "judge", class_names=["class2", "class1", "class0"])
    ran = []
    monkeypatch.setattr(eval_cli, "evaluate", lambda *a, **k: ran.append(1) or {})
    assert main(["eval", "--model", str(tiny_dir), "--data", str(toy), "--split", "test", "--steps", "0",
                 "--samples", "3", "--judge", str(judge)]) == 2
    assert "--judge" in _one_error(capsys) and not ran


@pytest.fixture
def two_folder_ood(tmp_path):
    """An OOD set stored in class folders: a dark one sorted first, a bright one second."""
    root = tmp_path / "ood"
    for name, value in (("a_dark", 0), ("b_bright", 255)):
        (root / name).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(root / name / f"{i:02d}.png")
    return root


def test_an_ood_limit_draws_from_the_whole_set_not_its_first_folder(tiny_dir, two_folder_ood, tmp_path):
    """`--ood-limit 20` kept the first 20 files in sorted order: only the dark folder, and an AUROC of it alone."""
    args = main_args(tiny_dir, two_folder_ood, tmp_path)
    images = eval_cli._ood_sets(args, 16, 24)["ood"]
    assert len(images) == 20
    bright = int((images.flatten(1).float().mean(1) > 127).sum())
    assert 5 <= bright <= 15
    again = eval_cli._ood_sets(args, 16, 24)["ood"]
    assert torch.equal(images, again)   # a fixed draw, by --seed


def main_args(model, ood, tmp_path, *specs):
    parser = eval_cli.argparse.ArgumentParser()
    eval_cli.add_eval_arguments(parser)
    args = parser.parse_args(["--model", str(model), "--ood-limit", "20",
                              *sum((["--ood", str(s)] for s in (specs or (ood,))), [])])
    return args


def test_two_ood_sets_of_one_name_both_stay_in_the_report(tiny_dir, two_folder_ood, tmp_path):
    """`--ood svhn/test --ood cifar100/test` kept one set, named "test": the other's AUROC was lost."""
    first, second = tmp_path / "svhn" / "test", tmp_path / "cifar100" / "test"
    for folder in (first, second):
        shutil.copytree(two_folder_ood, folder)
    sets = eval_cli._ood_sets(main_args(tiny_dir, None, tmp_path, first, second), 16, 24)
    assert sorted(sets) == ["cifar100/test", "svhn/test"]


def test_the_same_ood_set_twice_is_refused(tiny_dir, two_folder_ood, tmp_path):
    with pytest.raises(ValueError, match="twice"):
        eval_cli._ood_sets(main_args(tiny_dir, None, tmp_path, two_folder_ood, two_folder_ood), 16, 24)


def test_the_strong_check_is_never_weaker_than_the_standard_one(tiny_model, monkeypatch):
    """`--steps 100 --restarts 5 --strong` ran "strong" PGD with 50 steps and 2 restarts: weaker than the standard
    run it was reported beside. Now at least as many of each, and a point counts only if it survives both."""
    x = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        y = tiny_model(x).argmax(1)
    report = evaluate(tiny_model, (x, y), robust={"norm": "L2", "eps": 0.3, "steps": 100, "step_size": 0.05,
                                                  "restarts": 5}, robust_strong={"steps": 50, "restarts": 2})
    assert (report["robust_strong"]["steps"], report["robust_strong"]["restarts"]) == (100, 5)
    assert report["robust_strong_accuracy"] <= report["robust_accuracy"]

    import dat_core.evaluation.report as report_module  # an image the standard attack breaks and the strong one
    real = report_module.robust_correct                  # alone would miss: it is not robust under both

    def attacks(model, x, y, clean_pred, settings, autocast):
        alive = real(model, x, y, clean_pred, {**settings, "steps": 0, "restarts": 0}, autocast)
        if settings["steps"] == 20:
            alive[0] = False
        return alive

    monkeypatch.setattr(report_module, "robust_correct", attacks)
    report = evaluate(tiny_model, (x, y), robust={"norm": "L2", "eps": 0.3, "steps": 20, "step_size": 0.05},
                      robust_strong={"steps": 50})
    assert report["robust_accuracy"] == 5 / 6 and report["robust_strong_accuracy"] == 5 / 6
    assert "the standard attack too" in report["robust_strong"]["counts"]


def test_a_card_marks_numbers_measured_in_bf16():
    """`--autocast` reports published clean, PGD and ECE numbers that looked like the fp32 ones papers give."""
    config = {"arch": "wrn-10-1", "num_classes": 3, "image_size": 16}
    report = {"clean_accuracy": 0.5, "robust_accuracy": 0.3, "ece": 0.1, "n": 30, "split": "test",
              "robust": {"norm": "L2", "eps": 0.5, "steps": 20, "step_size": 0.1, "restarts": 0},
              "autoattack": {"norm": "L2", "eps": 0.5, "version": "standard", "n": 30}, "autoattack_accuracy": 0.2}
    bf16 = str(build_card(config, {**report, "autocast": True}))
    fp32 = str(build_card(config, {**report, "autocast": False}))
    assert "bf16" not in fp32
    rows = [line for line in bf16.splitlines() if line.startswith("| ") and "|---" not in line][1:]
    marked = {line.split("|")[1].strip(): "bf16" in line for line in rows}
    assert marked == {k: not k.startswith("AutoAttack") for k in marked} and len(marked) == 4, marked
    assert "precision: bf16" in bf16   # the model-index says it too


def test_push_refuses_a_report_made_before_the_model_was_recalibrated(toy, tiny_dir, tmp_path, capsys):
    """`train calibrate` changes config.json only: a report with the old ECE passed as the calibrated model's."""
    report = tmp_path / "report.json"
    assert main(["eval", "--model", str(tiny_dir), "--data", str(toy), "--split", "test", "--steps", "0",
                 "--json", str(report)]) == 0
    config = json.loads((tiny_dir / "config.json").read_text())
    (tiny_dir / "config.json").write_text(json.dumps({**config, "temperature": 1.7}))
    from train.eval_cli import check_report_of

    with pytest.raises(ValueError, match="temperature"):
        check_report_of(json.loads(report.read_text()), tiny_dir, load_model(tiny_dir).config, "--eval-json")


def _trained_record(folder, val_size, seed):
    config = json.loads((folder / "config.json").read_text())
    config["training"] = {"stage": "stage1", "step": 1, "selection": "last (no validation)" if not val_size
                          else "best robust_accuracy on validation",
                          "carve_outs": [{"split": "train", "val_size": val_size, "seed": seed}]}
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("recorded, extra, says", [
    ((10, 0), ["--val-size", "20"], "held out only 10"),
    ((10, 3), ["--val-size", "10", "--seed", "0"], "--seed 3"),
    ((0, 0), ["--val-size", "10"], "no images"),
])
@pytest.mark.parametrize("command", ["calibrate", "eval"])
def test_a_carve_out_holding_training_images_is_refused(toy, tiny_dir, capsys, recorded, extra, says, command):
    """`train calibrate`'s default 2000 images were training's 1000 held-out ones plus 1000 it trained on; a run
    with no validation was calibrated on its training images without a word."""
    _trained_record(tiny_dir, *recorded)
    more = ["--steps", "0"] if command == "eval" else []
    assert main([command, "--model", str(tiny_dir), "--data", str(toy), "--split", "train", *more, *extra]) == 2
    assert says in _one_error(capsys)


def test_training_records_its_carve_out_and_its_inits(toy, tmp_path):
    from dat_core.training.config import load_config
    from dat_core.training.loop import train

    common = {"data.dataset": str(toy), "data.image_size": 16, "model.arch": "wrn-10-1", "batch_size": 8, "steps": 1,
              "eval_every": 0, "attack.steps": 1, "sample_grid": False}
    first = train(load_config(None, stage="stage1", **common, **{"data.val_size": 9, "seed": 2,
                                                                "out_dir": str(tmp_path / "one")}))
    record = json.loads((first / "config.json").read_text())["training"]
    (mine,) = record["carve_outs"]
    assert {k: mine[k] for k in ("split", "val_size", "seed")} == {"split": "train", "val_size": 9, "seed": 2}
    assert record["additional_data"] is False
    second = train(load_config(None, stage="stage1", **common, **{"data.val_size": 12, "seed": 0,
                                                                 "model.init": str(first),
                                                                 "out_dir": str(tmp_path / "two")}))
    record = json.loads((second / "config.json").read_text())["training"]
    assert [c["val_size"] for c in record["carve_outs"]] == [12, 9]   # the init's held-out images too


def test_a_smaller_carve_out_must_lie_inside_the_recorded_one(tmp_path, capsys):
    """Largest-remainder rounding is not monotone: with classes of 5, 5 and 1 images, training's 6 held-out images
    and a --val-size 5 carve-out differ, and the smaller one took an image the model trained on."""
    from dat_core.data import ImageDataset, train_val_split
    from dat_core.training.state import data_fingerprint

    root = tmp_path / "data" / "train"
    for c, n in enumerate((5, 5, 1)):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((16, 16, 3), 40 * c + i, np.uint8)).save(root / f"class{c}" / f"{i}.png")
    folder = _tiny(tmp_path / "m")
    held = train_val_split(eval_cli.load_dataset(str(tmp_path / "data"), "train", 16, None, None), 6, seed=0)[1]
    config = json.loads((folder / "config.json").read_text())
    config["training"] = {"carve_outs": [{"split": "train", "val_size": 6, "seed": 0,
                                          "val_sha256": data_fingerprint(held)}]}
    (folder / "config.json").write_text(json.dumps(config))
    base = ["eval", "--model", str(folder), "--data", str(tmp_path / "data"), "--split", "train", "--steps", "0"]
    assert main([*base, "--val-size", "6"]) == 0
    capsys.readouterr()
    assert main([*base, "--val-size", "5"]) == 2
    assert "images the model trained on" in _one_error(capsys)
    assert isinstance(held, ImageDataset)


def test_a_carve_out_of_other_data_is_refused(toy, tiny_dir, tmp_path, capsys):
    """The record named a split, a size and a seed, not the data: --data cifar10 for a model trained from a folder
    drew its carve-out from other images and passed."""
    config = json.loads((tiny_dir / "config.json").read_text())
    config["training"] = {"carve_outs": [{"split": "train", "val_size": 12, "seed": 0, "val_sha256": "0" * 64}]}
    (tiny_dir / "config.json").write_text(json.dumps(config))
    assert main(["eval", "--model", str(tiny_dir), "--data", str(toy), "--split", "train", "--steps", "0",
                 "--val-size", "12"]) == 2
    assert "not the data training held" in _one_error(capsys)


def test_model_info_asks_when_training_did_not_record_extra_data(toy, tiny_dir, tmp_path, capsys):
    base = ["eval", "--model", str(tiny_dir), "--data", str(toy), "--split", "test", "--steps", "0", "--eps", "2",
            "--autoattack-attacks", "apgd-ce", "--model-info", "--json", str(tmp_path / "r.json")]
    assert main(base) == 2
    assert "--additional-data yes|no" in _one_error(capsys)
    config = json.loads((tiny_dir / "config.json").read_text())
    (tiny_dir / "config.json").write_text(json.dumps({**config, "training": {"additional_data": True}}))
    assert main(base) == 0
    assert json.loads((tmp_path / "model_info.json").read_text())["additional_data"] is True


@pytest.mark.parametrize("norm, eps", [("L2", 127.5), ("L1", 1e5)])
def test_a_radius_larger_than_any_distance_between_images_is_refused(toy, tiny_dir, capsys, norm, eps):
    """An L2 radius in 0..255 units (127.5) passed every check; no two 16x16 RGB images are 27.7 apart."""
    assert main(["eval", "--model", str(tiny_dir), "--data", str(toy), "--split", "test", "--norm", norm,
                 "--eps", str(eps), "--step-size", "1"]) == 2
    assert "bounds nothing" in _one_error(capsys)


def test_model_info_says_whether_extra_data_was_used(tiny_model):
    """RobustBench's `additional_data` was always False, though DAT's CIFAR models train on 80M Tiny Images."""
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        y = tiny_model(x).argmax(1)
    result = autoattack_accuracy(tiny_model, (x, y), eps=0.1, attacks=["apgd-ce"], batch_size=4)
    assert model_info(result, "m", "wrn", "cifar10", additional_data=True)["additional_data"] is True
    assert model_info(result, "m", "wrn", "cifar10", additional_data=False)["additional_data"] is False


def test_update_card_with_a_report_of_no_card_numbers_keeps_the_card_and_precision_replaces():
    """A report without a number a card takes (a hand-edited clean_accuracy: null) ended in KeyError('name') once
    the card's results were kept; a bf16 rerun kept the fp32 number beside it under another name."""
    from dat_core.cards import update_card

    config = {"arch": "wrn-10-1", "num_classes": 3, "image_size": 16}
    first = {"clean_accuracy": 0.5, "n": 30, "split": "test",
             "autoattack": {"norm": "L2", "eps": 0.5, "version": "standard", "n": 30}, "autoattack_accuracy": 0.2}
    card = str(build_card(config, first))
    out = update_card(card, config, {"split": "test", "n": 30, "clean_accuracy": None})
    assert "AutoAttack robust accuracy (L2 eps=0.5)" in out and "Clean accuracy" in out
    again = update_card(card, config, {"clean_accuracy": 0.6, "n": 30, "split": "test", "autocast": True})
    names = [r.metric_name for r in __import__("huggingface_hub").ModelCard(again).data.eval_results]
    assert names.count("Clean accuracy [bf16]") == 1 and "Clean accuracy" not in names, names
