"""Cone guidance (DVCE's projection without diffusion): the projection's geometry, and its two limits as paths:
angle 0 follows the guide alone, angle 180 is the unguided path."""

import math

import numpy as np
import pytest
import torch

from dat_core import build_model
from dat_core.guidance import cone_project
from explain import counterfactuals


def _angle(a, b):
    a, b = a.flatten(1), b.flatten(1)
    return torch.rad2deg(torch.arccos(torch.nn.functional.cosine_similarity(a, b, dim=1).clamp(-1, 1)))


def test_cone_projection_geometry():
    g = torch.Generator().manual_seed(0)
    d = torch.randn(64, 3, 4, 4, generator=g, dtype=torch.float64)
    v = torch.randn(64, 3, 4, 4, generator=g, dtype=torch.float64)
    for angle in (0.0, 10.0, 30.0, 60.0, 90.0, 135.0):
        out = cone_project(v, d, angle)
        before, after = _angle(v, d), _angle(out, d)
        inside = before <= angle
        assert torch.equal(out[inside], v[inside])                                  # inside: untouched
        torch.testing.assert_close(after[~inside], torch.full_like(after[~inside], angle), atol=1e-5, rtol=0)
        torch.testing.assert_close(out.flatten(1).norm(dim=1), v.flatten(1).norm(dim=1))   # norm kept
        # on the boundary, the nearest direction: in the plane of v and d, between them
        coplanar = out.flatten(1) - (out.flatten(1) * d.flatten(1)).sum(1, keepdim=True) / d.flatten(1).norm(
            dim=1, keepdim=True) ** 2 * d.flatten(1)
        ortho_v = v.flatten(1) - (v.flatten(1) * d.flatten(1)).sum(1, keepdim=True) / d.flatten(1).norm(
            dim=1, keepdim=True) ** 2 * d.flatten(1)
        if angle > 0:
            assert (torch.nn.functional.cosine_similarity(coplanar, ortho_v, dim=1)[~inside] > 1 - 1e-6).all()
    assert torch.equal(cone_project(v, d, 180.0), v)
    opposite = cone_project(-d, d, 45.0)                       # exactly opposed: no nearest side, so along d
    torch.testing.assert_close(_angle(opposite, d), torch.zeros(64, dtype=torch.float64), atol=1e-4, rtol=0)
    assert torch.equal(cone_project(v, torch.zeros_like(d), 10.0), v)                # no guide gradient: unchanged
    with pytest.raises(ValueError, match="0..180"):
        cone_project(v, d, 200)
    assert math.isclose(float(_angle(cone_project(v[:1], d[:1], 0.0), d[:1])), 0.0, abs_tol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(4, 3, 32, 32), (2, 3, 224, 224)])
def test_an_opposed_gradient_in_low_precision_goes_along_the_guide(dtype, shape):
    """In fp32, g = -2d left round-off in g's part orthogonal to d, which was normalised into a direction: at 90°
    the result pointed at d (cos 0.97), at 120° at cos 0.83, with a norm other than g's."""
    d = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    g = -2 * d
    for angle in (30.0, 90.0, 120.0):
        out = cone_project(g, d, angle)
        assert out.dtype == dtype
        torch.testing.assert_close(_angle(out.double(), d.double()), torch.zeros(len(d), dtype=torch.float64),
                                   atol=0.5, rtol=0)                           # along d, as the docstring says
        torch.testing.assert_close(out.double().flatten(1).norm(dim=1), g.double().flatten(1).norm(dim=1),
                                   rtol=1e-2, atol=0)                          # with g's norm
    near = g + 1e-2 * torch.randn(shape, generator=torch.Generator().manual_seed(2)).to(dtype) * d.abs().mean()
    torch.testing.assert_close(_angle(cone_project(near, d, 120.0).double(), d.double()),
                               torch.full((len(d),), 120.0, dtype=torch.float64), atol=1.0, rtol=0)


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    explained, guide = build_model("wrn-10-1").eval(), build_model("wrn-10-1").eval()
    return explained, guide


