"""Audit 29 of the PGD engine: L2 steps and cone guidance at any gradient scale, and the official update rule for
the KL-to-uniform objective (the OOD attack on the max-softmax score), which the official-loop test leaves out."""

import math

import pytest
import torch
import torch.nn.functional as F

from dat_core.guidance import cone_project
from dat_core.pgd import L2, attack_mode, pgd, pgd_step, threat_model


def _angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """In degrees, per sample, at any scale (cosine_similarity clamps norms below 1e-8)."""
    a, b = (F.normalize(t.double().flatten(1) / t.double().abs().amax(), dim=1) for t in (a, b))
    cos = (a * b).sum(1)
    return torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))


@pytest.mark.parametrize("scale", [1.0, 1e-13, 1e-20, 1e-30, 1e25])
def test_an_l2_step_has_step_size_length_at_any_gradient_scale(scale):
    """||grad||^2 underflowed fp32 below |grad| ~ 1e-20 (overflowed above ~1e22): the step was 0, and 0.085 instead
    of 0.1 at 1e-13, although the gradient had a direction. A zero gradient still takes no step."""
    v = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x = torch.full_like(v, 0.5)
    moved = L2(math.inf, 0.1).step(x, v * scale) - x
    torch.testing.assert_close(moved.flatten(1).norm(dim=1), torch.full((3,), 0.1), rtol=1e-5, atol=0)
    assert bool((_angle(moved, v) < 1e-2).all())
    assert torch.equal(L2(math.inf, 0.1).step(x, torch.zeros_like(v)), x)


def test_an_l2_cross_entropy_attack_moves_a_confident_model():
    """A confident (standard) model's cross-entropy gradient is ~1e-25: the L2 attack stood still and its robust
    accuracy read as the clean one, while the Linf attack (sign steps) moved."""
    from conftest import warmed_wrn

    model = warmed_wrn()
    confident = torch.nn.Sequential(model, torch.nn.Identity())
    confident[1].forward = lambda z: 600 * z                                      # margins ~50-70
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = confident(x).argmax(1)
    with attack_mode(confident):
        _, logits = pgd_step(confident, x, x, y, threat_model("L2", math.inf, 0.1), "ce")
    assert float((logits.topk(2, 1).values @ torch.tensor([1.0, -1.0])).min()) > 40
    adv = pgd(confident, x, y, threat_model("L2", 0.5, 0.1), 5, objective="ce").x
    assert bool(((adv - x).flatten(1).norm(dim=1) > 0.4).all())


def test_cone_projection_is_scale_free():
    """Squared norms of tiny gradients (|g| ~ 1e-30) underflowed to 0, read as "no gradient": g came back
    unprojected, 90 degrees off a 30-degree cone (the next step, normalized, left the cone entirely); large ones
    (1e20) overflowed into NaN."""
    g = torch.Generator().manual_seed(1)
    v, d = torch.randn(4, 3, 32, 32, generator=g), torch.randn(4, 3, 32, 32, generator=g)
    reference = cone_project(v, d, 30.0).double()
    for scale in (1e-30, 1e20):
        out = cone_project(v * scale, d * scale, 30.0).double() / scale
        assert bool((_angle(out, d) < 30.0 + 1e-3).all())
        torch.testing.assert_close(out, reference, rtol=0, atol=1e-5 * float(reference.abs().max()))


def _official_kl_uniform_step(model, x, x0, norm, eps, step_size):
    """One step of pgd_attack_uniform_target (xuwangyin/DAT, rebm/eval/eval_utils.py) with the L2Step / LinfStep of
    rebm/attacks/attack_steps.py, re-derived: ascend sum_i KL(uniform || softmax f(x_i)), step, project, clamp."""
    x = x.clone().requires_grad_(True)
    logits = model(x)
    uniform = torch.full_like(logits, 1.0 / logits.shape[1])
    loss = F.kl_div(F.log_softmax(logits, dim=1), uniform, reduction="none").sum(1).sum()
    (grad,) = torch.autograd.grad(loss, [x])
    with torch.no_grad():
        if norm == "L2":
            x = x + step_size * grad / (grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-10)
            return torch.clamp(x0 + (x - x0).renorm(p=2, dim=0, maxnorm=eps), 0, 1)
        return torch.clamp(x0 + torch.clamp(x + step_size * grad.sign() - x0, -eps, eps), 0, 1)


