"""Explanation parameters, one home for the CLI, the app and the library: threat-model norms, PGD
objectives, step limits, the defaults per resolution, target classes, and parsing of typed values.

`python -m explain --eps 8/255 --step-size 1/255` and the app's boxes read the same `parse_eps` and `parse_step`.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Sequence

import numpy as np

from dat_core.cli_types import MAX_STEP_SIZE, _got, eps_text, parse_eps, parse_step  # noqa: F401  (re-exported: explain.parse_eps, the app)
from dat_core.pgd import NORMS, check_pixel_units
from dat_core.pgd import OBJECTIVES as PGD_OBJECTIVES
from dat_core.sampling import IMAGENET_MIN_SIZE  # noqa: F401  (re-exported: the app and CLI read it here)

OBJECTIVES = tuple(o for o in PGD_OBJECTIVES if o not in ("ce", "kl_uniform"))
"""Objectives an explanation can ascend: the engine's, without untargeted `ce` and `kl_uniform` (explanations go
toward a class, or down the energy)."""
MAX_STEPS = 1000

# Defaults at 32x32. L2: the paper's DAT counterfactuals reach ~0.89 target confidence at eps = 4 (METHOD §5).
# Chosen on the validation carve-out (never the test split, never the bundled examples) for the bundled default:
# the smallest radius at which >= 95% of (image, other class) paths reach p(target) >= 0.5 with 100 steps of 0.1
# (50 images x 9 targets: eps 3 79.8%, 4 94.2%, 5 97.6%, 6 98.4%; `python -m explain benchmark --eps 3,4,5,6
# --steps 100`, the model card). 100 steps (path length 10 = 2 eps) reach the ball's surface and still move along it.
# Below IMAGENET_MIN_SIZE, L2 lengths scale with image_size / 32 (sqrt of the pixel count), L1 lengths with the
# pixel count; Linf budgets are per pixel.
DEFAULTS: dict[str, dict[str, float]] = {
    "L2": {"eps": 5.0, "step_size": 0.1, "steps": 100},
    "Linf": {"eps": 16 / 255, "step_size": 1 / 255, "steps": 60},
    "L1": {"eps": 12.0, "step_size": 1.0, "steps": 60},   # sparse: ~1% of the coordinates move per step
}
# Defaults at ImageNet resolution, the same at 224 and 256 px as the paper's budgets are (METHOD §3.5, §6: its
# ImageNet models train and are attacked at L2 eps 3.0 with steps of 2.0 at both sizes; contrastive steps 2-4,
# sampling steps 8 for 13-24 steps). L2: 6x the AT radius as at 32 px (3 = 6 x 0.5), steps of the paper's
# ImageNet step 2.0, and 20 of them (path length 40 ~ 2 eps, as at 32 px): a third of the CPU time of 60 steps
# for models that take ~0.4-1 s a step on a CPU. Linf: 4x the ConvNeXt-CvSt stage-1 radius 4/255 (16/255, as at
# 32 px), steps of 2/255.
IMAGENET_DEFAULTS: dict[str, dict[str, float]] = {
    "L2": {"eps": 18.0, "step_size": 2.0, "steps": 20},
    "Linf": {"eps": 16 / 255, "step_size": 2 / 255, "steps": 20},
    "L1": {"eps": 600.0, "step_size": 60.0, "steps": 20},   # ~12 x (224/32)^2, path length 2 eps as above
}
DEFAULT_OBJECTIVE = "target_logit"
EQUAL_CONFIDENCE = 0.9
"""The target confidence counterfactuals are compared at (the DAT paper: ~0.89; `benchmark --stop-at 0.9`). Along
the app's full paths DAT goes past the class (BENCHMARKS.md, "Counterfactual benchmark"); the app marks where a
path first reaches this."""


def default_params(image_size: int = 32, norm: str = "L2") -> dict[str, Any]:
    """The defaults for `norm` at the model resolution: {norm, eps, step_size, steps, objective}.

    ImageNet-size models (>= IMAGENET_MIN_SIZE px) take the paper's ImageNet budgets unscaled; smaller ones the
    32-px defaults, L2 lengths scaled by image_size / 32."""
    norm = _canonical_norm(norm)
    imagenet = image_size >= IMAGENET_MIN_SIZE
    d = (IMAGENET_DEFAULTS if imagenet else DEFAULTS)[norm]
    scale = 1.0 if imagenet else {"L2": image_size / 32, "L1": (image_size / 32) ** 2}.get(norm, 1.0)
    scaled = (lambda v: v) if scale == 1.0 else (lambda v: float(f"{v * scale:.12g}"))  # 0.3, not 0.30000000000000004
    return {"norm": norm, "eps": scaled(d["eps"]), "step_size": scaled(d["step_size"]),
            "steps": int(d["steps"]), "objective": DEFAULT_OBJECTIVE}


def resolve_request(image_size: int, norm: str = "L2", eps: float | None = None, step_size: float | None = None,
                    steps: int | None = None, objective: str = DEFAULT_OBJECTIVE) -> dict[str, Any]:
    """A checked request whose unset parameters take the defaults of `norm` at `image_size`."""
    d = default_params(image_size, norm)
    return validate_params(d["norm"], d["eps"] if eps is None else eps, d["step_size"] if step_size is None
                           else step_size, d["steps"] if steps is None else steps, objective)


def eps_suggestions(norm: str, image_size: int) -> list[float]:
    """Radii worth offering beside the default (the app's ε dropdown): fractions and multiples of it, then inf."""
    d = default_params(image_size, norm)
    if d["norm"] == "Linf":
        return [k / 255 for k in (2, 4, 8, 16, 32)] + [math.inf]
    return sorted({_readable(d["eps"] * f) for f in (1 / 6, 1 / 3, 2 / 3, 1, 4 / 3, 2)}) + [math.inf]


def eps_name(eps: float | str, norm: str = "L2") -> str:
    """A radius in CLI lines and reports, in ASCII: inf (also JSON's "inf"), or as typed (k/255 for Linf budgets,
    `eps_text`): a terminal or a redirect that cannot encode ∞ must not end the command."""
    return "inf" if eps == "inf" or math.isinf(float(eps)) else eps_text(float(eps), norm)


def exact_text(value: float, norm: str) -> str:
    """`eps_text` where `parse_eps` reads it back as `value` itself, else every digit: what a settings box or a
    link holds, so the run it starts is the run it came from (1/3 as "0.333333" was another radius)."""
    short = eps_text(value, norm)
    return short if parse_eps(short) == value else repr(float(value))


def _readable(v: float) -> float:
    """`v` as a person would type it: kept if it has at most two decimals, else one significant digit
    (eps 5 offers 0.8, 1.5, 3, ... rather than 0.8333, 1.6667, 3.3333)."""
    if round(v, 2) == round(v, 6):
        return float(round(v, 2))
    e = math.floor(math.log10(v))
    return float(round(min((1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10), key=lambda m: abs(m - v / 10 ** e)) * 10 ** e, 6))


def _canonical_norm(norm: str) -> str:
    for n in NORMS:
        if isinstance(norm, str) and norm.lower() == n.lower():
            return n
    raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}")


