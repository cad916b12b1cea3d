"""Energies read off a classifier's logits (METHOD §1).

joint energy    E(x, y) = -f(x)[y]
marginal energy E(x)    = -logsumexp_y f(x)[y]
All functions take logits so one forward pass serves every quantity.
"""

from __future__ import annotations

import torch


def joint_energy(logits: torch.Tensor, y: torch.Tensor | int) -> torch.Tensor:
    """E(x, y) = -f(x)[y], one value per sample; y: one class index per sample, or one for all (an int, a 0-d or
    one-element tensor: gathered as it was, that scored the first sample only)."""
    y = torch.as_tensor(y, device=logits.device)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got {y.dtype}")
    if y.numel() not in (1, len(logits)):
        raise ValueError(f"labels must be one class for all or one per image: {y.numel()} for {len(logits)} images")
    return -logits.gather(1, y.long().reshape(-1, 1).expand(len(logits), 1)).squeeze(1)


def marginal_energy(logits: torch.Tensor) -> torch.Tensor:
    """E(x) = -logsumexp_y f(x)[y]; lower means more typical of the training data."""
    return -torch.logsumexp(logits, dim=1)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """p(y | x) = softmax f(x)."""
    return torch.softmax(logits.float(), dim=1)
