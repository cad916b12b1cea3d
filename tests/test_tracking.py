"""Optional tracking (`--track NAME`: a copy of metrics.jsonl / eval.jsonl), CLI logging, eval --autocast."""

import importlib.util
import json
import logging

import pytest
import torch

from dat_core import build_model, save_model
from dat_core.runtime import native_bf16
from dat_core.training import tracking
from train import eval_cli
from train.__main__ import main


class Recorder:
    """An in-repo tracker behind the same adapter interface as trackio / tensorboard / wandb."""

    runs: list["Recorder"] = []

    def __init__(self, out, config):
        self.out, self.config, self.rows, self.closed = out, config, [], 0
        Recorder.runs.append(self)

    def log(self, row, step):
        self.rows.append((step, row))

    def close(self):
        self.closed += 1


class Failing(Recorder):
    def log(self, row, step):
        if step == 4:
            raise ConnectionError("tracker server went away")
        super().log(row, step)


def args(toy, out, *extra, steps=6):
    """The stage-1 command line; `extra` keys replace the defaults' (a key given twice is refused)."""
    given = {o.split("=", 1)[0]: o for o in (
        f"out_dir={out}", f"data.dataset={toy}", "data.image_size=16", "data.val_size=12", "model.arch=wrn-10-1",
        f"steps={steps}", "batch_size=8", "log_every=2", "eval_every=3", "eval_size=12", "eval_attack_steps=1",
        "attack.steps=1", "sample_grid=false", "autocast=false", *extra)}
    return ["stage1", *given.values()]


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def backends(monkeypatch):
    Recorder.runs = []
    monkeypatch.setitem(tracking.BACKENDS, "recorder", ("json", Recorder))
    monkeypatch.setitem(tracking.BACKENDS, "failing", ("json", Failing))
    monkeypatch.setitem(tracking.BACKENDS, "absent", ("no_such_tracker_package_xyz", Recorder))


def test_track_mirrors_every_logged_row(toy, tmp_path, backends):
    out = tmp_path / "run"
    assert main([*args(toy, out), "--track", "recorder"]) == 0
    (run,) = Recorder.runs
    assert run.closed == 1 and run.out == out and run.config["steps"] == 6
    train_rows, eval_rows = jsonl(out / "metrics.jsonl"), jsonl(out / "eval.jsonl")
    assert [r["step"] for r in train_rows] == [1, 2, 4, 6] and [r["step"] for r in eval_rows] == [3, 6]
    expected = [(r["step"], {k: v for k, v in r.items() if k != "step"}) for r in train_rows]
    expected += [(r["step"], {"val": {k: v for k, v in r.items() if k != "step"}}) for r in eval_rows]
    assert sorted(run.rows, key=lambda sr: (sr[0], "val" in sr[1])) == sorted(
        expected, key=lambda sr: (sr[0], "val" in sr[1]))


def test_a_failing_tracker_is_dropped_with_one_warning(toy, tmp_path, backends, capsys):
    out = tmp_path / "run"
    assert main([*args(toy, out, "eval_every=0"), "--track", "failing"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: tracker log failed (ConnectionError: tracker server went away)") == 1, err
    assert [s for s, _ in Recorder.runs[0].rows] == [1, 2]  # nothing after the failure
    assert [r["step"] for r in jsonl(out / "metrics.jsonl")] == [1, 2, 4, 6]  # the record is complete


@pytest.mark.parametrize("name,says", [
    ("absent", "the no_such_tracker_package_xyz package is not installed (pip install no_such_tracker_package_xyz)"),
    ("mlflow", "unknown tracker; choose one of trackio, tensorboard, wandb"),
])
def test_an_unavailable_tracker_stops_before_training(toy, tmp_path, backends, capsys, name, says):
    assert main([*args(toy, tmp_path / "run"), "--track", name]) == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.parametrize("name", ["trackio", "tensorboard", "wandb"])
def test_real_tracker_names_say_what_to_install(toy, tmp_path, capsys, name):
    if importlib.util.find_spec(name) is not None:
        pytest.skip(f"{name} is installed here")
    assert main([*args(toy, tmp_path / "run"), "--track", name]) == 2
    assert f"pip install {name}" in capsys.readouterr().err


def test_tensorboard_gets_the_rows_when_installed(toy, tmp_path):
    """The real backend (tensorboard is not a dependency: skipped where it is absent)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main([*args(toy, out), "--track", "tensorboard"]) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    for tag, rows, key in (("loss", jsonl(out / "metrics.jsonl"), "loss"),
                           ("val/robust_accuracy", jsonl(out / "eval.jsonl"), "robust_accuracy")):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [r["step"] for r in rows]
        assert [s.value for s in scalars] == pytest.approx([r[key] for r in rows])  # stored as float32


def test_a_tracker_that_cannot_start_is_a_config_error(toy, tmp_path, monkeypatch, capsys):
    def refuse(out, config):
        raise PermissionError("not logged in")

    monkeypatch.setitem(tracking.BACKENDS, "refusing", ("json", refuse))
    assert main([*args(toy, tmp_path / "run"), "--track", "refusing"]) == 2
    assert "--track refusing: the tracker did not start (PermissionError: not logged in)" in capsys.readouterr().err


def test_cli_messages_go_through_logging_to_stderr(toy, tmp_path, caplog, capsys):
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="train"):
        assert main(args(toy, out, "eval_every=0", steps=2)) == 0
    assert any(r.name == "train" and "final EMA checkpoint" in r.getMessage() for r in caplog.records)
    captured = capsys.readouterr()
    assert f"final EMA checkpoint: {out / 'final'}" in captured.err and "final EMA" not in captured.out


# ---------------------------------------------------------------- train eval --autocast auto|on|off

@pytest.fixture
def tiny_dir(tmp_path):
    torch.manual_seed(0)
    model = build_model("wrn-10-1", num_classes=3, image_size=16, class_names=["class0", "class1", "class2"])
    return save_model(model.eval(), tmp_path / "tiny")


@pytest.mark.parametrize("flag,expected", [
    ([], False), (["--autocast"], True), (["--autocast", "on"], True), (["--autocast", "off"], False),
    (["--autocast", "auto"], native_bf16(torch.device("cpu"))),
])
def test_eval_autocast_takes_auto_on_off(toy, tiny_dir, tmp_path, monkeypatch, flag, expected):
    seen = []
    real = eval_cli.evaluate
    monkeypatch.setattr(eval_cli, "evaluate", lambda *a, **kw: seen.append(kw["autocast"]) or real(*a, **kw))
    report = tmp_path / "report.json"
    assert main(["eval", "--model", str(tiny_dir), "--data", str(toy), "--split", "test", "--steps", "1",
                 "--device", "cpu", "--json", str(report), *flag]) == 0
    assert seen == [expected] and json.loads(report.read_text())["autocast"] is expected


def test_eval_autocast_rejects_other_values(tiny_dir, toy, capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--model", str(tiny_dir), "--data", str(toy), "--autocast", "fast"])
    assert e.value.code == 2 and "invalid choice: 'fast'" in capsys.readouterr().err
