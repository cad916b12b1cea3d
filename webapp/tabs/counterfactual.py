"""Tab 1, Counterfactual: upload an image, pick a target, run targeted PGD, scrub the path step by step.

The other tabs build on the path this tab stores (slot "cf"): the landscape and attribution tabs explain it,
the all-targets grid opens a path here. A slider move indexes cached frames and moves chart markers only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import numpy as np
import torch

import explain
from dat_core.energy import marginal_energy, probabilities
from explain.export import upscale
from explain.params import NORMS

from .. import charts
from ..describe import typicality
from ..explainer import Explainer
from ..inputs import (
    MAX_REQUEST_STEPS,
    eps_choices,
    eps_text,
    image_source,
    model_input,
    pgd_params,
    target_index,
    user_errors,
)
from ..state import LoadedModel
from ..views import CounterfactualView
from ..wiring import COMPUTE, INSTANT, PRIVATE, RAW, bind, outputs

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "assets" / "examples"
NO_IMAGE = "Upload an image to see what the model predicts"


@dataclass
class Components:
    cf_image: gr.Image
    cf_input: gr.Image
    cf_target: gr.Dropdown
    cf_run: gr.Button
    cf_norm: gr.Radio
    cf_eps: gr.Dropdown
    cf_steps: gr.Number
    cf_step_size: gr.Number
    cf_prediction: gr.HTML
    cf_energy: gr.Markdown
    cf_summary: gr.Markdown
    cf_step: gr.Slider
    cf_play: gr.Button
    cf_pause: gr.Button
    cf_caption: gr.Markdown
    cf_frame: gr.Image
    cf_diff: gr.Image
    cf_probs: gr.HTML
    cf_energy_plot: gr.HTML
    cf_prob_plot: gr.HTML
    cf_distance_plot: gr.HTML
    cf_gif: gr.DownloadButton
    cf_json: gr.DownloadButton
    cf_timer: gr.Timer

    @property
    def settings(self) -> list[gr.components.Component]:
        """Threat model, ε, steps and step size: every tab that runs this tab's request reads them."""
        return [self.cf_norm, self.cf_eps, self.cf_steps, self.cf_step_size]


@dataclass
class Followers:
    """Components of other tabs that follow this tab's path: the landscape marker, and the landscape and
    attribution results that a new path makes stale."""
    land_step: gr.Slider
    land_map: gr.HTML
    land_path: gr.HTML
    land_info: gr.Markdown
    attr_figure: gr.Image
    attr_info: gr.Markdown


class Preview(NamedTuple):
    """An uploaded image at model resolution, its top-5 prediction, its energy; the runner-up as target."""
    state: dict
    cf_input: np.ndarray | None
    cf_prediction: str
    cf_energy: str
    cf_target: Any


class Settings(NamedTuple):
    cf_eps: Any
    cf_step_size: float


class Frame(NamedTuple):
    """Step t of the path: what the scrubber and the landscape marker show, and the controls that move with
    it. A handler leaves what it does not change at `gr.skip()` (e.g. the slider that was just dragged)."""
    cf_step: Any
    cf_frame: np.ndarray
    cf_diff: np.ndarray
    cf_probs: str
    cf_energy_plot: str
    cf_prob_plot: str
    cf_distance_plot: str
    cf_caption: str
    land_step: Any
    land_map: Any
    land_path: Any
    cf_timer: Any


class Shown(NamedTuple):
    """A new path at its last step: the downloads pending, the other tabs' results of the old path reset."""
    state: dict
    cf_step: Any
    cf_frame: np.ndarray
    cf_diff: np.ndarray
    cf_probs: str
    cf_energy_plot: str
    cf_prob_plot: str
    cf_distance_plot: str
    cf_caption: str
    land_map: Any
    land_path: Any
    cf_summary: str
    cf_gif: Any
    cf_json: Any
    land_step: Any
    land_info: str
    attr_figure: None
    attr_info: str


class Exports(NamedTuple):
    cf_gif: Any
    cf_json: Any


# ---------------------------------------------------------------- layout

