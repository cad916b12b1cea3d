"""AutoAugment (CIFAR-10 policy through kornia): per-image sub-policies, seeded by the stream, exact resume."""

import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

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
    def tag(op, x, magnitude, sign):  # every operation adds its sub-policy's number
        return x + int(op)

    monkeypatch.setattr(aa, "CIFAR10_POLICY", tuple(((str(i), 1.0, 0), (str(0), 1.0, 0)) for i in range(25)))
    monkeypatch.setattr(aa, "apply", tag)
    out = aa.autoaugment(torch.zeros(64, 3, 4, 4), torch.Generator().manual_seed(0))
    chosen = (out[:, 0, 0, 0] * 255).round()
    assert torch.equal(out, chosen[:, None, None, None].expand_as(out) / 255)  # one sub-policy per whole image
    assert len(chosen.unique()) > 15  # drawn per image: 64 images cover most of the 25


def test_the_policy_is_the_papers_and_bad_names_are_refused():
    assert len(aa.CIFAR10_POLICY) == 25 and aa.CIFAR10_POLICY[1] == (("rotate", 0.7, 2), ("translateX", 0.3, 9))
    assert aa.RANGES["posterize"][7] == 5 and aa.RANGES["rotate"][2] == pytest.approx(20 / 3)
    with pytest.raises(ValueError, match="cifar10"):
        aa.autoaugment(_images(2), policy="cifar100")


# ------------------------------------------------------------------ cross-check with the official PIL operations

def _official(op: str, image: Image.Image, m: float, sign: int) -> Image.Image:
    """The official SubPolicy's operation (InNOutRobustness augmentations/autoaugment.py) with fill colour 0 (the
    paper's mean0), written here with the same PIL calls; `sign` stands for its random.choice([-1, 1])."""
    fill = (0, 0, 0)
    if op == "shearX":
        return image.transform(image.size, Image.AFFINE, (1, m * sign, 0, 0, 1, 0), Image.BICUBIC, fillcolor=fill)
    if op == "shearY":
        return image.transform(image.size, Image.AFFINE, (1, 0, 0, m * sign, 1, 0), Image.BICUBIC, fillcolor=fill)
    if op == "translateX":
        return image.transform(image.size, Image.AFFINE, (1, 0, m * image.size[0] * sign, 0, 1, 0), fillcolor=fill)
    if op == "translateY":
        return image.transform(image.size, Image.AFFINE, (1, 0, 0, 0, 1, m * image.size[1] * sign), fillcolor=fill)
    if op == "rotate":
        rot = image.convert("RGBA").rotate(m)
        return Image.composite(rot, Image.new("RGBA", rot.size, (128,) * 4), rot).convert(image.mode)
    enhance = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast, "sharpness": ImageEnhance.Sharpness,
               "brightness": ImageEnhance.Brightness}
    if op in enhance:
        return enhance[op](image).enhance(1 + m * sign)
    if op == "posterize":
        return ImageOps.posterize(image, int(m))
    if op == "solarize":
        return ImageOps.solarize(image, m)
    return {"autocontrast": ImageOps.autocontrast, "equalize": ImageOps.equalize, "invert": ImageOps.invert}[op](image)


OPERATIONS = ["shearX", "shearY", "translateX", "translateY", "rotate", "color", "contrast", "sharpness",
              "brightness", "posterize", "solarize", "autocontrast", "equalize", "invert"]


@pytest.mark.parametrize("op", OPERATIONS)
def test_each_operation_equals_the_official_pil_operation(op):
    """kornia's policy read the paper's magnitude indices as bins of a signed scale (rotate 2 turned by -12..-18
    degrees, color 0 made images grey, posterize 7 kept 7 bits): each operation is now compared, at magnitudes
    0, 4 and 9 and both signs, with the PIL call the official code makes."""
    rng = np.random.default_rng(0)
    smooth = np.cumsum(rng.integers(-12, 13, (6, 32, 32, 3)), axis=2) + 128   # photo-like: local structure
    images = np.clip(smooth, 0, 255).astype(np.uint8)
    images[0, :, :16] = 40                                                     # a flat part (autocontrast, equalize)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    signs = torch.tensor([1, -1, 1, -1, 1, -1])
    for index in (0, 4, 9):
        m = float(aa.RANGES[op][index]) if op in aa.RANGES else 0.0
        ours = aa.apply(op, x, m, signs if op in aa.SIGNED else torch.ones(6)).permute(0, 2, 3, 1).numpy()
        official = np.stack([np.asarray(_official(op, Image.fromarray(im), m, int(s)))
                             for im, s in zip(images, signs)]).astype(np.float64)
        diff = np.abs(ours - official)
        if op.startswith("shear"):  # bicubic: torch's kernel (a = -0.75) is not PIL's (a = -0.5)
            assert diff.mean() < 1.5 and np.mean(diff > 8) < 0.02, (op, index, diff.mean())
        else:  # the same 8-bit values, up to a float rounding step
            assert diff.max() <= 1 and np.mean(diff > 0) < 0.01, (op, index, diff.max(), np.mean(diff > 0))


def test_stream_prefetches_autoaugment_batches_and_resumes():
    """Every draw comes from the stream's generator (kornia's drew from the global RNG and kept the pipeline off
    the prefetch thread): batches are assembled ahead and a restored stream yields exactly the same ones."""
    data = ImageDataset((_images(40) * 255).to(torch.uint8), torch.arange(40) % 4, ["a", "b", "c", "d"])
    stream = BatchStream(data, 8, seed=3, num_workers=2, augment="autoaugment_cutout")
    next(stream)
    assert stream._thread is not None
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
