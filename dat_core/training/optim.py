"""What the trainer optimizes with: the LR schedule, the optimizer and its weight-decay groups, and the EMA
of the weights (METHOD §3.5)."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn as nn

from ..models import Classifier
from .config import TrainConfig


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Multiplier of optim.lr at `step` (0-based): warm-up, then the chosen schedule."""
    o = cfg.optim
    if step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    total = max(1, cfg.steps - o.warmup_steps)
    t = min(1.0, (step - o.warmup_steps) / total)
    lo = o.final_lr_fraction
    if o.schedule == "constant":
        return 1.0
    if o.schedule == "cosine":
        return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * t))
    if o.schedule == "onecycle":  # linear anneal after the warm-up peak
        return lo + (1 - lo) * (1 - t)
    return 0.1 ** sum(t >= m for m in o.step_milestones)


def param_groups(cfg: TrainConfig, model: nn.Module) -> list[dict[str, Any]]:
    """Weight decay on every parameter (the official code), or with `optim.decay_norm_and_bias=false`
    only on the multi-dimensional ones (conv and linear weights; no BatchNorm/LayerNorm affine, no bias)."""
    o = cfg.optim
    if o.decay_norm_and_bias:
        return [{"params": list(model.parameters()), "weight_decay": o.weight_decay}]
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    o, groups = cfg.optim, param_groups(cfg, model)
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas))
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """The saved moments and step counts with this config's values (weight decay, momentum, Nesterov, betas): torch's
    load_state_dict puts the saved groups' values back, so a change accepted on resume never trained."""
    configured = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, values in zip(optimizer.param_groups, configured):
        group.update(values)


class EMA:
    """Exponential moving average of weights, decay min(decay, (1+n)/(10+n)) (METHOD §3.5), BN buffers included.

    As the official `AveragedModel` (avg_type="ema", avg_batchnorm=True): the first update copies the weights,
    later ones average with the warm-up decay of update n (so the starting weights never enter the average).
    """

    def __init__(self, model: Classifier, decay: float):
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.updates else 0.0
        self.updates += 1
        for e, p in zip(self.model.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point and d:
                e.lerp_(p, 1 - d)
            else:
                e.copy_(p)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
