"""Energies read off a classifier's logits (METHOD §1).

joint energy    E(x, y) = -f(x)[y]
marginal energy E(x)    = -logsumexp_y f(x)[y]
All functions take logits so one forward pass serves every quantity.
"""

from __future__ import annotations

import torch


def joint_energy(logits: torch.Tensor, y: torch.Tensor | int) -> torch.Tensor:
    """E(x, y) = -f(x)[y], one value per sample."""
    if isinstance(y, int):
        return -logits[:, y]
    return -logits.gather(1, y.view(-1, 1).long()).squeeze(1)


def marginal_energy(logits: torch.Tensor) -> torch.Tensor:
    """E(x) = -logsumexp_y f(x)[y]; lower means more typical of the training data."""
    return -torch.logsumexp(logits, dim=1)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """p(y | x) = softmax f(x)."""
    return torch.softmax(logits.float(), dim=1)
