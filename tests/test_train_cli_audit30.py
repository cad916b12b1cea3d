"""Audit 30 of `python -m train push | import | stage1 | stage2` and `python -m train.launch`: what a push uploads and
says, which dataset its card names, refused overrides and pickles, one-line usage errors."""

import argparse
import json
import pickle

import pytest
import torch
from fakehub import FakeHub
from huggingface_hub import ModelCard

from dat_core import build_model, save_model
from train.__main__ import main


@pytest.fixture
def tiny_dir(tmp_path):
    torch.manual_seed(0)
    model = build_model("wrn-10-1", num_classes=3, image_size=16, class_names=["class0", "class1", "class2"])
    return save_model(model.eval(), tmp_path / "tiny")


def push(folder, hub_url, *extra):
    return main(["push", "--model", str(folder), "--repo-id", "me/tiny", "--endpoint", hub_url, "--token",
                 "hf_secret_token", *extra])


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------- push: what goes up

@pytest.mark.parametrize("name", ["README.md"])
def test_push_refuses_a_file_linked_from_outside_the_folder(tiny_dir, tmp_path, capsys, name):
    """A README.md linked to a file elsewhere (~/.ssh/..., notes) had its text published as the card's body: the card
    keeps "the prose a person wrote", read through the link."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    secret = outside / name
    secret.write_text("TOP SECRET\n" if name == "README.md" else (tiny_dir / name).read_text())
    (tiny_dir / name).unlink(missing_ok=True)
    (tiny_dir / name).symlink_to(secret)
    with FakeHub() as hub:
        assert push(tiny_dir, hub.url) == 2
        assert "me/tiny" not in hub.repos   # refused before the Hub was asked anything
    err = one_line(capsys)
    assert name in err and "link" in err and "outside" in err
    assert (tiny_dir / name).is_symlink() and secret.read_text().startswith(("TOP SECRET", "{"))


def test_push_takes_weights_and_config_linked_from_a_cache(tiny_dir, tmp_path, capsys):
    """A Hugging Face cache snapshot (or a git-annex / DVC folder) links its files to blobs outside the folder: they
    must load as this checkpoint, so they publish nothing else, and such folders pushed before."""
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for name in ("config.json", "model.safetensors"):
        (tiny_dir / name).rename(blobs / name)
        (tiny_dir / name).symlink_to(blobs / name)
    with FakeHub() as hub:
        assert push(tiny_dir, hub.url) == 0, capsys.readouterr().err
        assert (blobs / "model.safetensors").read_bytes() == hub.files("me/tiny")["model.safetensors"]


def test_push_takes_a_link_inside_the_folder(tiny_dir, capsys):
    """A card kept under another name in the folder, linked as README.md, is the folder's own file."""
    (tiny_dir / "card.md").write_text("# tiny\n\nNotes.\n")
    (tiny_dir / "README.md").symlink_to("card.md")
    with FakeHub() as hub:
        assert push(tiny_dir, hub.url) == 0, capsys.readouterr().err
        assert "Notes." in hub.files("me/tiny")["README.md"].decode()


def test_push_uploads_the_checkpoint_and_card_only_and_twice_the_same(tiny_dir, tmp_path):
    """Run state beside the checkpoint (state.pt, metrics.jsonl, a sub-folder) never goes up; pushing again with
    the same report publishes the same card (no number duplicated or reworded)."""
    for name in ("state.pt", "state.prev.pt", "metrics.jsonl", "eval.jsonl", ".lock"):
        (tiny_dir / name).write_bytes(b"run state")
    (tiny_dir / "best").mkdir()
    (tiny_dir / "best" / "config.json").write_text("{}")
    report = tmp_path / "eval.json"
    report.write_text(json.dumps({"clean_accuracy": 0.5, "robust_accuracy": 0.25, "robust": {"norm": "L2", "eps": 0.5},
                                  "n": 24, "split": "test", "num_classes": 3, "image_size": 16}))
    with FakeHub() as hub:
        assert push(tiny_dir, hub.url, "--eval-json", str(report)) == 0
        first = dict(hub.files("me/tiny"))
        assert push(tiny_dir, hub.url, "--eval-json", str(report)) == 0
        second = hub.files("me/tiny")
    assert set(first) == set(second) == {"config.json", "model.safetensors", "README.md"}
    assert first == second
    data = ModelCard(first["README.md"].decode()).data
    assert {(r.metric_name, r.metric_value) for r in data.eval_results} == {
        ("Clean accuracy", 0.5), ("PGD robust accuracy (L2 eps=0.5)", 0.25)}


