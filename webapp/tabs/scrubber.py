"""Tab 1's scrubber: what step t of a stored path shows (frame, difference, bars, charts, caption, the landscape
marker), the slider, and the Play/Stop animation; after a run that stored no path (Cancel, a failure), the stored
path again (`restore`). A move indexes cached frames and moves chart markers only; a move with no stored result
says so in the caption."""

from __future__ import annotations

from typing import Any, NamedTuple

import gradio as gr
import numpy as np

from .. import charts
from ..explainer import Explainer, missing
from ..inputs import user_errors
from ..views import CounterfactualView, RunningView
from ..wiring import idle_buttons

PLAY, STOP = "▶ Play", "■ Stop"


STEP_VIEW = [("cf_frame", np.ndarray), ("cf_diff", np.ndarray), ("cf_probs", str), ("cf_energy_plot", str),
             ("cf_prob_plot", str), ("cf_distance_plot", str), ("cf_caption", str), ("land_map", Any),
             ("land_path", Any)]
"""The components `step_view` fills: what step t of a path shows (the landscape marker included)."""

# Step t of the path: what the scrubber and the landscape marker show, and the controls that move with it.
# A handler leaves what it does not change at `gr.skip()` (e.g. the slider that was just dragged).
Frame = NamedTuple("Frame", [("cf_step", Any), *STEP_VIEW, ("land_step", Any), ("cf_play", Any), ("cf_timer", Any)])


# The stored path's controls: its slider, Play and timer, its downloads and its card's button.
Held = NamedTuple("Held", [("cf_step", Any), ("cf_play", Any), ("cf_timer", Any), ("cf_gif", Any), ("cf_json", Any),
                           ("cf_card", Any)])


def held() -> Held:
    """While a new path runs: the stored path's controls off and its animation stopped. A scrub would show the old
    path between the new frames, and a download would save the old path beside the new one on screen."""
    off = gr.update(interactive=False)
    return Held(off, gr.update(value=PLAY, interactive=False), gr.Timer(active=False), off, off, off)


def released(ex: Explainer, state) -> Held:
    """After a run that stored no path (cancelled, refused, failed): the stored path's controls back on, when
    there is one; Play is always on (with nothing stored it says so)."""
    on = gr.update(interactive=ex.get(state, "cf") is not None)
    return Held(on, gr.update(interactive=True), gr.skip(), on, on, on)


# Cancel or a failure: the buttons idle, and what a streamed frame showed back to the stored path, its controls on
Stopped = NamedTuple("Stopped", [("cf_run", Any), ("cf_retry", Any), ("cf_cancel", Any), ("cf_frame", Any),
                                 ("cf_diff", Any), ("cf_probs", str), ("cf_caption", str),
                                 *Held.__annotations__.items()])


def restore(ex: Explainer, state, step) -> Stopped:
    """After a run that stored no path (Cancel, or a failure partway: one code path for both): Run and Try again
    back on, and the streamed frame gives way to the stored path at the slider's step (or to the empty view when
    there is none): the run's last frame and "Running: step t of T" would sit beside the old path's charts."""
    view = ex.get(state, "cf")
    shown = empty_step() if view is None else step_view(view, view.index(step))
    return Stopped(*idle_buttons(2), **{k: shown[k] for k in Stopped._fields if k in shown},
                   **released(ex, state)._asdict())


def empty_step() -> dict[str, Any]:
    """What tab 1's frame, difference, bars and caption show before any path (and after a first run's Cancel)."""
    return {"cf_frame": None, "cf_diff": None, "cf_probs": charts.placeholder("Probabilities at step t"),
            "cf_caption": ""}


def empty_landscape() -> tuple[str, str]:
    """The landscape tab's map and path chart before a landscape of the path shown was computed."""
    return charts.placeholder("Energy on the plane", 440, 200), charts.placeholder("Energy along the path")


def step_view(view: CounterfactualView, i: int) -> dict[str, Any]:
    """What step i of a stored path shows: frame, difference, bars, charts, caption, landscape marker (the
    landscape tab empty when this path has none: another path's would stay there otherwise)."""
    land = view.landscape
    land_map, land_path = (land.map(i), land.path(i)) if land else empty_landscape()
    return {"cf_frame": view.frame(i), "cf_diff": view.diff(i), "cf_probs": view.bars(i),
            "cf_energy_plot": view.chart("energy", i), "cf_prob_plot": view.chart("confidence", i),
            "cf_distance_plot": view.chart("distance", i), "cf_caption": view.caption(i),
            "land_map": land_map, "land_path": land_path}


def running_view(live: RunningView) -> dict[str, Any]:
    """What a frame streamed while PGD runs shows (frame, difference, bars, caption); the rest stays as it is."""
    return {"cf_frame": live.frame(), "cf_diff": live.diff(), "cf_probs": live.bars(), "cf_caption": live.caption()}


def frame_at(view: CounterfactualView, i: int, *, cf_step: Any = None, land_step: Any = None,
             cf_timer: Any = None, cf_play: Any = None) -> Frame:
    """Step i of a stored path; the controls not given stay as they are (`gr.skip()`)."""
    def keep(value: Any) -> Any:
        return gr.skip() if value is None else value
    return Frame(cf_step=keep(cf_step), **step_view(view, i), land_step=keep(land_step), cf_timer=keep(cf_timer),
                 cf_play=keep(cf_play))


@user_errors
def scrub(ex: Explainer, state, step) -> Frame:
    """A slider move: index the cached frames and move the chart markers (no model call)."""
    view = ex.get(state, "cf")
    if view is None:
        return gone("cf_caption", "counterfactual")
    i = view.index(step)
    return frame_at(view, i, land_step=gr.update(value=i))


def gone(caption: str, what: str, frame: type[NamedTuple] = Frame) -> Any:
    """A slider move with no stored result: the `caption` field says so, the rest stays (a slider's event is
    unqueued, and a refusal there shows no toast)."""
    return frame(**{**dict.fromkeys(frame._fields, gr.skip()), caption: f"_{missing(what)}_"})


def _stopped() -> Frame:
    """Nothing (more) to play: the timer off and the button back to Play; nothing else changes."""
    return Frame(**{**dict.fromkeys(Frame._fields, gr.skip()), "cf_timer": gr.Timer(active=False),
                    "cf_play": gr.update(value=PLAY)})


def play(ex: Explainer, state, step, label) -> Frame:
    """The Play/Stop toggle: stop the animation when it plays (the button reads Stop), else start it."""
    return _stopped() if label == STOP else play_start(ex, state, step)


def play_start(ex: Explainer, state, step) -> Frame:
    """Start the animation (from the beginning when the slider is at the end); the button turns into Stop."""
    view = ex.get(state, "cf")
    if view is None:
        return _stopped()
    i = view.index(step)
    i = 0 if i >= len(view) - 1 else i
    return frame_at(view, i, cf_step=gr.update(value=i), cf_timer=gr.Timer(active=True),
                    cf_play=gr.update(value=STOP))


def play_tick(ex: Explainer, state, step) -> Frame:
    """One animation frame: the next step; the timer stops at the last one."""
    view = ex.get(state, "cf")
    if view is None:
        return _stopped()
    i = min(view.index(step) + 1, len(view) - 1)
    if i >= len(view) - 1:
        return frame_at(view, i, cf_step=gr.update(value=i), cf_timer=gr.Timer(active=False),
                        cf_play=gr.update(value=PLAY))
    # only ever switch the timer off here: answering "active" would undo a Stop pressed meanwhile
    return frame_at(view, i, cf_step=gr.update(value=i))
