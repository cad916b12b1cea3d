"""The L1 threat model (sparse steps, exact L1-ball projection) and masks (pixels outside stay bit-identical)."""

import numpy as np
import pytest
import torch
from PIL import Image

from dat_core.pgd import L1, NORMS, PGDStep, pgd, project_l1, threat_model
from explain import counterfactual, default_params
from explain.cli import main
from explain.image import ImageError, to_mask


def reference_l1_projection(v: np.ndarray, eps: float) -> np.ndarray:
    """Duchi et al. (2008), Figure 1, written independently in NumPy for one flat vector."""
    if np.abs(v).sum() <= eps:
        return v.copy()
    u = np.sort(np.abs(v))[::-1]
    css = np.cumsum(u)
    rho = np.nonzero(u * np.arange(1, len(u) + 1) > (css - eps))[0][-1]
    theta = (css[rho] - eps) / (rho + 1.0)
    return np.sign(v) * np.maximum(np.abs(v) - theta, 0)


def test_l1_projection_equals_the_sort_based_reference():
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(6, 3, 5, 5, generator=g, dtype=torch.float64) * torch.tensor([0.01, 0.1, 1, 3, 10, 0.5],
                                                                                      dtype=torch.float64)[:, None,
                                                                                                           None, None]
    eps = torch.tensor([1.0, 2.0, 5.0, 0.5, 20.0, 1000.0], dtype=torch.float64)
    out = project_l1(delta, eps)
    for i in range(6):
        ref = reference_l1_projection(delta[i].flatten().numpy(), float(eps[i]))
        np.testing.assert_allclose(out[i].flatten().numpy(), ref, atol=1e-10)
        assert out[i].abs().sum() <= eps[i] + 1e-9
    assert torch.equal(out[5], delta[5])                                       # inside the ball: unchanged
    assert torch.equal(project_l1(delta, 1.0)[0], project_l1(delta[:1], torch.tensor([1.0], dtype=torch.float64))[0])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_l1_projection_of_low_precision_deltas_lands_in_the_ball(dtype):
    """Sorting and summing in bf16 put the result at L1 norm 4.92 or 5.06 for eps 5: computed in fp32 now."""
    delta = (torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.1).to(dtype)
    out = project_l1(delta, 5.0)
    assert out.dtype == dtype
    norms = out.double().flatten(1).abs().sum(1)
    torch.testing.assert_close(norms, torch.full((4,), 5.0, dtype=torch.float64), rtol=2e-3, atol=0)
    ref = reference_l1_projection(delta[0].double().flatten().numpy(), 5.0)
    np.testing.assert_allclose(out[0].double().flatten().numpy(), ref, atol=2e-3)


def test_every_l1_iterate_lies_in_the_ball_and_the_box(tiny_model):
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    eps = 6.0
    seen = []

    def check(s: PGDStep):
        d = (s.x - x).flatten(1)
        seen.append(s.step)
        assert (d.abs().sum(1) <= eps + 1e-3).all()
        assert s.x.min() >= 0 and s.x.max() <= 1

    res = pgd(tiny_model, x, torch.tensor([0, 1, 2, 3]), threat_model("l1", eps, 2.0), 25, "target_logit",
              random_start=True, on_step=check)
    assert seen == list(range(1, 26)) and not torch.equal(res.x, x)
    assert "L1" in NORMS and isinstance(threat_model("L1", 1, 1), L1)


def test_l1_steps_are_sparse_and_raise_the_target(tiny_model):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    threat = L1(eps=float("inf"), step_size=1.0, sparsity=0.01)
    one = pgd(tiny_model, x, torch.tensor([4, 4]), threat, 1, "target_logit").x
    changed = ((one - x).abs() > 0).flatten(1).sum(1)
    assert (changed <= round(0.01 * 3 * 32 * 32)).all() and (changed > 0).all()
    moved = (one - x).abs().flatten(1).sum(1)                     # step_size in L1 norm, less what [0,1] clips
    assert (moved <= 1 + 1e-5).all() and (moved > 0.9).all()
    before = tiny_model(x)[:, 4]
    after = tiny_model(pgd(tiny_model, x, torch.tensor([4, 4]), threat, 20, "target_logit").x)[:, 4]
    assert (after > before).all()


