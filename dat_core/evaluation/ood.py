"""Out-of-distribution detection by the energy score (or max softmax): AUROC of in- vs out-of-distribution, on
clean OOD images and on OOD images attacked to look in-distribution (METHOD §6, the official `ood_detection`).

The official code scores by max softmax unless `ood_detection_logsumexp` (default False): its default number is
our `msp` one (`evaluate`'s `ood_auroc_msp`); `energy` (`ood_auroc`) is its logsumexp option. In-distribution is the
positive class and higher scores say "in-distribution"; ties count one half (`roc_auc`, equal to sklearn's)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..data.seeds import noise_seeds
from ..energy import marginal_energy
from ..pgd import attack_mode, pgd, threat_model
from ..runtime import model_device
from .batches import _bar, _collect, _forward, _unpack
from .metrics import roc_auc

OOD_SCORES = ("energy", "msp")
ATTACK_OBJECTIVE = {"energy": "energy", "msp": "kl_uniform"}
"""What the adversarial-OOD attack ascends for each score: logsumexp f(x), or KL(uniform || softmax) (pushing the
softmax away from uniform), as the official code does for its two scores."""
MAX_ADVERSARIAL_OOD = 1024
"""OOD images attacked per set: the official MAX_OOD_SAMPLES."""


def uniform_ood(n_data: int, image_size: int, seed: int, limit: int = MAX_ADVERSARIAL_OOD) -> torch.Tensor:
    """The uniform-noise OOD set: as many images as the data, at most `limit` and the official 1024, drawn from
    `seed` + 1 (one draw wherever a report names "uniform")."""
    return noise_seeds(min(n_data, MAX_ADVERSARIAL_OOD, limit), image_size, "uniform", seed=seed + 1)


def ood_scores(logits: torch.Tensor, score: str = "energy") -> torch.Tensor:
    """Higher = more in-distribution: -E(x) = logsumexp f(x) ("energy") or max softmax ("msp")."""
    if score == "energy":
        return -marginal_energy(logits.float())
    if score == "msp":
        return torch.softmax(logits.float(), 1).amax(1)
    raise ValueError(f"unknown OOD score {score!r}; use one of {OOD_SCORES}")


def adversarial_ood_settings(image_size: int) -> dict[str, Any]:
    """The official attack on OOD images: L2, no random start; 10 steps of 1.0 inside eps 3 at ImageNet sizes
    (224 px and up), else 20 steps of 0.1 inside eps 1. The official code takes eps 3 at exactly 224 px, and resizes
    ImageNet OOD images to 224 whatever the model's size; we attack at the model's size, 256 px with eps 3 too."""
    if image_size >= 224:
        return {"norm": "L2", "eps": 3.0, "step_size": 1.0, "steps": 10}
    return {"norm": "L2", "eps": 1.0, "step_size": 0.1, "steps": 20}


def ood_logits(model: nn.Module, data: Any, scores: tuple[str, ...] = (), autocast: bool = False,
               progress: bool = False, batch_size: int = 256,
               limit: int = MAX_ADVERSARIAL_OOD) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """In one pass over the OOD data: the (N, K) logits of every image, and for each of `scores` the logits of its
    first `limit` images after the attack on that score (`adversarial_ood_settings`, `ATTACK_OBJECTIVE`)."""
    for score in scores:
        if score not in OOD_SCORES:
            raise ValueError(f"unknown OOD score {score!r}; use one of {OOD_SCORES}")
    device = model_device(model)
    clean, attacked = [], {s: [] for s in scores}
    left = limit
    with attack_mode(model):
        for batch in _bar(data, "ood", progress, batch_size):
            # its images only: an OOD set's own labels (CIFAR-100's 0..99 beside a 10-class model) are no measure's
            x, _ = _unpack(batch if isinstance(batch, torch.Tensor) else batch[0], device, model)
            clean.append(_forward(model, x, autocast).cpu())
            if scores and left > 0:
                x = x[:left]
                left -= len(x)
                s = adversarial_ood_settings(x.shape[-1])
                threat = threat_model(s["norm"], s["eps"], s["step_size"])
                for score in scores:
                    adv = pgd(model, x, None, threat, s["steps"], ATTACK_OBJECTIVE[score], autocast=autocast).x
                    attacked[score].append(_forward(model, adv, autocast).cpu())
    if not clean:
        raise ValueError("no data: the batches were empty")
    return torch.cat(clean), {s: torch.cat(v) for s, v in attacked.items()}


def ood_auroc(model: nn.Module, in_batches: Any, out_batches: Any, score: str = "energy",
              autocast: bool = False, progress: bool = False, adversarial: bool = False) -> float:
    """AUROC for telling in-distribution (positive) from OOD images by `ood_scores`. `adversarial=True`: the OOD
    images (the first `MAX_ADVERSARIAL_OOD`) are first attacked to look in-distribution, as the official code's
    adversarial AUROC."""
    if score not in OOD_SCORES:
        raise ValueError(f"unknown OOD score {score!r}; use one of {OOD_SCORES}")
    s_in = ood_scores(_collect(model, in_batches, autocast, progress, "in-dist")[0], score)
    clean, attacked = ood_logits(model, out_batches, (score,) if adversarial else (), autocast, progress)
    return roc_auc(s_in, ood_scores(attacked[score] if adversarial else clean, score))
