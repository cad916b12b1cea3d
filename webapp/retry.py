"""What to try after a counterfactual that did not reach its target: the settings that fix what stopped it, and
why it stopped, in words (tab 1's summary says why; its Try again button runs the settings)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from explain.params import default_params
from explain.trajectory import Trajectory

from .charts import distance_text, eps_text, plural


@dataclass(frozen=True)
class Retry:
    """Settings worth a second try when a path did not reach its target, and why it did not."""

    eps: float
    steps: int
    step_size: float
    why: str

    def changes(self, params: dict) -> bool:
        """Whether this retry runs other settings than `params` (a painted region that changes nothing: no)."""
        return (self.eps, self.steps, self.step_size) != (float(params["eps"]), int(params["steps"]),
                                                          float(params["step_size"]))


def retry_for(tr: Trajectory, max_steps: int = 500) -> Retry | None:
    """What to try after a path that did not reach its target (None if it did), the fix for what stopped it:
    - a painted region that did not move p(target): a reason, and the same settings (no retry is offered);
    - the whole budget ε used: a larger ε (twice, with steps enough to walk there);
    - out of steps: steps too small to get anywhere (below the norm's default) take the default size; else
      steps enough to walk 2 ε (at least twice as many), and at `max_steps` larger ones."""
    if tr.flip_step is not None or tr.source == tr.target:
        return None
    p = tr.params  # explain's validated request: norm, eps, steps, step_size
    norm, eps, steps, step_size = p["norm"], float(p["eps"]), int(p["steps"]), float(p["step_size"])
    dist = float(tr.distance[-1])
    names = tr.class_names
    sees, target = names[int(tr.probs[-1].argmax())], names[tr.target]
    defaults = default_params(tr.frames.shape[1], norm)
    if "mask_fraction" in p and float(tr.confidence[-1] - tr.confidence[0]) < 0.01:
        why = (f"inside the painted region ({p['mask_fraction']:.0%} of the pixels) no change moved p({target}): "
               f"paint a larger region, or one where a {target} would differ")
        return Retry(eps, steps, step_size, why)
    cap = 1.0 if norm == "Linf" else math.inf   # a Linf budget or step of 1 already spans [0,1]: then more
    if math.isfinite(eps) and dist >= 0.95 * eps and eps < cap:   # steps, not a larger budget, are the fix
        new_eps = min(cap, 2 * eps if eps > 0 else defaults["eps"])
        new_steps = min(max_steps, max(steps, math.ceil(2 * new_eps / step_size)))
        why = (f"the change used its whole budget (ε = {eps_text(eps, norm)}) and the model still sees {sees}: "
               f"turning it into {target} takes a larger change than ε allows")
        return Retry(new_eps, new_steps, step_size, why)
    why = (f"PGD ran out of steps: after {plural(steps, 'step')} of {eps_text(step_size, norm)} the change is "
           f"{distance_text(dist, norm)}"
           + (f", below the allowed ε = {eps_text(eps, norm)}" if math.isfinite(eps) else "")
           + f", and the model still sees {sees}")
    to_walk = 2 * eps if math.isfinite(eps) else 0.0   # far enough to reach the ball's surface and move along it
    size = max(step_size, defaults["step_size"])
    if size > step_size:
        return Retry(eps, min(max_steps, max(steps, math.ceil(to_walk / size))), size, why)
    if steps < max_steps:
        return Retry(eps, min(max_steps, max(2 * steps, math.ceil(to_walk / step_size))), step_size, why)
    return Retry(eps, steps, min(cap, 2 * step_size), why)
