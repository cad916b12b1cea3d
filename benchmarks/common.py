"""Shared benchmark plumbing: medians of repeated timings, machine facts, the final JSON line."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402


def device_name(text: str) -> str:
    """--device: a name `torch.device` takes, of a device this machine has (`resolve_device`'s check), as typed; a
    usage error at once, not a traceback from the first model move."""
    from dat_core.runtime import resolve_device

    try:
        resolve_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def arch_spec(text: str, sized: bool = True, known: bool = True) -> str:
    """An architecture (`known`: one the registry has) with, where `sized`, an optional `@SIZE` in pixels, checked
    for every name before the first runs: a misspelt second one failed after the first one's whole run."""
    from dat_core.models import find_arch
    from dat_core.models.config import IMAGE_SIZE

    arch, at, size = text.partition("@")
    lo, hi = IMAGE_SIZE   # what a model's config may hold
    if at and (not sized or not size.isdigit() or not lo <= int(size) <= hi):
        raise argparse.ArgumentTypeError(f"{text!r}: expected ARCH@SIZE with SIZE in {lo}..{hi} pixels" if sized
                                         else f"{text!r}: expected an architecture name (no @SIZE here)")
    if known:
        try:
            find_arch(arch)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return text


def sync() -> None:
    """Wait for queued GPU work (CUDA calls return before their kernels finish); nothing on a CPU."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall time of `fn()` in seconds (after `warmup` untimed calls). Each timing starts on an idle
    device, so it holds its own call's work, not what a warm-up or an earlier benchmark left queued."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cpu_name() -> str:
    """The CPU's model name (platform.processor() is empty on most Linux systems)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    info = {"cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cores": os.cpu_count(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def emit(result: dict[str, Any]) -> None:
    """The last line of every benchmark: one JSON object (with the peak GPU memory where there is a GPU)."""
    if torch.cuda.is_available():
        result = {**result, "peak_cuda_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3)}
    print(json.dumps(result), flush=True)