def layout(loaded: LoadedModel) -> Components:
    names = loaded.class_names
    d = explain.default_params(loaded.image_size, "L2")
    with gr.Tab("Counterfactual", id="counterfactual", elem_id="tab-counterfactual"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=300):
                with gr.Row(equal_height=True):
                    cf_image = gr.Image(type="filepath", image_mode=None, label="1 · Your image",
                                        sources=["upload", "clipboard"], height=190, elem_id="cf-image", scale=3,
                                        min_width=150)
                    cf_input = gr.Image(label="Model input", interactive=False, format="png", height=190,
                                        min_width=110, elem_id="cf-input", buttons=[], scale=2)
                cf_target = gr.Dropdown(names, value=names[min(1, len(names) - 1)], allow_custom_value=True,
                                        elem_id="cf-target", label="2 · Target class: what should the image become?")
                cf_run = gr.Button("3 · Run counterfactual", variant="primary", elem_id="cf-run")
                with gr.Accordion("Settings: threat model, ε, steps", open=False, elem_id="cf-settings"):
                    cf_norm = gr.Radio(list(NORMS), value="L2", label="Threat model (how change is measured)",
                                       elem_id="cf-norm")
                    cf_eps = gr.Dropdown(eps_choices("L2", loaded.image_size), value=eps_text(d["eps"], "L2"),
                                         allow_custom_value=True, elem_id="cf-eps",
                                         label="Radius ε: largest allowed change (∞ = no limit)")
                    with gr.Row():
                        cf_steps = gr.Number(d["steps"], label=f"Steps (1–{MAX_REQUEST_STEPS})", precision=0,
                                             elem_id="cf-steps", min_width=100)
                        cf_step_size = gr.Number(d["step_size"], label="Step size", elem_id="cf-step-size",
                                                 min_width=100)
                cf_prediction = gr.HTML(charts.placeholder(NO_IMAGE, 300, 80), elem_id="cf-prediction")
                cf_energy = gr.Markdown("", elem_id="cf-energy")
                examples = sorted(p for p in EXAMPLES_DIR.glob("*") if p.suffix.lower() in (".png", ".jpg"))
                if examples:
                    gr.Examples([[str(p)] for p in examples], inputs=[cf_image],
                                label="Examples: click one to use it as your image", examples_per_page=12)
            with gr.Column(scale=8):
                cf_summary = gr.Markdown("Results appear here: upload an image, choose a target and press **Run**.",
                                         elem_id="cf-summary")
                with gr.Row(equal_height=False):
                    cf_step = gr.Slider(0, 1, value=0, step=1, label="PGD step t: drag to scrub", interactive=False,
                                        elem_id="cf-step", scale=8)
                    with gr.Column(scale=1, min_width=90):
                        cf_play = gr.Button("▶ Play", size="sm", elem_id="cf-play")
                        cf_pause = gr.Button("■ Stop", size="sm", elem_id="cf-pause")
                cf_caption = gr.Markdown("", elem_id="cf-caption")
                with gr.Row(equal_height=False):
                    cf_frame = gr.Image(label="Image at step t", interactive=False, format="png", height=210,
                                        elem_id="cf-frame", buttons=["download"], scale=2)
                    cf_diff = gr.Image(label="Change x_t − x_0 (grey = none)", interactive=False, format="png",
                                       height=210, elem_id="cf-diff", buttons=[], scale=2)
                    with gr.Column(scale=2, min_width=220):  # gr.HTML ignores scale
                        cf_probs = gr.HTML(charts.placeholder("Probabilities at step t"), elem_id="cf-probs")
                with gr.Row(equal_height=False):
                    cf_energy_plot = gr.HTML(charts.placeholder("Energy vs step"), elem_id="cf-energy-plot",
                                             min_width=220)
                    cf_prob_plot = gr.HTML(charts.placeholder("Target probability vs step"), elem_id="cf-prob-plot",
                                           min_width=220)
                    cf_distance_plot = gr.HTML(charts.placeholder("Distance vs step"), elem_id="cf-distance-plot",
                                               min_width=220)
                with gr.Row():
                    cf_gif = gr.DownloadButton("Download animation (GIF)", interactive=False, size="sm",
                                               elem_id="cf-gif")
                    cf_json = gr.DownloadButton("Download per-step metrics (JSON)", interactive=False, size="sm",
                                                elem_id="cf-json")
        cf_timer = gr.Timer(0.15, active=False)
    return Components(cf_image=cf_image, cf_input=cf_input, cf_target=cf_target, cf_run=cf_run, cf_norm=cf_norm,
                      cf_eps=cf_eps, cf_steps=cf_steps, cf_step_size=cf_step_size, cf_prediction=cf_prediction,
                      cf_energy=cf_energy, cf_summary=cf_summary, cf_step=cf_step, cf_play=cf_play,
                      cf_pause=cf_pause, cf_caption=cf_caption, cf_frame=cf_frame, cf_diff=cf_diff,
                      cf_probs=cf_probs, cf_energy_plot=cf_energy_plot, cf_prob_plot=cf_prob_plot,
                      cf_distance_plot=cf_distance_plot, cf_gif=cf_gif, cf_json=cf_json, cf_timer=cf_timer)