@pytest.mark.parametrize("norm", ["L2", "Linf", "L1"])
def test_pixels_outside_the_mask_are_bit_identical_at_every_step(tiny_model, norm):
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    mask[..., 8:20, 4:28] = True
    frames = []
    res = pgd(tiny_model, x, torch.tensor([1, 2, 3]), threat_model(norm, float("inf") if norm != "Linf" else 0.3,
                                                                  0.3), 15, "target_logit", random_start=norm == "Linf",
              mask=mask, record_every=1, on_step=lambda s: frames.append(s.x.clone()))
    for f in [*frames, *res.frames]:
        assert torch.equal(torch.where(mask, 0, f), torch.where(mask, 0, x))
    assert not torch.equal(res.x[..., 8:20, 4:28], x[..., 8:20, 4:28])        # inside, it moved
    with pytest.raises(ValueError, match="mask must have shape"):
        pgd(tiny_model, x, torch.tensor([1, 2, 3]), threat_model(norm, 1, 0.1), 1, mask=torch.ones(1, 1, 16, 16))


def test_mask_image_lines_up_with_the_image_and_must_allow_something(tmp_path):
    a = np.zeros((40, 60, 3), dtype=np.uint8)
    a[:, 30:] = 255                                              # right half may change
    m = to_mask(Image.fromarray(a), 32)
    assert m.shape == (1, 1, 32, 32) and m[..., :, 20:].all() and not m[..., :, :12].any()
    with pytest.raises(ImageError, match="allows no pixel"):
        to_mask(np.zeros((32, 32)), 32)
    assert to_mask(torch.ones(32, 32), 32).all()


def test_masked_counterfactual_and_cli(tiny_model, tmp_path, capsys):
    image = np.random.default_rng(4).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    keep = np.zeros((32, 32), dtype=np.uint8)
    keep[:16] = 255
    t = counterfactual(tiny_model, image, 3, steps=10, mask=keep)
    assert np.array_equal(t.frames[-1][16:], t.frames[0][16:]) and not np.array_equal(t.frames[-1], t.frames[0])
    assert t.params["mask_fraction"] == pytest.approx(0.5)
    from dat_core.checkpoint import save_model
    ckpt = save_model(tiny_model, tmp_path / "ckpt")
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(keep).save(tmp_path / "mask.png")
    Image.fromarray(keep[:20]).save(tmp_path / "small.png")
    base = ["counterfactual", "--model", str(ckpt), "--image", str(tmp_path / "img.png"), "--target", "3",
            "--steps", "5", "--autocast", "off"]
    assert main([*base, "--mask", str(tmp_path / "mask.png"), "--mask-invert", "--out", str(tmp_path / "o")]) == 0
    assert main([*base, "--mask", str(tmp_path / "small.png"), "--out", str(tmp_path / "o")]) == 2
    assert "the mask is 32x20 but the image is 32x32" in capsys.readouterr().err
    assert main([*base, "--mask-invert", "--out", str(tmp_path / "o")]) == 2
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(tmp_path / "white.png")   # inverted: nothing may change
    capsys.readouterr()
    assert main([*base, "--mask", str(tmp_path / "white.png"), "--mask-invert", "--out", str(tmp_path / "o")]) == 2
    assert "with --mask-invert black marks what may change" in capsys.readouterr().err   # was "(white = may change)"


def test_l1_defaults_scale_with_the_pixel_count():
    assert default_params(32, "L1")["eps"] == 12.0 and default_params(64, "L1")["eps"] == 48.0
    assert default_params(64, "L2")["eps"] == 10.0
