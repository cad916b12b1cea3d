"""What `python -m train eval` and `train seeds` write: never into or over one of their inputs (a checkpoint's weights,
an image of a data or OOD folder, the config), a figure folder holding only one run's figures, and messages that
name the options the user gave."""

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from test_train_cli_reports import _tiny

from dat_core.data import SEED_KINDS
from train.__main__ import main
from train.eval_cli import add_eval_arguments


@pytest.fixture
def work(toy, tmp_path):
    """A private copy of the toy data (a refusal that fails writes into it) and a tiny checkpoint beside it."""
    data = shutil.copytree(toy, tmp_path / "data")
    return {"model": _tiny(tmp_path / "tiny"), "data": data, "ood": data / "ood", "root": tmp_path}


def _fingerprint(folder: Path) -> dict[str, str]:
    """Every file under `folder` and the sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert "evaluate" not in err   # refused before the first batch (no progress bar)
    return errors[0]


def _eval(work, *extra):
    return main(["eval", "--model", str(work["model"]), "--data", str(work["data"]), "--split", "test", "--steps", "1",
                 "--limit", "8", *extra])


@pytest.mark.parametrize("case", ["weights", "card", "class_folder", "ood_image", "ood_folder", "symlink", "judge",
                                  "out_is_model", "out_in_class_folder", "new_subfolder"])
def test_eval_never_writes_into_or_over_an_input(work, capsys, case):
    """`--json m1/model.safetensors` replaced the evaluated checkpoint's weights with the report (exit 0); --out
    inside a class folder added reliability.png to the images the next run reads."""
    model, data, ood, root = work["model"], work["data"], work["ood"], work["root"]
    judge = _tiny(root / "judge", seed=1)
    (root / "link").symlink_to(model, target_is_directory=True)
    extra, says = {
        "weights": (["--json", str(model / "model.safetensors")], "--model"),
        "card": (["--json", str(model / "README.md"), "--update-card"], "--model"),
        "class_folder": (["--json", str(data / "test" / "class0" / "report.json")], "--data"),
        "ood_image": (["--ood", str(ood), "--ood-limit", "4", "--json", str(ood / "000.png")], "--ood"),
        "ood_folder": (["--ood", str(ood), "--ood-limit", "4", "--out", str(ood)], "--ood"),
        "symlink": (["--json", str(root / "link" / "config.json")], "--model"),
        "judge": (["--samples", "3", "--judge", str(judge), "--json", str(judge / "model.safetensors")], "--judge"),
        "out_is_model": (["--out", str(model)], "--model"),
        "out_in_class_folder": (["--out", str(data / "test" / "class1")], "--data"),
        "new_subfolder": (["--autoattack-attacks", "apgd-ce", "--model-info", "--additional-data", "no",
                           "--json", str(model / "eval" / "r.json")], "--model"),
    }[case]
    before = {name: _fingerprint(work[name]) for name in ("model", "data")} | {"judge": _fingerprint(judge)}
    assert _eval(work, *extra) == 2
    error = _one_error(capsys)
    assert says in error and "input" in error, error
    assert {name: _fingerprint(work[name]) for name in ("model", "data")} | {"judge": _fingerprint(judge)} == before


def test_eval_still_writes_beside_its_inputs(work, capsys):
    """Outputs next to an input (not in it) are fine: a report beside the checkpoint folder and the data."""
    report = work["root"] / "report.json"
    assert _eval(work, "--ood", str(work["ood"]), "--ood-limit", "4", "--ood-clean-only", "--json", str(report),
                 "--out", str(work["root"] / "figs")) == 0
    assert json.loads(report.read_text())["n"] == 8


def _seeds_config(work) -> Path:
    cfg = work["root"] / "cfg.toml"
    cfg.write_text(f'stage = "stage2"\nseed = 3\n[model]\ninit = "s1"\n'
                   f'[data]\ndataset = "{work["data"]}"\nimage_size = 16\nval_size = 12\n'
                   f'ood = "{work["ood"]}"\nood_holdout = 6\nood_seed_bank = 10\n')
    return cfg


@pytest.mark.parametrize("case", ["ood_image", "ood_folder", "ood_symlink", "dataset", "config"])
def test_seeds_never_writes_into_or_over_its_inputs(work, capsys, case):
    """`--bank-out ood/0.png` replaced an OOD image with the bank (exit 0); `--bank-out ood/bank.png` added a file
    that the next run reads as one more OOD image."""
    cfg, ood, data = _seeds_config(work), work["ood"], work["data"]
    (work["root"] / "oodlink").symlink_to(ood, target_is_directory=True)
    option, path, says = {
        "ood_image": ("--bank-out", ood / "000.png", "data.ood"),
        "ood_folder": ("--bank-out", ood / "bank.png", "data.ood"),
        "ood_symlink": ("--bank-out", work["root"] / "oodlink" / "bank.safetensors", "data.ood"),
        "dataset": ("--gaussians-out", data / "train" / "class0" / "g.safetensors", "data.dataset"),
        "config": ("--gaussians-out", cfg, "--config"),
    }[case]
    other = "--gaussians-out" if option == "--bank-out" else "--bank-out"
    before, config_text = _fingerprint(data), cfg.read_text()
    assert main(["seeds", "--config", str(cfg), "--resolution", "4", option, str(path), other, ""]) == 2
    error = _one_error(capsys)
    assert option in error and says in error and "input" in error, error
    assert _fingerprint(data) == before and cfg.read_text() == config_text


def test_a_rerun_into_the_same_out_folder_keeps_no_figure_of_the_earlier_run(work, capsys):
    """Run 1 wrote samples.png; run 2, without samples, into the same --out left it beside run 2's reliability.png,
    as if both were of one run."""
    out = work["root"] / "o1"
    assert _eval(work, "--samples", "3", "--sample-steps", "1", "--out", str(out)) == 0
    assert {p.name for p in out.iterdir()} >= {"reliability.png", "samples.png"}
    (out / "notes.txt").write_text("mine")   # a file of the user's: not this command's to remove
    report = work["root"] / "r2.json"
    assert _eval(work, "--out", str(out), "--json", str(report)) == 0
    assert not (out / "samples.png").exists() and (out / "reliability.png").is_file()
    assert (out / "notes.txt").read_text() == "mine"
    assert set(json.loads(report.read_text())["files"]) == {"reliability"}


def test_the_sample_seeds_help_names_exactly_its_choices():
    """It said "or noise", and `--sample-seeds noise` was refused: invalid choice."""
    parser = argparse.ArgumentParser()
    add_eval_arguments(parser)
    action = next(a for a in parser._actions if a.dest == "sample_seeds")
    assert tuple(action.choices) == SEED_KINDS
    for kind in SEED_KINDS:
        assert kind in action.help, action.help
    assert "or noise" not in action.help


def test_too_large_an_ood_holdout_is_named_as_given(work, capsys):
    """`--ood-holdout 100` on a 40-image set said "val_size 100 gives 100 of 40 images": an option never given."""
    for n in ("100", "40"):
        assert _eval(work, "--ood", str(work["ood"]), "--ood-holdout", n) == 2
        error = capsys.readouterr().err
        assert f"--ood-holdout {n}" in error and "val_size" not in error and "40 images" in error, error
