"""Audit 30 of the PGD engine and the energies: a masked random start fills the ball of the pixels it may change,
a cone guide runs its model as the attack does (eval mode, statistics untouched), a single class label scores every
image, and an L1 ball refuses a share of coordinates it cannot step."""

import math

import numpy as np
import pytest
import torch

from dat_core import build_model
from dat_core.energy import joint_energy
from dat_core.guidance import ConeGuide
from dat_core.pgd import L1, L2, Linf, pgd


def _start(model, x, threat, mask=None):
    """The random start x_0 of a PGD run (its first recorded frame)."""
    y = torch.zeros(len(x), dtype=torch.long)
    return pgd(model, x, y, threat, steps=1, random_start=True, record_every=1, mask=mask).frames[0]


@pytest.mark.parametrize("norm, eps", [("L2", 1.0), ("L1", 12.0), ("Linf", 0.05)])
def test_a_masked_random_start_fills_the_ball_of_the_pixels_it_may_change(tiny_model, norm, eps):
    """Drawn over the whole image and then masked, the start of an L2 run in a quarter of the image lay at about
    eps * sqrt(1/4) from x (L1: eps / 4), so masked `alternatives` started half as far apart as unmasked ones. A start
    uniform in the ball of the allowed coordinates lies at about eps (the median radius of a uniform point of a
    d-dimensional ball is eps * 2^(-1/d)), like the unmasked one; Linf (a box: coordinates independent) was right."""
    torch.manual_seed(0)
    threat = {"L2": L2, "L1": L1, "Linf": Linf}[norm](eps, 0.0)   # step 0: x_1 = x_0, the start alone is measured
    x = 0.4 + 0.2 * torch.rand(24, 3, 32, 32)                      # mid-grey: clamping to [0,1] changes nothing
    mask = torch.zeros(24, 1, 32, 32, dtype=torch.bool)
    mask[:12, :, :16, :16] = True                                  # a quarter of the pixels
    mask[12:, :, :4, :] = True                                     # an eighth (per-sample masks, per-sample counts)
    p = {"L2": 2, "L1": 1, "Linf": math.inf}[norm]

    def radii(delta):
        return delta.flatten(1).norm(p=p, dim=1)

    full = radii(_start(tiny_model, x, threat) - x)
    masked_start = _start(tiny_model, x, threat, mask)
    masked = radii(masked_start - x)
    assert torch.equal(torch.where(mask, x, masked_start), x)     # nothing outside the mask moved
    assert (masked <= eps * (1 + 1e-5)).all()                      # inside the ball
    for part in (masked[:12], masked[12:]):
        assert part.median() > 0.95 * full.median() > 0.9 * eps, (part.median(), full.median())


def test_a_cone_guide_runs_its_model_as_the_attack_does():
    """`pgd(direction=ConeGuide(guide, ...))` put the explained model in eval mode but called the guide as it was: a
    guide in train mode (a fresh `build_model`) steered with batch statistics and rewrote its BatchNorm running
    statistics at every step. The guide now runs in eval mode and is left as it was found."""
    torch.manual_seed(0)
    explained, guide = build_model("wrn-10-1").eval(), build_model("wrn-10-1")
    assert guide.training
    before = {k: v.clone() for k, v in guide.state_dict().items()}
    x, y = torch.rand(3, 3, 32, 32), torch.tensor([1, 2, 3])
    steer = ConeGuide(guide, y, "target_logit", 30.0)
    res = pgd(explained, x, y, L2(2.0, 0.2), steps=2, objective="target_logit", direction=steer)
    after = guide.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the guide's BatchNorm statistics moved"
    assert guide.training and all(m.training for m in guide.modules())   # its mode restored
    guide.eval()
    eval_guided = pgd(explained, x, y, L2(2.0, 0.2), steps=2, objective="target_logit", direction=steer)
    torch.testing.assert_close(res.x, eval_guided.x, atol=1e-6, rtol=0)   # steered by the eval-mode guide


@pytest.mark.parametrize("label", [torch.tensor(3), torch.tensor([3]), np.int64(3), 3])
def test_one_class_label_gives_the_joint_energy_of_every_image(label):
    """A 0-d (or one-element) label tensor went through `gather` with a (1, 1) index: the joint energy of the first
    image only, shape (1,), which then broadcast silently against N values; a numpy integer failed on `.view`."""
    logits = torch.randn(5, 10)
    torch.testing.assert_close(joint_energy(logits, label), -logits[:, 3])


