"""AutoAttack robust accuracy, the paper's reported metric (METHOD §6: standard version, CIFAR L2 eps 0.5,
ImageNet L2 eps 3), through `pyautoattack`: the packaged reference implementation of Croce & Hein (no
dependencies, no torchvision). Our PGD (`robust_accuracy`) is the cheap check; this is the reported one.

Standard AutoAttack = APGD-CE, APGD-T (targeted DLR), FAB-T, Square, each run on the points still
standing. `attacks` picks a subset ("custom" version, e.g. for a quick look), each attack with the standard
version's settings (one restart, Square 5000 queries; apgd-dlr and untargeted fab too); the targeted attacks use
min(9, K - 1) target classes and need K >= 4 classes (the targeted DLR loss reads the 4th-largest logit).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from ..cli_types import eps_text
from ..pgd import attack_mode, check_pixel_units
from ..runtime import model_device, seeded
from .accuracy import check_radius
from .batches import _bar, _forward, _unpack, check_classes

STANDARD_ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")
"""The standard version, in the order AutoAttack runs them."""

ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
TARGETED = ("apgd-t", "fab-t")


def _autoattack_class() -> Any:
    try:
        from pyautoattack import AutoAttack
    except ImportError as e:
        raise ImportError("AutoAttack needs the package pyautoattack (the reference AutoAttack, no dependencies): "
                          "pip install pyautoattack") from e
    return AutoAttack


def check_autoattack(norm: str, eps: float, attacks: Sequence[str] | None = None, num_classes: int | None = None,
                     image_shape: Sequence[int] | None = None) -> list[str]:
    """The attacks AutoAttack will run, or ValueError for settings it cannot take; callers with a model at hand
    check before their own long work (`python -m train eval` runs this before PGD, OOD and samples)."""
    if norm not in ("L2", "Linf"):
        raise ValueError(f"AutoAttack norm must be L2 or Linf, got {norm!r}")
    if not eps > 0:
        raise ValueError(f"AutoAttack eps must be > 0, got {eps}")
    check_pixel_units(norm, eps)
    if image_shape is not None:
        check_radius(norm, eps, image_shape)
    chosen = list(STANDARD_ATTACKS if attacks is None else attacks)
    unknown = sorted(set(chosen) - set(ATTACKS))
    if unknown or not chosen:
        raise ValueError(f"unknown AutoAttack attacks {unknown or chosen}; choose from {', '.join(ATTACKS)}")
    if num_classes is not None and num_classes < 4 and any(a in TARGETED for a in chosen):
        raise ValueError(f"AutoAttack's targeted attacks ({', '.join(TARGETED)}) need at least 4 classes, the "
                         f"model has {num_classes}: choose attacks among apgd-ce, fab, square")
    return chosen


def autoattack_accuracy(model: nn.Module, batches: Any, norm: str = "L2", eps: float = 0.5,
                        attacks: Sequence[str] | None = None, seed: int = 0, batch_size: int = 250,
                        progress: bool = False) -> dict[str, Any]:
    """Clean and AutoAttack accuracy (fractions) of `model` on labeled `batches` (fp32, eval mode).

    `attacks=None` runs the standard version; a subset of ATTACKS runs AutoAttack's "custom" version.
    Returns clean_accuracy, autoattack_accuracy, n, norm, eps, version, attacks, seed, batch_size (APGD's random
    starts and Square's queries are drawn per batch of the points still standing, so the number depends on it) and
    the largest perturbation norm found (never above eps). Deterministic for a seed and batch size; the caller's RNG
    is untouched."""
    chosen = check_autoattack(norm, eps, attacks)
    AutoAttack = _autoattack_class()
    device = model_device(model)
    xs, ys = [], []
    for batch in _bar(batches, "collect", False, batch_size):
        x, y = _unpack(batch, torch.device("cpu"), model)
        if y is None:
            raise ValueError("AutoAttack needs labeled batches")
        xs.append(x)
        ys.append(y)
    if not xs:
        raise ValueError("no data: the batches were empty")
    x, y = torch.cat(xs), torch.cat(ys)
    with attack_mode(model), seeded(seed, device):
        num_classes = _forward(model, x[:1].to(device), False).shape[1]
        check_classes(num_classes, y)
        check_autoattack(norm, eps, attacks, num_classes, x.shape[1:])
        version = "standard" if attacks is None else "custom"
        aa = AutoAttack(model, norm=norm, eps=eps, version=version, attacks=None if attacks is None else chosen,
                        seed=seed, device=device)
        aa.verbose = progress
        aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = min(9, num_classes - 1)
        # a subset runs as in the standard version (one restart each): "custom" kept the constructor's 5 restarts of
        # APGD and FAB, five times the standard run's work for a "quicker" look
        aa.apgd.n_restarts = aa.fab.n_restarts = aa.apgd_targeted.n_restarts = 1
        x_adv, y_adv = aa.run_standard_evaluation(x, y, batch_size=batch_size)
        clean = torch.cat([_forward(model, b.to(device), False).argmax(1).cpu() for b in x.split(batch_size)])
    delta = (x_adv - x).flatten(1)
    size = delta.norm(dim=1) if norm == "L2" else delta.abs().amax(dim=1)
    return {"clean_accuracy": float((clean == y).float().mean()),
            "autoattack_accuracy": float((y_adv.cpu() == y).float().mean()),
            "n": int(y.numel()), "norm": norm, "eps": float(eps), "version": version, "attacks": chosen,
            "seed": seed, "batch_size": batch_size, "max_perturbation": float(size.max())}


def model_info(result: dict[str, Any], name: str, architecture: str, dataset: str,
               additional_data: bool | None = None) -> dict[str, Any]:
    """A RobustBench-style model_info.json entry (accuracies as percent strings, as RobustBench keeps them).
    `additional_data`: whether training saw images beyond the dataset's (DAT's CIFAR models: 80M Tiny Images as
    OOD seeds, as RATIO's entry says); None writes null, "not known", rather than a guess."""
    if additional_data is not None and not isinstance(additional_data, bool):
        raise ValueError(f"additional_data must be true, false or None (not known); got {additional_data!r}")
    return {"name": name, "architecture": architecture, "dataset": dataset, "threat_model": result["norm"],
            "eps": eps_text(result["eps"], result["norm"]), "clean_acc": f"{100 * result['clean_accuracy']:.2f}",
            "autoattack_acc": f"{100 * result['autoattack_accuracy']:.2f}", "additional_data": additional_data,
            "number_forward_passes": 1, "n_examples": result["n"], "autoattack_version": result["version"],
            "attacks": result["attacks"], "link": "", "authors": "", "venue": "", "reported": "",
            "footnote": f"AutoAttack ({result['version']}: {', '.join(result['attacks'])}) on {result['n']} "
                        f"images, seed {result['seed']}, via pyautoattack"}
