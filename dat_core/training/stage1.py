"""Stage 1: adversarial training (cross-entropy on untargeted PGD examples), BN active (METHOD §2).

The attack runs in eval mode with parameter gradients off (the PGD engine's contract); the
training forward then runs in train mode so BatchNorm keeps learning its statistics.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..pgd import threat_model
from .attack import adversarial_examples
from .config import TrainConfig


class AdversarialTraining:
    """One stage-1 step: PGD on the classification batch, then CE on the adversarial images."""

    def __init__(self, cfg: TrainConfig, module: nn.Module, model: nn.Module,
                 streams: dict[str, Iterator], autocast: bool):
        self.cfg, self.module, self.model, self.autocast = cfg, module, model, autocast
        self.clf = streams["clf"]
        a = cfg.attack
        self.threat = threat_model(a.norm, a.eps, a.step_size)
        self.watch: dict[str, torch.Tensor] = {}  # checked for non-finite values by the trainer

    def loss(self, log: bool) -> tuple[torch.Tensor, dict[str, Any]]:
        x, y = next(self.clf)
        a = self.cfg.attack
        x_adv = adversarial_examples(self.module, x, y, a, self.threat, self.autocast)
        self.model.train()
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            logits = self.model(x_adv)
        loss = F.cross_entropy(logits.float(), y)
        self.watch = {"logits": logits.detach()}
        logs = {"loss_ce": loss.detach(), "adv_train_accuracy": (logits.argmax(1) == y).float().mean()} if log else {}
        return loss, logs

    def after_step(self, logs: dict[str, Any]) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
