"""Out-of-distribution detection by the energy score (or max softmax): AUROC of in- vs out-of-distribution."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..energy import marginal_energy
from .batches import _collect
from .metrics import roc_auc

OOD_SCORES = ("energy", "msp")


def ood_scores(logits: torch.Tensor, score: str = "energy") -> torch.Tensor:
    """Higher = more in-distribution: -E(x) = logsumexp f(x) ("energy") or max softmax ("msp")."""
    if score == "energy":
        return -marginal_energy(logits.float())
    if score == "msp":
        return torch.softmax(logits.float(), 1).amax(1)
    raise ValueError(f"unknown OOD score {score!r}; use one of {OOD_SCORES}")


def ood_auroc(model: nn.Module, in_batches: Any, out_batches: Any, score: str = "energy",
              autocast: bool = False, progress: bool = False) -> float:
    """AUROC for telling in-distribution (positive) from OOD images by `ood_scores`."""
    if score not in OOD_SCORES:
        raise ValueError(f"unknown OOD score {score!r}; use one of {OOD_SCORES}")
    s_in = ood_scores(_collect(model, in_batches, autocast, progress, "in-dist")[0], score)
    s_out = ood_scores(_collect(model, out_batches, autocast, progress, "ood")[0], score)
    return roc_auc(s_in, s_out)
