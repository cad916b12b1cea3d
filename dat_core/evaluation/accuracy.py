"""Clean and PGD-robust accuracy (METHOD §6); every attack goes through `dat_core.pgd.pgd`."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn as nn

from ..pgd import attack_mode, pgd, threat_model
from ..runtime import model_device, seeded
from .batches import _bar, _collect, _forward, _unpack

ROBUST = {"norm": "L2", "eps": 0.5, "steps": 20, "step_size": 0.1, "restarts": 0}
"""Standard robust-accuracy check (METHOD §6, CIFAR: L2 eps 0.5, step 0.1)."""

ROBUST_STRONG = {"steps": 50, "restarts": 2}
"""The stronger check, applied on top of the standard settings: 50 steps, 2 random restarts."""


def predict(model: nn.Module, batches: Any, autocast: bool = False, progress: bool = False) -> torch.Tensor:
    """(N, K) float32 CPU logits of every image, no grad, eval mode."""
    return _collect(model, batches, autocast, progress, "predict")[0]


def clean_accuracy(model: nn.Module, batches: Any, autocast: bool = False, progress: bool = False) -> float:
    logits, labels = _collect(model, batches, autocast, progress, "clean")
    if labels is None:
        raise ValueError("clean_accuracy needs labels")
    return float((logits.argmax(1) == labels).float().mean())


def robust_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clean_pred: torch.Tensor,
                    settings: Mapping[str, Any], autocast: bool) -> torch.Tensor:
    """Per-sample bool: correct clean AND after the no-random-start PGD run AND after every
    random-start restart. Only samples still standing are attacked again."""
    threat = threat_model(settings["norm"], settings["eps"], settings["step_size"])
    alive = clean_pred == y
    for run in range(settings["restarts"] + 1):
        idx = alive.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        adv = pgd(model, x[idx], y[idx], threat, settings["steps"], objective="ce",
                  random_start=run > 0, autocast=autocast).x
        alive[idx] = _forward(model, adv, autocast).argmax(1) == y[idx]
    return alive


@contextmanager
def rng_stream(state: dict[str, Any], seed: int | None, device: torch.device) -> Iterator[None]:
    """Run the block on a torch RNG stream of its own, seeded from `seed` on first use and continued from `state`
    afterwards, leaving the caller's stream where it was: a second attack in one pass (the strong check) drew its
    random starts from the first one's stream and so changed the first one's numbers on every later batch."""
    devices = [device] if device.type == "cuda" else []
    if not state:   # a stream apart from `seed`'s own (None: a fresh random one; the caller's RNG is not drawn)
        start = torch.Generator().seed() if seed is None else int(
            torch.randint(2**62, (), generator=torch.Generator().manual_seed(seed)))
    with torch.random.fork_rng(devices=devices):
        if state:
            torch.set_rng_state(state["cpu"])
            if devices:
                torch.cuda.set_rng_state(state["cuda"], device)
        else:
            torch.manual_seed(start)
        yield
        state["cpu"] = torch.get_rng_state()
        if devices:
            state["cuda"] = torch.cuda.get_rng_state(device)


def check_radius(norm: str, eps: float, image_shape: Sequence[int]) -> None:
    """ValueError for a finite L2 or L1 radius beyond the largest distance between two [0,1] images of this shape
    (sqrt(C*H*W), C*H*W): that ball holds every image, so the attack bounds nothing (a budget in 0..255 units,
    mostly). Linf radii above 1 are `check_pixel_units`' to refuse."""
    size = math.prod(int(d) for d in image_shape)
    largest = {"l2": math.sqrt(size), "l1": float(size)}.get(str(norm).lower())
    if largest is not None and math.isfinite(eps) and eps > largest:
        raise ValueError(f"an {norm} radius of {eps:g} bounds nothing: no two {'x'.join(map(str, image_shape))} "
                         f"images in [0,1] are more than {largest:.4g} apart (a budget in 0..255 units?)")


def robust_settings(base: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    s = {**ROBUST, **base, **overrides}
    unknown = set(s) - set(ROBUST)
    if unknown:
        raise ValueError(f"unknown robust settings {sorted(unknown)}; use {sorted(ROBUST)}")
    s = {"norm": threat_model(s["norm"], s["eps"], s["step_size"]).norm, "eps": float(s["eps"]),
         "steps": int(s["steps"]), "step_size": float(s["step_size"]), "restarts": int(s["restarts"])}
    if s["restarts"] < 0:
        raise ValueError(f"restarts must be >= 0, got {s['restarts']}")
    return s


def robust_accuracy(model: nn.Module, batches: Any, norm: str = "L2", eps: float = 0.5, steps: int = 20,
                    step_size: float = 0.1, restarts: int = 0, autocast: bool = False,
                    seed: int | None = 0, progress: bool = False) -> float:
    """Fraction of samples classified correctly under untargeted PGD-CE with the true labels.

    One run without random start plus `restarts` random-start runs; a sample counts only if it
    survives all of them (and is correct clean). `seed` fixes the random starts (None: global RNG).
    """
    settings = robust_settings({}, norm=norm, eps=eps, steps=steps, step_size=step_size, restarts=restarts)
    device, hits, n = model_device(model), 0, 0
    with attack_mode(model), seeded(seed, device):
        for batch in _bar(batches, "robust", progress):
            x, y = _unpack(batch, device, model)
            if y is None:
                raise ValueError("robust_accuracy needs labels")
            pred = _forward(model, x, autocast, y).argmax(1)
            hits += int(robust_correct(model, x, y, pred, settings, autocast).sum())
            n += y.numel()
    if n == 0:
        raise ValueError("no data: the batches were empty")
    return hits / n
