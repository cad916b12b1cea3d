"""Stage 2: Dual Adversarial Training (METHOD §3.3), with the AUC-triggered T curriculum (§3.4).

Per step: contrastive samples = PGD ascent on f(x)[y_real] from OOD seeds (eps = inf, L2-normalized
steps of size eta, T steps; or continued persistent chains, `contrastive.buffer_size`, chains.py);
BCE on the marginal logit logsumexp f(x) (real = 1, contrastive = 0); plus cross-entropy on PGD
adversarial examples of the classification batch. BN is frozen.

Efficiency without changing the math (switch: `fused_forward`): with BN frozen and no dropout the
model is a fixed function of its input, so one forward over [real, contrastive, adversarial] gives
the same losses and gradients as the official three passes (AUC monitor, BCE, CE), and the AUC
monitor reuses the detached class logits of that forward. The raw-OOD forward, needed only for the
`clean_auc` / OOD-energy logs, runs on log steps only.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Iterator

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from ..energy import marginal_energy
from ..evaluation.metrics import roc_auc
from ..pgd import pgd, threat_model
from .attack import adversarial_examples
from .chains import ContrastiveChains
from .config import TrainConfig
from .data import rank_seed


class Curriculum:
    """T starts at `start`, +1 when the mean AUC over a full window reaches `threshold`; window resets."""

    def __init__(self, start: int, max_steps: int, threshold: float, window: int):
        self.T, self.max_steps, self.threshold = start, max_steps, threshold
        self.window: deque[float] = deque(maxlen=max(1, window))

    def update(self, auc: float) -> bool:
        """Record one step's AUC; return True when T was raised."""
        self.window.append(float(auc))
        full = len(self.window) == self.window.maxlen
        if full and self.T < self.max_steps and sum(self.window) / len(self.window) >= self.threshold:
            self.T += 1
            self.window.clear()
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"T": self.T, "window": list(self.window)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A `max_steps` lowered on resume caps the saved T (and, T changing, empties the window)."""
        saved = int(state["T"])
        self.T = min(saved, self.max_steps)
        self.window.clear()
        if self.T == saved:
            self.window.extend(float(v) for v in state["window"])


def bce_loss(real_logits: torch.Tensor, contrastive_logits: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits over 2B marginal logits s(x) = -E(x): real -> 1, contrastive -> 0."""
    s = torch.cat([-marginal_energy(real_logits), -marginal_energy(contrastive_logits)]).float()
    targets = torch.cat([torch.ones(len(real_logits)), torch.zeros(len(contrastive_logits))]).to(s.device)
    return F.binary_cross_entropy_with_logits(s, targets)


def _auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """ROC-AUC of the monitor, NaN (for the trainer's non-finite guard to name) when a score is not finite."""
    if not (torch.isfinite(positive).all() and torch.isfinite(negative).all()):
        return float("nan")
    return roc_auc(positive, negative)


def contrastive_samples(module: nn.Module, x_ood: torch.Tensor, y: torch.Tensor, step_size: float, T: int,
                        autocast: bool = False) -> torch.Tensor:
    """PGD ascent on f(x)[y] from OOD seeds: eps = inf, L2-normalized steps, no random start (T=0: the seeds)."""
    return pgd(module, x_ood, y, threat_model("L2", math.inf, step_size), T, "target_logit", autocast=autocast).x


