"""AutoAugment (CIFAR-10 policy through kornia): per-image sub-policies, seeded by the stream, exact resume."""

import os
import signal

import pytest
import torch

from dat_core.data import autoaugment as aa
from dat_core.data.augment import augment
from dat_core.data.datasets import ImageDataset
from dat_core.data.streams import BatchStream
from dat_core.training import stage1
from dat_core.training.config import load_config
from dat_core.training.errors import Interrupted
from dat_core.training.loop import STATE_FILE, train


def _images(n=16, seed=0):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_a_function_of_the_generator_alone():
    x = _images()
    torch.manual_seed(1)
    a = augment("autoaugment_cutout", x, torch.Generator().manual_seed(5))
    global_state = torch.get_rng_state()
    torch.manual_seed(2)  # another global RNG state: same batch
    b = augment("autoaugment_cutout", x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert not torch.equal(a, augment("autoaugment_cutout", x, torch.Generator().manual_seed(6)))
    torch.manual_seed(1)
    augment("autoaugment_cutout", x, torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), global_state)  # the caller's global RNG did not move
    assert a.shape == x.shape and a.dtype == x.dtype and 0 <= a.min() and a.max() <= 1
    # AutoAugment changes pixels beyond what crop + flip + Cutout do with the same draws
    assert (a - augment("crop_flip_cutout", x, torch.Generator().manual_seed(5))).abs().amax() > 0.1


def test_each_image_gets_its_own_sub_policy(monkeypatch):
    """kornia's AutoAugment picks one sub-policy per batch; the paper's (per-image PIL) picks one per image."""
    class AddIndex(torch.nn.Module):
        def __init__(self, i):
            super().__init__()
            self.i = i

        def forward(self, x):
            return x + self.i / 100

    monkeypatch.setattr(aa, "_subpolicies", lambda policy: tuple(AddIndex(i) for i in range(25)))
    x = torch.zeros(64, 3, 4, 4)
    out = aa.autoaugment(x, torch.Generator().manual_seed(0))
    chosen = (out[:, 0, 0, 0] * 100).round()
    assert torch.equal(out, chosen[:, None, None, None].expand_as(out) / 100)  # one sub-policy per whole image
    assert len(chosen.unique()) > 15  # drawn per image: 64 images cover most of the 25


def test_the_real_policy_and_bad_names():
    assert len(aa._subpolicies("cifar10")) == 25
    with pytest.raises(ValueError, match="cifar10"):
        aa.autoaugment(_images(2), policy="cifar100")


def test_stream_assembles_autoaugment_batches_on_the_callers_thread_and_resumes():
    data = ImageDataset((_images(40) * 255).to(torch.uint8), torch.arange(40) % 4, ["a", "b", "c", "d"])
    stream = BatchStream(data, 8, seed=3, num_workers=2, augment="autoaugment_cutout")
    next(stream)
    assert stream._thread is None  # no prefetch thread racing the caller for the global RNG
    state = stream.state_dict()
    expected = [next(stream)[0] for _ in range(6)]  # crosses an epoch boundary (5 batches per epoch)
    again = BatchStream(data, 8, seed=3, augment="autoaugment_cutout")
    again.load_state_dict(state)
    assert all(torch.equal(e, next(again)[0]) for e in expected)


def _config(toy, out, **kw):
    values = {"out_dir": str(out), "data.dataset": str(toy), "data.image_size": 16, "data.val_size": 12,
              "data.clf_augment": "autoaugment_cutout", "model.arch": "wrn-10-1", "steps": 8, "batch_size": 8,
              "log_every": 1, "ckpt_every": 100, "eval_every": 0, "eval_size": 12, "eval_attack_steps": 1,
              "attack.steps": 1, "attack.random_start": True, "sample_grid": False, "autocast": "false",
              "channels_last": False, **kw}
    return load_config(None, stage="stage1", **values)


def test_sigterm_then_resume_equals_the_uninterrupted_run(toy, tmp_path, monkeypatch):
    """AutoAugment on the classification batch and a PGD random start that draws from the global RNG
    on the same thread: a run stopped by a real SIGTERM and resumed ends bit-identical."""
    train(_config(toy, tmp_path / "ref"))
    real_after_step, calls = stage1.AdversarialTraining.after_step, []

    def after_step(self, logs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # through the trainer's own handler
        return real_after_step(self, logs)

    monkeypatch.setattr(stage1.AdversarialTraining, "after_step", after_step)
    with pytest.raises(Interrupted):
        train(_config(toy, tmp_path / "int"))
    monkeypatch.setattr(stage1.AdversarialTraining, "after_step", real_after_step)
    assert torch.load(tmp_path / "int" / STATE_FILE, weights_only=True)["step"] == 3
    train(_config(toy, tmp_path / "int"), resume=True)
    a, b = (torch.load(tmp_path / run / STATE_FILE, weights_only=True) for run in ("ref", "int"))
    assert a["step"] == b["step"] == 8
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["ema"]["model"]:
        assert torch.equal(a["ema"]["model"][k], b["ema"]["model"][k]), k
