"""Views of computed results, ready for scrubbing: everything a slider move needs (uint8 frames,
difference maps, laid-out SVG charts) is prepared once, so a move only indexes arrays and places a
marker (no model call, no plotting library).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dat_core.sampling import make_grid, to_uint8
from explain.export import upscale
from explain.params import EQUAL_CONFIDENCE, parse_int
from explain.trajectory import Trajectory, distance

from .charts import (
    BLUE,
    GREY,
    ORANGE,
    PURPLE,
    LandscapeSVG,
    LineChart,
    Series,
    difference_frames,
    display_scale,
    distance_text,
    eps_text,
    fmt,
    labelled_grid,
    plural,
    probability_bars,
)
from .retry import retry_for


def _index(step: Any, n: int) -> int:
    i = parse_int("step", step, -(10**9), 10**9) if not isinstance(step, (int, np.integer)) else int(step)
    return min(max(i, 0), n - 1)


COMPARED_AT = (EQUAL_CONFIDENCE, f"p = {EQUAL_CONFIDENCE:g}")
"""The confidence charts' reference line: where counterfactuals are compared (`EQUAL_CONFIDENCE`)."""
NORM_MARKS = {"L2": "₂", "Linf": "∞", "L1": "₁"}
"""The subscript of ‖x_t − x_0‖ in each norm."""


@dataclass
class LandscapeView:
    landscape: Any                       # explain.landscape.Landscape
    plane: LandscapeSVG
    path_chart: LineChart

    @classmethod
    def build(cls, landscape: Any) -> "LandscapeView":
        L = landscape
        chart = LineChart(L.path_steps, [Series(L.energy_label, L.path_energy, BLUE)],
                          title="Energy along the path", ylabel=L.energy_label)
        return cls(landscape=L, plane=LandscapeSVG(L), path_chart=chart)

    def map(self, i: int) -> str:
        return self.plane.svg(i)

    def path(self, i: int) -> str:
        return self.path_chart.svg(i)

    def info(self) -> str:
        L = self.landscape
        clamped = float(np.mean(L.clamped > 0)) if L.clamped.size else 0.0
        text = (f"Horizontal axis: {L.u_label}. Vertical axis: {L.v_label}. The path leaves this plane by at most "
                f"{fmt(float(L.residual.max()) if len(L.residual) else 0.0, 2)} (L2).")
        if clamped > 0:
            text += (f" {clamped:.0%} of the grid points lie partly outside the valid pixel range and were "
                     "clamped to [0, 1].")
        return text


