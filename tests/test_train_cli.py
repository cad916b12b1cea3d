"""`python -m train eval | push | import` end to end on tiny checkpoints and a loopback Hub."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fakehub import FakeHub
from huggingface_hub import ModelCard

from dat_core import build_model, load_model, save_model
from dat_core.training.data import load_dataset
from train.__main__ import main
from train.eval_cli import random_subset


@pytest.fixture
def tiny_dir(tmp_path):
    torch.manual_seed(0)
    model = build_model("wrn-10-1", num_classes=3, image_size=16, class_names=["class0", "class1", "class2"])
    return save_model(model.eval(), tmp_path / "tiny")


@pytest.mark.parametrize("command", [[], ["stage1"], ["stage2"], ["eval"], ["push"], ["import"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([*command, "--help"])
    assert e.value.code == 0
    assert "usage: python -m train" in capsys.readouterr().out


def test_eval_help_names_real_defaults_only(capsys):
    """Options whose None means "not given" read "(default: 0) (default: None)" under ArgumentDefaultsHelpFormatter."""
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "(default: False)" not in text and "(default: [])" not in text
    assert "extra random-start restarts (default: 0) --strong" in text and "the samples (default: 0)" in text
    assert "--batch-size BATCH_SIZE images per forward/attack batch (default: 256)" in text


def test_eval_writes_json_with_fractions(toy, tiny_dir, tmp_path):
    out = tmp_path / "report.json"
    code = main(["eval", "--model", str(tiny_dir), "--data", str(toy), "--split", "test", "--steps", "2",
                 "--ood", "uniform", "--ood", "lowfreq", "--samples", "3", "--sample-steps", "4",
                 "--out", str(tmp_path / "figs"),
                 "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["n"] == 24
    assert 0 <= report["robust_accuracy"] <= report["clean_accuracy"] <= 1
    assert 0 <= report["ood_auroc"]["uniform"] <= 1 and 0 <= report["ece"] <= 1
    assert 0 <= report["ood_auroc_adversarial"]["uniform"] <= 1 and report["ood_adversarial"]["eps"] == 1.0
    # the clean and the adversarial AUROC score the same OOD images by default, as the official MAX_OOD_SAMPLES
    assert report["ood_n"]["lowfreq"] == report["ood_adversarial_n"]["lowfreq"] == 1024
    assert main(["eval", "--model", str(tiny_dir), "--data", str(toy), "--split", "test", "--steps", "0",
                 "--ood", "uniform", "--ood", "lowfreq", "--ood-limit", "8", "--ood-clean-only",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["ood_n"] == {"uniform": 8, "lowfreq": 8}   # uniform noise too
    assert report["sample_fidelity"]["steps"] == 4 and report["sample_fidelity"]["n"] == 3
    assert (tmp_path / "figs" / "reliability.png").is_file() and (tmp_path / "figs" / "samples.png").is_file()


def test_eval_limit_draws_a_fixed_subset_across_classes(toy):
    data = load_dataset(str(toy), "test", 16)
    labels = data.labels.tolist()
    assert labels == sorted(labels)  # class-sorted folders: the first 6 images would be one class
    first, again = random_subset(data, 6, seed=0), random_subset(data, 6, seed=0)
    assert len(first) == 6 and len(set(first.labels.tolist())) > 1
    assert torch.equal(first.images, again.images)


def test_eval_rejects_bad_values_with_one_line(toy, tiny_dir, capsys):
    with pytest.raises(SystemExit, match="2"):   # a usage error now, as in `explain`
        main(["eval", "--model", str(tiny_dir), "--data", str(toy), "--eps", "nan"])
    assert "--eps" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):
        main(["eval", "--model", str(tiny_dir), "--data", str(toy), "--step-size", "-1"])
    assert "--step-size" in capsys.readouterr().err
    assert main(["eval", "--model", "not a repo", "--data", str(toy)]) == 2


@pytest.mark.parametrize("option, value, lo", [("--batch-size", "0", 1), ("--limit", "-4", 1), ("--limit", "0", 1),
                                               ("--val-size", "-1", 0), ("--steps", "-2", 0), ("--restarts", "-1", 0),
                                               ("--ood-limit", "0", 1), ("--samples", "-3", 0),
                                               ("--sample-steps", "0", 1), ("--batch-size", "two", 1),
                                               ("--seed", "-1", 0), ("--seed", str(2**63), 0)])
def test_eval_refuses_out_of_range_counts_before_it_loads_anything(toy, tiny_dir, capsys, option, value, lo):
    """--batch-size 0 used to end in a ZeroDivisionError traceback, --limit -4 in a run over the whole split."""
    with pytest.raises(SystemExit) as e:
        main(["eval", "--model", str(tiny_dir), "--data", str(toy), "--steps", "1", option, value])
    assert e.value.code == 2
    assert f"argument {option}: expected an integer in {lo}.." in capsys.readouterr().err


@pytest.mark.parametrize("command", [["seeds", "--config", "c.toml", "--resolution", "0"],
                                     ["import", "--checkpoint", "c.pth", "--num-classes", "-10", "--out", "o"],
                                     ["import", "--checkpoint", "c.pth", "--image-size", "0", "--out", "o"],
                                     ["calibrate", "--model", "m", "--seed", "-1"]])
def test_other_commands_refuse_out_of_range_counts(command, capsys):
    with pytest.raises(SystemExit) as e:
        main(command)
    assert e.value.code == 2 and "expected an integer in" in capsys.readouterr().err


def test_push_then_load_from_the_loopback_hub(tiny_dir, tmp_path):
    metrics = tmp_path / "eval.json"
    metrics.write_text(json.dumps({"clean_accuracy": 0.75, "robust_accuracy": 0.5, "ece": 0.03,   # of this model
                                   "robust": {"norm": "L2", "eps": 0.5}, "num_classes": 3, "image_size": 16}))
    (tiny_dir / "README.md").write_text("# old title\n\nHand-written notes stay.\n")
    with FakeHub() as hub:
        assert main(["push", "--model", str(tiny_dir), "--repo-id", "me/tiny", "--endpoint", hub.url,
                     "--eval-json", str(metrics), "--token", "hf_test"]) == 0
        card = hub.files("me/tiny")["README.md"].decode()
        model = load_model("me/tiny", endpoint=hub.url, cache_dir=tmp_path / "cache")
    data = ModelCard(card).data
    assert data.license == "mit" and data.library_name == "dat-explainer" and "Hand-written notes stay." in card
    assert {(r.metric_name, r.metric_value) for r in data.eval_results} >= {("Clean accuracy", 0.75)}
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), load_model(tiny_dir)(x))


@pytest.mark.parametrize("before", ["# old title\n\nHand-written notes stay.\n", None])
def test_a_failed_push_leaves_the_local_card_as_it_was(tiny_dir, tmp_path, capsys, before):
    """The card was rewritten before the upload: a push that never reached the Hub still changed README.md."""
    readme = tiny_dir / "README.md"
    readme.unlink(missing_ok=True)
    if before is not None:
        readme.write_text(before)
    with FakeHub() as dead:
        url = dead.url
    assert main(["push", "--model", str(tiny_dir), "--repo-id", "me/tiny", "--endpoint", url,
                 "--token", "hf_test"]) == 2
    assert "could not reach the Hub" in capsys.readouterr().err
    assert (readme.read_text() if readme.exists() else None) == before


@pytest.mark.parametrize("report, says", [
    ("[1, 2]", "expected a JSON object, got a list"),
    ('{"clean_accuracy": "high"}', "clean_accuracy is 'high', not a finite number"),
    ('{"robust_accuracy": 0.4, "robust": [0.5]}', "robust is not an object of attack settings"),
    ('{"clean_accuracy": 0.9, "autoattack": {"eps": "8/255"}}', "autoattack is not an object of attack settings"),
    ("{bad", "is not valid JSON"), ("FOLDER", "is a folder, not an eval report")])
def test_push_refuses_a_malformed_eval_report_before_touching_card_or_hub(tiny_dir, tmp_path, capsys, report, says):
    """A list ended in an AttributeError traceback inside the card code; a string accuracy was silently left out;
    a folder said "[Errno 21] Is a directory"."""
    path = tmp_path / "eval.json"
    if report == "FOLDER":
        path.mkdir()
    else:
        path.write_text(report)
    (tiny_dir / "README.md").write_text("# mine\n")
    assert main(["push", "--model", str(tiny_dir), "--repo-id", "me/tiny", "--endpoint", "http://127.0.0.1:9",
                 "--eval-json", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --eval-json {path}") and says in err and len(err.splitlines()) == 1
    assert (tiny_dir / "README.md").read_text() == "# mine\n"   # the card was not rewritten


def test_push_rejects_malformed_repo_id(tiny_dir, capsys):
    assert main(["push", "--model", str(tiny_dir), "--repo-id", "no-slash"]) == 2
    assert "owner/name" in capsys.readouterr().err


def test_import_official_checkpoint(tmp_path):
    torch.manual_seed(1)
    official = build_model("wrn-16-1").eval()
    state = {f"module.module.{k}": v for k, v in official.state_dict().items()}
    state["module.n_averaged"] = torch.tensor(7)
    torch.save(state, tmp_path / "best_avg.pth")
    assert main(["import", "--checkpoint", str(tmp_path / "best_avg.pth"), "--arch", "wrn-16-1",
                 "--out", str(tmp_path / "imported")]) == 0
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "imported")(x), official(x))


def test_eval_autoattack_writes_report_and_model_info(toy, tiny_dir, tmp_path, capsys):
    out = tmp_path / "reports" / "report.json"
    base = ["eval", "--model", str(tiny_dir), "--data", str(toy), "--split", "test", "--steps", "0", "--eps", "2"]
    assert main([*base, "--autoattack-attacks", "apgd-ce", "--model-info", "--additional-data", "no",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    aa = report["autoattack"]
    assert aa["version"] == "custom" and aa["attacks"] == ["apgd-ce"] and aa["n"] == 24 and aa["eps"] == 2.0
    assert aa["clean_accuracy"] == report["clean_accuracy"] and report["autoattack_accuracy"] <= aa["clean_accuracy"]
    info = json.loads((out.parent / "model_info.json").read_text())
    assert info["threat_model"] == "L2" and info["eps"] == "2" and info["architecture"] == "wrn-10-1"
    assert info["clean_acc"] == f"{100 * report['clean_accuracy']:.2f}"
    assert info["autoattack_acc"] == f"{100 * report['autoattack_accuracy']:.2f}"
    # the default is the standard version, whose targeted attacks need 4+ classes: one clear line, exit 2
    capsys.readouterr()
    assert main([*base, "--autoattack"]) == 2
    assert "need at least 4 classes" in capsys.readouterr().err
    assert main([*base, "--autoattack", "--model-info"]) == 2  # model_info.json goes beside --json
    assert main([*base, "--autoattack-attacks", "pgd"]) == 2
    capsys.readouterr()
    assert main([*base, "--autoattack-attacks", "apgd-ce,"]) == 2   # was run as "apgd-ce", the empty item dropped
    assert "--autoattack-attacks takes a comma-separated list without empty items" in capsys.readouterr().err


def test_eval_update_card_puts_autoattack_into_the_model_index(toy, tiny_dir, capsys):
    (tiny_dir / "README.md").write_text("---\nlicense: mit\nbase_model: someone/base\n---\n# tiny\n\nMy notes.\n")
    base = ["eval", "--model", str(tiny_dir), "--data", str(toy), "--split", "test", "--steps", "2", "--eps", "2"]
    assert main([*base, "--autoattack-attacks", "apgd-ce", "--update-card"]) == 0
    report = json.loads(capsys.readouterr().out)
    card = ModelCard((tiny_dir / "README.md").read_text())
    results = {r.metric_name: r for r in card.data.eval_results}
    aa = results["AutoAttack robust accuracy (L2 eps=2)"]
    assert aa.metric_value == round(report["autoattack_accuracy"], 4) and aa.dataset_split == "test"
    assert aa.metric_args == {"attack": "AutoAttack", "version": "custom", "attacks": ["apgd-ce"], "norm": "L2",
                              "eps": 2.0, "seed": 0, "n": 24}
    assert results["PGD robust accuracy (L2 eps=2)"].metric_args["steps"] == 2
    assert card.data.base_model == "someone/base" and "My notes." in card.text  # what a person wrote stays
    (tiny_dir / "README.md").unlink()
    assert main([*base, "--limit", "10", "--update-card"]) == 0      # a subset is named as one, where it is read
    card = ModelCard((tiny_dir / "README.md").read_text())
    assert "| metric on 10 images of the test split" in card.text
    assert {r.metric_args.get("n") for r in card.data.eval_results} == {10}
    assert main(["eval", "--model", "default", "--data", str(toy), "--update-card"]) == 2
    assert "checkpoint folder" in capsys.readouterr().err
    # a subset does not replace the card's numbers on more images (it did, silently); refused before the work
    assert main([*base[:-4], "--steps", "0", "--update-card"]) == 0                 # 24 images
    before = (tiny_dir / "README.md").read_text()
    capsys.readouterr()
    assert main([*base, "--limit", "5", "--update-card"]) == 2
    err = capsys.readouterr().err
    assert "results on 24 images" in err and "evaluates 5" in err and "evaluate:" not in err
    assert (tiny_dir / "README.md").read_text() == before


def _readme_section(title: str) -> str:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    return re.split(r"^## ", text.split(f"## {title}\n", 1)[1], maxsplit=1, flags=re.M)[0]


def test_readme_training_section_matches_the_code():
    """The exit codes, options and command lines the README's Training section gives are the code's."""
    import re
    import shlex

    from dat_core.training.errors import EXIT_CODES
    from train.__main__ import build_parser

    section = _readme_section("Training")
    table = dict(re.findall(r"^\| (\d+|128\+N) \| (.+) \|$", section, flags=re.M))
    assert set(table) == {str(code) for code in EXIT_CODES}
    for phrase in ("--allow-config-change", "data.val_size=0", "optim.decay_norm_and_bias=false", "--autoattack",
                   "python -m train.launch", "data.allow_empty_classes=true", "per-rank", "python -m train schema"):
        assert phrase in section, phrase
    text = section + _readme_section("Command lines")
    blocks = re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S)
    lines = [line.split("#")[0] for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    commands = [line for line in lines if "-m train " in line]
    assert len(commands) >= 10
    for command in commands:
        argv = shlex.split(command.split("-m train ", 1)[1])
        build_parser().parse_args(argv)  # SystemExit on an option the CLI does not have


@pytest.mark.parametrize("extra, says", [
    (("--judge", "default"), "--judge goes with --samples N"),
    (("--sample-steps", "3", "--sample-seeds", "gaussian"), "--sample-seeds, --sample-steps go with --samples N"),
    (("--feature-model", "default"), "--feature-model goes with --samples N"),
    (("--ood-limit", "10"), "--ood-limit goes with --ood SET"),
    (("--ood-holdout", "5"), "--ood-holdout goes with --ood SET"),
    (("--ood-clean-only",), "--ood-clean-only goes with --ood SET"),
    (("--steps", "0", "--strong"), "--strong goes with --steps N > 0"),
    (("--steps", "0", "--restarts", "2"), "--restarts goes with --steps N > 0"),
    (("--root", "archives"), "--root goes with --data cifar10 or cifar100"),
    (("--cache-dir", "cache"), "--cache-dir goes with an archive (.tar/.tar.gz) as --data or --ood")])
def test_eval_refuses_options_of_a_part_that_does_not_run(toy, tiny_dir, capsys, extra, says):
    """--judge without --samples, --ood-limit without --ood, --strong with --steps 0 were silently ignored."""
    assert main(["eval", "--model", str(tiny_dir), "--data", str(toy), *extra]) == 2
    assert says in capsys.readouterr().err


@pytest.mark.parametrize("extra, says", [
    (("--step-size", "0"), "--step-size: expected a finite number > 0"),
    (("--samples", "2", "--sample-step-size", "0"), "--sample-step-size: expected a finite number > 0")])
def test_eval_refuses_a_step_that_does_not_move(toy, tiny_dir, capsys, extra, says):
    """--step-size 0 ran an "attack" that never left the images: robust accuracy = clean accuracy, reported as
    robust."""
    with pytest.raises(SystemExit, match="2"):   # a usage error, as `explain` says it
        main(["eval", "--model", str(tiny_dir), "--data", str(toy), *extra])
    assert says in capsys.readouterr().err


def test_eval_takes_linf_budgets_as_fractions_and_refuses_pixel_units(toy, tiny_dir, tmp_path, capsys):
    """--eps and --step-size read 8/255 as `explain` does; 8 or a step of 2 on a [0,1] image bounds nothing (the
    attack saturates every pixel at once) and is refused as `explain` refuses it, before anything loads."""
    out = tmp_path / "linf.json"
    assert main(["eval", "--model", str(tiny_dir), "--data", str(toy), "--split", "test", "--steps", "1", "--norm",
                 "Linf", "--eps", "8/255", "--step-size", "2/255", "--json", str(out)]) == 0
    robust = json.loads(out.read_text())["robust"]
    assert robust["eps"] == pytest.approx(8 / 255) and robust["step_size"] == pytest.approx(2 / 255)
    for extra, says in ((("--eps", "8"), "did you mean 8/255"), (("--eps", "8/255", "--step-size", "2"),
                                                                  "did you mean 2/255")):
        assert main(["eval", "--model", str(tiny_dir / "missing"), "--data", str(toy), "--norm", "linf",
                     *extra]) == 2
        assert says in capsys.readouterr().err


@pytest.mark.parametrize("option, make, says", [("--json", "mkdir", "is a folder"), ("--out", "touch", "is a file"),
                                                ("--json", "under_a_file", "is not a writable folder")])
def test_eval_checks_its_outputs_before_it_evaluates(toy, tiny_dir, tmp_path, capsys, option, make, says):
    """The report is written last: a --json that is a folder used to end a finished evaluation (AutoAttack: hours)
    in an IsADirectoryError traceback, a --out that is a file in a FileExistsError one."""
    target = tmp_path / "target"
    if make == "under_a_file":
        (tmp_path / "file").touch()
        target = tmp_path / "file" / "report.json"
    else:
        getattr(target, make)()
    assert main(["eval", "--model", str(tiny_dir), "--data", str(toy), "--steps", "1", option, str(target)]) == 2
    err = capsys.readouterr().err
    assert says in err and "evaluate" not in err   # refused before the first batch (no progress bar)


def test_an_os_error_is_one_line_not_a_traceback(toy, tiny_dir, tmp_path, capsys):
    """train's main caught only FileNotFoundError: any other OSError (a cache folder that is a file, a folder that
    cannot be read) ended in a traceback."""
    import tarfile

    with tarfile.open(tmp_path / "toy.tar.gz", "w:gz") as tar:
        tar.add(toy / "test", arcname="test")
    (tmp_path / "cache").touch()
    assert main(["eval", "--model", str(tiny_dir), "--data", str(tmp_path / "toy.tar.gz"), "--steps", "1",
                 "--cache-dir", str(tmp_path / "cache")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "File exists" in errors[0]


@pytest.mark.parametrize("argv", [["eval", "--model", "default", "--data", ""],
                                  ["eval", "--model", "default", "--json", " "],
                                  ["stage1", "--config", ""], ["calibrate", "--model", "m", "--out", ""]])
def test_a_blank_value_is_a_usage_error(argv, capsys):
    """`--data "$DATA"` with DATA unset meant the current folder; `--json ""` meant no report, silently."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "got a blank one" in capsys.readouterr().err


