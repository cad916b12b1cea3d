"""The app's compiled fast path: each loaded model gets a `dat_core.runtime.FastPath`, compiled in the background
for the shapes the app's requests use, so the first click never waits for a compile.

Compiling is per input shape (and grad mode, autocast, layout): the warm-ups below run the app's own calls at
tiny step counts, most used first, and each one's shapes serve compiled as soon as it finishes. A request of
any other shape runs eager (it never compiles inside a request). Shapes warmed:
- one counterfactual path: batch 1, PGD step (grad) and the final frame's no-grad forward;
- the all-targets batch: every class (at most `MAX_ALL_TARGETS`), in `explain.counterfactuals`' batches
  (its default `max_batch`, which the All targets tab uses); Generate's "all classes" batch is the same shape;
- one landscape batch (`explain.landscape.default_batch_size`, channels-last, no grad).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn

import explain
from dat_core.models import class_names_of
from dat_core.pgd import attack_mode
from dat_core.runtime import FastPath, model_device, use_autocast, use_compile
from explain.landscape import default_batch_size

from .inputs import MAX_ALL_TARGETS

Warmup = Callable[[nn.Module], Any]


def request_warmups(model: nn.Module, autocast: bool) -> list[Warmup]:
    """The app's request shapes for `model`, as calls to compile through (most used first)."""
    size = int(model.config.get("image_size", 32))
    k = len(class_names_of(model.config))
    device = model_device(model)
    image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))

    def path(m: nn.Module) -> None:
        explain.counterfactual(m, image, 1 % k, steps=1, autocast=autocast)

    def all_targets(m: nn.Module) -> None:
        explain.counterfactuals(m, image, list(range(min(k, MAX_ALL_TARGETS))), steps=1, autocast=autocast)

    def landscape(m: nn.Module) -> None:
        batch = torch.rand(default_batch_size(size, size), 3, size, size, device=device)
        with attack_mode(m), torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            m(batch.contiguous(memory_format=torch.channels_last))

    return [path, all_targets, landscape]


def fast_path(model: nn.Module, compile: str | bool, autocast: str | bool, name: str = "model") -> FastPath:
    """`model` behind a FastPath: compiling in the background where `compile` resolves on for its device
    (`auto`: CUDA or a C++ compiler), eager at once otherwise."""
    device = model_device(model)
    enabled = use_compile(compile, device)
    warmups = request_warmups(model, use_autocast(autocast, device)) if enabled else []
    return FastPath(model, enabled, warmups, background=True, name=name)