# ---------------------------------------------------------------- handlers

@user_errors
def preview(ex: Explainer, image, state) -> Preview:
    """The uploaded image at model resolution, its top-k prediction and its energy E(x)."""
    state = ex.session(state)
    loaded = ex.session_model(state)
    if image_source(image) is None:
        return Preview(state, None, charts.placeholder(NO_IMAGE), "", gr.update())
    x = model_input(image, loaded)
    with torch.no_grad():
        logits = loaded.model(x.to(loaded.device)).float()
    probs = probabilities(logits)[0].cpu().numpy()
    energy = float(marginal_energy(logits)[0])
    order = np.argsort(-probs)
    runner_up = int(order[1] if len(order) > 1 else order[0])
    names = loaded.class_names
    bars = charts.probability_bars(probs, names, k=5, source=int(order[0]), title="What the model predicts")
    text = (f"**Energy E(x) = {charts.fmt(energy)}** — lower is more typical: "
            f"{typicality(energy, loaded.config.get('energy_quantiles'))}.")
    image_u8 = (x[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    return Preview(state, upscale(image_u8, charts.display_scale(loaded.image_size)), bars, text,
                   gr.update(value=names[runner_up]))


def norm_defaults(ex: Explainer, norm, state) -> Settings:
    """Default radius and step size for a threat model at the session model's resolution."""
    loaded = ex.session_model(ex.session(state))
    d = explain.default_params(loaded.image_size, norm if norm in NORMS else "L2")
    return Settings(gr.update(choices=eps_choices(d["norm"], loaded.image_size), value=eps_text(d["eps"], d["norm"])),
                    d["step_size"])


def step_view(view: CounterfactualView, i: int) -> dict[str, Any]:
    """What step i of a stored path shows: frame, difference, bars, charts, caption, landscape marker."""
    land = view.landscape
    return {"cf_frame": view.frame(i), "cf_diff": view.diff(i), "cf_probs": view.bars(i),
            "cf_energy_plot": view.chart("energy", i), "cf_prob_plot": view.chart("confidence", i),
            "cf_distance_plot": view.chart("distance", i), "cf_caption": view.caption(i),
            "land_map": land.map(i) if land else gr.skip(), "land_path": land.path(i) if land else gr.skip()}


def frame_at(view: CounterfactualView, i: int, *, cf_step: Any = None, land_step: Any = None,
             cf_timer: Any = None) -> Frame:
    """Step i of a stored path; the controls not given stay as they are (`gr.skip()`)."""
    keep = gr.skip()
    return Frame(cf_step=keep if cf_step is None else cf_step, **step_view(view, i),
                 land_step=keep if land_step is None else land_step, cf_timer=keep if cf_timer is None else cf_timer)


def show(ex: Explainer, state: dict, view: CounterfactualView) -> Shown:
    """Store a path for this session and return everything tab 1 shows for it.

    The downloads are written afterwards by `export` (a chained event): the GIF's per-frame palettes take
    about as long as the PGD path itself, and the frame should not wait for them.
    """
    ex.put(state, "cf", view)
    last = len(view) - 1
    pending = gr.update(value=None, interactive=False)
    return Shown(state=state, cf_step=gr.update(maximum=last, value=last, interactive=True), **step_view(view, last),
                 cf_summary=view.summary(), cf_gif=pending, cf_json=pending,
                 land_step=gr.update(value=0, maximum=last, interactive=False),
                 land_info="Press **Compute landscape** to see the energy around this path.", attr_figure=None,
                 attr_info="Press **Compute attributions** to explain this counterfactual.")


@user_errors
def run(ex: Explainer, image, target, norm, eps, steps, step_size, state, progress=gr.Progress()) -> Shown:
    """Targeted PGD from the image toward `target`; the path is kept for scrubbing."""
    state = ex.session(state)
    loaded = ex.session_model(state)
    req = pgd_params(norm, eps, steps, step_size)
    x = model_input(image, loaded)
    traj = ex.trajectory(loaded, x, target_index(target, loaded), req, progress)
    return show(ex, state, CounterfactualView.build(traj, loaded.key))


@user_errors
def export(ex: Explainer, state) -> Exports:
    """The GIF and JSON downloads of the path the session shows now."""
    view = ex.view(state, "cf", "counterfactual")
    gif, js = ex.exports(view.trajectory, view.scale)
    return Exports(gr.update(value=gif, interactive=True), gr.update(value=js, interactive=True))


@user_errors
def scrub(ex: Explainer, state, step) -> Frame:
    """A slider move: index the cached frames and move the chart markers (no model call)."""
    view = ex.view(state, "cf", "counterfactual")
    i = view.index(step)
    return frame_at(view, i, land_step=gr.update(value=i))


def _nothing_to_play() -> Frame:
    """No path to play (never run, or dropped from memory): only make sure the timer is off."""
    return Frame(**{**dict.fromkeys(Frame._fields, gr.skip()), "cf_timer": gr.Timer(active=False)})


def play_start(ex: Explainer, state, step) -> Frame:
    """Start the animation (from the beginning when the slider is at the end)."""
    view = ex.get(state, "cf")
    if view is None:
        return _nothing_to_play()
    i = view.index(step)
    i = 0 if i >= len(view) - 1 else i
    return frame_at(view, i, cf_step=gr.update(value=i), cf_timer=gr.Timer(active=True))


def play_tick(ex: Explainer, state, step) -> Frame:
    """One animation frame: the next step; the timer stops at the last one."""
    view = ex.get(state, "cf")
    if view is None:
        return _nothing_to_play()
    i = min(view.index(step) + 1, len(view) - 1)
    done = i >= len(view) - 1
    # only ever switch the timer off here: answering "active" would undo a Stop pressed meanwhile
    return frame_at(view, i, cf_step=gr.update(value=i), cf_timer=gr.Timer(active=False) if done else None)


# ---------------------------------------------------------------- events

def chain_exports(event: Any, ex: Explainer, ui: Components, state: gr.State) -> None:
    """Write the downloads after a path is shown (here, and when the all-targets grid opens one)."""
    event.success(bind(export, ex), [state], outputs(Exports, ui), show_progress="hidden", **PRIVATE)


def wire(ex: Explainer, ui: Components, *, state: gr.State, followers: Followers) -> None:
    ui.cf_image.change(bind(preview, ex), [ui.cf_image, state], outputs(Preview, ui, state=state),
                       show_progress="minimal", **COMPUTE, **RAW)
    ui.cf_norm.input(bind(norm_defaults, ex), [ui.cf_norm, state], outputs(Settings, ui), **PRIVATE)
    shown = ui.cf_run.click(bind(run, ex), [ui.cf_image, ui.cf_target, *ui.settings, state],
                            outputs(Shown, ui, followers, state=state), **RAW, **COMPUTE)
    chain_exports(shown, ex, ui, state)
    frame = outputs(Frame, ui, followers)
    ui.cf_step.input(bind(scrub, ex), [state, ui.cf_step], frame, **INSTANT)
    ui.cf_play.click(bind(play_start, ex), [state, ui.cf_step], frame, queue=False, **PRIVATE)
    ui.cf_pause.click(lambda: gr.Timer(active=False), None, ui.cf_timer, queue=False, **PRIVATE)
    ui.cf_timer.tick(bind(play_tick, ex), [state, ui.cf_step], frame, **INSTANT)
