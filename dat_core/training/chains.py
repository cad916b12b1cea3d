"""Persistent contrastive chains (the paper's future-work item, METHOD §3.3): a switchable stage-2 option.

DAT restarts every contrastive sample from an OOD seed and runs T PGD steps. With chains, a buffer keeps the
contrastive samples (and the class each was pushed toward), and each step continues T more steps from a
random batch of them, so a chain has run many more steps than T by the time it is drawn again. A fraction
`reinit` of each batch starts afresh from the step's OOD seeds (with the real batch's labels), as in
persistent contrastive divergence (Tieleman 2008) and JEM. reinit = 1 gives exactly DAT's restarts.
"""

from __future__ import annotations

from typing import Any

import torch


class ContrastiveChains:
    """A per-rank buffer of `size` contrastive samples; `start` picks this step's starting points, `keep` stores
    where PGD left them. Its own CPU generator decides which chains continue, so resume stays exact."""

    def __init__(self, size: int, reinit: float, seed: int):
        self.size, self.reinit = size, reinit
        self.generator = torch.Generator().manual_seed(seed)
        self.x: torch.Tensor | None = None       # (size, C, H, W) samples, allocated on the first step's device
        self.y: torch.Tensor | None = None       # (size,) the class each chain is pushed toward
        self.used = torch.zeros(size, dtype=torch.bool)
        self._slots: torch.Tensor | None = None  # this step's buffer slots (between start and keep)

    def start(self, x_seed: torch.Tensor, y_seed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Starting points and labels for this step: buffered chains, or the seeds where a slot is empty or
        drawn for re-initialisation."""
        b = len(x_seed)
        if b > self.size:
            raise ValueError(f"contrastive.buffer_size={self.size} is smaller than the per-rank batch {b}")
        if self.x is None:
            self.x = torch.zeros(self.size, *x_seed.shape[1:], dtype=x_seed.dtype, device=x_seed.device)
            self.y = torch.zeros(self.size, dtype=y_seed.dtype, device=y_seed.device)
        slots = torch.randperm(self.size, generator=self.generator)[:b]
        fresh = ~self.used[slots] | (torch.rand(b, generator=self.generator) < self.reinit)
        self._slots = slots
        slots_d, fresh_d = slots.to(x_seed.device), fresh.to(x_seed.device)
        x = torch.where(fresh_d[:, None, None, None], x_seed, self.x[slots_d].to(x_seed.dtype))
        y = torch.where(fresh_d, y_seed, self.y[slots_d])
        return x.contiguous(memory_format=_format(x_seed)), y

    def keep(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Store this step's contrastive samples where they were drawn from."""
        if self._slots is None:
            raise RuntimeError("keep() without start()")
        slots = self._slots.to(x.device)
        self.x[slots] = x.detach().to(self.x.dtype)
        self.y[slots] = y
        self.used[self._slots] = True
        self._slots = None

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "used": self.used.clone(),
                "x": None if self.x is None else self.x.detach().cpu().clone(),
                "y": None if self.y is None else self.y.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        if len(state["used"]) != self.size:
            raise ValueError(f"the saved chains hold {len(state['used'])} samples, contrastive.buffer_size is "
                             f"{self.size}")
        self.generator.set_state(state["generator"])
        self.used = state["used"].clone()
        self.x = None if state["x"] is None else state["x"].to(device)
        self.y = None if state["y"] is None else state["y"].to(device)


def _format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format