def _typed(value: Any, parse: Callable[[Any, str], float], name: str, says: str) -> float:
    """A number of the Python API: a number as it is, text as the CLI and the app read it ("8/255", "inf")."""
    if isinstance(value, str):
        return parse(value, name)
    if isinstance(value, (bool, np.bool_)):   # True is not a radius of 1
        raise ValueError(f"{says}; got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):   # OverflowError: an int beyond any float (10**400)
        raise ValueError(f"{says}; got {_got(value)}") from None


def validate_params(norm: str = "L2", eps: float | None = None, step_size: float | None = None,
                    steps: int | None = None, objective: str = DEFAULT_OBJECTIVE) -> dict[str, Any]:
    """Check a request and return it canonicalized; ValueError states the allowed range. Unset values take
    the norm's 32-px defaults (they were L2's for every norm: Linf got ε 3, which bounds nothing)."""
    norm = _canonical_norm(norm)
    d = DEFAULTS[norm]
    eps, step_size = d["eps"] if eps is None else eps, d["step_size"] if step_size is None else step_size
    steps = int(d["steps"]) if steps is None else steps
    eps = _typed(eps, parse_eps, "eps", "eps must be a number >= 0 (or inf for an unbounded path)")
    if not eps >= 0:  # also rejects NaN
        raise ValueError(f"eps must be >= 0 (or inf for an unbounded path); got {eps}")
    step_size = _typed(step_size, parse_step, "step_size", "step_size must be a finite number > 0")
    if not (math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size must be a finite number > 0; got {step_size}")
    if step_size > MAX_STEP_SIZE:   # as the CLI and the app refuse it
        raise ValueError(f"step_size must be at most {MAX_STEP_SIZE:g}; got {step_size:g}")
    check_pixel_units(norm, eps, step_size)
    steps = parse_int("steps", steps, 0, MAX_STEPS)
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}; got {objective!r}")
    return {"norm": norm, "eps": eps, "step_size": step_size, "steps": steps, "objective": objective}


def _listing(class_names: Sequence[str]) -> str:
    shown = 100 if len(class_names) <= 100 else 12  # 1000 ImageNet names would drown the message
    names = ", ".join(class_names[:shown])
    more = f", ... ({len(class_names)} classes)" if len(class_names) > shown else ""
    return f"{names}{more} (or an index 0..{len(class_names) - 1})"


def resolve_class(value: int | str, class_names: Sequence[str]) -> int:
    """A class name (case-insensitive) or index ("3" or 3) -> index; ValueError lists the valid ones."""
    k = len(class_names)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if 0 <= value < k:
            return int(value)
        raise ValueError(f"class index {value} is out of range 0..{k - 1}")
    if isinstance(value, str):
        text = value.strip()
        lowered = [n.lower() for n in class_names]
        if text.lower() in lowered:
            return lowered.index(text.lower())
        if text.isdecimal():  # what int() reads ("²" is a digit it cannot); no number of 20+ digits is a class
            if len(text) > 18:
                raise ValueError(f"class index {text[:12]}… ({len(text)} digits) is out of range 0..{k - 1}")
            return resolve_class(int(text), class_names)
        raise ValueError(f"unknown class {value!r}; valid classes: {_listing(class_names)}")
    raise ValueError(f"a class must be a name or an index, got {type(value).__name__}")


def resolve_targets(targets: int | str | Sequence[int | str], class_names: Sequence[str]) -> list[int]:
    """"all", one class, or a list of classes -> list of indices, each class once (in the order first named)."""
    if isinstance(targets, str) and targets.strip().lower() == "all":
        return list(range(len(class_names)))
    if isinstance(targets, (str, int, np.integer)):
        return [resolve_class(targets, class_names)]
    out = list(dict.fromkeys(resolve_class(t, class_names) for t in targets))
    if not out:
        raise ValueError("no target classes given")
    return out


def _number(value: Any, msg: str) -> float:
    """`value` as a float (a number or a numeric string); ValueError(msg) for anything else."""
    if isinstance(value, (bool, np.bool_)) or value is None:
        raise ValueError(msg)
    try:
        return float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(msg) from None


def parse_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    """An integer in lo..hi (hi None: no upper bound), as every count of the API, the CLI and the app takes it: an int
    or numpy integer, a whole float, or a numeric string; never a bool. Integers and digit strings stay exact."""
    span = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
    msg = f"{name} must be a whole number {span}; got {_got(value)}"
    text = value.strip() if isinstance(value, str) else None
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        n = int(value)
    elif text is not None and re.fullmatch(r"[+-]?[0-9]+", text):
        digits = text.lstrip("+-").lstrip("0")
        if len(digits) > 30:   # no count of 30 digits is in range; int() of 4300+ digits says "Exceeds the limit"
            raise ValueError(f"{name} must be a whole number {span}; got a number of {len(digits)} digits")
        n = int(text)
    else:
        f = _number(value, msg)
        if not math.isfinite(f) or f != int(f):
            raise ValueError(msg)
        n = int(f)
    if n < lo or (hi is not None and n > hi):
        raise ValueError(msg)
    return n
