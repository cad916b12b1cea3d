"""What the hardware can do fast: decides whether bf16 autocast pays off on this machine."""

from __future__ import annotations

import functools
from pathlib import Path

import torch


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> str:
    """/proc/cpuinfo, read once (the app asks on every request)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def native_bf16(device: torch.device, cpuinfo: str | None = None) -> bool:
    """CUDA, or a CPU with bf16 instructions (AVX512-BF16 / AMX). Without them (e.g. AVX2-only CPUs)
    PyTorch emulates bf16 and autocast runs ~10x slower than fp32; with them it is ~2x faster.
    `cpuinfo` is the text of /proc/cpuinfo (read when None)."""
    if device.type != "cpu":
        return device.type == "cuda"
    if cpuinfo is None:
        cpuinfo = _cpuinfo()
    return "avx512_bf16" in cpuinfo or "amx_bf16" in cpuinfo


AUTOCAST_CHOICES = ("auto", "on", "off", "true", "false")


def use_autocast(spec: str | bool, device: torch.device) -> bool:
    """Resolve an autocast setting: `auto` is bf16 exactly where it is native (see `native_bf16`);
    on/true and off/false force it (a bool passes through)."""
    if isinstance(spec, bool):
        return spec
    if spec not in AUTOCAST_CHOICES:
        raise ValueError(f"autocast must be one of {', '.join(AUTOCAST_CHOICES)}, got {spec!r}")
    return spec in ("on", "true") or (spec == "auto" and native_bf16(device))
