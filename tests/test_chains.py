"""Persistent contrastive chains (stage-2 option contrastive.buffer_size): restarts when disabled or when every
sample re-initialises, chains that really continue, and exact kill-and-resume with the buffer on."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import sigterm_after_rows

from dat_core.training.chains import ContrastiveChains
from dat_core.training.config import ConfigError, load_config
from dat_core.training.loop import STATE_FILE, Trainer, train

ROOT = Path(__file__).resolve().parent.parent


def _values(toy, out, **kw):
    values = {"out_dir": str(out), "data.dataset": str(toy), "data.image_size": 16, "data.val_size": 12,
              "model.arch": "wrn-10-1", "steps": 6, "batch_size": 8, "log_every": 1, "ckpt_every": 1000,
              "eval_every": 0, "eval_size": 12, "eval_attack_steps": 1, "attack.steps": 1, "sample_grid": False,
              "channels_last": False, "contrastive.window_images": 8, "contrastive.auc_threshold": 0.0,
              "contrastive.max_steps": 2, "data.ood": str(toy / "ood"), "autocast": "false", "seed": 4,
              "optim.lr": 0.02}  # 0.1 can send this toy stage 2 to a non-finite loss (resume tests need finished runs)
    values.update(kw)
    return values


@pytest.fixture(scope="module")
def stage1(toy, tmp_path_factory):
    out = tmp_path_factory.mktemp("chains-s1")
    return train(load_config(None, **_values(toy, out, steps=4)))


def _stage2(toy, stage1, out, **kw):
    return load_config(None, **_values(toy, out, stage="stage2", **{"model.init": str(stage1)}, **kw))


def test_chains_start_fresh_continue_and_reinitialise():
    chains = ContrastiveChains(size=4, reinit=0.0, seed=0)
    seeds, labels = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 3])
    x, y = chains.start(seeds, labels)
    assert torch.equal(x, seeds) and torch.equal(y, labels)               # an empty buffer hands out the seeds
    chains.keep(x + 10, y + 5)
    x, y = chains.start(torch.rand(4, 3, 2, 2), labels)
    assert (x >= 10).all() and set(y.tolist()) == {5, 6, 7, 8}            # then every chain continues
    chains.keep(x, y)
    always = ContrastiveChains(size=4, reinit=1.0, seed=0)
    always.start(seeds, labels)
    always.keep(seeds + 10, labels)
    fresh = torch.rand(4, 3, 2, 2)
    assert torch.equal(always.start(fresh, labels)[0], fresh)              # reinit = 1: DAT's restarts
    with pytest.raises(ValueError, match="smaller than the per-rank batch"):
        ContrastiveChains(size=2, reinit=0.0, seed=0).start(seeds, labels)


def test_reinit_one_equals_restarts_and_chains_change_training(toy, stage1, tmp_path):
    runs = {}
    for name, kw in {"restarts": {}, "reinit1": {"contrastive.buffer_size": 16, "contrastive.reinit": 1.0},
                     "chains": {"contrastive.buffer_size": 16, "contrastive.reinit": 0.0}}.items():
        train(_stage2(toy, stage1, tmp_path / name, **kw))
        runs[name] = torch.load(tmp_path / name / STATE_FILE, weights_only=True)["model"]
    assert all(torch.equal(runs["restarts"][k], runs["reinit1"][k]) for k in runs["restarts"])
    assert not all(torch.equal(runs["restarts"][k], runs["chains"][k]) for k in runs["restarts"])


def test_buffer_smaller_than_the_batch_is_refused_by_name(toy, stage1, tmp_path):
    with pytest.raises(ConfigError, match="contrastive.buffer_size"):
        _stage2(toy, stage1, tmp_path, **{"contrastive.buffer_size": 4})
    with pytest.raises(ConfigError, match="contrastive.reinit"):
        _stage2(toy, stage1, tmp_path, **{"contrastive.buffer_size": 8, "contrastive.reinit": 1.5})


def test_the_buffer_is_saved_per_rank(toy, stage1, tmp_path):
    trainer = Trainer(_stage2(toy, stage1, tmp_path, steps=2, **{"contrastive.buffer_size": 16}))
    trainer.fit()
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)
    chains = state["ranks"][0]["stage"]["chains"]
    assert chains["x"].shape == (16, 3, 16, 16) and int(chains["used"].sum()) > 8


def _run(args):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "train", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_sigterm_then_resume_with_chains_matches_uninterrupted_run(toy, stage1, tmp_path):
    steps = 12

    def args(out):
        kw = _values(toy, out, stage="stage2", steps=steps, **{"model.init": str(stage1),
                                                                "contrastive.buffer_size": 24,
                                                                "contrastive.reinit": 0.25})
        return ["stage2", *(f"{k}={v}" for k, v in kw.items() if k != "stage")]

    ref = _run(args(tmp_path / "ref"))
    out, _ = ref.communicate(timeout=300)
    assert ref.returncode == 0, out
    run = _run(args(tmp_path / "int"))
    out = sigterm_after_rows(run, tmp_path / "int" / "metrics.jsonl")
    assert run.returncode == 128 + signal.SIGTERM, out
    assert 4 <= torch.load(tmp_path / "int" / STATE_FILE, weights_only=True)["step"] < steps
    resumed = _run(args(tmp_path / "int") + ["--resume"])
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    a = torch.load(tmp_path / "ref" / STATE_FILE, weights_only=True)
    b = torch.load(tmp_path / "int" / STATE_FILE, weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert torch.equal(a["ranks"][0]["stage"]["chains"]["x"], b["ranks"][0]["stage"]["chains"]["x"])