# ---------------------------------------------------------------- push: the report's dataset

def report_on(tmp_path, data):
    path = tmp_path / "eval.json"
    path.write_text(json.dumps({"clean_accuracy": 0.6, "n": 24, "split": "test", "num_classes": 3, "image_size": 16,
                                "data": data}))
    return path


def test_the_card_names_the_dataset_the_report_measured(tiny_dir, tmp_path):
    """`--dataset` defaulted to cifar10 whatever the report measured: a CIFAR-100 model's numbers, pushed as the
    README shows (`push --model DIR --repo-id owner/name --eval-json report.json`), were published as CIFAR-10's."""
    with FakeHub() as hub:
        assert push(tiny_dir, hub.url, "--eval-json", str(report_on(tmp_path, "cifar100"))) == 0
        data = ModelCard(hub.files("me/tiny")["README.md"].decode()).data
    assert data.datasets == ["cifar100"]
    assert {(r.dataset_type, r.dataset_name) for r in data.eval_results} == {("cifar100", "cifar100")}


def test_push_refuses_a_dataset_other_than_the_reports(tiny_dir, tmp_path, capsys):
    (tiny_dir / "README.md").write_text("# mine\n")
    with FakeHub() as hub:
        assert push(tiny_dir, hub.url, "--eval-json", str(report_on(tmp_path, "cifar100")), "--dataset", "cifar10") == 2
        assert "me/tiny" not in hub.repos
    err = one_line(capsys)
    assert "--dataset cifar10" in err and "cifar100" in err
    assert (tiny_dir / "README.md").read_text() == "# mine\n"


def test_push_takes_the_dataset_name_for_a_report_on_a_folder(tiny_dir, tmp_path):
    """A report on image folders names them by path: --dataset names the Hub dataset, as before."""
    with FakeHub() as hub:
        assert push(tiny_dir, hub.url, "--eval-json", str(report_on(tmp_path, str(tmp_path / "toy"))),
                    "--dataset", "my-toy") == 0
        assert ModelCard(hub.files("me/tiny")["README.md"].decode()).data.datasets == ["my-toy"]


# ---------------------------------------------------------------- push: the Hub says no

class RefusingHub(FakeHub):
    """A Hub that answers every POST (create repo, commit) with `status` and a message, as the Hub does for a token
    that may not write there."""

    status = 401

    def start(self) -> str:
        url = super().start()
        handler, status = self._server.RequestHandlerClass, self.status

        def refuse(h):
            h._segments()
            h._body()
            h._error(status, None, "Invalid credentials in Authorization header")
        handler.do_POST = refuse
        return url


@pytest.mark.parametrize("status", [401, 403])
def test_a_hub_refusal_is_one_line_that_says_what_to_do(tiny_dir, capsys, status):
    """The client's error ran to four lines (with a link to MDN's page on HTTP 401) and said nothing of the token."""
    hub = RefusingHub()
    hub.status = status
    with hub:
        assert push(tiny_dir, hub.url) == 2
    err = one_line(capsys)
    assert str(status) in err and "Invalid credentials in Authorization header" in err and "me/tiny" in err
    assert "token" in err and "HF_TOKEN" in err and "hf_secret_token" not in err and "mozilla" not in err


@pytest.mark.parametrize("endpoint", ["huggingface.co", "ftp://hub.example", "http://[::1", "http://127.0.0.1:99999",
                                      "https://"])
def test_push_refuses_a_malformed_endpoint_in_one_line(tiny_dir, capsys, endpoint):
    """`http://[::1` ended in an httpx InvalidURL traceback; `huggingface.co` said "could not reach the Hub", as if
    the network were down."""
    with pytest.raises(SystemExit) as e:
        push(tiny_dir, endpoint)
    assert e.value.code == 2
    err = one_line(capsys)
    assert "--endpoint" in err and "http" in err


