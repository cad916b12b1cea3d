"""Diverse counterfactuals: several paths toward one target from random starts in the threat-model ball.

One targeted path is one answer to "what would make this a dog?"; random starts show whether there are
others. Every path runs in the same ball around the image (one PGD batch); `diversity` is the mean pairwise
L2 distance between the changes x_T - x_0, relative to their mean size: ~0 when all paths make the same
change, ~1.4 for unrelated changes of equal size.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from dat_core.energy import probabilities
from dat_core.pgd import OnStep, logits_at, pgd, threat_model
from dat_core.runtime import check_seed, seeded

from .image import ImageLike, mask_fraction, to_mask, to_model_input
from .params import DEFAULT_OBJECTIVE, parse_int, resolve_request, resolve_targets
from .trajectory import model_info

MAX_ALTERNATIVES = 16


@dataclass
class Alternatives:
    """n counterfactuals of one image toward one target, from different random starts."""

    image: np.ndarray            # (3, H, W) x_0 in [0,1]
    images: np.ndarray           # (n, 3, H, W) x_T
    confidence: np.ndarray       # (n,) p(target | x_T)
    l2: np.ndarray               # (n,) ||x_T - x_0||_2
    target: int
    class_names: list[str]
    params: dict[str, Any]

    @property
    def diversity(self) -> float:
        """Mean pairwise ||d_i - d_j|| / mean ||d_i|| over the changes d_i = x_T - x_0."""
        d = (self.images - self.image[None]).reshape(len(self.images), -1)
        size = float(np.linalg.norm(d, axis=1).mean())
        if len(d) < 2 or size == 0:
            return 0.0
        pairs = [np.linalg.norm(d[i] - d[j]) for i, j in itertools.combinations(range(len(d)), 2)]
        return float(np.mean(pairs)) / size

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "target_name": self.class_names[self.target], "n": len(self.images),
                "diversity": self.diversity, "confidence": [float(c) for c in self.confidence],
                "l2": [float(v) for v in self.l2],
                "params": {k: ("inf" if v == math.inf else v) for k, v in self.params.items()}}


def alternatives(model: nn.Module, image: ImageLike, target: int | str, n: int = 4, *, seed: int = 0,
                 norm: str = "L2", eps: float | None = None, step_size: float | None = None,
                 steps: int | None = None, objective: str = DEFAULT_OBJECTIVE,
                 autocast: bool = False, on_step: OnStep | None = None,
                 mask: ImageLike | None = None) -> Alternatives:
    """`n` paths toward `target` from seeded random starts in the eps-ball (eps must be finite). `on_step`:
    `dat_core.pgd`'s hook (progress; STOP ends every path there); `mask`: the region the paths may change, as in
    `counterfactuals` (starts and steps alike stay inside it)."""
    n = parse_int("n", n, 2, MAX_ALTERNATIVES)
    seed = check_seed(seed)
    size, names, device = model_info(model)
    p = resolve_request(size, norm, eps, step_size, steps, objective)
    if not math.isfinite(p["eps"]) or p["eps"] == 0:
        raise ValueError("alternatives start at random points of the eps-ball: eps must be finite and > 0")
    (t,) = resolve_targets([target], names)
    x0 = to_model_input(image, size).to(device)
    y = torch.full((n,), t, device=device)
    m = None if mask is None else to_mask(mask, size, image).to(device)
    if m is not None:
        p["mask_fraction"] = mask_fraction(m)
    with seeded(seed, device):
        res = pgd(model, x0.expand(n, -1, -1, -1).contiguous(), y, threat_model(p["norm"], p["eps"],
                  p["step_size"]), p["steps"], objective=p["objective"], random_start=True, autocast=autocast,
                  on_step=on_step, mask=m)
    conf = probabilities(logits_at(model, res.x, autocast))[:, t]
    return Alternatives(image=x0[0].cpu().numpy(), images=res.x.cpu().numpy(), confidence=conf.cpu().numpy(),
                        l2=(res.x - x0).flatten(1).norm(dim=1).cpu().numpy(), target=t, class_names=names,
                        params={**p, "seed": seed, "n": n})
