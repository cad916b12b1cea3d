"""Explain any classifier, guided by a DAT model: DVCE's cone projection without diffusion.

A non-robust classifier's input gradient points at adversarial noise; a DAT model's points at image-like
changes. Projecting the explained model's gradient into the cone of angle alpha around the DAT model's gradient
(Augustin et al., "Diffusion Visual Counterfactual Explanations", 2022) keeps every step within alpha of a
realistic direction while still following the explained model. alpha = 0 follows the guide only; alpha = 90°
keeps every direction that does not oppose the guide; alpha = 180° is no guidance.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn as nn

from .pgd import attack_mode, objective_value

CONE_ANGLE = 30.0
"""Default half-angle in degrees, for the CLIs, the API and the app. BENCHMARKS.md measures 30, 10 and 0 on the
bundled pair: narrower cones follow DAT more closely and cost more steps and some validity."""


def check_angle(angle_deg: float) -> float:
    """A cone half-angle in degrees, 0..180 (a string or None failed inside a comparison, naming nothing)."""
    if isinstance(angle_deg, bool) or not isinstance(angle_deg, numbers.Real) or not 0 <= angle_deg <= 180:
        raise ValueError(f"cone angle must be a number in 0..180 degrees, got {angle_deg!r}")   # NaN too
    return float(angle_deg)


def cone_project(g: torch.Tensor, d: torch.Tensor, angle_deg: float) -> torch.Tensor:
    """Per sample: g when its angle to d is at most `angle_deg`, else the direction on the cone's boundary
    nearest to g (g rotated toward d until the angle is `angle_deg`), with g's norm. Where d is 0, g; where g is
    opposite d (no nearest side of the cone: g's part orthogonal to d is round-off), along d with g's norm.
    Computed in at least fp32 and returned in g's dtype."""
    angle_deg = check_angle(angle_deg)
    work = torch.promote_types(g.dtype, torch.float32)
    gf, df = g.flatten(1).to(work), d.flatten(1).to(work)
    # both over their largest |entry| first: squared norms underflowed to 0 below |entry| ~ 1e-22 (a confident model's
    # cross-entropy; read as "no gradient", g went unguided) and overflowed to inf above ~1e19 (NaN)
    g_top, d_top = (t.abs().amax(1, keepdim=True).clamp_min(torch.finfo(work).tiny) for t in (gf, df))
    gs, ds = gf / g_top, df / d_top
    g_norm, d_norm = gs.norm(dim=1, keepdim=True), ds.norm(dim=1, keepdim=True)
    d_hat = ds / d_norm.clamp_min(1e-30)
    cos = (gs * d_hat).sum(1, keepdim=True) / g_norm.clamp_min(1e-30)
    alpha = math.radians(angle_deg)
    inside = (cos >= math.cos(alpha) - 1e-7) | (d_norm == 0) | (g_norm == 0)
    ortho = gs - (gs * d_hat).sum(1, keepdim=True) * d_hat
    ortho = ortho - (ortho * d_hat).sum(1, keepdim=True) * d_hat      # twice: the first pass leaves some d behind
    o_norm = ortho.norm(dim=1, keepdim=True)
    sideways = o_norm > 1e3 * torch.finfo(work).eps * g_norm            # else round-off: no side to rotate from
    e_hat = ortho / o_norm.clamp_min(1e-30)
    boundary = torch.where(sideways, math.cos(alpha) * d_hat + math.sin(alpha) * e_hat, d_hat) * (g_norm * g_top)
    return torch.where(inside, gf, boundary).view_as(g).to(g.dtype)


class ConeGuide:
    """A `pgd(direction=...)` hook: the explained model's gradient projected into the cone around the guide
    model's gradient of the same objective toward the same labels. With `mask` (pgd's: True where the path may
    change) both gradients are masked first, so the step that is left is within the angle of the guide there.
    The guide runs as `pgd` runs the explained model (`attack_mode`): in train mode its BatchNorm steered with
    batch statistics and rewrote its running statistics at every step."""

    def __init__(self, guide: nn.Module, y: torch.Tensor, objective: str, angle_deg: float, autocast: bool = False,
                 mask: torch.Tensor | None = None):
        angle_deg = check_angle(angle_deg)
        self.guide, self.y, self.objective, self.angle, self.autocast = guide, y, objective, angle_deg, autocast
        self.mask = mask

    def __call__(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        with attack_mode(self.guide), torch.enable_grad():
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                value = objective_value(self.guide(x).float(), self.y.to(x.device), self.objective).sum()
            (d,) = torch.autograd.grad(value, x)
        if self.mask is not None:
            grad, d = grad * self.mask, d * self.mask
        return cone_project(grad, d.float(), self.angle)
