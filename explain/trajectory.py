"""Counterfactual trajectories: one targeted PGD run x_0..x_T toward a class, with per-step metrics (METHOD §5).

The PGD engine records every frame together with the logits of the forward that step needs anyway,
so probabilities, energies and distances are read off the recorded tensors in one vectorized pass:
a trajectory costs T forward+backward passes plus one forward for x_T, nothing more.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from dat_core.energy import joint_energy, marginal_energy, probabilities
from dat_core.guidance import CONE_ANGLE, ConeGuide, check_angle
from dat_core.models import class_names_of
from dat_core.pgd import L2, OnStep, PGDResult, attack_mode, logits_at, pgd, threat_model
from dat_core.runtime import model_device
from dat_core.sampling import to_uint8

from .image import ImageLike, mask_fraction, to_mask, to_model_input
from .params import DEFAULT_OBJECTIVE, MAX_STEPS, parse_int, resolve_request, resolve_targets


def model_info(model: nn.Module) -> tuple[int, list[str], torch.device]:
    """(image_size, class_names, device) of a classifier (`.config` as in dat_core.models). A model without
    one (a plain nn.Module, a wrapper) is taken as 32 px, its classes counted from one forward pass: they were
    taken as CIFAR-10's ten, so a 5-class model's target 7 failed deep in PGD (on a GPU, a device-side assert)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"the model must be a torch nn.Module, got {type(model).__name__} (dat_core.load_model "
                         "loads one from a name, a folder or a Hub repo)")
    weights = next(model.parameters(), None)
    if weights is not None and weights.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"the model's weights are {weights.dtype}: explanations run float32 weights (model.float();"
                         " autocast=True computes in bfloat16)")
    cfg = getattr(model, "config", None) or {}
    size, device = int(cfg.get("image_size", 32)), model_device(model)
    if "class_names" not in cfg and "num_classes" not in cfg:
        cfg = {**cfg, "num_classes": logits_at(model, torch.zeros(1, 3, size, size, device=device)).shape[1]}
    return size, class_names_of(cfg), device


def _json_float(v: float) -> float | str:
    v = float(v)
    if math.isfinite(v):
        return float(f"{v:.7g}")
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")


def _json_params(params: dict[str, Any]) -> dict[str, Any]:
    """The request with every digit (metrics keep 7): a run typed again from metrics.json is the same run, where
    an Linf step 1/255 written as 0.003921569 was another one."""
    return {k: (v if math.isfinite(v) else _json_float(v)) if isinstance(v, float) else v for k, v in params.items()}


NORM_ORDERS = {"L2": 2, "Linf": math.inf, "L1": 1}
"""The order of each threat model's norm (`np.linalg.norm`'s `ord`)."""


def distance(delta: np.ndarray, norm: str) -> float:
    """||delta|| in `norm` (an image's change in the norm its path's ε bounds)."""
    return float(np.linalg.norm(np.asarray(delta, dtype=np.float64).ravel(), ord=NORM_ORDERS[norm]))


