import io
import json
import types

import matplotlib
import numpy as np
import pytest
import torch
from conftest import warmed_wrn

from dat_core import joint_energy, marginal_energy, pgd, threat_model
from explain.landscape import LandscapeRenderer, energy_landscape, plot_landscape
from explain.plots import figure_to_array

matplotlib.use("Agg")


def _trajectory(model, steps=4, seed=0):
    """Stand-in for explain.trajectory.Trajectory: only images/source/target/class_names are read."""
    torch.manual_seed(seed)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        source = int(model(x).argmax())
    target = (source + 1) % 10
    res = pgd(model, x, torch.tensor([target]), threat_model("L2", 1.0, 0.25), steps=steps,
              objective="target_logit", record_every=1)
    return types.SimpleNamespace(images=res.frames[:, 0].numpy(), source=source, target=target,
                                 class_names=model.config["class_names"])


def _energy(model, x, energy="marginal", target=None):
    with torch.no_grad():
        logits = model(torch.as_tensor(x, dtype=torch.float32).reshape(-1, 3, 32, 32))
    return (marginal_energy(logits) if energy == "marginal" else joint_energy(logits, target)).numpy()


@pytest.fixture(scope="module")
def model():
    """wrn-10-1 with non-trivial BN statistics, built once for this module (read-only in the tests)."""
    return warmed_wrn()


@pytest.fixture(scope="module")
def traj(model):
    return _trajectory(model)


@pytest.mark.parametrize("energy", ["marginal", "joint"])
def test_origin_is_x0_and_grid_points_are_the_plane(model, traj, energy):
    L = energy_landscape(model, traj, grid=7, energy=energy, batch_size=16)
    assert L.values.shape == (7, 7) and L.alphas.shape == L.betas.shape == (7,)
    assert L.alphas[3] == 0.0 and L.betas[3] == 0.0
    x0 = traj.images[0]
    e0 = _energy(model, x0, energy, traj.target)[0]
    assert abs(L.origin_value - e0) < 1e-5
    if energy == "joint":
        with torch.no_grad():
            assert abs(L.origin_value + model(torch.from_numpy(x0)[None])[0, traj.target].item()) < 1e-5
        assert L.energy_label == f"E(x, y={traj.class_names[traj.target]})"
    else:
        assert L.energy_label == "E(x)"
    # values[i, j] is the energy at x_0 + alphas[j] u + betas[i] v, clamped to [0,1]
    for i, j in [(0, 6), (5, 1), (3, 6)]:
        pt = np.clip(x0 + L.alphas[j] * L.u + L.betas[i] * L.v, 0, 1)
        assert abs(L.values[i, j] - _energy(model, pt, energy, traj.target)[0]) < 1e-4
    # the 1-D profile is the energy of each frame
    np.testing.assert_allclose(L.path_energy, _energy(model, traj.images, energy, traj.target),
                               atol=1e-5)


def test_path_projection_and_directions(model, traj):
    L = energy_landscape(model, traj, grid=5)
    assert L.path_xy.shape == (len(traj.images), 2)
    assert L.path_xy[0].tolist() == [0.0, 0.0] and L.residual[0] == 0.0
    u, v = L.u.ravel().astype(np.float64), L.v.ravel().astype(np.float64)
    assert abs(u @ u - 1) < 1e-5 and abs(v @ v - 1) < 1e-5 and abs(u @ v) < 1e-5
    d = (traj.images[-1] - traj.images[0]).ravel()
    np.testing.assert_allclose(u, d / np.linalg.norm(d), atol=1e-6)
    # the end point lies on the u axis; projection + off-plane part reproduce every frame's distance
    np.testing.assert_allclose(L.path_xy[-1], [np.linalg.norm(d), 0.0], atol=1e-5)
    dist = np.linalg.norm((traj.images - traj.images[0]).reshape(len(traj.images), -1), axis=1)
    np.testing.assert_allclose(np.hypot(np.linalg.norm(L.path_xy, axis=1), L.residual), dist, rtol=1e-5,
                               atol=1e-6)
    # default span: the whole path fits, symmetric around 0
    assert L.alphas[-1] == -L.alphas[0] >= np.abs(L.path_xy).max()


def test_two_frame_path_lies_in_the_plane(model):
    traj = _trajectory(model, steps=1)
    L = energy_landscape(model, traj, grid=3, direction=traj.source)
    step = np.linalg.norm(traj.images[1] - traj.images[0])
    np.testing.assert_allclose(L.path_xy, [[0, 0], [step, 0]], atol=1e-5)
    assert L.residual.max() < 1e-5
    assert traj.class_names[traj.source] in L.v_label


def test_class_direction_is_orthogonalised_gradient(model, traj):
    c = (traj.target + 3) % 10
    L = energy_landscape(model, traj, grid=3, direction=c)
    x = torch.from_numpy(traj.images[:1]).requires_grad_(True)
    (g,) = torch.autograd.grad(model(x)[0, c], x)
    g = g.numpy().ravel().astype(np.float64)
    u = L.u.ravel().astype(np.float64)
    g = g - (g @ u) * u
    np.testing.assert_allclose(L.v.ravel(), g / np.linalg.norm(g), atol=1e-5)
    assert all(p.requires_grad for p in model.parameters())  # attack_mode restored them


