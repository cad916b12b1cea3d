"""The architecture registry: each family registers its builders with their defaults (input size,
normalization), the way timm names its models; `build_model` (in `config`, which checks what it builds) is
the one constructor.

A family module calls `register(name, builder, ...)` for fixed names or `register_family(pattern, ...)`
for a parametrised name such as `wrn-<depth>-<widen>`; importing `dat_core.models` registers them all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn

from .base import Classifier

# the official statistics to the digit (InNOutRobustness model_normalization.Cifar10Wrapper, rebm WideResNet): imported
# official checkpoints then give the official logits; rounded values moved them by ~1e-4 (a checkpoint keeps its own)
CIFAR10_NORMALIZATION = ((0.4913997551666284, 0.48215855929893703, 0.4465309133731618),
                         (0.24703225141799082, 0.24348516474564, 0.26158783926049628))
CIFAR100_NORMALIZATION = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
IMAGENET_NORMALIZATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
NO_NORMALIZATION = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
"""For models that take [0,1] pixels as they are (the ImageNet ConvNeXt-CvSt checkpoints)."""

NORMALIZATIONS = {"none": NO_NORMALIZATION, "imagenet": IMAGENET_NORMALIZATION,
                  "cifar10": CIFAR10_NORMALIZATION, "cifar100": CIFAR100_NORMALIZATION}
"""Named input normalizations, (mean, std). NB the official CIFAR-100 WRNs were trained with the
CIFAR-10 statistics (METHOD §8), so they import with "cifar10", not "cifar100"."""


@dataclass(frozen=True)
class ArchSpec:
    """How to build one architecture (or a parametrised family) and the defaults its config gets."""

    builder: Callable[..., Classifier]        # builder(config, **params) -> Classifier
    image_size: int
    normalization: tuple[tuple[float, ...], tuple[float, ...]]   # (mean, std)
    parse: Callable[[re.Match], dict[str, Any]] | None = None   # pattern families: name -> builder params
    examples: tuple[str, ...] = ()


_NAMED: dict[str, ArchSpec] = {}
_FAMILIES: dict[re.Pattern, ArchSpec] = {}


def register(name: str, builder: Callable[..., Classifier], *, image_size: int,
             normalization: tuple[tuple[float, ...], tuple[float, ...]]) -> None:
    """Register a fixed architecture name."""
    if name in _NAMED:
        raise ValueError(f"architecture {name!r} is registered twice")
    _NAMED[name] = ArchSpec(builder, image_size, normalization, examples=(name,))


def register_family(pattern: str, builder: Callable[..., Classifier], *, image_size: int,
                    normalization: tuple[tuple[float, ...], tuple[float, ...]],
                    parse: Callable[[re.Match], dict[str, Any]], examples: tuple[str, ...]) -> None:
    """Register a parametrised family: names matching `pattern` build with `builder(config, **parse(match))`
    (matched as ASCII: `\\d` takes 0-9 only, so "wrn-١٠-1" is not stored as a name of wrn-10-1)."""
    _FAMILIES[re.compile(pattern, re.ASCII)] = ArchSpec(builder, image_size, normalization, parse, examples)


def known_archs() -> tuple[str, ...]:
    """Every registered name (families by their example names)."""
    return tuple(name for spec in (*_FAMILIES.values(), *_NAMED.values()) for name in spec.examples)


def find_arch(arch: str) -> tuple[ArchSpec, dict[str, Any]]:
    """The spec of `arch` and the builder parameters its name encodes; ValueError lists the known ones."""
    arch = arch.lower()
    if arch in _NAMED:
        return _NAMED[arch], {}
    for pattern, spec in _FAMILIES.items():
        m = pattern.fullmatch(arch)
        if m is not None:
            return spec, spec.parse(m)
    shown = arch if len(arch) <= 64 else arch[:64] + "..."   # a name of any length may come from a TOML file
    raise ValueError(f"unknown architecture {shown!r}; known: {', '.join(known_archs())} "
                     "(and wrn-<depth>-<widen> for depth 6n+4 from 10 to 202, widen 1 to 32)")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