# ---------------------------------------------------------------- stage1 / stage2 / seeds overrides

@pytest.mark.parametrize("command", ["stage1", "stage2", "seeds"])
@pytest.mark.parametrize("pair, key", [(["steps=5", "steps=6"], "steps"),
                                       (["optim.lr=0.1", " optim.lr = 0.2"], "optim.lr"),
                                       (["optim.lr=0.1", "optim={lr=0.2}"], "optim")])
def test_an_override_given_twice_is_refused_by_name(tmp_path, capsys, command, pair, key):
    """`steps=5 ... steps=6` trained 6 steps without a word: the last of two values won silently."""
    config = tmp_path / "c.toml"
    config.write_text("steps = 4\n")
    with pytest.raises(SystemExit) as e:
        main([command, "--config", str(config), pair[0], f"out_dir={tmp_path / 'run'}", *pair[1:]])
    assert e.value.code == 2
    err = one_line(capsys)
    assert f"'{key}'" in err and "twice" in err and not (tmp_path / "run").exists()


def test_load_config_refuses_an_override_given_twice():
    """The check sat in the command line only: `load_config(None, ["steps=5", "steps=6"])` trained 6 steps."""
    from dat_core.training.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="'steps' is set twice"):
        load_config(None, ["steps=5", "steps=6"])
    with pytest.raises(ConfigError, match="'optim' is set twice"):
        load_config(None, ["optim.lr=0.1", "optim={lr=0.2}"])
    assert load_config(None, ["steps=5", "optim.lr=0.1"]).steps == 5


def test_distinct_overrides_are_all_taken(tmp_path):
    from train.__main__ import parse

    args = parse(["stage1", "steps=5", "--resume", "optim.lr=0.1", "optim.momentum=0.8"])
    assert args.overrides == ["steps=5", "optim.lr=0.1", "optim.momentum=0.8"] and args.resume


# ---------------------------------------------------------------- import: files it cannot take

def test_import_names_the_object_weights_only_refuses(tmp_path, capsys):
    """The message quoted torch's first line: "... Re-running `torch.load` with `weights_only` set to `False`" (advice
    to run the file's code), cut before the reason, the class the pickle holds."""
    path = tmp_path / "opt.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "args": argparse.Namespace(lr=0.1)}, path)
    assert main(["import", "--checkpoint", str(path), "--out", str(tmp_path / "out")]) == 2
    err = one_line(capsys)
    assert "argparse.Namespace" in err and "False" not in err and "Re-running" not in err
    assert not (tmp_path / "out").exists()


NOT_TORCH = "not a whole file written by torch.save"


@pytest.mark.parametrize("content, says", [(b"hello, not a checkpoint", NOT_TORCH), (b"", "empty"),
                                           (pickle.dumps({"a": 1}, protocol=4), NOT_TORCH)])
def test_import_says_why_a_file_is_no_checkpoint_in_one_line(tmp_path, capsys, content, says):
    """A text file said "(101)" (the KeyError of its first byte), an empty one "(EOFError)"; a plain pickle printed
    torch's two-line UserWarning about its protocol above the error."""
    path = tmp_path / "c.pth"
    path.write_bytes(content)
    assert main(["import", "--checkpoint", str(path), "--out", str(tmp_path / "out")]) == 2
    err = one_line(capsys)
    assert says in err and str(path) in err and "(101)" not in err and "Re-running" not in err


# ---------------------------------------------------------------- train.launch

@pytest.mark.parametrize("argv", [["--bogus", "-m", "train", "stage1"], [], ["--nnodes"]])
def test_the_launcher_usage_errors_are_one_line(capsys, argv):
    """torchrun's parser printed its whole usage (about 20 lines) as `launch.py` above the error."""
    from train.launch import main as launch

    with pytest.raises(SystemExit) as e:
        launch(argv)
    assert e.value.code == 2
    err = one_line(capsys)
    assert err.startswith("python -m train.launch: error:") and "--help" in err


def test_the_launcher_help_names_itself(capsys):
    from train.launch import main as launch

    with pytest.raises(SystemExit):
        launch(["--help"])
    out = capsys.readouterr().out
    assert "usage: python -m train.launch" in out and "launch.py" not in out

