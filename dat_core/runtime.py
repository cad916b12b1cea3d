"""Where and how code runs: device choice, bf16 autocast, memory layout, seeded RNG.

One home for these switches, so the trainer, the evaluation, the explain CLI and the app decide them
the same way (the compile switch of the fast path lands here too).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .cli_types import MAX_SEED

# ---------------------------------------------------------------- devices

def resolve_device(spec: str | torch.device | None = None, local_rank: int = 0) -> torch.device:
    """`None` / "auto" -> cuda:<local_rank> where CUDA exists, else cpu; otherwise the named device, where a bare
    "cuda" also means this process's GPU, cuda:<local_rank> (under torchrun each rank its own; set_device and
    DDP's device_ids need the index).

    ValueError (not a traceback) for a malformed name, for CUDA or MPS asked for where there is none, and for a
    GPU index, named or this rank's, that the machine does not have.
    """
    if spec is None or spec == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(spec)
        except (RuntimeError, TypeError):
            raise ValueError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} requested but CUDA is not available here; use cpu")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device {spec!r} requested but MPS is not available here; use cpu")
        if device.type == "mps" and device.index not in (None, 0):
            raise ValueError(f"device {spec!r} requested but MPS has one device; use mps")
        if device.type not in ("cpu", "cuda", "mps"):
            raise ValueError(f"unsupported device {spec!r}; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        index = local_rank if device.index is None else device.index
        if not 0 <= index < torch.cuda.device_count():   # set_device would fail with "invalid device ordinal"
            rank = "" if device.index is not None else f" for local rank {local_rank} (cuda:{index})"
            raise ValueError(f"device {spec!r}{rank} requested but this machine has {torch.cuda.device_count()} "
                             "GPU(s); run at most one process per GPU")
        device = torch.device("cuda", index)
    return device


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's parameters (CPU for a parameter-free module)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


# ---------------------------------------------------------------- bf16 autocast

@functools.lru_cache(maxsize=1)
def _cpuinfo() -> str:
    """/proc/cpuinfo, read once (the app asks on every request)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def native_bf16(device: torch.device, cpuinfo: str | None = None) -> bool:
    """A GPU with bf16 units (Ampere and newer), or a CPU with bf16 instructions (AVX512-BF16 / AMX).
    Elsewhere PyTorch emulates bf16: pre-Ampere GPUs gain nothing, and on AVX2-only CPUs autocast runs
    ~10x slower than fp32 (with the instructions it is ~2x faster). `cpuinfo` is the text of /proc/cpuinfo
    (read when None)."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        with torch.cuda.device(device):
            return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
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


# ---------------------------------------------------------------- memory layout

def channels_last(model: nn.Module) -> nn.Module:
    """Store a CPU model's weights channels-last (in place; values unchanged) and return it.

    oneDNN then runs every convolution, forward and backward, on its channels-last path, which at
    the batch sizes of explanations (1-10) costs 10-20% less CPU time per PGD step than NCHW weights
    (measured on WRNs, AVX2). Each step agrees to float rounding; over a long PGD path the rounding
    differences grow (~1e-2 per pixel after 60 steps), as between any two convolution implementations.
    For models we load ourselves (CLI, app), not for a model a caller passes in.
    """
    if model_device(model).type == "cpu":
        model.to(memory_format=torch.channels_last)
    return model


def memory_format(model: nn.Module) -> torch.memory_format:
    """The layout of the model's convolution weights (its first k x k kernel with k > 1), for its inputs.

    A channels-last input to a model with NCHW weights (or the reverse) makes oneDNN reorder the weights
    on every call; at batch 1 on WRN-34-10 that doubled the cost of a gradient.
    """
    for p in model.parameters():
        if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1:
            return torch.channels_last if p.is_contiguous(memory_format=torch.channels_last) else \
                torch.contiguous_format
    return torch.contiguous_format


# ---------------------------------------------------------------- RNG

def check_seed(seed: Any) -> int:
    """A seed is an integer in 0..2**63-1: what every generator here accepts alike (torch's and numpy's took
    different ranges, and a too-large one failed deep inside with "Overflow when unpacking long long")."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"seed must be an integer in 0..2**63-1; got {seed!r}")
    return int(seed)