@dataclass
class CounterfactualView:
    """One trajectory ready for scrubbing: frames, difference maps and charts, indexed by frame."""

    trajectory: Trajectory
    model_key: str
    frames: np.ndarray              # (F, H, W, 3) uint8
    diffs: np.ndarray               # (F, H, W, 3) uint8, grey = unchanged
    diff_scale: float
    scale: int                      # display upscale factor
    charts: dict[str, LineChart]
    landscape: LandscapeView | None = None
    model_version: str = ""         # LoadedModel.version of the weights the path was made with
    exported: tuple[str, str] | None = None   # its downloads (GIF, JSON) once written: `Explainer.view_exports`

    @classmethod
    def build(cls, traj: Trajectory, model_key: str, model_version: str = "") -> "CounterfactualView":
        names, s, t = traj.class_names, traj.source, traj.target
        x, flip = traj.steps, traj.flip_step if s != t else None   # a path toward its own class flips nowhere
        norm, eps = traj.params.get("norm", "L2"), float(traj.params.get("eps", math.inf))
        conf = [Series(f"p({names[t]})", traj.confidence, ORANGE)]
        if s != t:
            conf.append(Series(f"p({names[s]})", traj.probs[:, s], BLUE, dash=True))
        charts = {
            "energy": LineChart(x, [Series("E(x)", traj.energy, BLUE),
                                    Series(f"E(x, {names[t]})", traj.energy_target, ORANGE, dash=True)],
                                title="Energy — lower is more typical", ylabel="energy", flip=flip),
            "confidence": LineChart(x, conf, title="Probability of the target class", ylabel="probability",
                                    ylim=(0.0, 1.0), flip=flip, hlines=[COMPARED_AT]),
            "distance": LineChart(x, [Series(f"‖x_t − x_0‖{NORM_MARKS[norm]}", traj.distance, PURPLE,
                                             shown=lambda d: distance_text(d, norm))],
                                  title="Distance from the start image", ylabel=f"{norm} distance", flip=flip,
                                  hlines=[(eps, f"ε = {eps_text(eps, norm)}")] if math.isfinite(eps) else (),
                                  yunit=(255, "/255") if norm == "Linf" else None),   # as its value and ε
        }
        diffs, diff_scale = difference_frames(traj.images)
        return cls(trajectory=traj, model_key=model_key, frames=traj.frames, diffs=diffs, diff_scale=diff_scale,
                   scale=display_scale(traj.frames.shape[1]), charts=charts, model_version=model_version)

    def __len__(self) -> int:
        return len(self.frames)

    def index(self, step: Any) -> int:
        return _index(step, len(self))

    def frame(self, i: int) -> np.ndarray:
        return upscale(self.frames[i], self.scale)

    def diff(self, i: int) -> np.ndarray:
        return upscale(self.diffs[i], self.scale)

    def bars(self, i: int) -> str:
        tr = self.trajectory
        return probability_bars(tr.probs[i], tr.class_names, k=5, source=tr.source, target=tr.target,
                                       title=f"Probabilities at step {int(tr.steps[i])}")

    def chart(self, name: str, i: int) -> str:
        return self.charts[name].svg(i)

    def caption(self, i: int) -> str:
        tr = self.trajectory
        names, t = tr.class_names, int(tr.steps[i])
        pred = int(tr.probs[i].argmax())
        dist = distance_text(tr.distance[i], tr.params.get("norm"))
        if tr.source == tr.target:   # the summary says it already was the target
            flipped = ""
        elif pred == tr.target and tr.flip_step is not None and t >= tr.flip_step:
            flipped = " · **flipped to the target**"
        elif tr.flip_step is not None and t >= tr.flip_step:  # a non-robust model can lose it again
            flipped = f" · reached the target at step {tr.flip_step}, **lost it since**"
        else:
            flipped = ""
        reached = np.flatnonzero(np.asarray(tr.confidence) >= EQUAL_CONFIDENCE)
        if len(reached) and i == reached[0] and tr.source != tr.target:
            flipped += f" · **first frame at p ≥ {EQUAL_CONFIDENCE:g}**, where counterfactuals are compared"
        return (f"**Step {t} of {int(tr.steps[-1])}** · the model sees **{names[pred]}** ({tr.probs[i, pred]:.0%})"
                f" · p({names[tr.target]}) = {tr.confidence[i]:.0%} · distance {dist}{flipped}")

    def summary(self) -> str:
        tr = self.trajectory
        names = tr.class_names
        p = tr.params
        start = f"Started as **{names[tr.source]}** ({tr.probs[0, tr.source]:.0%})"
        req = (f"{p.get('norm')} threat model, ε = {eps_text(float(p.get('eps', math.inf)), p.get('norm'))}, "
               f"{plural(p.get('steps'), 'step')} of "
               f"{eps_text(float(p.get('step_size', 0)), p.get('norm'))}")
        if "mask_fraction" in p:
            req += f"; only the painted region ({p['mask_fraction']:.0%} of the pixels) could change"
        if tr.source == tr.target:
            return (f"{start}, which already is the target: PGD made it more **{names[tr.target]}** "
                    f"(p = {tr.confidence[-1]:.0%} at the end; {req}).")
        if tr.flip_step is None:
            retry = retry_for(tr)
            why = f" **Why:** {retry.why}." if retry else ""
            return (f"{start}; the prediction did **not** reach **{names[tr.target]}** "
                    f"(p = {tr.confidence[-1]:.0%} at the end; {req}).{why}")
        end = int(tr.probs[-1].argmax())
        ends = (f" and ends at p = {tr.confidence[-1]:.0%}" if end == tr.target
                else f", but ends as **{names[end]}**, at p = {tr.confidence[-1]:.0%}")
        return (f"{start}; the prediction flips to **{names[tr.target]}** at step **{tr.flip_step}**{ends} "
                f"({req}).")


@dataclass
class RunningView:
    """A counterfactual while PGD still runs (`webapp.explainer.Running`): the iterate x_t, what changed so far,
    and the prediction of the step's forward, shown like a finished path's frame."""

    running: Any                    # webapp.explainer.Running
    start: np.ndarray               # x_0, (3, H, W) float in [0,1]
    class_names: list[str]
    target: int
    norm: str = "L2"

    @property
    def scale(self) -> int:
        return display_scale(self.start.shape[-1])

    def frame(self) -> np.ndarray:
        return upscale(to_uint8(torch.from_numpy(self.running.image[None]))[0], self.scale)

    def diff(self) -> np.ndarray:
        diffs, _ = difference_frames(np.stack([self.start, self.running.image]))
        return upscale(diffs[1], self.scale)

    def bars(self) -> str:
        r = self.running
        return probability_bars(r.probs, self.class_names, k=5, source=r.source, target=self.target,
                                title=f"Probabilities at step {r.step - 1}")

    def caption(self) -> str:
        r, names = self.running, self.class_names
        dist = distance(r.image - self.start, self.norm)
        seen = int(np.argmax(r.probs))
        return (f"**Running: step {r.step} of {r.steps}** (Cancel stops it) · at step {r.step - 1} the model sees "
                f"**{names[seen]}** ({r.probs[seen]:.0%}) · p({names[self.target]}) = {r.probs[self.target]:.0%} · "
                f"distance {distance_text(dist, self.norm)}")