class DualAdversarialTraining:
    """One stage-2 step (METHOD §3.3); the trainer does backward, optimizer and EMA."""

    def __init__(self, cfg: TrainConfig, module: nn.Module, model: nn.Module,
                 streams: dict[str, Iterator], autocast: bool):
        if not getattr(module, "bn_frozen", False):
            raise ValueError("stage 2 needs the BatchNorm freeze (module.freeze_bn(True))")
        self.cfg, self.module, self.model, self.autocast = cfg, module, model, autocast
        self.real, self.ood, self.clf = streams["real"], streams["ood"], streams["clf"]
        c, a = cfg.contrastive, cfg.attack
        self.attack_threat = threat_model(a.norm, a.eps, a.step_size)
        window = math.ceil(c.window_images / cfg.batch_size)
        self.curriculum = Curriculum(c.start_steps, c.max_steps, c.auc_threshold, window)
        self.watch: dict[str, torch.Tensor] = {}  # checked for non-finite values by the trainer
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        self.chains = ContrastiveChains(c.buffer_size, c.reinit, rank_seed(cfg.seed, "chains", rank)) if c.buffer_size \
            else None

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            return self.model(x).float()

    def loss(self, log: bool) -> tuple[torch.Tensor, dict[str, Any]]:
        x_real, y_real = next(self.real)
        x_ood = next(self.ood)
        x_clf, y_clf = next(self.clf)
        T, a = self.curriculum.T, self.cfg.attack
        # 2. contrastive samples (eval mode, no parameter grads), labels of the real batch; with persistent
        # chains, most start where an earlier step left them (and keep the class they were pushed toward)
        x_start, y_con = (x_ood, y_real) if self.chains is None else self.chains.start(x_ood, y_real)
        x_con = contrastive_samples(self.module, x_start, y_con, self.cfg.contrastive.step_size, T, self.autocast)
        if self.chains is not None:
            self.chains.keep(x_con, y_con)
        # 5 (attack part). untargeted PGD on CE; parameters are unchanged since step 1, so doing it
        # before the loss forward is the same computation as the official order
        x_adv = adversarial_examples(self.module, x_clf, y_clf, a, self.attack_threat, self.autocast)
        self.model.train()  # BN frozen: same function as eval mode
        b = len(x_real)
        if self.cfg.fused_forward:
            logits = self._forward(torch.cat([x_real, x_con, x_adv]))
            real_logits, con_logits, adv_logits = logits[:b], logits[b:2 * b], logits[2 * b:]
            monitor_real, monitor_con = real_logits.detach(), con_logits.detach()
        else:  # the official order: a separate eval-mode AUC forward, then BCE, then CE
            with torch.no_grad():
                self.module.eval()
                monitor = self._forward(torch.cat([x_real, x_con]))
                self.model.train()
            monitor_real, monitor_con = monitor[:b], monitor[b:]
            both = self._forward(torch.cat([x_real, x_con]))
            real_logits, con_logits = both[:b], both[b:]
            adv_logits = self._forward(x_adv)
        loss_bce = bce_loss(real_logits, con_logits)
        loss_ce = F.cross_entropy(adv_logits, y_clf)
        # 3. AUC monitor on class logits f(x)[y] (real: true label; contrastive: its attack label)
        idx = torch.arange(b, device=y_real.device)
        adv_auc = _auc(monitor_real[idx, y_real], monitor_con[idx, y_con])
        logs: dict[str, Any] = {"adv_auc": adv_auc, "T": T}
        self.watch = {"loss_bce": loss_bce.detach(), "loss_ce": loss_ce.detach(), "real_logits": real_logits.detach(),
                      "contrastive_logits": con_logits.detach(), "adversarial_logits": adv_logits.detach(),
                      "adv_auc": torch.tensor(adv_auc)}
        if log:
            with torch.no_grad():
                ood_logits = monitor_con if T == 0 and self.chains is None else self._eval_logits(x_ood)
            clean_auc = _auc(monitor_real[idx, y_real], ood_logits[idx, y_real])
            self.watch["clean_auc"] = torch.tensor(clean_auc)
            logs.update(
                loss_bce=loss_bce.detach(), loss_ce=loss_ce.detach(),
                clean_auc=clean_auc,
                energy_real=marginal_energy(monitor_real).mean(),
                energy_contrastive=marginal_energy(monitor_con).mean(),
                energy_ood=marginal_energy(ood_logits).mean(),
                adv_train_accuracy=(adv_logits.argmax(1) == y_clf).float().mean(),
            )
        return loss_bce + loss_ce, logs

    def _eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        was = self.module.training
        self.module.eval()
        logits = self._forward(x)
        self.module.train(was)
        return logits

    def after_step(self, logs: dict[str, Any]) -> dict[str, Any]:
        """7. feed the (rank-averaged) AUC to the curriculum."""
        auc = torch.tensor(float(logs["adv_auc"]))
        if dist.is_available() and dist.is_initialized():
            auc = auc.to(next(self.module.parameters()).device)
            dist.all_reduce(auc)
            auc = auc / dist.get_world_size()
        raised = self.curriculum.update(auc.item())
        return {"T_raised": raised}

    def state_dict(self) -> dict[str, Any]:
        return {"curriculum": self.curriculum.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curriculum.load_state_dict(state["curriculum"])

    def rank_state_dict(self) -> dict[str, Any]:
        """What differs per rank: the persistent chains."""
        return {} if self.chains is None else {"chains": self.chains.state_dict()}

    def load_rank_state_dict(self, state: dict[str, Any]) -> None:
        if self.chains is not None:
            if "chains" not in state:
                raise ValueError("the saved run had no persistent chains (contrastive.buffer_size was 0)")
            self.chains.load_state_dict(state["chains"], next(self.module.parameters()).device)