@contextmanager
def seeded(seed: int | None, device: torch.device, numpy_too: bool = False) -> Iterator[None]:
    """Seed torch's global RNG (and numpy's legacy one with `numpy_too`, which Captum draws from) for the
    block, restoring the caller's RNG state afterwards. `seed=None` leaves everything as it is."""
    if seed is None:
        yield
        return
    seed = check_seed(seed)
    np_state = np.random.get_state() if numpy_too else None
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        if numpy_too:
            np.random.seed(seed % 2**32)  # numpy's legacy seed is 32-bit
        try:
            yield
        finally:
            if np_state is not None:
                np.random.set_state(np_state)


# ---------------------------------------------------------------- compiled fast path

COMPILE_CHOICES = ("auto", "on", "off")
GRAPHS_PER_FUNCTION = 64
"""Graphs dynamo may keep for one function. Every model's forward is one function to it (`Classifier.forward`),
and each input signature, architecture and config (a calibrated model's temperature) needs a graph of its own:
the app's two bundled models already pass dynamo's default of 8, and past the limit a shape runs eager silently."""
log = logging.getLogger("dat_core.runtime")


def can_compile(device: torch.device) -> bool:
    """Whether torch.compile (inductor) can build kernels here: CUDA, or a CPU with a C++ compiler."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++") if c)


def use_compile(spec: str | bool, device: torch.device) -> bool:
    """Resolve a compile setting: `auto` = where `can_compile`; on/off force it (a bool passes through)."""
    if isinstance(spec, bool):
        return spec
    if spec not in COMPILE_CHOICES:
        raise ValueError(f"compile must be one of {', '.join(COMPILE_CHOICES)}, got {spec!r}")
    return spec == "on" or (spec == "auto" and can_compile(device))


def inductor_cache_dir() -> Path:
    """Where inductor keeps compiled kernels between runs (a warm cache makes the next compile ~6x faster):
    $TORCHINDUCTOR_CACHE_DIR if set, else ~/.cache/dat-explainer/inductor (or $XDG_CACHE_HOME's)."""
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = base / "dat-explainer" / "inductor"
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    return path


def input_signature(x: torch.Tensor, training: bool) -> tuple:
    """What decides which compiled graph serves a call (dynamo guards on these): shape, dtype, device, layout,
    grad mode, whether the input asks for its gradient, autocast, and the model's train/eval mode."""
    return (tuple(x.shape), x.dtype, x.device.type, x.is_contiguous(memory_format=torch.channels_last),
            torch.is_grad_enabled(), x.requires_grad, torch.is_autocast_enabled(x.device.type),
            torch.get_autocast_dtype(x.device.type), training)


class CompiledDispatch(nn.Module):
    """The eager model and its compiled twin behind one module: a call goes to the compiled one only when its
    `input_signature` was compiled by a warm-up, so a request never waits for a compile (an unseen shape would
    otherwise compile for seconds inside the request); everything else runs eager. With `lazy=True` (one-shot
    runs such as the CLI's, where nothing waits on a request) an unseen signature that asks for its input's
    gradient (a PGD or sampling step: the loop a run spends its time in) compiles when first met instead, so
    every batch of a long run runs compiled whatever its size, while one-off no-grad calls (predictions, a
    final judgement) stay eager rather than wait for a compile; a compile error runs that call eager, says so
    once, and leaves later unseen signatures eager. Attributes the model has (`config`, ...) read through."""

    def __init__(self, eager: nn.Module, compiled: nn.Module, lazy: bool = False):
        super().__init__()
        self.eager = eager
        self.__dict__["_compiled"] = compiled            # not a submodule: its parameters are the eager ones
        self.__dict__["ready"] = frozenset()             # signatures compiled so far (replaced, never mutated)
        self.__dict__["_warming"] = threading.local()    # the warm-up thread's record of what it compiled
        self.__dict__["lazy"] = lazy

    @property
    def training(self) -> bool:
        """The eager model's mode: this wrapper has none of its own (nn.Module's default True would otherwise
        make `model.train(model.training)` switch an eval model to training)."""
        eager = self.__dict__.get("_modules", {}).get("eager")
        return True if eager is None else eager.training

    @training.setter
    def training(self, mode: bool) -> None:
        pass  # nn.Module.train(mode) sets it, then passes the mode on to the eager model, which holds it

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        sig = input_signature(x, self.eager.training)
        seen = getattr(self._warming, "seen", None)
        if seen is not None:
            seen.add(sig)
            return self._compiled(x, *args, **kwargs)
        if sig in self.ready:
            return self._compiled(x, *args, **kwargs)
        if not (self.lazy and x.requires_grad and torch.is_grad_enabled()):
            return self.eager(x, *args, **kwargs)
        try:
            out = self._compiled(x, *args, **kwargs)
            # the backward graph is lowered at its first use, in the caller's PGD step: lower it here, where an
            # error can still fall back to eager (one extra backward per compiled shape)
            if isinstance(out, torch.Tensor) and out.requires_grad and x.requires_grad:
                torch.autograd.grad(out, x, torch.zeros_like(out), retain_graph=True, allow_unused=True)
        except Exception as e:  # compile errors surface at the first call of a shape
            self.__dict__["lazy"] = False
            log.warning("torch.compile failed for input %s, running eager from now on: %s: %s", tuple(x.shape),
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            return self.eager(x, *args, **kwargs)
        self.__dict__["ready"] = self.ready | {sig}
        return out

    def warm(self, warmup: Callable[[nn.Module], Any]) -> None:
        """Run one warm-up through the compiled model; the signatures it met serve compiled from then on."""
        self._warming.seen = set()
        try:
            warmup(self)
            self.__dict__["ready"] = self.ready | self._warming.seen
        finally:
            self._warming.seen = None

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_modules"]["eager"], name)


class FastPath:
    """A model and its `torch.compile`d twin, compiled off the caller's thread.

    `model` is the eager model until the first warm-up (a request shape the caller will use: compiling is per
    input shape) has compiled, then a `CompiledDispatch`: calls whose shape a warm-up compiled run compiled, the
    rest eager; each warm-up's shapes go live as it finishes (list the most used first). A compile error anywhere
    leaves the eager model alone in place, with one log line. The two share parameters. When compiling, parameter
    gradients are switched off for good so PGD's `attack_mode` never changes what the compiled graph depends on.
    `lazy=True`: other gradient-taking shapes compile when first called (`CompiledDispatch`'s one-shot mode, for
    the CLI).
    """

    def __init__(self, model: nn.Module, enabled: bool, warmups: Sequence[Callable[[nn.Module], Any]] = (),
                 background: bool = True, name: str = "model", lazy: bool = False):
        self.eager = model.requires_grad_(False) if enabled else model
        self.name = name
        self.lazy = lazy
        self.error: BaseException | None = None
        self.seconds: float | None = None  # compile time, warm-ups included, once done
        self._dispatch: CompiledDispatch | None = None
        self._done = threading.Event()
        if not enabled:
            self._done.set()
            return
        if background:
            threading.Thread(target=self._build, args=(warmups,), name=f"compile-{name}", daemon=True).start()
        else:
            self._build(warmups)

    @property
    def model(self) -> nn.Module:
        d = self._dispatch
        return d if d is not None and (d.ready or d.lazy) else self.eager

    @property
    def compiled(self) -> bool:
        """Every warm-up has compiled (calls of their shapes run compiled)."""
        return self._done.is_set() and self.model is not self.eager

    def wait(self, timeout: float | None = None) -> bool:
        """Block until compiling has finished (or failed); True if it finished within `timeout`."""
        return self._done.wait(timeout)

    def _build(self, warmups: Sequence[Callable[[nn.Module], Any]]) -> None:
        start = time.perf_counter()
        dispatch = None
        try:
            inductor_cache_dir()
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, GRAPHS_PER_FUNCTION)
            dispatch = CompiledDispatch(self.eager, torch.compile(self.eager, dynamic=False), self.lazy)
            for warmup in warmups:
                dispatch.warm(warmup)
                self._dispatch = dispatch
            self._dispatch = dispatch
            self.seconds = time.perf_counter() - start
            log.info("compiled %s in %.1f s (%d input shapes%s)", self.name, self.seconds, len(dispatch.ready),
                     "; others as first met" if self.lazy else "")
        except Exception as e:  # any compile failure: stay eager, say so once
            self.error = e
            self._dispatch = None
            log.warning("torch.compile failed for %s, staying eager: %s: %s", self.name, type(e).__name__,
                        str(e).splitlines()[0] if str(e) else "")
        finally:
            self._done.set()
