import copy
import io
import types
import warnings

import numpy as np
import pytest
import torch
from conftest import warmed_wrn

from dat_core import pgd, threat_model
from dat_core.runtime import channels_last, memory_format
from explain.attribution import METHODS, attribute, attribute_trajectory, plot_attributions
from explain.plots import colorize_signed, figure_to_array, normalize_map

FAST = {"n_samples": 4, "internal_batch_size": 64}


@pytest.fixture(scope="module")
def model():
    """wrn-10-1 with non-trivial BN statistics, built once for this module (read-only in the tests)."""
    return warmed_wrn()


@pytest.fixture(scope="module")
def traj(model):
    """Stand-in for explain.trajectory.Trajectory: only images/source/target/class_names are read."""
    torch.manual_seed(1)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        source = int(model(x).argmax())
    target = (source + 1) % 10
    res = pgd(model, x, torch.tensor([target]), threat_model("L2", 1.0, 0.25), steps=3,
              objective="target_logit", record_every=1)
    return types.SimpleNamespace(images=res.frames[:, 0].numpy(), source=source, target=target,
                                 class_names=model.config["class_names"])


@pytest.fixture(scope="module")
def constant_model(model):
    """Zero classifier weights: logits are constant (zero), every gradient and occlusion delta is 0."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        m.fc.weight.zero_()
    return m


def test_every_method_for_both_classes(model, traj):
    r = attribute_trajectory(model, traj, **FAST)
    assert r.methods == METHODS and r.source == traj.source and r.target == traj.target
    for maps in (r.source_maps, r.target_maps):
        for m in METHODS:
            assert maps[m].shape == (32, 32) and maps[m].dtype == np.float32
            assert np.isfinite(maps[m]).all() and np.abs(maps[m]).max() > 0
    assert not np.allclose(r.source_maps["saliency"], r.target_maps["saliency"])
    np.testing.assert_array_equal(r.difference, (traj.images[-1] - traj.images[0]).transpose(1, 2, 0))
    np.testing.assert_allclose(r.difference_map, r.difference.sum(axis=2), atol=1e-6)
    assert r.image.shape == r.start.shape == r.counterfactual.shape == (32, 32, 3)
    assert set(r.seconds) == set(METHODS)
    # model left as found
    assert not model.training and all(p.requires_grad for p in model.parameters())


def test_frame_and_step_select_images(model, traj):
    r = attribute_trajectory(model, traj, methods=["saliency"], step=1, frame=-1)
    assert r.frame == len(traj.images) - 1 and r.step == 1
    np.testing.assert_array_equal(r.counterfactual, traj.images[1].transpose(1, 2, 0))
    np.testing.assert_array_equal(r.image, traj.images[-1].transpose(1, 2, 0))
    with pytest.raises(ValueError):
        attribute_trajectory(model, traj, methods=["lime"])
    with pytest.raises(ValueError):
        attribute_trajectory(model, traj, step=len(traj.images))


def test_saliency_is_the_channel_summed_logit_gradient(model, traj):
    x = torch.from_numpy(traj.images[:1]).requires_grad_(True)
    (g,) = torch.autograd.grad(model(x)[0, traj.target], x)
    a = attribute(model, x.detach(), traj.target, "saliency")
    np.testing.assert_allclose(a, g[0].sum(0).numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(attribute(model, x.detach(), traj.target, "saliency", abs=True),
                               g[0].abs().sum(0).numpy(), rtol=1e-5, atol=1e-7)


def test_input_follows_the_model_weights_layout(model, traj, monkeypatch):
    """Channels-last input only for a channels-last model (a mismatch makes oneDNN reorder weights per call)."""
    cl = channels_last(copy.deepcopy(model))
    assert memory_format(model) == torch.contiguous_format and memory_format(cl) == torch.channels_last
    x = torch.from_numpy(traj.images[:1])
    for m, layout in ((model, torch.contiguous_format), (cl, torch.channels_last)):
        seen = []
        handle = m.conv1.register_forward_pre_hook(lambda mod, args: seen.append(args[0].is_contiguous(
            memory_format=layout)))
        a = attribute(m, x, traj.target, "saliency")
        handle.remove()
        assert seen and all(seen)
        np.testing.assert_allclose(a, attribute(model, x, traj.target, "saliency"), rtol=1e-4, atol=1e-6)


def test_bf16_autocast_gives_the_same_picture(model, traj):
    x = torch.from_numpy(traj.images[:1])
    fp32 = attribute(model, x, traj.target, "saliency")
    bf16 = attribute(model, x, traj.target, "saliency", autocast=True)
    assert np.isfinite(bf16).all() and np.corrcoef(fp32.ravel(), bf16.ravel())[0, 1] > 0.9


def test_integrated_gradients_complete_and_occlusion_window(model, traj):
    x = torch.from_numpy(traj.images[:1])
    c = traj.target
    with torch.no_grad():
        gap = (model(x)[0, c] - model(torch.zeros_like(x))[0, c]).item()
        occluded = x.clone()
        occluded[..., :4, :4] = 0
        corner = (model(x)[0, c] - model(occluded)[0, c]).item()
    ig = attribute(model, x, c, "integrated_gradients", n_samples=64, internal_batch_size=16)
    assert abs(ig.sum() - gap) < 0.05 * abs(gap) + 1e-3  # completeness: sum = f(x) - f(black)
    occ = attribute(model, x, c, "occlusion", internal_batch_size=50)
    # pixel (0, 0) is covered by the single 4x4 window at the corner; 3 channels summed
    assert abs(occ[0, 0] - 3 * corner) < 1e-4


def test_internal_batching_bounds_batches_not_results(model, traj):
    x = torch.from_numpy(traj.images[:1])
    seen = []
    hook = model.conv1.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    try:
        for method in ("integrated_gradients", "smoothgrad", "gradient_shap"):
            seen.clear()
            small = attribute(model, x, traj.target, method, n_samples=5, internal_batch_size=2)
            assert max(seen) <= 2 and np.isfinite(small).all()
            if method == "integrated_gradients":  # deterministic: chunking must not change the result
                whole = attribute(model, x, traj.target, method, n_samples=5, internal_batch_size=5)
                np.testing.assert_allclose(small, whole, rtol=1e-4, atol=1e-6)
        seen.clear()
        attribute(model, x, traj.target, "occlusion", internal_batch_size=100)
        assert max(seen) <= 100 and sum(seen) == 1 + 15 * 15  # x itself + one image per window
    finally:
        hook.remove()


@pytest.mark.parametrize("method", ["smoothgrad", "gradient_shap"])
def test_random_methods_follow_seed_and_keep_global_rng(model, traj, method):
    x = torch.from_numpy(traj.images[:1])
    torch.manual_seed(123)
    np.random.seed(123)
    expect_t, expect_n = torch.rand(1).item(), np.random.rand()
    torch.manual_seed(123)
    np.random.seed(123)
    a = attribute(model, x, traj.target, method, seed=5, **FAST)
    assert torch.rand(1).item() == expect_t and np.random.rand() == expect_n
    b = attribute(model, x, traj.target, method, seed=5, **FAST)
    c = attribute(model, x, traj.target, method, seed=6, **FAST)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_constant_model_gives_zero_maps_without_warnings(constant_model, traj):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # RuntimeWarning (0/0) or anything else fails the test
        r = attribute_trajectory(constant_model, traj, **FAST)
        for maps in (r.source_maps, r.target_maps):
            for m in METHODS:
                assert not np.any(maps[m])
                assert not np.any(normalize_map(maps[m]))
        figure_to_array(plot_attributions(r))


def test_normalize_map_keeps_sign_and_scale():
    pos = np.array([[0.0, 1.0], [2.0, 4.0]], dtype=np.float32)
    assert normalize_map(pos).min() == 0.0 and normalize_map(pos).max() == 1.0
    neg = -pos
    assert normalize_map(neg).min() == -1.0 and normalize_map(neg).max() == 0.0
    mixed = np.array([-2.0, 1.0, 0.0, 4.0])
    np.testing.assert_allclose(normalize_map(mixed), [-0.5, 0.25, 0.0, 1.0])
    clipped = normalize_map(np.arange(101.0), percentile=50)
    assert clipped.max() == 1.0 and clipped[25] == 0.5
    sparse = np.zeros(100)
    sparse[0] = -3.0
    assert normalize_map(sparse, percentile=90)[0] == -1.0  # zero percentile falls back to the max
    assert not np.any(normalize_map(np.zeros((3, 3))))
    with pytest.raises(ValueError):
        normalize_map(np.array([1.0, np.nan]))
    rgb = colorize_signed(mixed.reshape(2, 2))
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    white = colorize_signed(np.zeros((1, 1)))[0, 0]
    assert white.min() > 200  # zero is drawn (near) white in the diverging map


def test_plot_attributions_renders(model, traj):
    r = attribute_trajectory(model, traj, methods=["saliency", "smoothgrad"], **FAST)
    fig = plot_attributions(r)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"
    img = figure_to_array(plot_attributions(r))
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.std() > 0


@pytest.mark.parametrize("target, says", [(10, "out of range 0..9"), (-1, "out of range 0..9"),
                                          ("zebra", "unknown class 'zebra'"), (1.5, "name or an index")])
def test_a_target_the_model_lacks_is_refused(model, traj, target, says):
    """10 ended in an IndexError inside Captum, -1 silently explained class 9, "cat" was int("cat")."""
    x = torch.from_numpy(traj.images[0])[None]
    with pytest.raises(ValueError, match=says):
        attribute(model, x, target, "saliency")
    by_name = attribute(model, x, model.config["class_names"][3], "saliency")
    np.testing.assert_array_equal(by_name, attribute(model, x, 3, "saliency"))


@pytest.mark.parametrize("x", [torch.full((1, 3, 32, 32), 128, dtype=torch.uint8), torch.full((1, 3, 32, 32), 2.0),
                               torch.full((1, 3, 32, 32), float("nan"))], ids=["uint8", "above-1", "nan"])
def test_an_image_outside_the_unit_range_is_refused(model, x):
    """uint8 pixels were read as floats 0..255 and NaN gave NaN maps, silently."""
    with pytest.raises(ValueError, match=r"finite values in \[0,1\]"):
        attribute(model, x, 3, "saliency")


def test_a_model_without_a_config_is_checked_by_its_outputs():
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3)).eval()
    x = torch.rand(1, 3, 8, 8)
    assert attribute(plain, x, 2, "saliency").shape == (8, 8)
    with pytest.raises(ValueError, match="out of range 0..2"):
        attribute(plain, x, 3, "saliency")