def test_ctrl_c_in_eval_exits_130_without_a_traceback(toy, tiny_dir, tmp_path):
    """Outside training (which saves its state on SIGINT), Ctrl-C ended `train eval` in a KeyboardInterrupt
    traceback; it is one line and exit 130, and the report is not written half-done."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "train", "eval", "--model", str(tiny_dir), "--data", str(toy),
                             "--steps", "100000", "--device", "cpu", "--json", str(tmp_path / "r.json")], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"})
    seen, deadline = "", time.time() + 120
    while "evaluate" not in seen and time.time() < deadline:   # the attack is running
        seen += proc.stdout.read(1)
    proc.send_signal(signal.SIGINT)
    out = seen + proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "interrupted" in out
    assert not (tmp_path / "r.json").exists()


def test_missing_or_wrong_kind_of_inputs_are_named_in_words(tmp_path, capsys):
    """A missing checkpoint, a folder where a file goes or a binary YAML printed errno text or a codec error."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "bin.yaml").write_bytes(bytes(range(256)))
    cases = [(["import", "--checkpoint", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "o")],
              f"error: {tmp_path / 'nope.pth'} does not exist"),
             (["import", "--checkpoint", str(tmp_path / "folder"), "--out", str(tmp_path / "o")],
              f"error: {tmp_path / 'folder'} is a folder, not a file"),
             (["push", "--model", str(tmp_path / "nope"), "--repo-id", "me/x"],
              f"error: {tmp_path / 'nope' / 'config.json'} does not exist"),
             (["import", "--checkpoint", str(tmp_path / "nope.pth"), "--official-config", str(tmp_path / "bin.yaml"),
               "--out", str(tmp_path / "o")], "bin.yaml is not a text file"),
             (["import", "--checkpoint", str(tmp_path / "bin.yaml"), "--out", str(tmp_path / "o")],
              "only plain state dicts (tensors in dicts) are accepted"),
             (["import", "--checkpoint", str(tmp_path / "obj.pth"), "--out", str(tmp_path / "o")],
              "only plain state dicts (tensors in dicts) are accepted")]
    torch.save({"args": argparse.Namespace(lr=0.1)}, tmp_path / "obj.pth")   # a pickled object: refused
    for argv, says in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert says in err and "Errno" not in err and "codec" not in err and err.count("\n") == 1, err
        assert "\x1b" not in err                                            # torch's terminal colour codes
    with pytest.raises(SystemExit, match="2"):   # the sizes a config may hold, not 1..4096 refused after the load
        main(["import", "--checkpoint", str(tmp_path / "obj.pth"), "--image-size", "1024", "--out", str(tmp_path)])
    assert "--image-size: expected an integer in 8..512" in capsys.readouterr().err