def test_random_direction_follows_seed(model, traj):
    a = energy_landscape(model, traj, grid=3, seed=1)
    b = energy_landscape(model, traj, grid=3, seed=1)
    c = energy_landscape(model, traj, grid=3, seed=2)
    assert np.array_equal(a.v, b.v) and np.array_equal(a.values, b.values)
    assert not np.allclose(a.v, c.v)


def test_static_path_falls_back_to_target_gradient(model, traj):
    still = types.SimpleNamespace(**{**vars(traj), "images": traj.images[:1].repeat(3, axis=0)})
    L = energy_landscape(model, still, grid=3)
    x = torch.from_numpy(traj.images[:1]).requires_grad_(True)
    (g,) = torch.autograd.grad(model(x)[0, traj.target], x)
    g = g.numpy().ravel()
    np.testing.assert_allclose(L.u.ravel(), g / np.linalg.norm(g), atol=1e-5)
    assert np.all(L.path_xy == 0) and "gradient" in L.u_label
    assert L.alphas[-1] > 0  # minimum span keeps a neighbourhood visible


def test_joint_energy_of_another_class(model, traj):
    other = (traj.target + 5) % 10
    L = energy_landscape(model, traj, grid=3, energy="joint", target=other)
    assert L.energy_class == other and L.target == traj.target  # the path still goes toward the target
    assert abs(L.origin_value - _energy(model, traj.images[0], "joint", other)[0]) < 1e-5
    assert energy_landscape(model, traj, grid=3).energy_class is None


def test_clamped_fraction_and_span(model, traj):
    L = energy_landscape(model, traj, grid=5, span=(2.0, 0.5))
    assert L.alphas[-1] == 2.0 and L.betas[0] == -0.5
    assert L.clamped[2, 2] == 0.0 and 0 < L.clamped.max() <= 1  # x_0 itself needs no clamping


def test_to_dict_is_strict_json_to_six_digits(model, traj):
    L = energy_landscape(model, traj, grid=5)
    L.values[0, 0] = np.nan  # e.g. a diverged forward: written as null, never as NaN
    d = json.loads(json.dumps(L.to_dict(), allow_nan=False))
    assert d["values"][0][0] is None and np.asarray(d["values"]).shape == (5, 5) and len(d["path_xy"]) == 5
    np.testing.assert_allclose(np.asarray(d["values"][1], dtype=float), L.values[1], rtol=1e-5)
    assert d["path_xy"][0] == [0.0, 0.0] and d["class_names"] == L.class_names and "u" not in d


@pytest.mark.parametrize("kwargs,match", [({"grid": 4}, "grid"), ({"grid": 1}, "grid"), ({"energy": "free"}, "energy"),
                                          ({"direction": "up"}, "direction"), ({"direction": 10}, "direction"),
                                          ({"direction": True}, "direction"), ({"target": 99}, "target"),
                                          ({"target": "zebra"}, "target"), ({"span": -1.0}, "span"),
                                          ({"span": 1e300}, "at most 55.43"), ({"span": (1.0, 60.0)}, "diameter"),
                                          ({"span": "wide"}, "one number or two"),
                                          ({"seed": -1}, "seed"), ({"seed": 2 ** 70}, "seed")])
def test_rejects_bad_arguments(model, traj, kwargs, match):
    with pytest.raises(ValueError, match=match):
        energy_landscape(model, traj, **kwargs)


def test_classes_by_name_as_everywhere_else(model, traj):
    names = traj.class_names
    by_index = energy_landscape(model, traj, grid=3, direction=traj.source, energy="joint", target=traj.source)
    by_name = energy_landscape(model, traj, grid=3, direction=names[traj.source].upper(), energy="joint",
                               target=names[traj.source])
    np.testing.assert_array_equal(by_index.values, by_name.values)
    assert by_index.v_label == by_name.v_label


def test_plot_renders_and_helper_closes(model, traj):
    import matplotlib.pyplot as plt

    L = energy_landscape(model, traj, grid=5)
    before = plt.get_fignums()
    fig = plot_landscape(L, step=2)
    assert plt.get_fignums() == before  # built outside pyplot: nothing to leak
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    a = figure_to_array(plot_landscape(L, step=-1))
    b = figure_to_array(plot_landscape(L, step=0))
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    assert a.shape == b.shape and not np.array_equal(a, b)  # the step marker moved
    with pytest.raises(ValueError):
        plot_landscape(L, step=len(traj.images))
    # a pyplot figure handed to the helper is closed too
    pf = plt.figure()
    figure_to_array(pf)
    assert not plt.fignum_exists(pf.number)


def test_renderer_moves_only_the_marker(model, traj):
    L = energy_landscape(model, traj, grid=5)
    with LandscapeRenderer(L) as r:
        bare, first, last = r.render(None), r.render(0), r.render(-1)
        assert first.shape == bare.shape == figure_to_array(plot_landscape(L)).shape
        assert not np.array_equal(first, last) and not np.array_equal(first, bare)
        np.testing.assert_array_equal(r.render(0), first)  # the previous ring is gone again
        changed = np.any(first != bare, axis=2)
        assert changed.mean() < 0.02  # a ring on each panel, nothing else redrawn
        with pytest.raises(ValueError):
            r.render(len(traj.images))