@dataclass
class AllTargetsView:
    trajectories: list[Trajectory]
    model_key: str
    scale: int
    model_version: str = ""

    @staticmethod
    def outcome(tr: Trajectory) -> str:
        """How a path ended, in a few words: the start class, the step it flipped at (and the class it ends as,
        if a non-robust model lost the target again), or not reached."""
        if tr.target == tr.source:
            return "start class"
        if tr.flip_step is None:
            return "not reached"
        end = int(tr.probs[-1].argmax())
        lost = "" if end == tr.target else f", ends as {tr.class_names[end]}"
        return f"flips at step {tr.flip_step}{lost}"

    def gallery(self) -> list[tuple[np.ndarray, str]]:
        """The final image per target in class order, captioned short enough to show whole."""
        return [(upscale(tr.frames[-1], self.scale), f"{tr.class_names[tr.target]} · {tr.confidence[-1]:.0%} · "
                 + self.outcome(tr).replace("flips at ", "")) for tr in self.trajectories]

    def ranked(self) -> list[Trajectory]:
        """The targets other than the start class, easiest first: those reached by the radius they needed
        (`radius_needed`), then the others by their final p(target)."""
        paths = [tr for tr in self.trajectories if tr.target != tr.source]
        return sorted(paths, key=lambda tr: (tr.flip_step is None, radius_needed(tr) or 0.0, -tr.confidence[-1]))

    def table(self) -> str:
        """The same paths as the grid, in the grid's order (by class), each with its rank by the radius it needed."""
        tr0 = self.trajectories[0]
        norm = tr0.params.get("norm", "L2")
        rank = {tr.target: i + 1 for i, tr in enumerate(self.ranked())}
        rows = [f"Start image predicted as **{tr0.class_names[tr0.source]}** ({tr0.probs[0, tr0.source]:.0%}). "
                "Each row is one target, in the grid's order; *outcome* says at which PGD step the model first "
                f"predicts the target (it flips), *radius needed* the {norm} distance from the image there (an upper "
                "bound on the smallest change that flips it); *rank* orders the targets by it, easiest first.\n",
                f"| target class | final p(target) | outcome | radius needed ({norm}) | rank | L2 change ‖x_T − x_0‖ |",
                "|---|---|---|---|---|---|"]
        for tr in self.trajectories:
            r = radius_needed(tr)
            needed = "—" if r is None or tr.target == tr.source else distance_text(r, norm)
            rows.append(f"| {tr.class_names[tr.target]} | {tr.confidence[-1]:.0%} | {self.outcome(tr)} | "
                        f"{needed} | {rank.get(tr.target, '—')} | "
                        f"{fmt(tr.l2[-1])} |")
        order = [tr.class_names[tr.target] for tr in self.ranked()]
        rows.append(f"\n**Easiest to hardest:** {', '.join(order)}.")
        short = [tr.class_names[tr.target] for tr in self.trajectories if self.outcome(tr) == "not reached"]
        if short:
            rows.append(f"\n**Not reached:** {', '.join(short)}. Click one in the grid to open it in the first tab, "
                        "where *Try again* offers a larger ε or more steps and says why it fell short.")
        return "\n".join(rows)


def radius_needed(tr: Trajectory) -> float | None:
    """The distance from x_0, in the path's norm, at the first step predicted as the target (None: never)."""
    if tr.flip_step is None:
        return None
    i = int(np.flatnonzero(tr.steps == tr.flip_step)[0])
    return float(tr.distance[i])


