"""Audit 29 of the explanation layer: results that must not depend on memory knobs, and inputs refused early."""

import types

import numpy as np
import pytest
import torch

from dat_core import build_model
from explain.attribution import attribute
from explain.generation import generate
from explain.landscape import energy_landscape, plot_landscape
from explain.plots import close_figure


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("wrn-10-1").eval()


@pytest.mark.parametrize("method", ["smoothgrad", "gradient_shap"])
@pytest.mark.parametrize("size", [32, 33])
def test_a_seeded_map_does_not_depend_on_the_internal_batch_size(method, size):
    """internal_batch_size only bounds memory, yet GradientSHAP ran Captum once per chunk and Captum draws its
    baselines and points per call: the same seed gave another map per batch size (correlation ~0.6). SmoothGrad's
    NoiseTunnel drew noise per chunk too, and at an odd image size torch's normal stream shifted with the chunk."""
    torch.manual_seed(0)
    model = build_model("wrn-10-1", image_size=size).eval()
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    whole = attribute(model, x, 3, method, n_samples=6, internal_batch_size=6, seed=2)
    chunked = attribute(model, x, 3, method, n_samples=6, internal_batch_size=4, seed=2)
    np.testing.assert_allclose(chunked, whole, rtol=1e-4, atol=1e-6 * np.abs(whole).max())


def _still_path(model, target=3, **extra):
    """A stand-in path that never moves: x_T == x_0."""
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(3)).numpy()
    return types.SimpleNamespace(images=np.stack([x, x]), source=0, target=target,
                                 class_names=model.config["class_names"], **extra)


@pytest.mark.parametrize("field, value, says", [
    ("target", -1, "trajectory.target"), ("source", 10, "trajectory.source"),
    ("steps", np.arange(5), "trajectory.steps")])
def test_a_landscape_refuses_a_stand_in_path_it_cannot_draw(model, field, value, says):
    """target -1 drew E(x, y=truck) (class 9) and kept target -1; source 10 passed and broke only the plot's legend;
    5 steps for 2 frames passed and failed later, in the plot, on matplotlib's "x and y" shapes."""
    path = _still_path(model)
    setattr(path, field, value)
    with pytest.raises(ValueError, match=says):
        energy_landscape(model, path, grid=3, energy="joint")


def test_the_landscape_axis_says_what_its_first_direction_is(model):
    """When x_T == x_0 the first direction is the target's logit gradient, yet the x axis said "along
    counterfactual direction"."""
    L = energy_landscape(model, _still_path(model), grid=3)
    assert "gradient" in L.u_label
    fig = plot_landscape(L)
    try:
        assert L.u_label in fig.axes[0].get_xlabel()
    finally:
        close_figure(fig)


@pytest.mark.parametrize("option, value", [("nrow", 0), ("nrow", -3), ("scale", 0), ("scale", 1.5), ("scale", 10**4),
                                           ("pad", -2)])
def test_a_sample_grid_refuses_sizes_it_cannot_draw(model, option, value):
    """nrow 0 or -3 drew one column, scale 0 or 1.5 scale 1, scale 10**4 asked numpy for ~600 GB, pad -2 failed on a
    broadcast: the CLI checks these (nrow >= 1, scale 1..64), the API took them."""
    samples = generate(model, [1, 2], steps=1)
    assert samples.grid(nrow=2, scale=2, pad=0).shape == (64, 128, 3)
    with pytest.raises(ValueError, match=option):
        samples.grid(**{option: value})


def test_the_random_estimators_are_captums_in_expectation():
    """SmoothGrad and GradientSHAP draw their own points (so the chunking cannot change them): with many samples
    they must agree with Captum's NoiseTunnel(Saliency) and GradientShap on the same baselines, up to Monte Carlo
    error (about 1% of the map's range at 4000 samples here)."""
    from captum.attr import GradientShap, NoiseTunnel, Saliency

    from explain.attribution import SHAP_NOISE_BASELINES, SMOOTHGRAD_STDEV

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 8 * 8, 3)).eval()
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    n, seed = 4000, 5
    gen = torch.Generator().manual_seed(seed)   # our baselines: black + noise images drawn first from the seed
    baselines = torch.cat([torch.zeros_like(x), torch.rand(SHAP_NOISE_BASELINES, 3, 8, 8, generator=gen)])
    torch.manual_seed(7)
    np.random.seed(7)
    references = {
        "gradient_shap": GradientShap(net).attribute(x.clone().requires_grad_(True), baselines=baselines,
                                                     n_samples=n, target=2),
        "smoothgrad": NoiseTunnel(Saliency(net)).attribute(x.clone().requires_grad_(True), nt_type="smoothgrad",
                                                           nt_samples=n, nt_samples_batch_size=1000,
                                                           stdevs=SMOOTHGRAD_STDEV, target=2, abs=False)}
    for method, reference in references.items():
        ours = attribute(net, x, 2, method, n_samples=n, internal_batch_size=1000, seed=seed)
        expected = reference[0].sum(0).detach().numpy()
        assert np.abs(ours - expected).max() < 0.05 * np.abs(expected).max(), method