def test_angle_zero_follows_the_guide_and_180_is_unguided(pair):
    explained, guide = pair
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    kw = dict(steps=6, eps=2.0, step_size=0.2)
    along_guide = counterfactuals(explained, image, [2, 5], guide=guide, cone_angle=0.0, **kw)
    guide_alone = counterfactuals(guide, image, [2, 5], **kw)
    for a, b in zip(along_guide, guide_alone):
        np.testing.assert_allclose(a.images, b.images, atol=2e-5)
        assert a.params["cone_angle"] == 0.0
    free = counterfactuals(explained, image, [2, 5], guide=guide, cone_angle=180.0, **kw)
    plain = counterfactuals(explained, image, [2, 5], **kw)
    for a, b in zip(free, plain):
        assert np.array_equal(a.images, b.images)


def test_the_guide_must_share_classes_and_size(pair):
    explained, _ = pair
    other = build_model("wrn-10-1", num_classes=3, class_names=["a", "b", "c"]).eval()
    with pytest.raises(ValueError, match="same|classes"):
        counterfactuals(explained, np.zeros((32, 32, 3), dtype=np.uint8), [1], guide=other, steps=1)


def test_cli_guide_and_bad_angle(pair, tmp_path, capsys):
    import json

    from PIL import Image

    from dat_core.checkpoint import save_model
    from explain.cli import main

    explained, guide = pair
    a, b = save_model(explained, tmp_path / "a"), save_model(guide, tmp_path / "b")
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "i.png")
    base = ["counterfactual", "--model", str(a), "--image", str(tmp_path / "i.png"), "--target", "3", "--steps", "3",
            "--autocast", "off", "--guide", str(b)]
    assert main([*base, "--cone-angle", "45", "--out", str(tmp_path / "o")]) == 0
    params = json.loads((tmp_path / "o" / "metrics.json").read_text())["params"]
    assert params["cone_angle"] == 45.0
    # the run says which model guided it and how that model reads x_T (it said neither)
    path, = counterfactuals(explained, tmp_path / "i.png", [3], steps=3, guide=guide, cone_angle=45)
    with torch.no_grad():
        expected = torch.softmax(guide.eval()(torch.from_numpy(path.images[-1:])), 1)[0, 3].item()
    assert params["guide"] == "b" and params["guide_p_target"] == pytest.approx(expected, abs=5e-3)
    assert f"the guide b gives p(target) {params['guide_p_target']:.3f}" in capsys.readouterr().out
    # several targets: summary.json says it too, per target, as each path's metrics.json does (it said neither)
    assert main([*base[:-3], "--target", "3,5", "--guide", str(b), "--out", str(tmp_path / "m")]) == 0
    rows = json.loads((tmp_path / "m" / "summary.json").read_text())
    for row in rows:
        sub, = (tmp_path / "m").glob(f"{row['target']:02d}-*")
        each = json.loads((sub / "metrics.json").read_text())["params"]
        assert row["guide"] == "b" and row["guide_p_target"] == each["guide_p_target"]
    capsys.readouterr()
    for bad in ("270", "-1", "nan", "x"):
        with pytest.raises(SystemExit) as exit_:
            main([*base, "--cone-angle", bad, "--out", str(tmp_path / "bad")])
        assert exit_.value.code == 2 and "--cone-angle: expected a number in 0..180" in capsys.readouterr().err
    # without --guide an angle would change nothing: refused, before the model loads, for every command using it
    unguided = [a for a in base if a not in ("--guide", str(b))]
    for command in ("counterfactual", "landscape", "attribute"):
        assert main([command, *unguided[1:], "--cone-angle", "10", "--out", str(tmp_path / "bad")]) == 2
        assert "--cone-angle goes with --guide" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