def test_seeds_with_both_outputs_skipped_says_so(capsys):
    """It loaded the config and printed {} (exit 0): a command that writes nothing is a mistake worth naming."""
    assert main(["seeds", "--config", "no-such.toml", "--bank-out", "", "--gaussians-out", ""]) == 2
    assert "nothing would be written" in capsys.readouterr().err


def test_a_stage_command_refuses_a_config_of_the_other_stage(capsys):
    """`python -m train stage1 --config ...-stage2.toml` ran stage 1 with the stage-2 config's settings."""
    root = Path(__file__).resolve().parents[1]
    stage2 = root / "train" / "configs" / "cifar10-wrn16-2-cpu-stage2.toml"
    assert main(["stage1", "--config", str(stage2)]) == 2
    assert "cifar10-wrn16-2-cpu-stage2.toml says stage = 'stage2': run `python -m train stage2`" in \
        capsys.readouterr().err
    assert main(["stage1", "stage=stage2"]) == 2
    assert "the overrides say stage = 'stage2'" in capsys.readouterr().err


def test_the_sigterm_guard_restores_the_handler_unless_the_command_chose_one():
    """A torchrun rank on its way out ignores the SIGTERM that stops its peers; the guard restored the default
    over that choice, and one CI run saw rank 0 exit 143 instead of its own error code."""
    from dat_core.signals import Terminated, sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    try:
        with sigterm_as_interrupt():
            with pytest.raises(Terminated):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
        assert signal.getsignal(signal.SIGTERM) is before
        with sigterm_as_interrupt():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before)