@dataclass
class CompareView:
    """The same request on a robust and a standard model (and on the standard model guided by the robust one),
    scrubbed together."""

    robust: CounterfactualView
    standard: CounterfactualView
    charts: dict[str, LineChart] = field(default_factory=dict)
    guided: CounterfactualView | None = None

    @classmethod
    def build(cls, robust: Trajectory, standard: Trajectory, robust_key: str, standard_key: str,
              guided: Trajectory | None = None) -> "CompareView":
        r, s = CounterfactualView.build(robust, robust_key), CounterfactualView.build(standard, standard_key)
        name = robust.class_names[robust.target]
        # short legend labels: the legend is one line, three series with their values fit in it
        confidence = [Series("robust", robust.confidence, ORANGE),
                      Series("standard", standard.confidence, GREY, dash=True)]
        energy = [Series("robust", robust.energy, BLUE), Series("standard", standard.energy, GREY, dash=True)]
        if guided is not None:
            confidence.append(Series("guided", guided.confidence, PURPLE))
            energy.append(Series("guided", guided.energy, PURPLE))
        charts = {
            "confidence": LineChart(robust.steps, confidence, title=f"Probability of the target class p({name})",
                                    ylabel="probability", ylim=(0.0, 1.0), hlines=[COMPARED_AT]),
            "energy": LineChart(robust.steps, energy, title="Energy E(x) (each model's own scale)", ylabel="energy"),
        }
        g = None if guided is None else CounterfactualView.build(guided, standard_key)
        return cls(robust=r, standard=s, charts=charts, guided=g)

    @property
    def views(self) -> list[tuple[str, CounterfactualView]]:
        named = [("Robust (DAT)", self.robust), ("Standard", self.standard)]
        return named + ([("Standard, guided by DAT", self.guided)] if self.guided is not None else [])

    def __len__(self) -> int:
        return min(len(v) for _, v in self.views)

    def index(self, step: Any) -> int:
        return _index(step, len(self))

    def caption(self, i: int) -> str:
        return "  \n".join(f"{name}: {v.caption(i)}" for name, v in self.views)

    def summary(self) -> str:
        text = "  \n".join(f"**{name}:** {v.summary()}" for name, v in self.views)
        if self.guided is not None:
            angle = self.guided.trajectory.params.get("cone_angle")
            text += (f"  \n_Guided: each step of the standard model follows its own gradient, turned to within "
                     f"{fmt(angle)}° of the DAT model's (cone guidance)._")
        return text


class Grids(Sequence):
    """A sampling run's labelled grids, step by step, drawn as they are read."""

    def __init__(self, view: "SamplingView"):
        self.view = view

    def __len__(self) -> int:
        return len(self.view)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.view.grid(range(len(self))[i])


@dataclass
class SamplingView:
    """A generation run (explain.generate with record_every=1) as a grid per sampling step."""

    samples: Any                      # explain.Samples (explain/generation.py)
    nrow: int
    scale: int
    chart: LineChart

    @classmethod
    def build(cls, samples: Any) -> "SamplingView":
        n = len(samples.targets)
        # a row per class; one class alone (or one sample each) as a square, not a strip
        nrow = samples.n_per_class if 1 < samples.n_per_class < n else math.ceil(math.sqrt(n))
        conf = samples.trajectory_confidences
        series = [Series("mean p(target)", conf.mean(axis=1), ORANGE)]
        if n > 1:
            series.append(Series("lowest p(target)", conf.min(axis=1), GREY, dash=True))
        chart = LineChart(samples.steps, series, title="Probability of each sample's class",
                          ylabel="probability", xlabel="sampling step t", ylim=(0.0, 1.0))
        size = samples.trajectory.shape[2]
        return cls(samples=samples, nrow=nrow, scale=max(1, round(96 / size)), chart=chart)

    def __len__(self) -> int:
        return len(self.samples.steps)

    def index(self, step: Any) -> int:
        return _index(step, len(self))

    def grid(self, i: int, labels: bool = True) -> np.ndarray:
        """The samples at step i; `labels`: each with its class and p(class) at that step written below it."""
        if not labels:
            return make_grid(self.samples.trajectory[i], nrow=self.nrow, pad=2, scale=self.scale)
        s = self.samples
        text = [f"{s.class_names[int(t)]} {c:.0%}" for t, c in zip(s.targets, s.trajectory_confidences[i])]
        return labelled_grid(s.trajectory[i], text, nrow=self.nrow, scale=self.scale)

    def grids(self) -> "Grids":
        """Every step's labelled grid, each drawn when read (for the GIF): all at once, 100 samples of 118 steps
        held ~400 MB."""
        return Grids(self)

    def caption(self, i: int) -> str:
        s = self.samples
        conf = s.trajectory_confidences[i]
        names = sorted({s.class_names[int(t)] for t in s.targets})
        what = names[0] if len(names) == 1 else f"{len(names)} classes"
        order = ""
        if len(names) > 1:
            seq = [s.class_names[int(t)] for t in s.targets[::s.n_per_class]]
            order = (" · " + ("rows" if s.n_per_class > 1 else "left to right, top to bottom") + ": "
                     + ", ".join(seq[:20]) + (", …" if len(seq) > 20 else ""))
        return (f"**Sampling step {int(s.steps[i])} of {int(s.steps[-1])}** · {len(s.targets)} samples of {what} · "
                f"mean p(target) = {conf.mean():.0%}, lowest {conf.min():.0%}{order}")