@pytest.mark.parametrize("norm, eps, step_size", [("L2", 1.0, 0.1), ("L2", 3.0, 1.0), ("Linf", 8 / 255, 2 / 255)])
def test_kl_uniform_steps_equal_the_official_ood_attack(tiny_model, norm, eps, step_size):
    """The official OOD-detection attack on the max-softmax score (32 px: L2 eps 1, step 0.1, 20 steps), step by
    step from the official iterates (over a whole path fp32 round-off grows where a gradient nearly vanishes)."""
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    threat = threat_model(norm, eps, step_size)
    path = [x]
    for _ in range(8):
        path.append(_official_kl_uniform_step(tiny_model.eval(), path[-1], x, norm, eps, step_size))
    assert not torch.allclose(path[-1], x, atol=1e-3)
    with attack_mode(tiny_model):
        for t in range(8):
            ours, _ = pgd_step(tiny_model, path[t], x, None, threat, "kl_uniform")
            torch.testing.assert_close(ours, path[t + 1], atol=1e-5, rtol=0, msg=f"step {t + 1}")


def test_a_guided_step_under_a_mask_stays_inside_the_cone_of_the_masked_guide():
    """The cone was taken around the guide's whole-image gradient and the mask applied after: the step that is left
    (the masked part) lay up to 39° from the masked guide gradient under a 30° cone."""
    from dat_core import build_model
    from dat_core.guidance import ConeGuide

    torch.manual_seed(0)
    explained, guide = build_model("wrn-10-1").eval(), build_model("wrn-10-1").eval()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([1, 2, 3, 4])
    mask = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    mask[..., 8:16, 8:16] = True
    x_ = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(explained(x_).gather(1, y[:, None]).sum(), x_)
    x_ = x.clone().requires_grad_(True)
    (d,) = torch.autograd.grad(guide(x_).gather(1, y[:, None]).sum(), x_)
    steered = ConeGuide(guide, y, "target_logit", 30.0, mask=mask)(x, g)
    assert (_angle(steered * mask, d * mask) <= 30.0 + 1e-3).all()
    assert torch.equal(steered, steered * mask)   # nothing outside the region


def test_a_guided_masked_counterfactual_steps_inside_the_cone():
    """The same through `explain.counterfactual(guide=, mask=)`: its first step, in the region, is within the cone of
    the guide's gradient there."""
    import numpy as np

    from dat_core import build_model
    from dat_core.pgd import objective_value
    from explain import counterfactual

    torch.manual_seed(0)
    explained, guide = build_model("wrn-10-1").eval(), build_model("wrn-10-1").eval()
    image = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    mask = np.zeros((32, 32), dtype=bool)
    mask[8:16, 8:16] = True
    traj = counterfactual(explained, image, 3, eps=float("inf"), step_size=0.05, steps=1, guide=guide, mask=mask,
                          cone_angle=20.0)
    x0 = torch.from_numpy(np.asarray(traj.images[0]))[None].float().requires_grad_(True)
    (d,) = torch.autograd.grad(objective_value(guide(x0), torch.tensor([3]), traj.params["objective"]).sum(), x0)
    region = torch.from_numpy(mask)[None, None]
    moved = torch.from_numpy(np.asarray(traj.images[1]) - np.asarray(traj.images[0]))[None].float()
    assert moved.abs().sum() > 0 and torch.equal(moved, moved * region)
    x0 = x0.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(objective_value(explained(x0), torch.tensor([3]), traj.params["objective"]).sum(), x0)
    assert _angle(g * region, d * region).item() > 20.0   # outside the cone: the step goes to its boundary, not inside
    assert abs(_angle(moved * region, d * region).item() - 20.0) < 0.05   # (the whole image's cone gave 18°)
