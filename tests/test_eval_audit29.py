"""Evaluation audit (session 29): numbers that must not depend on other options, and inputs refused rather than
silently mis-measured (labels past a bare model's outputs, empty or mislabelled calibration inputs, 0..255 images in
a feature space, an OOD holdout of noise)."""

import json

import pytest
import torch
import torch.nn as nn
from test_train_cli_reports import _tiny

from dat_core.evaluation import autoattack_accuracy, calibration, clean_accuracy, evaluate, predict, robust_accuracy
from dat_core.evaluation.generative import features_of
from dat_core.evaluation.metrics import expected_calibration_error
from train.__main__ import main


class Wiggly(nn.Module):
    """A bare model (no config) whose verdict under attack hangs on the random start: sin of a random projection."""

    def __init__(self, k: int = 4):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3 * 8 * 8, k, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        return torch.sin(3 * x.flatten(1) @ self.w)


@pytest.fixture
def wiggly_data():
    model = Wiggly()
    x = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    return model, x, predict(model, x).argmax(1)


def test_the_standard_robust_accuracy_does_not_depend_on_asking_for_the_strong_one(wiggly_data):
    """The strong check's random starts came from the standard check's RNG stream, so `--strong` changed the
    standard robust_accuracy of the next batches (0.875 without, 0.917 with, on the tiny WRN)."""
    model, x, y = wiggly_data
    settings = dict(eps=0.3, steps=1, step_size=0.15, restarts=3)
    for seed in range(4):
        alone = evaluate(model, (x, y), robust=settings, batch_size=8, progress=False, seed=seed)
        both = evaluate(model, (x, y), robust=settings, robust_strong=dict(steps=1, restarts=3), batch_size=8,
                        progress=False, seed=seed)
        direct = robust_accuracy(model, [(x[i:i + 8], y[i:i + 8]) for i in range(0, 64, 8)], **settings, seed=seed)
        assert both["robust_accuracy"] == alone["robust_accuracy"] == direct
        assert both["robust_strong_accuracy"] <= both["robust_accuracy"]
    again = evaluate(model, (x, y), robust=settings, robust_strong=dict(steps=1, restarts=3), batch_size=8,
                     progress=False, seed=3)
    assert again["robust_strong_accuracy"] == both["robust_strong_accuracy"]   # still deterministic for a seed


def test_labels_past_a_bare_models_outputs_are_refused(wiggly_data):
    """A model without a config (any nn.Module) has its labels checked against nothing: a label 5 for 4 outputs
    counted as a wrong answer, an accuracy of 0 and an ECE of the wrong labels, silently."""
    model, x, y = wiggly_data
    wrong = y.clone()
    wrong[3] = 5
    runs = [lambda: clean_accuracy(model, (x, wrong)), lambda: calibration(model, (x, wrong)),
            lambda: robust_accuracy(model, (x, wrong), steps=1),
            lambda: evaluate(model, (x, wrong), robust=None, progress=False),
            lambda: autoattack_accuracy(model, (x, wrong), attacks=["apgd-ce"])]
    for run in runs:
        with pytest.raises(ValueError, match="out of range"):
            run()


def test_calibration_error_refuses_what_it_cannot_measure():
    """No confidences gave an ECE of 0 (perfectly calibrated), and a label past the probabilities' classes counted
    as a wrong prediction."""
    with pytest.raises(ValueError, match="at least one"):
        expected_calibration_error(torch.zeros(0), torch.zeros(0, dtype=torch.bool))
    probs = torch.tensor([[0.2, 0.8], [0.6, 0.4]])
    with pytest.raises(ValueError, match="out of range"):
        expected_calibration_error(probs, torch.tensor([1, 5]))
    assert expected_calibration_error(probs, torch.tensor([1, 0]), n_bins=5)[0] == pytest.approx(0.3)


def test_a_feature_space_refuses_images_in_0_255(tiny_model):
    """Every other pass refuses 0..255 floats; the Fréchet and diversity features took them and measured noise."""
    x = torch.rand(4, 3, 32, 32)
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        features_of(tiny_model, x * 255)
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        features_of(tiny_model, [(x * 255, torch.zeros(4, dtype=torch.long))])
    assert features_of(tiny_model, (x * 255).round().to(torch.uint8)).shape == (4, 64)


def test_an_ood_holdout_of_noise_is_refused_and_a_report_says_its_ood_options(toy, tmp_path, capsys):
    """--ood-holdout with noise only was silently ignored, and a report did not say whether its OOD AUROC was of
    the held-out images (never seeds in training) or of all of them, seeds included."""
    model = _tiny(tmp_path / "tiny")
    base = ["eval", "--model", str(model), "--data", str(toy), "--split", "test", "--steps", "0", "--ood-clean-only"]
    assert main([*base, "--ood", "uniform", "--ood-holdout", "5"]) == 2
    assert "--ood-holdout" in capsys.readouterr().err
    out = tmp_path / "r.json"
    assert main([*base, "--ood", str(toy / "ood"), "--ood-holdout", "5", "--ood-limit", "4", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["ood_holdout"] == 5 and report["ood_limit"] == 4 and report["ood_n"] == {"ood": 4}


def test_the_attacked_ood_images_are_a_random_draw_not_the_first_folder(tmp_path):
    """The adversarial AUROC attacks a set's first 1024 images (the official MAX_OOD_SAMPLES, of a shuffled loader):
    with --ood-limit above 1024 they were the first in folder order, mostly one folder."""
    import numpy as np
    from PIL import Image

    import train.eval_cli as eval_cli
    from dat_core.evaluation.ood import MAX_ADVERSARIAL_OOD

    root = tmp_path / "ood"
    for name, value in (("a_dark", 0), ("b_bright", 255)):
        (root / name).mkdir(parents=True)
        for i in range(700):
            Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(root / name / f"{i:03d}.png")
    parser = eval_cli.argparse.ArgumentParser()
    eval_cli.add_eval_arguments(parser)
    for limit in ("1200", "1400"):
        args = parser.parse_args(["--model", "m", "--ood", str(root), "--ood-limit", limit])
        images = eval_cli._ood_sets(args, 4, 24)["ood"]
        assert len(images) == int(limit)
        attacked = images[:MAX_ADVERSARIAL_OOD].flatten(1).float().mean(1)
        assert 0.4 <= float((attacked > 127).float().mean()) <= 0.6


def test_a_subset_of_autoattack_runs_with_the_standard_settings():
    """`--autoattack-attacks apgd-ce` ran AutoAttack's "custom" version with its constructor's defaults: APGD and FAB
    with 5 restarts each, against 1 in the standard version, so the "quicker, weaker" subset was five times slower."""
    from dat_core.evaluation.autoattack import autoattack_accuracy

    class Still(torch.nn.Module):
        """Logits that ignore the image: every point stays standing, so every restart runs all its iterations."""

        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.tensor([3.0, 0.0, 0.0, 0.0, 0.0]))
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            return self.bias.expand(len(x), -1) + 0 * x.flatten(1)[:, :1]

    model = Still()
    x, y = torch.rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)
    result = autoattack_accuracy(model, [(x, y)], eps=0.5, attacks=["apgd-ce"])
    assert result["autoattack_accuracy"] == 1.0
    assert model.calls < 2 * 110, model.calls   # one restart of 100 iterations (5 restarts: ~500)