@dataclass
class Trajectory:
    """One PGD path x_0..x_T toward `target`, with metrics per recorded step (arrays indexed like `steps`)."""

    images: np.ndarray          # (T+1, 3, H, W) float32 in [0,1]: the exact PGD frames
    steps: np.ndarray           # (T+1,) step index of each frame
    logits: np.ndarray          # (T+1, K)
    probs: np.ndarray           # (T+1, K) softmax of the logits
    energy: np.ndarray          # (T+1,) E(x) = -logsumexp f(x)
    energy_target: np.ndarray   # (T+1,) E(x, target)
    energy_source: np.ndarray   # (T+1,) E(x, source)
    l2: np.ndarray              # (T+1,) ||x_t - x_0||_2
    linf: np.ndarray            # (T+1,) ||x_t - x_0||_inf
    l1: np.ndarray              # (T+1,) ||x_t - x_0||_1
    source: int                 # predicted class at x_0
    target: int
    flip_step: int | None       # first step predicted as `target` (None: never)
    class_names: list[str]
    params: dict[str, Any] = field(default_factory=dict)  # norm, eps, step_size, steps, objective

    def __len__(self) -> int:
        return len(self.steps)

    @cached_property
    def frames(self) -> np.ndarray:
        """(T+1, H, W, 3) uint8, for display and export."""
        return to_uint8(torch.from_numpy(self.images))

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        """p(target | x_t) per step."""
        return self.probs[:, self.target]

    @property
    def distance(self) -> np.ndarray:
        """||x_t - x_0|| per step in the path's own norm (the one its ε bounds)."""
        return {"L2": self.l2, "Linf": self.linf, "L1": self.l1}[self.params.get("norm", "L2")]

    def summary(self) -> str:
        """One line for a terminal: the classes, p(target) from x_0 to x_T, the flip, distance and energy (and a
        guided path's guide's p(target) at x_T, where it was read: `explain.cli_options.read_by_guide`)."""
        names = self.class_names
        flip = "never" if self.flip_step is None else f"at step {self.flip_step}"
        guide = self.params.get("guide_p_target")
        return (f"{names[self.source]} -> {names[self.target]}: p(target) {self.confidence[0]:.3f} -> "
                f"{self.confidence[-1]:.3f}, prediction flips {flip}, ||x_T - x_0||_2 = {self.l2[-1]:.3f}, "
                f"E(x) {self.energy[0]:.2f} -> {self.energy[-1]:.2f}"
                + ("" if guide is None else f"; the guide {self.params['guide']} gives p(target) {guide:.3f}"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe metrics (no images); an infinite eps is written as the string "inf"."""
        def col(a: np.ndarray) -> list:
            return [_json_float(v) for v in a]
        return {
            "source": self.source, "source_name": self.class_names[self.source],
            "target": self.target, "target_name": self.class_names[self.target],
            "flip_step": self.flip_step, "params": _json_params(self.params),
            "class_names": list(self.class_names),
            "steps": [int(s) for s in self.steps],
            "prediction": [int(p) for p in self.predictions],
            "confidence_target": col(self.confidence),
            "energy": col(self.energy), "energy_target": col(self.energy_target),
            "energy_source": col(self.energy_source),
            "l2": col(self.l2), "linf": col(self.linf), "l1": col(self.l1),
            "probs": [col(p) for p in self.probs], "logits": [col(z) for z in self.logits],
        }


def trajectories_from_pgd(res: PGDResult, y: torch.Tensor, class_names: Sequence[str],
                          params: dict[str, Any]) -> list[Trajectory]:
    """Split a recorded batched PGD result into per-sample trajectories (metrics vectorized over F x N)."""
    frames, logits = res.frames, res.logits.float()           # (F,N,C,H,W), (F,N,K)
    if not bool(torch.isfinite(logits).all()):   # NaN logits give NaN gradients, and NaN frames past the clamp
        raise ValueError("the model gave NaN or infinite logits on this path: check its weights, and whether "
                         "it takes [0,1] images of this size")
    n_frames, n = logits.shape[:2]
    flat = logits.reshape(n_frames * n, -1)
    y = y.to(logits.device).long()
    source = logits[0].argmax(dim=1)                           # (N,)
    probs = probabilities(flat).view(n_frames, n, -1)
    energy = marginal_energy(flat).view(n_frames, n)
    e_target = joint_energy(flat, y.repeat(n_frames)).view(n_frames, n)
    e_source = joint_energy(flat, source.repeat(n_frames)).view(n_frames, n)
    delta = (frames - frames[:1]).flatten(2)
    l2, linf, l1 = delta.norm(dim=2), delta.abs().amax(dim=2), delta.abs().sum(dim=2)
    hit = logits.argmax(dim=2) == y                            # (F,N)
    first = torch.where(hit.any(0), hit.float().argmax(0), torch.full_like(y, -1))

    cpu = lambda t: t.detach().cpu().numpy()  # noqa: E731
    images, logits_np, probs_np = cpu(frames.float()), cpu(logits), cpu(probs)
    energy, e_target, e_source, l2, linf, l1 = map(cpu, (energy, e_target, e_source, l2, linf, l1))
    steps = np.asarray(res.steps, dtype=np.int64)
    source, first, y_np = source.tolist(), first.tolist(), y.tolist()
    return [Trajectory(images=np.ascontiguousarray(images[:, i]), steps=steps,
                       logits=np.ascontiguousarray(logits_np[:, i]), probs=np.ascontiguousarray(probs_np[:, i]),
                       energy=energy[:, i].copy(), energy_target=e_target[:, i].copy(),
                       energy_source=e_source[:, i].copy(), l2=l2[:, i].copy(), linf=linf[:, i].copy(),
                       l1=l1[:, i].copy(),
                       source=source[i], target=y_np[i],
                       flip_step=int(steps[first[i]]) if first[i] >= 0 else None,
                       class_names=list(class_names), params=dict(params))
            for i in range(n)]


def _request(model: nn.Module, norm: str, eps: float | None, step_size: float | None, steps: int | None,
             objective: str) -> dict[str, Any]:
    return resolve_request(model_info(model)[0], norm, eps, step_size, steps, objective)


def check_guide(model: nn.Module, guide: nn.Module) -> None:
    """A guide's gradient is taken on the explained model's inputs and labels: same classes, same image size."""
    if not isinstance(guide, nn.Module):
        raise ValueError(f"guide must be a torch nn.Module (a DAT model), got {type(guide).__name__}: "
                         "dat_core.load_model('default') loads the bundled one")
    if model_info(guide)[:2] != model_info(model)[:2]:
        raise ValueError("the guide must have the explained model's classes and image size")


def counterfactuals(model: nn.Module, image: ImageLike, targets: int | str | Sequence[int | str], *,
                    norm: str = "L2", eps: float | None = None, step_size: float | None = None,
                    steps: int | None = None, objective: str = DEFAULT_OBJECTIVE, autocast: bool = False,
                    max_batch: int = 64, on_step: OnStep | None = None, mask: ImageLike | None = None,
                    guide: nn.Module | None = None, cone_angle: float = CONE_ANGLE) -> list[Trajectory]:
    """Trajectories from one image toward each of `targets` ("all", names or indices), batched.

    `mask` (an image, white = may change; see `to_mask`) confines every path to a region: pixels outside
    stay exactly as in the image at every step. `guide` (a DAT model with the same classes and resolution)
    steers the path of a non-robust `model`: each step's direction is `model`'s gradient projected into the
    cone of `cone_angle` degrees around the guide's (`dat_core.guidance`, DVCE's idea without diffusion).

    Unset parameters take `default_params(model image_size, norm)`. Targets run as one PGD batch
    (chunks of `max_batch` when there are more). `on_step` is `dat_core.pgd`'s hook, called after every
    step of each batch; when it returns STOP the paths end there (shorter trajectories) and no further
    batch runs.
    """
    params = _request(model, norm, eps, step_size, steps, objective)
    size, names, device = model_info(model)
    tgt = resolve_targets(targets, names)
    max_batch = parse_int("max_batch", max_batch, 1, 1 << 20)
    x0 = to_model_input(image, size).to(device)
    threat = threat_model(params["norm"], params["eps"], params["step_size"])
    m = None if mask is None else to_mask(mask, size, image).to(device)
    if m is not None:
        params["mask_fraction"] = mask_fraction(m)
    if guide is not None:
        check_guide(model, guide)
        params["cone_angle"] = cone_angle = check_angle(cone_angle)
    out: list[Trajectory] = []
    with attack_mode(guide) if guide is not None else nullcontext():
        for i in range(0, len(tgt), max_batch):
            y = torch.tensor(tgt[i:i + max_batch], device=device)
            steer = None if guide is None else ConeGuide(guide, y, params["objective"], cone_angle, autocast, mask=m)
            res = pgd(model, x0.expand(len(y), -1, -1, -1).contiguous(), y, threat, params["steps"],
                      objective=params["objective"], record_every=1, autocast=autocast, on_step=on_step, mask=m,
                      direction=steer)
            out += trajectories_from_pgd(res, y, names, params)
            if res.stopped_at is not None:
                break
    return out


def counterfactual(model: nn.Module, image: ImageLike, target: int | str, *, norm: str = "L2",
                   eps: float | None = None, step_size: float | None = None, steps: int | None = None,
                   objective: str = DEFAULT_OBJECTIVE, autocast: bool = False, on_step: OnStep | None = None,
                   mask: ImageLike | None = None, guide: nn.Module | None = None,
                   cone_angle: float = CONE_ANGLE) -> Trajectory:
    """The trajectory of one targeted PGD run from `image` toward class `target` (name or index)."""
    if isinstance(target, str) and target.strip().lower() == "all":
        raise ValueError("counterfactual takes one target; use counterfactuals(..., 'all') for every class")
    return counterfactuals(model, image, [target], norm=norm, eps=eps, step_size=step_size, steps=steps,
                           objective=objective, autocast=autocast, on_step=on_step, mask=mask, guide=guide,
                           cone_angle=cone_angle)[0]


def compare(models: dict[str, nn.Module], image: ImageLike, target: int | str | Sequence[int | str],
            **params: Any) -> dict[str, Trajectory | list[Trajectory]]:
    """The same request on each model (e.g. {"robust (DAT)": m1, "standard": m2}), each on its own device.

    Runs are deterministic (no random start), so the same request gives the same paths every time.
    A single target gives one Trajectory per model; "all" or a list gives a list per model.
    """
    if not isinstance(models, dict) or not models or not all(isinstance(m, nn.Module) for m in models.values()):
        raise ValueError("models must be a non-empty dict of name -> model")
    many = not isinstance(target, (int, np.integer)) and (
        not isinstance(target, str) or target.strip().lower() == "all")
    run = counterfactuals if many else counterfactual
    return {name: run(m, image, target, **params) for name, m in models.items()}


# ---------------------------------------------------------------- minimal counterfactual

@dataclass
class MinimalCounterfactual:
    """The smallest L2 radius found at which p(target) reaches `confidence` (None fields: never reached)."""

    confidence: float                 # requested p(target)
    radius: float | None              # ||x* - x_0||_2 of the best witness x*
    achieved: float | None            # p(target | x*)
    image: np.ndarray | None          # x*, (3, H, W) float32
    path_step: int | None             # first step of the unbounded path with p(target) >= confidence
    path_radius: float | None         # its L2 distance: the upper bound the bisection starts from

    @property
    def frame(self) -> np.ndarray | None:
        return None if self.image is None else to_uint8(torch.from_numpy(self.image[None]))[0]

    def to_dict(self) -> dict[str, Any]:
        f = lambda v: None if v is None else _json_float(v)  # noqa: E731
        return {"confidence": f(self.confidence), "radius": f(self.radius), "achieved": f(self.achieved),
                "path_step": self.path_step, "path_radius": f(self.path_radius)}


@dataclass
class MinimalSearch:
    path: Trajectory                  # the unbounded (eps = inf) path
    results: list[MinimalCounterfactual]

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.path.target, "target_name": self.path.class_names[self.path.target],
                "source": self.path.source, "path_params": _json_params(self.path.params),
                "results": [r.to_dict() for r in self.results]}


def minimal_counterfactual(model: nn.Module, image: ImageLike, target: int | str,
                           confidences: Sequence[float] = (0.5, 0.9), *, step_size: float | None = None,
                           steps: int = 100, rounds: int = 4, candidates: int = 3, refine_steps: int = 10,
                           objective: str = DEFAULT_OBJECTIVE, autocast: bool = False) -> MinimalSearch:
    """Smallest L2 radius at which p(target) >= each confidence, without one full run per radius.

    1. One unbounded L2 path (eps = inf, `steps` steps): its first step reaching confidence c gives an
       upper bound r_c = ||x_t - x_0||_2 and a witness.
    2. `rounds` rounds of interval search on (lo, hi]: `candidates` radii per unresolved confidence, all
       confidences and radii in ONE batched bounded PGD run of `refine_steps` steps (step 2.5 r / steps).
       The smallest radius that succeeds becomes hi (its witness's actual distance), the largest below it
       that fails becomes lo. Short bounded runs are a heuristic, so the result is an upper bound on the
       true minimal radius, never worse than the path's.
    """
    if not isinstance(confidences, (list, tuple, np.ndarray, torch.Tensor)) or len(confidences) == 0:
        raise ValueError(f"confidences must be a non-empty list of numbers in (0, 1); got {confidences!r}")
    confidences = [c.item() if isinstance(c, (np.ndarray, torch.Tensor, np.number)) else c for c in confidences]
    for c in confidences:
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 < float(c) < 1:
            raise ValueError(f"confidences must lie in (0, 1); got {c!r}")
    rounds, candidates, refine_steps = (parse_int(name, v, lo, hi) for name, v, lo, hi in (
        ("rounds", rounds, 0, 20), ("candidates", candidates, 1, 32), ("refine_steps", refine_steps, 1, MAX_STEPS)))
    path = counterfactual(model, image, target, norm="L2", eps=math.inf, step_size=step_size, steps=steps,
                          objective=objective, autocast=autocast)
    _, _, device = model_info(model)
    conf = path.confidence
    best: list[list] = []  # per confidence: [lo, hi, radius, achieved, image, path_step, path_radius]
    for c in confidences:
        reached = np.flatnonzero(conf >= c)
        if len(reached) == 0:
            best.append([0.0, None, None, None, None, None, None])
            continue
        t = int(reached[0])
        r = float(path.l2[t])
        best.append([0.0, r, r, float(conf[t]), path.images[t], int(path.steps[t]), r])

    x0 = torch.from_numpy(path.images[0]).to(device)[None]
    for _ in range(rounds):
        open_ = [i for i, b in enumerate(best) if b[1] is not None and b[1] > 1e-3 and b[1] - b[0] > 1e-3]
        if not open_:
            break
        radii = [[best[i][0] + (best[i][1] - best[i][0]) * j / (candidates + 1) for j in range(1, candidates + 1)]
                 for i in open_]
        eps = torch.tensor([r for rs in radii for r in rs], device=device)
        threat = L2(eps, 2.5 * eps / refine_steps)  # one radius per sample: one batch
        y = torch.full((len(eps),), path.target, device=device)
        res = pgd(model, x0.expand(len(eps), -1, -1, -1).contiguous(), y, threat, refine_steps,
                  objective=objective, record_every=refine_steps, autocast=autocast)
        p = probabilities(res.logits[-1])[:, path.target].cpu().numpy()
        dist = (res.x - x0).flatten(1).norm(dim=1).cpu().numpy()
        finals = res.x.cpu().numpy()
        for k, i in enumerate(open_):
            c = confidences[i]
            idx = [k * candidates + j for j in range(candidates)]
            ok = [j for j in range(candidates) if p[idx[j]] >= c]
            if ok:
                j = ok[0]
                if dist[idx[j]] < best[i][2]:
                    best[i][2:5] = [float(dist[idx[j]]), float(p[idx[j]]), finals[idx[j]]]
                best[i][1] = best[i][2]  # <= radii[k][j]: the witness lies inside its ball
                best[i][0] = radii[k][j - 1] if j > 0 else best[i][0]
            else:
                best[i][0] = radii[k][-1]
    results = [MinimalCounterfactual(confidence=float(c), radius=b[2], achieved=b[3],
                                     image=None if b[4] is None else np.asarray(b[4], dtype=np.float32),
                                     path_step=b[5], path_radius=b[6])
               for c, b in zip(confidences, best)]
    return MinimalSearch(path=path, results=results)