def test_joint_energy_refuses_labels_that_do_not_fit_the_batch():
    logits = torch.randn(5, 10)
    with pytest.raises(ValueError, match="one per image"):
        joint_energy(logits, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="integer"):
        joint_energy(logits, torch.tensor([0.5] * 5))


@pytest.mark.parametrize("sparsity", [0.0, -0.1, 1.5, float("nan"), True])
def test_an_l1_ball_refuses_a_share_of_coordinates_it_cannot_step(sparsity):
    """`L1(sparsity=)` took any value: above 1 the first step failed in `topk` ("selected index k out of range"),
    NaN in `round`, and 0 or less silently stepped one coordinate."""
    with pytest.raises(ValueError, match="sparsity"):
        L1(1.0, 0.1, sparsity=sparsity)


class _Flat(torch.nn.Module):
    """Constant logits: a zero input gradient everywhere (a saturated or dead model)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x), 10) + 0 * x.flatten(1)[:, :1]


@pytest.mark.parametrize("norm", ["L2", "L1", "Linf"])
@pytest.mark.parametrize("autocast", [False, True])
def test_every_iterate_stays_in_its_own_ball_and_the_box(tiny_model, norm, autocast):
    """Per-sample radii (one 0, one with an empty mask), a masked random start, bf16 autocast: every iterate of every
    sample is finite, in [0,1], within its own radius, and unchanged outside the mask; a zero gradient moves nothing."""
    torch.manual_seed(2)
    eps = {"L2": [0.0, 0.5, 1.0, 2.0], "L1": [0.0, 4.0, 8.0, 16.0], "Linf": [0.0, 2 / 255, 8 / 255, 16 / 255]}[norm]
    threat = {"L2": L2, "L1": L1, "Linf": Linf}[norm](torch.tensor(eps), 0.3 if norm != "Linf" else 2 / 255)
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([1, 2, 3, 4])
    mask = torch.ones(4, 1, 32, 32, dtype=torch.bool)
    mask[1, :, 10:, :] = False
    mask[3] = False                                                  # nothing may change in the last image
    p = {"L2": 2, "L1": 1, "Linf": math.inf}[norm]
    seen = []

    def check(s):
        assert torch.isfinite(s.x).all() and s.x.min() >= 0 and s.x.max() <= 1
        assert ((s.x - x).flatten(1).norm(p=p, dim=1) <= torch.tensor(eps) * (1 + 1e-5) + 1e-7).all()
        assert torch.equal(torch.where(mask, x, s.x), x)
        seen.append(s.step)

    pgd(tiny_model, x, y, threat, 6, "target_logit", random_start=True, autocast=autocast, mask=mask, on_step=check)
    assert seen == [1, 2, 3, 4, 5, 6]
    still = pgd(_Flat(), x, y, threat, 3, "target_logit", autocast=autocast, mask=mask)
    assert torch.equal(still.x, x)


@pytest.mark.parametrize("sparsity", [1e-4, 0.05, 1, np.float32(0.5)])
def test_an_l1_ball_takes_any_share_in_zero_to_one(sparsity):
    x, g = torch.full((2, 3, 8, 8), 0.5), torch.randn(2, 3, 8, 8)
    moved = (L1(1.0, 0.1, sparsity=sparsity).step(x, g) != x).flatten(1).sum(1)
    assert (moved == max(1, round(float(sparsity) * 192))).all()


def test_a_mask_may_be_an_array(tiny_model):
    """`mask` is "bool or {0,1}": a numpy array of either failed with an AttributeError (`.dim()`) instead of masking
    like the same tensor."""
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([1, 2])
    where = np.zeros((1, 1, 32, 32), dtype=bool)
    where[..., 8:24, 8:24] = True
    runs = [pgd(tiny_model, x, y, L2(1.0, 0.2), steps=3, mask=m).x for m in (torch.from_numpy(where), where,
                                                                               where.astype(np.float32))]
    for other in runs[1:]:
        assert torch.equal(other, runs[0])
    assert torch.equal(torch.where(torch.from_numpy(where), x, runs[0]), x)
    with pytest.raises(ValueError, match="mask must have shape"):
        pgd(tiny_model, x, y, L2(1.0, 0.2), steps=1, mask=np.ones((32, 31), dtype=bool))