def test_eval_takes_a_radius_and_a_norm_as_explain_does(capsys):
    """`train eval --eps 8/255 --norm linf` was refused ("invalid float value"; "invalid choice: 'linf'"), though
    `python -m explain` takes both."""
    from train.__main__ import build_parser

    args = build_parser().parse_args(["eval", "--model", "default", "--norm", "linf", "--eps", "8/255"])
    assert args.norm == "Linf" and args.eps == pytest.approx(8 / 255)
    for bad in ("inf", "-1", "8/0"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["eval", "--model", "default", "--eps", bad])
        assert "--eps: expected a finite radius >= 0" in capsys.readouterr().err


def test_eval_names_a_missing_ood_folder_before_loading_anything(tmp_path, capsys):
    """`train eval --ood /nonexistent` decoded the data and loaded the model first, then said so."""
    missing = tmp_path / "no-such-ood"
    assert main(["eval", "--model", str(tmp_path / "no-such-model"), "--data", str(tmp_path / "no-data"),
                 "--ood", "uniform", "--ood", str(missing)]) == 2
    assert f"error: {missing} does not exist" in capsys.readouterr().err


def test_overrides_may_sit_on_both_sides_of_an_option(capsys):
    """`stage1 --config C steps=5 --resume seed=1` was "unrecognized arguments: seed=1": argparse fills a
    positional list once. Every key=value of the command line is an override; anything else is still refused."""
    from train.__main__ import parse

    args = parse(["stage1", "steps=5", "--resume", "seed=3", "--track", "tensorboard", "optim.lr=0.1"])
    assert args.overrides == ["steps=5", "seed=3", "optim.lr=0.1"] and args.resume and args.track == "tensorboard"
    for bad in (["stage1", "steps=5", "--bogus"], ["stage1", "steps=5", "--resume", "stray"],
                ["eval", "--model", "m", "steps=5"]):
        with pytest.raises(SystemExit) as e:
            parse(bad)
        assert e.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_the_launcher_help_says_what_it_adds_to_torchrun(capsys):
    """`python -m train.launch --help` was torchrun's page alone, silent about the exit-code line."""
    from train.launch import main as launch

    with pytest.raises(SystemExit) as e:
        launch(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "exits with the workers' code" in out and "--nproc_per_node" in out



@pytest.mark.parametrize("key", ["contrastive.window_images", "steps", "contrastive.max_steps", "log_every"])
def test_a_config_integer_too_large_to_mean_anything_is_refused_in_one_line(toy, tmp_path, capsys, key):
    """contrastive.window_images=10**20 passed the schema and ended in an OverflowError traceback after the data
    had loaded (a C size); every integer of the config is bounded now."""
    assert main(["stage2", f"data.dataset={toy}", "data.image_size=16", "data.val_size=12", "model.arch=wrn-10-1",
                 "model.init=unused", f"out_dir={tmp_path / 'run'}", f"{key}={10 ** 20}"]) == 2
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["0", "-2", "foo", *(["gpu"] if not torch.cuda.is_available() else []),
                                   *(["xpu"] if not (hasattr(torch, "xpu") and torch.xpu.is_available()) else [])])
