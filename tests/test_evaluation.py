"""Metric math (dat_core.evaluation.metrics) and model evaluation (dat_core.evaluation) on tiny models and data."""

import json
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from dat_core import build_model
from dat_core.energy import marginal_energy
from dat_core.evaluation import (
    STANDARD_ATTACKS,
    autoattack_accuracy,
    calibration,
    clean_accuracy,
    evaluate,
    iterate,
    model_info,
    ood_auroc,
    plot_reliability,
    predict,
    robust_accuracy,
    sample_fidelity,
)
from dat_core.evaluation.metrics import energy_percentile, energy_quantiles, expected_calibration_error, roc_auc


def brute_force_auc(pos, neg):
    pos, neg = np.asarray(pos, float)[:, None], np.asarray(neg, float)[None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


class Brightness(nn.Module):
    """logit_k = 10 * mean of channel k: bright images get high logits, i.e. low energy E(x)."""

    def forward(self, x):
        return 10 * x.mean((2, 3))


class AlwaysZero(nn.Module):
    """A judge that always says class 0 with logits (10, 0, ..., 0)."""

    def __init__(self, k=10):
        super().__init__()
        self.k = k

    def forward(self, x):
        out = torch.zeros(x.shape[0], self.k)
        out[:, 0] = 10
        return out


@pytest.fixture
def images():
    return torch.rand(24, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def own_labels(tiny_model, images):
    """Labels = the model's own predictions, so clean accuracy is exactly 1."""
    return predict(tiny_model, (images, torch.zeros(24, dtype=torch.long))).argmax(1)


# --------------------------------------------------------------------------- metrics

def test_roc_auc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    for n_pos, n_neg in [(1, 1), (7, 13), (128, 128)]:
        pos = rng.integers(0, 5, n_pos).astype(float)  # few distinct values: many ties
        neg = rng.integers(0, 5, n_neg).astype(float) - 0.5 * rng.integers(0, 2, n_neg)
        expected = brute_force_auc(pos, neg)
        assert roc_auc(pos, neg) == pytest.approx(expected, abs=1e-12)
        as_torch = roc_auc(torch.tensor(pos, dtype=torch.float32), torch.tensor(neg))
        assert as_torch == pytest.approx(expected, abs=1e-12)
    assert roc_auc([2, 3, 4], [0, 1]) == 1.0
    assert roc_auc([0, 1], [2, 3, 4]) == 0.0
    assert roc_auc([1.5] * 4, [1.5] * 3) == 0.5
    with pytest.raises(ValueError):
        roc_auc([], [1.0])


def test_ece_hand_computed_and_perfect_calibration():
    conf = torch.tensor([0.95, 0.95, 0.55, 1.0], dtype=torch.float64)
    correct = torch.tensor([True, False, True, True])
    # bin [8/15, 9/15): conf .55, acc 1 -> 1/4 * .45; last bin: conf (.95+.95+1)/3, acc 2/3 -> 3/4 * .3
    ece, bins = expected_calibration_error(conf, correct)
    assert ece == pytest.approx(0.25 * 0.45 + 0.75 * 0.3)
    assert len(bins["count"]) == 15 and sum(bins["count"]) == 4
    assert bins["count"][8] == 1 and bins["count"][14] == 3
    assert bins["accuracy"][14] == pytest.approx(2 / 3)
    # (N, K) probabilities + integer labels give the same numbers
    probs = torch.stack([conf, 1 - conf], 1)
    assert expected_calibration_error(probs, torch.tensor([0, 1, 0, 0]))[0] == pytest.approx(ece)
    # perfectly calibrated: conf .7 with 7/10 right, conf .3 with 3/10 right
    conf = torch.tensor([0.7] * 10 + [0.3] * 10)
    correct = torch.tensor([1] * 7 + [0] * 3 + [1] * 3 + [0] * 7)
    assert expected_calibration_error(conf, correct)[0] == pytest.approx(0.0, abs=1e-7)
    assert expected_calibration_error(conf, 1 - correct)[0] == pytest.approx(0.4, abs=1e-6)


def test_energy_quantiles_and_percentile_direction():
    e = torch.randn(2000, generator=torch.Generator().manual_seed(0)) * 2 - 5
    q = energy_quantiles(e)
    assert list(q) == ["0.01", "0.05", "0.1", "0.25", "0.5", "0.75", "0.9", "0.95", "0.99"]
    assert q["0.5"] == pytest.approx(float(np.quantile(e.numpy(), 0.5)))
    assert energy_percentile(q["0.5"], q) == pytest.approx(50.0)
    assert energy_percentile(q["0.9"], q) == pytest.approx(90.0)
    sweep = energy_percentile(np.linspace(-15, 5, 200), q)
    assert np.all(np.diff(sweep) >= 0) and sweep[0] == pytest.approx(1.0) and sweep[-1] == pytest.approx(99.0)
    # lower energy = more typical = smaller percentile
    assert energy_percentile(q["0.25"] - 0.1, q) < 25 < energy_percentile(q["0.25"] + 0.1, q)
    # stored as JSON (float keys parsed back) still works
    assert energy_percentile(q["0.5"], json.loads(json.dumps(q))) == pytest.approx(50.0)


# --------------------------------------------------------------------------- evaluation

def test_input_forms_agree(tiny_model, images, own_labels):
    ref = predict(tiny_model, iterate(images, own_labels, batch_size=7))
    as_uint8 = (images * 255).round().to(torch.uint8)
    dataset_like = types.SimpleNamespace(images=as_uint8, labels=own_labels)
    assert torch.allclose(predict(tiny_model, (images, own_labels)), ref, atol=1e-5)
    assert torch.allclose(predict(tiny_model, [(images[:10], own_labels[:10]), (images[10:], own_labels[10:])]),
                          ref, atol=1e-5)
    assert torch.allclose(predict(tiny_model, dataset_like), predict(tiny_model, as_uint8.float() / 255),
                          atol=1e-5)
    assert clean_accuracy(tiny_model, dataset_like) > 0.7  # quantization flips at most a few
    assert not tiny_model.training


@pytest.mark.parametrize("bad,match", [
    (lambda x, y: (x * 255, y), r"\[0,1\]"),                        # 0..255 as floats: a silently wrong accuracy
    (lambda x, y: (x.masked_fill(x > 0.9, float("nan")), y), "NaN"),
    (lambda x, y: (x, y + 10), "out of range"),                        # labels past the classes: accuracy 0
    (lambda x, y: (x, -y - 1), "out of range"),
    (lambda x, y: (x, y.float()), "integer"),
    (lambda x, y: (x, y[:-1]), "labels must have shape"),
    (lambda x, y: (x[:0], y[:0]), "at least one image"),               # an empty batch: accuracy NaN
])
def test_every_evaluation_checks_its_batches(tiny_model, images, own_labels, bad, match):
    x, y = bad(images[:8], own_labels[:8])
    passes = [lambda: clean_accuracy(tiny_model, [(x, y)]), lambda: calibration(tiny_model, [(x, y)]),
              lambda: robust_accuracy(tiny_model, [(x, y)], steps=1),
              lambda: autoattack_accuracy(tiny_model, [(x, y)], attacks=["apgd-ce"])]
    for run in passes:
        with pytest.raises(ValueError, match=match):
            run()


def test_energy_quantiles_refuse_non_finite_energies():
    with pytest.raises(ValueError, match="finite"):
        energy_quantiles([1.0, float("nan"), 2.0])


def test_robust_accuracy_bounds_and_restarts(tiny_model, images, own_labels, monkeypatch):
    data = (images, own_labels)
    assert clean_accuracy(tiny_model, data) == 1.0
    assert robust_accuracy(tiny_model, data, eps=0.0, steps=5) == 1.0
    weak = robust_accuracy(tiny_model, data, eps=0.3, steps=3, step_size=0.1, restarts=0, seed=0)
    strong = robust_accuracy(tiny_model, data, eps=0.3, steps=3, step_size=0.1, restarts=2, seed=0)
    assert strong <= weak <= 1.0
    assert robust_accuracy(tiny_model, data, eps=3.0, steps=5, step_size=1.0) < 0.5  # the attack bites
    linf = robust_accuracy(tiny_model, data, norm="Linf", eps=8 / 255, steps=3, step_size=2 / 255)
    assert 0.0 <= linf <= 1.0
    # restarts: the first run has no random start; each later run attacks exactly the survivors
    import dat_core.evaluation.accuracy as ev
    real_pgd, runs = ev.pgd, []

    def spy(model, x, y, threat, steps, objective, random_start, autocast):
        adv = real_pgd(model, x, y, threat, steps, objective=objective, random_start=random_start)
        survivors = int((predict(model, adv.x).argmax(1) == y).sum())
        runs.append((x.shape[0], random_start, objective, survivors))
        return adv

    monkeypatch.setattr(ev, "pgd", spy)
    acc = robust_accuracy(tiny_model, data, eps=1.0, steps=2, step_size=0.5, restarts=2)
    assert [r[1:3] for r in runs] == [(False, "ce"), (True, "ce"), (True, "ce")][:len(runs)]
    assert runs[0][0] == 24 and all(runs[i + 1][0] == runs[i][3] for i in range(len(runs) - 1))
    assert acc == runs[-1][3] / 24
    assert len(runs) == 3
    monkeypatch.undo()
    # misclassified-clean samples never count as robust, even with eps = 0
    wrong = own_labels.clone()
    wrong[:12] = (wrong[:12] + 1) % 10
    assert clean_accuracy(tiny_model, (images, wrong)) == 0.5
    assert robust_accuracy(tiny_model, (images, wrong), eps=0.0, steps=2) == 0.5


def test_calibration_and_reliability_png(tiny_model, images, own_labels, tmp_path):
    labels = own_labels.clone()
    labels[::3] = (labels[::3] + 1) % 10
    cal = calibration(tiny_model, (images, labels))
    probs = torch.softmax(predict(tiny_model, images), 1)
    assert cal["ece"] == pytest.approx(expected_calibration_error(probs, labels)[0])
    fig = plot_reliability(cal["bins"], tmp_path / "rel.png")
    assert len(fig.axes) == 2
    assert Image.open(tmp_path / "rel.png").size[0] > 100


def _official_adversarial_ood(model, x, score, eps=1.0, step_size=0.1, steps=20):
    """The official `ood_detection`'s attack on OOD images (xuwangyin/DAT, rebm/eval/eval_utils.py), re-derived from
    its formulas: L2 steps x + step_size * g / ||g||_2, projected onto the eps-ball around x_0 and clamped to [0,1],
    no random start; g ascends logsumexp f(x) (energy score) or KL(uniform || softmax) (`pgd_attack_uniform_target`,
    MSP score)."""
    x0, x = x.clone(), x.clone()
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        logits = model(x)
        if score == "energy":
            loss = torch.logsumexp(logits, 1).sum()
        else:
            uniform = torch.full_like(logits, 1.0 / logits.shape[1])
            loss = torch.nn.functional.kl_div(torch.log_softmax(logits, 1), uniform, reduction="none").sum(1).sum()
        (g,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            g_norm = g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            x = x + step_size * g / (g_norm + 1e-10)
            d = x - x0
            d = d * torch.clamp(eps / (d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-10), max=1.0)
            x = (x0 + d).clamp(0, 1)
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("score", ["energy", "msp"])
def test_adversarial_ood_auroc_equals_the_official_attack(tiny_model, images, score):
    """METHOD §6: the official OOD evaluation also reports the AUROC after OOD images are attacked to look
    in-distribution; ours had only the clean AUROC."""
    from dat_core.evaluation.ood import adversarial_ood_settings, ood_scores

    ood = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * 0.5
    reference = _official_adversarial_ood(tiny_model.eval(), ood, score)
    expected = roc_auc(ood_scores(predict(tiny_model, images), score), ood_scores(reference, score))
    got = ood_auroc(tiny_model, images, ood, score=score, adversarial=True)
    assert got == pytest.approx(expected, abs=1e-6)
    assert got < ood_auroc(tiny_model, images, ood, score=score)  # the attack makes OOD look in-distribution
    assert adversarial_ood_settings(32) == {"norm": "L2", "eps": 1.0, "step_size": 0.1, "steps": 20}
    assert adversarial_ood_settings(224) == {"norm": "L2", "eps": 3.0, "step_size": 1.0, "steps": 10}


def test_ood_auroc_energy_sign_convention():
    gen = torch.Generator().manual_seed(0)
    bright = 0.6 + 0.4 * torch.rand(32, 3, 32, 32, generator=gen)
    dark = 0.3 * torch.rand(32, 3, 32, 32, generator=gen)
    model = Brightness()
    assert marginal_energy(predict(model, bright)).max() < marginal_energy(predict(model, dark)).min()
    assert ood_auroc(model, bright, dark, score="energy") > 0.9
    assert ood_auroc(model, dark, bright, score="energy") < 0.1
    assert 0.0 <= ood_auroc(model, bright, dark, score="msp") <= 1.0
    with pytest.raises(ValueError):
        ood_auroc(model, bright, dark, score="logits")


def test_sample_fidelity_deterministic_and_judged(tiny_model):
    a = sample_fidelity(tiny_model, tiny_model, n=10, image_size=32, num_classes=10, seed=3, steps=4)
    b = sample_fidelity(tiny_model, tiny_model, n=10, image_size=32, num_classes=10, seed=3, steps=4)
    c = sample_fidelity(tiny_model, tiny_model, n=10, image_size=32, num_classes=10, seed=4, steps=4)
    assert 0.0 <= a["fraction_judged_target"] <= 1.0 and 0.0 <= a["mean_target_confidence"] <= 1.0
    assert torch.equal(a["images"], b["images"]) and a["fraction_judged_target"] == b["fraction_judged_target"]
    assert not torch.equal(a["images"], c["images"])
    assert a["images"].shape == (10, 3, 32, 32) and a["targets"].tolist() == list(range(10))
    # a judge that always answers class 0 accepts exactly the samples targeted at class 0
    z = sample_fidelity(tiny_model, AlwaysZero(), n=20, image_size=32, num_classes=10, seed=3, steps=1)
    assert z["fraction_judged_target"] == pytest.approx(0.1)
    assert z["mean_target_confidence"] == pytest.approx(0.1)


def test_evaluate_report_and_files(tiny_model, images, own_labels, tmp_path):
    dark = 0.2 * torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    report = evaluate(tiny_model, iterate(images, own_labels, batch_size=10),
                      ood={"noise": "uniform", "dark": dark},
                      robust=dict(eps=0.3, steps=3), robust_strong=dict(restarts=1),
                      samples=10, out_dir=tmp_path, progress=False, sample_steps=2)
    json.dumps(report, allow_nan=False)  # JSON-safe
    assert report["n"] == 24 and report["clean_accuracy"] == 1.0
    assert report["robust"] == {"norm": "L2", "eps": 0.3, "steps": 3, "step_size": 0.1, "restarts": 0}
    assert report["robust_strong"]["restarts"] == 1 and report["robust_strong"]["steps"] == 3
    assert report["robust_strong_accuracy"] <= report["robust_accuracy"] <= report["clean_accuracy"]
    assert report["robust_accuracy"] == robust_accuracy(tiny_model, (images, own_labels), eps=0.3, steps=3)
    assert report["ece"] == pytest.approx(calibration(tiny_model, (images, own_labels))["ece"])
    assert set(report["ood_auroc"]) == {"noise", "dark"} and report["ood_n"] == {"noise": 24, "dark": 16}
    assert report["ood_auroc_adversarial"]["dark"] == pytest.approx(
        ood_auroc(tiny_model, images, dark, adversarial=True))
    assert report["ood_auroc_msp_adversarial"]["dark"] == pytest.approx(
        ood_auroc(tiny_model, images, dark, score="msp", adversarial=True))
    assert report["ood_adversarial_n"] == {"noise": 24, "dark": 16} and report["ood_adversarial"]["steps"] == 20
    assert report["ood_auroc"]["dark"] == pytest.approx(ood_auroc(tiny_model, images, dark))
    energies = marginal_energy(predict(tiny_model, images))
    assert report["energy_quantiles"] == pytest.approx(energy_quantiles(energies))
    assert report["sample_fidelity"]["judge"] == "self" and report["sample_fidelity"]["steps"] == 2
    for name in ("reliability.png", "samples.png"):
        assert Image.open(tmp_path / name).size[0] > 32
    assert report["files"]["samples"].endswith("samples.png")


@pytest.mark.parametrize("kind,match", [("gaussian", "other classes"), ("noise", "seeds must be one of")])
def test_evaluate_refuses_sample_seeds_it_cannot_draw_before_reading_data(images, own_labels, kind, match):
    """Samples are drawn after the attacks and OOD sets: a seed kind that cannot serve the model failed there."""
    model = build_model("wrn-10-1", num_classes=3, class_names=["a", "b", "c"]).eval()
    read = []

    def batches():
        read.append(True)
        yield images, own_labels % 3

    with pytest.raises(ValueError, match=match):
        evaluate(model, batches(), robust=dict(eps=0.3, steps=3), samples=3, sample_seeds=kind, progress=False)
    assert not read


def test_autoattack_is_the_reference_package_standard_version(tiny_model, images, own_labels):
    x, y = images[:8], own_labels[:8]
    rng = torch.get_rng_state()
    result = autoattack_accuracy(tiny_model, (x, y), norm="L2", eps=1.0)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's RNG is untouched
    assert result["version"] == "standard" and result["attacks"] == list(STANDARD_ATTACKS) == [
        "apgd-ce", "apgd-t", "fab-t", "square"]
    assert result["n"] == 8 and result["clean_accuracy"] == 1.0
    assert result["max_perturbation"] <= 1.0 + 1e-4
    pgd_acc = robust_accuracy(tiny_model, (x, y), eps=1.0, steps=20, step_size=0.25)
    assert result["autoattack_accuracy"] <= pgd_acc < 1.0  # at least as strong as our PGD here
    assert autoattack_accuracy(tiny_model, (x, y), eps=1.0) == result  # deterministic for a seed
    info = model_info(result, name="tiny", architecture="wrn-10-1", dataset="cifar10", additional_data=False)
    assert info["threat_model"] == "L2" and info["eps"] == "1" and info["clean_acc"] == "100.00"
    assert info["autoattack_acc"] == f"{100 * result['autoattack_accuracy']:.2f}"


def test_autoattack_errors_and_no_torchattacks(tiny_model, images, own_labels, monkeypatch):
    from pathlib import Path

    import dat_core.evaluation as evaluation

    sources = "".join(p.read_text() for p in Path(evaluation.__file__).parent.glob("*.py"))
    assert "torchattacks" not in sources  # its install hint would swap the CPU torch for a CUDA build
    with pytest.raises(ValueError, match="unknown AutoAttack attacks"):
        autoattack_accuracy(tiny_model, (images[:2], own_labels[:2]), attacks=["pgd"])
    three = build_model("wrn-10-1", num_classes=3, image_size=32).eval()
    with pytest.raises(ValueError, match="need at least 4 classes"):
        autoattack_accuracy(three, (images[:2], torch.zeros(2, dtype=torch.long)))
    monkeypatch.setitem(sys.modules, "pyautoattack", None)
    with pytest.raises(ImportError, match="pip install pyautoattack"):
        autoattack_accuracy(tiny_model, (images[:2], own_labels[:2]))


def test_the_samples_picture_stays_a_picture_however_many_samples_are_measured(tiny_model, images, own_labels,
                                                                                tmp_path):
    """10,000 measured samples once made a 342 x 34,002 px strip: the grid shows the first rows only."""
    from dat_core.evaluation.report import MAX_GRID_ROWS

    classes = tiny_model.config["num_classes"]
    n = classes * (MAX_GRID_ROWS + 3)
    report = evaluate(tiny_model, iterate(images, own_labels, batch_size=10), robust=None, samples=n,
                      out_dir=tmp_path, progress=False, sample_steps=1, batch_size=64)
    assert report["sample_fidelity"]["n"] == n
    width, height = Image.open(tmp_path / "samples.png").size
    size = tiny_model.config["image_size"]
    assert (width, height) == (classes * (size + 2) + 2, MAX_GRID_ROWS * (size + 2) + 2)


def test_linf_budgets_are_written_as_robustbench_and_cards_say_them():
    """RobustBench's model_info writes a Linf radius as "8/255", and a card's metric name should read the same:
    0.0313725 is a number nobody typed. L2 radii stay short numbers."""
    from dat_core.cards import eval_results

    result = {"norm": "Linf", "eps": 8 / 255, "clean_accuracy": 0.9, "autoattack_accuracy": 0.5, "n": 10,
              "version": "standard", "attacks": ["apgd-ce"], "seed": 0}
    assert model_info(result, name="m", architecture="a", dataset="cifar10", additional_data=False)["eps"] == "8/255"
    l2 = {**result, "norm": "L2", "eps": 0.5}
    assert model_info(l2, name="m", architecture="a", dataset="c", additional_data=False)["eps"] == "0.5"
    names = {r.metric_name for r in eval_results({"clean_accuracy": 0.9, "autoattack_accuracy": 0.5,
                                                  "autoattack": {"norm": "Linf", "eps": 8 / 255}})}
    assert "AutoAttack robust accuracy (Linf eps=8/255)" in names
