"""The one PGD engine: training, evaluation, sampling and counterfactuals all call `pgd`.

A threat model is an object with `step`, `project` and `random_perturb` (as in MadryLab's
robustness `attack_steps`); the loop does not care which norm it runs. Step math is fp32 even
when the forward/backward runs under bf16 autocast.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

OBJECTIVES = ("ce", "target_logit", "target_ce", "energy", "kl_uniform")


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def _column(v: float | torch.Tensor, x: torch.Tensor) -> float | torch.Tensor:
    """A scalar, or a per-sample (N,) tensor shaped to broadcast over x (another length broadcast 2 radii over
    1 image into 2 images, or failed deep in a step)."""
    if not isinstance(v, torch.Tensor):
        return v
    if v.numel() not in (1, x.shape[0]):
        raise ValueError(f"a per-sample eps or step_size needs one value per image: {v.numel()} for {x.shape[0]}")
    return v.to(x).reshape(-1, *([1] * (x.dim() - 1)))


@dataclass(frozen=True, eq=False)
class ThreatModel:
    """Norm ball of radius `eps` (may be inf) around the start image, walked with `step_size`.

    `eps` and `step_size` may also be per-sample (N,) tensors, so runs with different radii share
    one batch (e.g. the bisection of a minimal counterfactual).
    """

    eps: float | torch.Tensor
    step_size: float | torch.Tensor

    def __post_init__(self) -> None:
        eps, step = torch.as_tensor(self.eps, dtype=torch.float64), torch.as_tensor(self.step_size, dtype=torch.float64)
        if not bool((eps >= 0).all()):  # also rejects NaN
            raise ValueError(f"eps must be >= 0 (inf allowed), got {self.eps}")
        if not bool((torch.isfinite(step) & (step >= 0)).all()):
            raise ValueError(f"step_size must be finite and >= 0, got {self.step_size}")
        top = [float(t[torch.isfinite(t)].max()) if torch.isfinite(t).any() else None for t in (eps, step)]
        check_pixel_units(self.norm, *top)   # the largest finite radius and step (per-sample tensors too)

    @property
    def bounded(self) -> bool:
        """False when every radius is infinite (projection is a no-op)."""
        return bool(torch.isfinite(torch.as_tensor(self.eps)).any())

    norm = ""

    def step(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def project(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def random_perturb(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x plus a point drawn uniformly from the ball (finite eps) of the coordinates `mask` allows (all without
        one): drawn over the whole image and masked after, an L2 start shrank to ~eps * sqrt(the mask's share)."""
        if not bool(torch.isfinite(torch.as_tensor(self.eps)).all()):
            raise ValueError("a random start needs a finite eps")
        free = torch.ones_like(x, dtype=torch.bool) if mask is None else mask.expand_as(x)
        return x + _column(self.eps, x) * self._unit_draw(x, free)

    def _unit_draw(self, x: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _in_unit_ball(d: torch.Tensor, p: int, free: torch.Tensor) -> torch.Tensor:
    """Noise `d` on the free coordinates (Gaussian for L2, Laplace for L1: normalized, uniform on the L_p sphere)
    scaled to a uniform point of the unit L_p ball: radius u^(1/k) for k free coordinates, per sample."""
    k = _column(free.flatten(1).sum(1).clamp(min=1), d)
    r = torch.rand(k.shape, device=d.device) ** (1.0 / k)
    return r * d / (_column(d.flatten(1).norm(p=p, dim=1), d) + 1e-12)


class L2(ThreatModel):
    """Per-sample normalized-gradient steps; projection onto the L2 ball."""

    norm = "L2"

    def step(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        # grad over its largest |entry| first: ||grad||^2 underflowed fp32 (|grad| ~ 1e-20: a confident model's CE)
        g = grad / grad.flatten(1).abs().amax(1).clamp_min(torch.finfo(grad.dtype).tiny).view(-1, *[1] * (x.dim() - 1))
        return x + _column(self.step_size, x) * g / (_per_sample_norm(g) + 1e-12)

    def project(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        if not self.bounded:
            return x
        delta = x - x0
        scale = (_column(self.eps, x) / (_per_sample_norm(delta) + 1e-12)).clamp(max=1.0)
        return x0 + delta * scale

    def _unit_draw(self, x: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
        return _in_unit_ball(torch.randn_like(x) * free, 2, free)


class Linf(ThreatModel):
    """Sign steps; projection onto the Linf box."""

    norm = "Linf"

    def step(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return x + _column(self.step_size, x) * grad.sign()

    def project(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        eps = _column(self.eps, x)   # inf: min(x, inf) and max(x, -inf) are x itself
        return torch.max(torch.min(x, x0 + eps), x0 - eps)

    def _unit_draw(self, x: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(x).uniform_(-1, 1) * free   # a box: every coordinate on its own


def project_l1(delta: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each sample of `delta` onto the L1 ball of radius eps (sort-based, Duchi et al.
    2008): soft-threshold |delta| at the theta giving L1 norm eps, summed in >= fp32; inside stays put."""
    flat = delta.flatten(1).to(torch.promote_types(delta.dtype, torch.float32))
    a = flat.abs()
    r = torch.as_tensor(eps, dtype=a.dtype, device=a.device).expand(len(a)).reshape(-1, 1)
    outside = (a.sum(1, keepdim=True) > r).squeeze(1)
    if not bool(outside.any()):
        return delta
    u = a.sort(dim=1, descending=True).values
    cumulative = u.cumsum(1) - r
    k = torch.arange(1, a.shape[1] + 1, device=a.device, dtype=a.dtype)
    rho = (u * k > cumulative).sum(1, keepdim=True).clamp(min=1)       # the count of coordinates kept
    theta = (cumulative.gather(1, rho - 1) / rho.to(a.dtype)).clamp(min=0)
    shrunk = flat.sign() * (a - theta).clamp(min=0)
    return torch.where(outside[:, None], shrunk, flat).view_as(delta).to(delta.dtype)


@dataclass(frozen=True, eq=False)
class L1(ThreatModel):
    """Sparse steps: each step moves only the `sparsity` share of coordinates with the largest |gradient|
    (that can still move that way inside [0,1]), by step_size in L1 norm split evenly; projection onto the L1
    ball. Sparse counterfactuals change few pixels (the L1 line of SVCE / L1-APGD, Croce & Hein)."""

    sparsity: float = 0.01
    norm = "L1"

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, (int, float, np.floating)) \
                or not 0 < self.sparsity <= 1:   # NaN too
            raise ValueError(f"sparsity is the share of coordinates an L1 step moves, in (0, 1], got {self.sparsity!r}")

    def step(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        g = grad.flatten(1)
        movable = ((g > 0) & (x.flatten(1) < 1)) | ((g < 0) & (x.flatten(1) > 0))
        score = torch.where(movable, g.abs(), torch.zeros_like(g))
        k = max(1, round(self.sparsity * g.shape[1]))
        top = score.topk(k, dim=1)
        keep = torch.zeros_like(g).scatter_(1, top.indices, (top.values > 0).to(g.dtype))
        n = keep.sum(1, keepdim=True).clamp(min=1)
        return x + _column(self.step_size, x) * (g.sign() * keep / n).view_as(x)

    def project(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        if not self.bounded:
            return x
        return x0 + project_l1(x - x0, self.eps)

    def _unit_draw(self, x: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
        return _in_unit_ball(torch.distributions.Laplace(0.0, 1.0).sample(x.shape).to(x) * free, 1, free)


THREAT_MODELS: dict[str, type[ThreatModel]] = {"L2": L2, "Linf": Linf, "L1": L1}
NORMS = tuple(THREAT_MODELS)
"""The norms a threat model can have (the CLIs, the app and training configs take theirs from here)."""


def threat_model(norm: str, eps: float, step_size: float) -> ThreatModel:
    """`threat_model("L2", 0.5, 0.1)`; norm is case-insensitive ("l2", "linf", "Linf")."""
    kinds = {name.lower(): cls for name, cls in THREAT_MODELS.items()}
    if not isinstance(norm, str) or norm.lower() not in kinds:
        raise ValueError(f"unknown norm {norm!r}; use {' or '.join(map(repr, NORMS))}")
    eps, step_size = _number("eps", eps), _number("step_size", step_size)
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0 (inf: no limit), got {eps}")
    if not (math.isfinite(step_size) and step_size > 0):   # a step of 0 or NaN ran a PGD that moves nothing
        raise ValueError(f"step_size must be a finite number > 0, got {step_size}")
    return kinds[norm.lower()](eps, step_size)   # the ball checks its own units (`check_pixel_units`)


def check_pixel_units(norm: str, eps: float | None = None, step_size: float | None = None) -> None:
    """Refuse a Linf radius in (1, inf) or a Linf step above 1: on [0,1] images such a number is a budget in pixel
    units (8 for 8/255), and the path saturates every pixel at its first step, so it bounds nothing."""
    def hint(v: float) -> str:   # k/255 only where it reads the number back as a budget
        return f" (did you mean {v:g}/255?)" if float(v).is_integer() and v <= 255 else ""
    if not isinstance(norm, str) or norm.lower() != "linf":
        return
    if eps is not None and 1 < eps < math.inf:
        raise ValueError(f"a Linf radius is per pixel of a [0,1] image, at most 1: eps {eps:g} bounds "
                         f"nothing{hint(eps)}; use inf for no limit")
    if step_size is not None and step_size > 1:
        raise ValueError(f"a Linf step is per pixel of a [0,1] image, at most 1: step_size {step_size:g} sets every "
                         f"pixel to 0 or 1 at once{hint(step_size)}")


def _number(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


@dataclass
class PGDResult:
    """Final images plus, when recorded, the trajectory x_0..x_T (every k-th step and the last)."""

    x: torch.Tensor
    steps: list[int] | None = None          # step index of each recorded frame
    frames: torch.Tensor | None = None      # (F, N, C, H, W) on the input's device
    logits: torch.Tensor | None = None      # (F, N, K) float32, logits of each recorded frame
    stopped_at: int | None = None           # the step after which `on_step` said STOP (None: ran all steps)


@dataclass(frozen=True)
class PGDStep:
    """What `on_step` sees after step t: the new iterate x_t and the logits f(x_{t-1}) of the forward
    that step took (no extra pass). Tensors are detached; do not modify them in place."""

    step: int                 # t, 1..steps
    steps: int                # T
    x: torch.Tensor           # x_t, (N, C, H, W) float32
    logits: torch.Tensor      # f(x_{t-1}), (N, K) float32


STOP: Literal["stop"] = "stop"
"""Returned by an `on_step` callback to end the run after the current step."""

OnStep = Callable[[PGDStep], "str | None"]


def objective_value(logits: torch.Tensor, y: torch.Tensor | None, objective: str) -> torch.Tensor:
    """Per-sample quantity that PGD *ascends*."""
    if objective == "energy":  # lower E(x) = raise logsumexp
        return torch.logsumexp(logits, dim=1)
    if objective == "kl_uniform":  # KL(uniform || p(.|x)): push the softmax away from uniform (MSP attacks)
        return -F.log_softmax(logits, dim=1).mean(1) - math.log(logits.shape[1])
    if y is None:
        raise ValueError(f"objective {objective!r} needs labels y")
    if objective == "ce":  # untargeted: move away from y
        return F.cross_entropy(logits, y, reduction="none")
    if objective == "target_logit":  # lower E(x, y)
        return logits.gather(1, y.view(-1, 1)).squeeze(1)
    if objective == "target_ce":
        return -F.cross_entropy(logits, y, reduction="none")
    raise ValueError(f"unknown objective {objective!r}; use one of {OBJECTIVES}")


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients for the attack; both restored afterwards, module by module: a
    wrapper's own `training` flag need not be its model's (a fresh nn.Module wrapper says True around an eval
    model), and `model.train(flag)` would put the whole model in that mode (BatchNorm on batch statistics,
    updating its running statistics on every later forward)."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


@torch.no_grad()
def logits_at(model: nn.Module, x: torch.Tensor, autocast: bool = False) -> torch.Tensor:
    """fp32 logits at x as PGD saw the model (`attack_mode`): the read-out after a run, which in the model's own
    mode (train) used batch statistics and moved its BatchNorm running statistics."""
    with attack_mode(model), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        return model(x).float()


def check_images(x: torch.Tensor) -> None:
    """Images as every pass here takes them: a non-empty float NCHW tensor, finite, in [0,1]."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"images must be a float NCHW tensor, got {tuple(getattr(x, 'shape', ()))} "
                         f"{getattr(x, 'dtype', type(x).__name__)}")
    if x.shape[0] == 0:
        raise ValueError("images must hold at least one image")
    if not torch.isfinite(x).all():
        raise ValueError("images contain NaN or inf")
    lo, hi = x.min().item(), x.max().item()
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"images must lie in [0,1], got range [{lo:.3g}, {hi:.3g}]")


def check_labels(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """One integer class index per image, inside the model's classes (from its config, where it has one).
    Checked here, not left to a gather or cross-entropy: out of range, that is an IndexError on the CPU but a
    device-side assert on a GPU, which ends the process's CUDA context."""
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"labels must be a torch tensor of class indices, one per image, got {type(y).__name__}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"labels must have shape ({x.shape[0]},), one per image, got {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got {y.dtype}")
    config = getattr(model, "config", None)
    classes = config.get("num_classes") if isinstance(config, dict) else None
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or (isinstance(classes, int) and hi >= classes):
        raise ValueError(f"labels out of range: got {lo if lo < 0 else hi}"
                         + (f" for {classes} classes" if isinstance(classes, int) else ""))


def _check_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, steps: int,
                  record_every: int, autocast: bool = False) -> None:
    check_images(x)
    for name, value in (("steps", steps), ("record_every", record_every)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if not isinstance(autocast, bool):   # torch's own error came from inside the first step, naming no option
        raise ValueError(f"autocast must be True or False, got {autocast!r}")
    if y is not None:
        check_labels(model, x, y)


def _check_mask(mask: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """A mask (a tensor or array) as a bool tensor that broadcasts over x (True = may change), or None."""
    if mask is None:
        return None
    if (mask := torch.as_tensor(mask)).dim() != 4 or mask.shape[0] not in (1, x.shape[0]) \
            or mask.shape[1] not in (1, x.shape[1]) or mask.shape[2:] != x.shape[2:]:
        raise ValueError(f"mask must have shape (1 or N, 1 or C, H, W) matching images {tuple(x.shape)}, "
                         f"got {tuple(mask.shape)}")
    if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
        raise ValueError("mask values must be 0 or 1 (or bool): 1 where the path may change")
    return mask.to(x.device).bool()


def _keep_outside(v: torch.Tensor, x0: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return v if mask is None else torch.where(mask, v, x0)


def pgd_step(model: nn.Module, xt: torch.Tensor, x0: torch.Tensor, y: torch.Tensor | None, threat: ThreatModel,
             objective: str, autocast: bool = False,
             direction: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
             mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of `pgd` (its arguments, checked there): (x_{t+1}, the fp32 logits of x_t). Every sample's step is
    its own, so a caller may run paths of different ages in one batch (the benchmark refills finished paths'
    rows with new pairs). Call it inside `attack_mode(model)`."""
    xt = xt.detach().requires_grad_(True)
    with torch.enable_grad():  # works even when called under no_grad
        with torch.autocast(xt.device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(xt)
            value = objective_value(logits.float(), y, objective).sum()
        (grad,) = torch.autograd.grad(value, xt)
        xt = xt.detach()
        grad = grad.float() if direction is None else direction(xt, grad.float()).float()
    grad = grad if mask is None else grad * mask
    return _keep_outside(threat.project(threat.step(xt, grad), x0).clamp_(0, 1), x0, mask), logits.detach().float()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, threat: ThreatModel, steps: int,
        objective: str = "ce", random_start: bool = False, record_every: int = 0,
        autocast: bool = False, on_step: OnStep | None = None, mask: torch.Tensor | None = None,
        direction: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> PGDResult:
    """Run `steps` PGD steps that ascend `objective` inside `threat` around `x`, clamped to [0,1].

    `record_every=k > 0` keeps frames x_0, x_k, ... and x_T with their logits; the logits come from
    the forward each step needs anyway (one extra no-grad forward for x_T only).
    `autocast=True` runs forward/backward in bf16 (CUDA or CPU) while the step math stays fp32.
    `on_step(PGDStep)` is called after every step, outside autograd and autocast (progress bars, the
    app's progress, streamed frames); returning `STOP` ends the run there (Cancel): the result then holds
    x_t as its last frame and `stopped_at = t`.
    `mask` (bool or {0,1}, shape (1 or N, 1 or C, H, W)): where the path may change; the random start and every
    step spend the whole budget inside it (masked gradient) and pixels outside stay bit-identical to x.
    `direction(x_t, grad) -> grad` may replace the ascent direction before the step (e.g. `guidance.ConeGuide`:
    another model's gradient steers it); it runs with gradients enabled, outside autocast.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; use one of {OBJECTIVES}")
    _check_inputs(model, x, y, steps, record_every, autocast)
    steps, record_every, mask = int(steps), int(record_every), _check_mask(mask, x)
    y = None if y is None else y.to(x.device).long()
    x0 = x.detach().float()
    xt = x0.clone()
    if random_start and steps > 0 and bool((torch.as_tensor(threat.eps) > 0).any()):
        xt = _keep_outside(threat.project(threat.random_perturb(xt, mask), x0).clamp_(0, 1), x0, mask)
    record, stopped_at = record_every > 0, None
    rec_steps, rec_frames, rec_logits = [], [], []   # type: list[int], list[torch.Tensor], list[torch.Tensor]

    with attack_mode(model):
        for t in range(steps):
            before = xt
            xt, logits = pgd_step(model, xt, x0, y, threat, objective, autocast, direction, mask)
            if record and t % record_every == 0:
                rec_steps.append(t)
                rec_frames.append(before.clone())
                rec_logits.append(logits)
            if on_step is not None and on_step(PGDStep(t + 1, steps, xt, logits)) == STOP:
                stopped_at = t + 1
                break
        if record:
            with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = model(xt)
            rec_steps.append(steps if stopped_at is None else stopped_at)
            rec_frames.append(xt.clone())
            rec_logits.append(logits.float())

    stacked = (rec_steps, torch.stack(rec_frames), torch.stack(rec_logits)) if record else (None, None, None)
    return PGDResult(xt, *stacked, stopped_at=stopped_at)
