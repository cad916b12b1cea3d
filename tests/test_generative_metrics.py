"""Generative metrics (dat_core.evaluation.generative): the Fréchet distance in a classifier's features equals
an independent NumPy/SciPy recomputation; diversity sees collapse; Inception FID says what it needs."""

import numpy as np
import pytest
import torch

from dat_core.evaluation.generative import (
    features_of,
    frechet_distance,
    frechet_from_features,
    inception_fid,
    within_class_diversity,
)


def reference_frechet(f1: np.ndarray, f2: np.ndarray) -> float:
    """d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), with SciPy's matrix square root."""
    from scipy import linalg

    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


@pytest.fixture
def sets():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(96, 3, 32, 32, generator=g)
    generated = (real[:80] * 0.6 + 0.3 * torch.rand(80, 3, 32, 32, generator=g)).clamp(0, 1)
    return real, generated


def test_frechet_distance_equals_a_scipy_reference(tiny_model, sets):
    pytest.importorskip("scipy")
    real, generated = sets
    ours = frechet_distance(tiny_model, real, generated)
    f_real, f_gen = features_of(tiny_model, real).numpy(), features_of(tiny_model, generated).numpy()
    assert f_real.shape == (96, 64)
    reference = reference_frechet(f_real, f_gen)
    assert ours == pytest.approx(reference, rel=1e-6, abs=1e-9)
    assert frechet_from_features(torch.from_numpy(f_real), torch.from_numpy(f_gen)) == pytest.approx(reference,
                                                                                                      rel=1e-6)
    assert ours > 0


def test_frechet_distance_of_a_set_with_itself_is_zero_and_grows_with_a_shift(tiny_model, sets):
    real, _ = sets
    assert abs(frechet_distance(tiny_model, real, real)) < 1e-6
    near = frechet_distance(tiny_model, real, (real + 0.02).clamp(0, 1))
    far = frechet_distance(tiny_model, real, (real + 0.3).clamp(0, 1))
    assert 0 < near < far


def test_frechet_distance_takes_uint8_datasets_and_refuses_tiny_sets(tiny_model, sets):
    from dat_core.data import ImageDataset

    real, generated = sets
    ds = ImageDataset((real * 255).round().to(torch.uint8), torch.zeros(96, dtype=torch.long), ["a"])
    assert frechet_distance(tiny_model, ds, generated) == pytest.approx(
        frechet_distance(tiny_model, (real * 255).round() / 255, generated), rel=1e-6)
    with pytest.raises(ValueError, match="at least 2 images"):
        frechet_distance(tiny_model, real, generated[:1])


def test_within_class_diversity_sees_collapse():
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(30) % 3
    varied = torch.randn(30, 8, generator=g)
    collapsed = varied[labels] * 0 + torch.randn(3, 8, generator=g)[labels]  # one point per class
    assert within_class_diversity(collapsed, labels) == pytest.approx(0.0, abs=1e-12)
    d = within_class_diversity(varied, labels)
    f = varied[labels == 0]
    manual = torch.cdist(f.double(), f.double()).sum() / (10 * 9)
    assert d > 0 and within_class_diversity(varied[labels == 0], labels[labels == 0]) == pytest.approx(float(manual))
    with pytest.raises(ValueError, match="2 or more"):
        within_class_diversity(varied[:3], torch.tensor([0, 1, 2]))


def test_inception_fid_says_what_it_needs(sets):
    try:
        import torch_fidelity  # noqa: F401
        pytest.skip("torch-fidelity is installed here")
    except ImportError:
        pass
    real, generated = sets
    with pytest.raises(ImportError, match="torch-fidelity"):
        inception_fid(real, generated)


def test_evaluate_reports_sample_realism_in_a_fixed_feature_space(tiny_model):
    from dat_core import build_model
    from dat_core.evaluation import evaluate

    torch.manual_seed(1)
    judge = build_model("wrn-10-1").eval()
    g = torch.Generator().manual_seed(2)
    images, labels = torch.rand(40, 3, 32, 32, generator=g), torch.arange(40) % 10
    report = evaluate(tiny_model, (images, labels), robust=None, samples=20, judge=judge, feature_model=judge,
                      progress=False, sample_steps=2)
    realism = report["sample_realism"]
    assert realism["feature_space"] == "penultimate features of wrn-10-1"
    assert realism["n_real"] == 40 and realism["n_samples"] == 20
    assert realism["frechet_distance"] > 0 and realism["within_class_diversity_real"] > 0
    assert realism["diversity_ratio"] == pytest.approx(
        realism["within_class_diversity_samples"] / realism["within_class_diversity_real"])
    one_shot = iter([(images[:20], labels[:20]), (images[20:], labels[20:])])
    with pytest.raises(ValueError, match="second time"):
        evaluate(tiny_model, one_shot, robust=None, samples=12, feature_model=judge, progress=False, sample_steps=1)