def test_the_launcher_refuses_a_bad_process_count_in_one_line(value):
    """`--nproc_per_node=0` ended in a bare AssertionError traceback, `foo` in a ValueError one (exit 1), `gpu` on a
    machine without one in torchrun's "Cuda is not available." traceback."""
    run = subprocess.run([sys.executable, "-m", "train.launch", "--standalone", f"--nproc_per_node={value}", "-m",
                          "train", "stage1"], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and "--nproc_per_node" in run.stderr.strip().splitlines()[-1]


def test_update_card_keeps_the_numbers_a_later_run_does_not_measure(toy, tiny_dir, capsys):
    """A later `--update-card` without --autoattack replaced the whole model-index: the card's AutoAttack number,
    measured on as many images, was gone."""
    base = ["eval", "--model", str(tiny_dir), "--data", str(toy), "--split", "test", "--eps", "2", "--update-card"]
    assert main([*base, "--steps", "0", "--autoattack-attacks", "apgd-ce"]) == 0
    assert main([*base, "--steps", "2"]) == 0
    names = {r.metric_name for r in ModelCard((tiny_dir / "README.md").read_text()).data.eval_results}
    assert {"AutoAttack robust accuracy (L2 eps=2)", "PGD robust accuracy (L2 eps=2)", "Clean accuracy"} <= names
    text = (tiny_dir / "README.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("| ")]   # the body's table says it too
    assert any(line.startswith("| AutoAttack robust accuracy (L2 eps=2) (an earlier run, on 24 images of the test "
                               "split) |") for line in table), table
    assert any(line.startswith("| PGD robust accuracy (L2 eps=2) |") for line in table), table
