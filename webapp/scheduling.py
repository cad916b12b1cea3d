"""How the app's model computations share the machine: how many run at once (`workers`; the rest wait in Gradio's
queue) and how many torch threads each one uses.

Chosen by measurement (benchmarks/fast_path.py, BENCHMARKS.md "Fast path and scheduling"): on a CPU, one thread per
computation and one computation per core. A batch-1 PGD step is a chain of small operators; spread over several
threads, each operator ends in a barrier where the threads spin-wait for each other, and when another process
holds one of the cores (a shared CPU Space, another tenant, a second request) those barriers stall: the same
60-step path took 30.8 s on 2 threads against 1.2 s on 1 thread beside one busy neighbour. On CUDA the GPU runs
one computation at a time anyway: one worker, torch's default threads.
"""

from __future__ import annotations

import os

import torch

MAX_COUNT = 64
"""Most computations at once, or threads each: beyond it a typo (--workers 100000) would let every queued request
hold a model's activations at once."""
CHOICES = f"auto or a whole number from 1 to {MAX_COUNT}"


def parse_count(name: str, value: str | int) -> int | None:
    """`auto` -> None (decided by `plan`), else a whole number >= 1; ValueError naming `name` otherwise."""
    if value == "auto":
        return None
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {CHOICES}, got {value!r}") from None
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"{name} must be {CHOICES}, got {value!r}")
    return count


def plan(workers: str | int = "auto", threads: str | int = "auto", cuda: bool | None = None,
         cores: int | None = None) -> tuple[int, int]:
    """(computations at once, torch threads each): `auto` is one computation per core with one thread each on a
    CPU, one computation with every core's thread on CUDA."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    w, t = parse_count("workers", workers), parse_count("threads", threads)
    if cuda:
        return w or 1, t or cores
    t = t or 1
    return w or max(1, cores // t), t


def apply_threads(threads: int) -> None:
    """Set torch's threads for this process before any computation: worker threads take it on their first
    parallel operator (a thread that already ran one keeps its own)."""
    torch.set_num_threads(threads)