def test_sample_realism_that_cannot_be_measured_is_refused_before_the_work(tiny_model):
    """`train eval --samples 2 --feature-model M` ran the whole evaluation and sampling, then failed: samples
    cycle over the classes, and within-class diversity needs two of one class. Too few samples are refused
    before anything runs; too few real images of any class, before the sampling and the feature model."""
    from dat_core import build_model
    from dat_core.evaluation import evaluate

    judge = build_model("wrn-10-1").eval()
    calls = {"model": 0, "judge": 0}
    tiny_model.register_forward_hook(lambda *_: calls.__setitem__("model", calls["model"] + 1))
    judge.register_forward_hook(lambda *_: calls.__setitem__("judge", calls["judge"] + 1))
    images = torch.rand(20, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with pytest.raises(ValueError, match="at least 11 samples"):
        evaluate(tiny_model, (images, torch.arange(20) % 10), robust=None, samples=10, feature_model=judge,
                 progress=False, sample_steps=1)
    assert calls == {"model": 0, "judge": 0}
    with pytest.raises(ValueError, match="two real images of one class"):
        evaluate(tiny_model, (images[:10], torch.arange(10)), robust=None, samples=12, feature_model=judge,
                 progress=False, sample_steps=1)
    assert calls["judge"] == 0 and calls["model"] <= 1               # the clean pass only: no sampling


def test_train_eval_feature_model_needs_samples(tmp_path, capsys):
    from dat_core import build_model, save_model
    from train.__main__ import main

    save_model(build_model("wrn-10-1"), tmp_path / "m")
    assert main(["eval", "--model", str(tmp_path / "m"), "--data", "cifar10", "--root", str(tmp_path),
                 "--feature-model", str(tmp_path / "m")]) == 2
    assert "--samples" in capsys.readouterr().err


def reference_kernel_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """KID's unbiased MMD² (Bińkowski et al. 2018) with k(x, y) = (x.y / d + 1)^3, written out in NumPy."""
    d = f1.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(f1, f1), k(f2, f2), k(f1, f2)
    m, n = len(f1), len(f2)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def test_kernel_distance_equals_a_numpy_reference_and_is_near_zero_for_the_same_distribution():
    from dat_core.evaluation.generative import kernel_distance_from_features

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(60, 8)), rng.normal(0.5, 1.0, size=(60, 8))
    mean, std = kernel_distance_from_features(torch.from_numpy(a), torch.from_numpy(b), subsets=1, subset_size=60)
    assert mean == pytest.approx(reference_kernel_distance(a, b), rel=1e-9) and std == 0
    c = rng.normal(size=(800, 8))
    same = kernel_distance_from_features(torch.from_numpy(c[:400]), torch.from_numpy(c[400:]), subsets=5,
                                         subset_size=400)[0]
    assert abs(same) < mean / 5                                     # unbiased: ~0 for one distribution
    with pytest.raises(ValueError, match="at least 2"):
        kernel_distance_from_features(torch.from_numpy(a[:1]), torch.from_numpy(b))


@pytest.mark.parametrize("real,generated,match", [
    (torch.randn(10, 4), torch.randn(10, 5), "one width"),
    (torch.full((10, 4), float("nan")), torch.randn(10, 4), "finite"),
    (torch.randn(10, 4), torch.randn(10, 4).index_fill_(0, torch.tensor([3]), float("inf")), "finite"),
    (torch.randn(10), torch.randn(10), "at least 2 images"),
])
def test_feature_distances_refuse_mismatched_or_non_finite_features(real, generated, match):
    """A NaN feature gave a NaN distance; unequal widths a torch broadcast error (and an MKL error line)."""
    from dat_core.evaluation.generative import kernel_distance_from_features
    for distance in (frechet_from_features, kernel_distance_from_features):
        with pytest.raises(ValueError, match=match):
            distance(real, generated)
