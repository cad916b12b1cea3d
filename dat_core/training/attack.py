"""The classification attack of adversarial training (METHOD §2, §3.3 step 5), `attack.pgd` in the config:

- "pgd": untargeted PGD on cross-entropy that keeps its last iterate (the official DAT stage 2; our stage 1);
- "argmin": the default attack of InNOut, the code the authors trained stage 1 with (`--id_pgd argmin`): the
  step follows a velocity, momentum times the last one plus the L1-normalized gradient (the momentum iterative
  method), and the result is the iterate x_0..x_T with the highest loss, not the last one.

Both run on the one PGD engine (`dat_core.pgd`): the velocity is its `direction` hook, the best iterate is
tracked from the logits each step computes anyway, so "argmin" costs one extra forward (for x_T).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..pgd import PGDStep, ThreatModel, attack_mode, pgd
from .config import AttackConfig


def adversarial_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: AttackConfig,
                         threat: ThreatModel, autocast: bool) -> torch.Tensor:
    """The images the classification loss trains on, by the configured attack."""
    if attack.pgd == "argmin":
        return argmin_pgd(model, x, y, threat, attack.steps, attack.momentum, autocast)
    return pgd(model, x, y, threat, attack.steps, "ce", attack.random_start, autocast=autocast).x


def argmin_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, steps: int,
               momentum: float = 0.9, autocast: bool = False) -> torch.Tensor:
    """InNOut's ArgminPGD, untargeted on cross-entropy, from x itself: `steps` momentum steps inside `threat`
    (its step normalizes the velocity: L2 to unit length, Linf to its sign), and the highest-loss iterate."""
    velocity = torch.zeros_like(x, dtype=torch.float32)

    def heavy_ball(_: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        nonlocal velocity
        l1 = grad.abs().flatten(1).sum(1).view(-1, *([1] * (grad.dim() - 1)))
        velocity = momentum * velocity + grad / (l1 + 1e-10)
        return velocity

    best = x.detach().float().clone()
    best_loss = torch.full((len(x),), -math.inf, device=x.device)
    previous = best.clone()                       # the iterate whose logits the next step reports

    def keep_best(xs: torch.Tensor, logits: torch.Tensor) -> None:
        loss = F.cross_entropy(logits.float(), y.to(logits.device).long(), reduction="none")
        better = loss > best_loss                 # strictly: the earliest of equal losses stays, as InNOut's
        best[better], best_loss[better] = xs[better], loss[better]

    def on_step(s: PGDStep) -> None:
        nonlocal previous
        keep_best(previous, s.logits)
        previous = s.x

    last = pgd(model, x, y, threat, steps, "ce", autocast=autocast, on_step=on_step, direction=heavy_ball).x
    with attack_mode(model), torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        keep_best(last, model(last))
    return best
