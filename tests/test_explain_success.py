"""Counterfactual success (explain.success): every (image, other class) pair, reached = p(target) >= threshold at
some step; the sweep and `python -m explain success` over a folder or a validation carve-out."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dat_core import build_model
from dat_core.checkpoint import save_model
from explain import counterfactuals
from explain.cli import main
from explain.success import counterfactual_success, sweep


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("success")
    torch.manual_seed(0)
    model = build_model("wrn-10-1").eval()
    save_model(model, d / "ckpt")
    rng = np.random.default_rng(0)
    (d / "imgs").mkdir()
    for name in ("cat-0000.png", "ship-0001.png", "mystery.png"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / "imgs" / name)
    return model, d


def test_every_other_class_is_a_pair_and_reached_matches_the_trajectories(setup):
    model, d = setup
    images = [d / "imgs" / "cat-0000.png", d / "imgs" / "mystery.png"]
    result = counterfactual_success(model, images, [3, None], ["cat", "mystery"], steps=5, threshold=0.3)
    assert len(result.reached) == 18 and set(result.targets[:9]) == set(range(10)) - {3}
    predicted = counterfactuals(model, images[1], [0], steps=1)[0].source
    assert predicted not in set(result.targets[9:]) and set(result.sources[9:]) == {predicted}
    again = counterfactuals(model, images[0], [int(t) for t in result.targets[:9]], steps=5)
    expected = [bool((t.confidence >= 0.3).any()) for t in again]
    assert result.reached[:9].tolist() == expected
    s = result.summary()
    assert s["pairs"] == 18 and s["success_rate"] == pytest.approx(result.reached.mean())
    assert len(s["missed"]) == int((~result.reached).sum()) and s["params"]["steps"] == 5
    assert all(m["image"] in ("cat", "mystery") for m in s["missed"])


def test_an_unlabelled_image_is_read_by_the_model_in_eval_mode(setup):
    """The source class of an image without a label is the model's prediction as PGD sees the model (eval mode,
    `logits_at`): a model left in train mode used to predict from one image's batch statistics and move its
    BatchNorm running statistics."""
    model, d = setup
    image = d / "imgs" / "mystery.png"
    expected = counterfactual_success(model, [image], steps=1).sources[0]
    trained = build_model("wrn-10-1")
    trained.load_state_dict(model.state_dict())
    trained.train()
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    assert counterfactual_success(trained, [image], steps=1).sources[0] == expected
    assert trained.training and all(torch.equal(v, before[k]) for k, v in trained.state_dict().items())


def test_more_steps_and_a_larger_radius_never_reach_less(setup):
    model, d = setup
    short, long = sweep(model, [d / "imgs" / "cat-0000.png"], [3], eps=[3.0], steps=[2, 30], step_size=[0.2])
    assert long.rate >= short.rate and long.params["steps"] == 30
    assert (long.l2 >= short.l2 - 1e-4).all()


def test_bad_threshold_and_label_count(setup):
    model, d = setup
    with pytest.raises(ValueError, match="threshold"):
        counterfactual_success(model, [d / "imgs" / "cat-0000.png"], threshold=1.5)
    with pytest.raises(ValueError, match="2 labels for 1 images"):
        counterfactual_success(model, [d / "imgs" / "cat-0000.png"], [1, 2])


def test_cli_sweeps_a_folder_and_labels_by_file_name(setup, tmp_path, capsys):
    _, d = setup
    assert main(["success", "--model", str(d / "ckpt"), "--images", str(d / "imgs"), "--steps", "2,4",
                 "--eps", "1,inf", "--autocast", "off", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "success.json").read_text())
    assert len(report["settings"]) == 4 and all(s["pairs"] == 27 for s in report["settings"])
    assert {(s["params"]["eps"], s["params"]["steps"]) for s in report["settings"]} == {
        (1.0, 2), (1.0, 4), ("inf", 2), ("inf", 4)}
    for s in report["settings"]:       # cat-0000 is labelled cat (index 3): no pair goes from cat to cat
        assert not any(m["image"] == "cat-0000.png" and m["target"] == "cat" for m in s["missed"])
    out = capsys.readouterr().out
    assert out.count("pairs reach p >= 0.5") == 4 and "eps inf steps 2 step" in out and out.isascii()


def test_cli_lines_say_linf_budgets_as_typed(setup, tmp_path, capsys):
    """--norm Linf --eps 8/255 --step-size 1/255 comes back as 8/255 and 1/255, not 0.0313725 and 0.00392157."""
    _, d = setup
    assert main(["success", "--model", str(d / "ckpt"), "--images", str(d / "imgs"), "--steps", "2", "--limit", "2",
                 "--norm", "Linf", "--eps", "8/255", "--step-size", "1/255", "--autocast", "off",
                 "--out", str(tmp_path)]) == 0
    assert "eps 8/255 steps 2 step 1/255:" in capsys.readouterr().out


def test_a_stopped_sweep_keeps_its_finished_settings_and_resumes(setup, tmp_path, monkeypatch):
    """success.json was written only after the whole sweep: a stop lost every finished setting. Each setting is
    now saved as it ends, and the same command continues with the ones left (the same images and model only)."""
    import explain.success as success

    _, d = setup
    real, calls = success.counterfactual_success, []

    def stopped_at_second(*args, **kw):
        calls.append(kw["steps"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    args = ["success", "--model", str(d / "ckpt"), "--images", str(d / "imgs"), "--steps", "2,4", "--autocast", "off"]
    monkeypatch.setattr(success, "counterfactual_success", stopped_at_second)
    assert main([*args, "--out", str(tmp_path / "a")]) == 130
    partial = json.loads((tmp_path / "a" / "success.json").read_text())
    assert [s["params"]["steps"] for s in partial["settings"]] == [2] and partial["complete"] is False
    calls.clear()
    monkeypatch.setattr(success, "counterfactual_success", lambda *a, **kw: calls.append(kw["steps"]) or real(*a, **kw))
    assert main([*args, "--out", str(tmp_path / "a")]) == 0 and calls == [4]        # only the setting left
    assert main([*args, "--out", str(tmp_path / "b")]) == 0                          # uninterrupted, for reference
    resumed, whole = (json.loads((tmp_path / k / "success.json").read_text()) for k in ("a", "b"))
    assert resumed["settings"] == whole["settings"] and resumed["complete"] is True
    calls.clear()
    (tmp_path / "a" / "success.json").write_text('{"settings": [')                  # cut short: set aside, run again
    assert main([*args, "--out", str(tmp_path / "a")]) == 0 and calls == [2, 4]
    assert (tmp_path / "a" / "success.json.damaged").read_text() == '{"settings": ['


def test_a_sweep_into_a_folder_of_another_sweep_is_refused_and_one_of_more_settings_extends_it(setup, tmp_path,
                                                                                                 monkeypatch, capsys):
    """Other images, or another model, into the same --out overwrote success.json without a word, and a sweep of
    other settings under the same run dropped the settings saved before."""
    import explain.success as success

    _, d = setup
    real, calls = success.counterfactual_success, []
    monkeypatch.setattr(success, "counterfactual_success", lambda *a, **kw: calls.append(kw["steps"]) or real(*a, **kw))
    args = ["success", "--model", str(d / "ckpt"), "--images", str(d / "imgs"), "--autocast", "off",
            "--out", str(tmp_path / "a")]
    assert main([*args, "--steps", "2"]) == 0
    first = json.loads((tmp_path / "a" / "success.json").read_text())
    assert main([*args, "--steps", "4,2"]) == 0 and calls == [2, 4]                  # 2 was read back
    both = json.loads((tmp_path / "a" / "success.json").read_text())
    assert [s["params"]["steps"] for s in both["settings"]] == [4, 2] and both["settings"][1] == first["settings"][0]
    assert main([*args, "--steps", "8"]) == 0
    kept = json.loads((tmp_path / "a" / "success.json").read_text())
    assert [s["params"]["steps"] for s in kept["settings"]] == [8, 4, 2] and kept["complete"] is True
    assert "steps 8 " in capsys.readouterr().out
    other = tmp_path / "imgs"
    other.mkdir()
    (other / "dog-0000.png").write_bytes((d / "imgs" / "cat-0000.png").read_bytes())
    calls.clear()
    saved = (tmp_path / "a" / "success.json").read_bytes()
    assert main([*args[:4], str(other), *args[5:], "--steps", "2"]) == 2 and calls == []
    err = capsys.readouterr().err
    assert "another sweep" in err and "images" in err and "--out" in err, err
    assert (tmp_path / "a" / "success.json").read_bytes() == saved


def test_cli_bad_input_is_one_line(setup, tmp_path, capsys):
    _, d = setup
    assert main(["success", "--model", str(d / "ckpt"), "--images", str(tmp_path / "none"), "--out",
                 str(tmp_path)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "cat-1.png").write_text("not an image")
    assert main(["success", "--model", str(d / "ckpt"), "--images", str(tmp_path / "junk"), "--out",
                 str(tmp_path / "out")]) == 2
    assert "cannot read" in capsys.readouterr().err and not (tmp_path / "out").exists()   # nothing made
    (tmp_path / "taken").write_text("a file")
    assert main(["success", "--model", str(d / "ckpt"), "--images", str(d / "imgs"), "--out",
                 str(tmp_path / "taken")]) == 2
    assert "--out" in (err := capsys.readouterr().err) and "is a file: give a folder" in err   # before the sweep
    assert main(["success", "--model", str(d / "ckpt"), "--images", str(d / "imgs"), "--steps", "x", "--out",
                 str(tmp_path)]) == 2


def test_data_options_without_data_are_refused(setup, tmp_path, capsys):
    _, d = setup
    assert main(["success", "--model", str(d / "ckpt"), "--images", str(d / "imgs"), "--split", "test",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "--split goes with --data" in capsys.readouterr().err and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("extra, says", [(("--norm", "L3"), "argument --norm: invalid choice: 'L3'"),
                                         (("--threshold", "1"), "argument --threshold: expected a probability"),
                                         (("--threshold", "nan"), "argument --threshold: expected a probability")])
def test_norm_and_threshold_are_checked_before_anything_loads(tmp_path, capsys, extra, says):
    """They were checked only inside the sweep, after the model and every image had loaded."""
    with pytest.raises(SystemExit) as e:
        main(["success", "--model", "no-such-model-folder", "--images", str(tmp_path), *extra])
    assert e.value.code == 2 and says in capsys.readouterr().err


def test_an_unreadable_image_is_found_before_the_sweep(setup, tmp_path, capsys, monkeypatch):
    """`success` decoded each file when the sweep reached it: a bad file sorted last threw away the work done on
    every image before it. Every image is decoded before the first path (as `benchmark` does)."""
    import shutil

    import explain.success
    _, d = setup
    shutil.copytree(d / "imgs", tmp_path / "imgs")
    (tmp_path / "imgs" / "zebra-0000.png").write_bytes(b"")                # sorted last
    swept = []
    monkeypatch.setattr(explain.success, "sweep", lambda *a, **k: swept.append(1))
    assert main(["success", "--model", str(d / "ckpt"), "--images", str(tmp_path / "imgs"), "--out",
                 str(tmp_path / "out")]) == 2
    assert "zebra-0000.png" in capsys.readouterr().err and swept == []


def test_steps_that_are_not_whole_say_so(setup, tmp_path, capsys):
    """`success --steps 2.5` said "invalid literal for int() with base 10: '2.5'"."""
    _, d = setup
    assert main(["success", "--model", str(d / "ckpt"), "--images", str(d / "imgs"), "--steps", "2,2.5",
                 "--out", str(tmp_path / "out")]) == 2
    assert "--steps: expected an integer in 1..1000, got '2.5'" in capsys.readouterr().err


def test_a_sweep_begun_on_another_device_is_not_extended_here(setup, tmp_path, capsys):
    """The run a sweep's saved settings belong to did not name the device: one begun on CUDA was extended on the
    CPU into one success.json. (No GPU here: the CUDA start is written into the file.) A sweep saved before the
    device was recorded is extended as before."""
    _, d = setup
    args = ["success", "--model", str(d / "ckpt"), "--images", str(d / "imgs"), "--autocast", "off",
            "--out", str(tmp_path / "a")]
    assert main([*args, "--steps", "2"]) == 0
    path = tmp_path / "a" / "success.json"
    saved = json.loads(path.read_text())
    assert saved["run"]["device_type"] == "cpu"
    path.write_text(json.dumps({**saved, "run": {**saved["run"], "device_type": "cuda"}}))
    capsys.readouterr()
    assert main([*args, "--steps", "4"]) == 2
    assert "another sweep (device differ)" in capsys.readouterr().err
    del saved["run"]["device_type"]
    path.write_text(json.dumps(saved))
    assert main([*args, "--steps", "4"]) == 0
    assert [s["params"]["steps"] for s in json.loads(path.read_text())["settings"]] == [4, 2]
