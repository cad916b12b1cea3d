"""Tab 1, Counterfactual: pick an example (or upload an image), pick a target, run targeted PGD (Cancel stops it),
scrub the path step by step (tabs/scrubber.py); a path that falls short says why and offers a retry with a
larger ε or more steps (tabs/try_again.py); Copy link shares the run (webapp/links.py).

The other tabs build on the path this tab stores (slot "cf"): the landscape and attribution tabs explain it,
the all-targets grid opens a path here. A slider move indexes cached frames and moves chart markers only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple

import gradio as gr
import numpy as np
import torch

import explain
from dat_core.energy import marginal_energy, probabilities
from explain.export import upscale
from explain.params import IMAGENET_MIN_SIZE, NORMS, exact_text

from .. import charts, links, page
from ..describe import typicality
from ..explainer import Explainer, Running
from ..inputs import (
    MAX_REQUEST_STEPS,
    browser_copy,
    eps_choices,
    eps_text,
    image_source,
    pgd_params,
    settings_shown,
    target_index,
    user_errors,
)
from ..state import LoadedModel
from ..views import CounterfactualView, RunningView
from ..wiring import (
    COMPUTE,
    INSTANT,
    PRIVATE,
    RAW,
    STOP,
    bind,
    cancellable,
    no_error_badge,
    outputs,
    stop,
)
from . import card_export, cf_tools, region, scrubber, share, try_again
from .scrubber import PLAY, STEP_VIEW, Frame, frame_at, play, play_start, play_tick, running_view, scrub, step_view

__all__ = ["Frame", "frame_at", "play", "play_start", "play_tick", "scrub", "step_view"]  # the scrubber's, here too

EXAMPLES_DIR = links.EXAMPLES_DIR
NO_IMAGE = "Upload an image to see what the model predicts"


@dataclass
class Components:
    cf_examples: gr.Gallery
    cf_image: gr.Image
    cf_input: gr.Image
    cf_target: gr.Dropdown
    cf_run: gr.Button
    cf_cancel: gr.Button
    cf_norm: gr.Radio
    cf_eps: gr.Dropdown
    cf_steps: gr.Number
    cf_step_size: gr.Textbox
    cf_prediction: gr.HTML
    cf_energy: gr.Markdown
    cf_share: gr.Button
    cf_link: gr.Textbox
    cf_summary: gr.Markdown
    cf_retry: gr.Button
    cf_step: gr.Slider
    cf_play: gr.Button
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
    examples: links.Examples
    tools: cf_tools.Tools

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
    """An image at model resolution, its top-5 prediction, its energy; the runner-up as target. `cf_image` is
    what the image box shows: unchanged, a PNG copy of an upload browsers cannot show, or an example."""
    state: dict
    cf_image: Any
    cf_input: np.ndarray | None
    cf_prediction: str
    cf_energy: str
    cf_target: Any
    cf_summary: Any = gr.skip()   # the stored path's, with a note when it is of another image or model
    cf_retry: Any = gr.skip()     # hidden when the stored path is of another image or model


Settings = NamedTuple("Settings", [("cf_eps", Any), ("cf_step_size", str)])  # a threat model's defaults


# A new path at its last step: the downloads pending, the other tabs' results of the old path reset, and the
# one-click retry offered when the path did not reach its target.
Shown = NamedTuple("Shown", [("state", dict), ("cf_step", Any), *STEP_VIEW, ("cf_summary", str), ("cf_retry", Any),
                             ("cf_play", Any), ("cf_gif", Any), ("cf_json", Any), ("land_step", Any),
                             ("land_info", str), ("attr_figure", None), ("attr_info", str)])


# a retry: the new path, and the settings it ran with
Retried = NamedTuple("Retried", [*Shown.__annotations__.items(), ("cf_norm", Any), ("cf_eps", Any),
                                 ("cf_steps", Any), ("cf_step_size", Any)])
Exports = NamedTuple("Exports", [("cf_gif", Any), ("cf_json", Any)])  # the downloads of the path shown

# ---------------------------------------------------------------- layout

def layout(loaded: LoadedModel) -> Components:
    names = loaded.class_names
    d = explain.default_params(loaded.image_size, "L2")
    frame_h = loaded.image_size + 24 if loaded.image_size >= IMAGENET_MIN_SIZE else 210  # ImageNet: 1 px a pixel
    examples = links.Examples(EXAMPLES_DIR)
    with gr.Tab("Counterfactual", id="counterfactual", elem_id="tab-counterfactual"):
        strip = examples.gallery()
        cf_examples = gr.Gallery(strip, label="Examples: click one to start", columns=max(1, len(strip)), rows=1,
                                 height=124, allow_preview=False, object_fit="cover", buttons=[],
                                 elem_id="cf-examples", visible=len(strip) > 0, format="png")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=300):
                with gr.Row(equal_height=True):
                    cf_image = gr.Image(type="filepath", image_mode=None, label="1 · Your image",
                                        sources=["upload", "clipboard"], height=190, elem_id="cf-image", scale=1,
                                        min_width=130)
                    cf_input = gr.Image(label="What the model sees", interactive=False, format="png", height=190,
                                        min_width=130, elem_id="cf-input", buttons=[], scale=1)
                cf_target = gr.Dropdown(names, value=names[min(1, len(names) - 1)], allow_custom_value=True,
                                        elem_id="cf-target", label="2 · Target class: what should the image become?")
                cf_run = gr.Button("3 · Run counterfactual", variant="primary", elem_id="cf-run")
                cf_cancel = gr.Button("■ Cancel the run", variant="stop", visible=False, elem_id="cf-cancel")
                with gr.Accordion("Settings: threat model, ε, steps", open=False, elem_id="cf-settings"):
                    cf_norm = gr.Radio(list(NORMS), value="L2", label="Threat model: how the change is measured",
                                       info=page.TIPS["norm"], elem_id="cf-norm")
                    cf_eps = gr.Dropdown(eps_choices("L2", loaded.image_size), value=eps_text(d["eps"], "L2"),
                                         allow_custom_value=True, elem_id="cf-eps", info=page.TIPS["eps"],
                                         label="Radius ε: the largest change allowed (∞ = no limit)")
                    with gr.Row():
                        cf_steps = gr.Number(d["steps"], label=f"Steps (1–{MAX_REQUEST_STEPS})", precision=0,
                                             elem_id="cf-steps", min_width=100, info=page.TIPS["steps"])
                        cf_step_size = gr.Textbox(exact_text(d["step_size"], "L2"), label="Step size", max_lines=1,
                                                  elem_id="cf-step-size", min_width=100, info=page.TIPS["step_size"])
                painted = region.layout()
                cf_prediction = gr.HTML(charts.placeholder(NO_IMAGE, 300, 80), elem_id="cf-prediction")
                cf_energy = gr.Markdown("", elem_id="cf-energy")
                with gr.Row(equal_height=True):
                    cf_share = gr.Button("Copy link to this run", size="sm", elem_id="cf-share", scale=1)
                cf_link = gr.Textbox("", label="Link to this run", interactive=False, visible=False, lines=1,
                                     max_lines=4, elem_id="cf-link", buttons=["copy"])
            with gr.Column(scale=8):
                cf_summary = gr.Markdown("Results appear here: pick an example (or upload an image), choose a "
                                         "target and press **Run**.", elem_id="cf-summary")
                with gr.Row():
                    cf_retry = gr.Button("Try again", visible=False, variant="primary", size="sm", elem_id="cf-retry",
                                         scale=0, min_width=340)
                with gr.Row(equal_height=False):
                    cf_step = gr.Slider(0, 1, value=0, step=1, label="PGD step t: drag to scrub", interactive=False,
                                        info=page.TIPS["step"], elem_id="cf-step", scale=8, min_width=280)
                    cf_play = gr.Button(PLAY, size="sm", elem_id="cf-play", scale=1, min_width=90)
                cf_caption = gr.Markdown("", elem_id="cf-caption")
                with gr.Row(equal_height=False):
                    cf_frame = gr.Image(label="Image at step t", interactive=False, format="png", height=frame_h,
                                        elem_id="cf-frame", buttons=["download"], scale=2)
                    cf_diff = gr.Image(label="What changed: x_t − x_0 (grey = nothing)", interactive=False,
                                       format="png", height=frame_h, elem_id="cf-diff", buttons=[], scale=2)
                    with gr.Column(scale=2, min_width=220):  # gr.HTML ignores scale
                        cf_probs = gr.HTML(scrubber.empty_step()["cf_probs"], elem_id="cf-probs")
                with gr.Row(equal_height=False):
                    cf_energy_plot = gr.HTML(charts.placeholder("Energy vs step"), elem_id="cf-energy-plot",
                                             elem_classes=[page.CHART])
                    cf_prob_plot = gr.HTML(charts.placeholder("Target probability vs step"), elem_id="cf-prob-plot",
                                           elem_classes=[page.CHART])
                    cf_distance_plot = gr.HTML(charts.placeholder("Distance vs step"), elem_id="cf-distance-plot",
                                               elem_classes=[page.CHART])
                with gr.Row():
                    cf_gif = gr.DownloadButton("Download animation (GIF)", interactive=False, size="sm",
                                               elem_id="cf-gif", elem_classes=["dl-button"])
                    cf_json = gr.DownloadButton("Download per-step metrics (JSON)", interactive=False, size="sm",
                                                elem_id="cf-json", elem_classes=["dl-button"])
                    card = card_export.layout()
                tools = cf_tools.layout(card, painted)
        cf_timer = gr.Timer(0.15, active=False)
    return Components(cf_examples=cf_examples, cf_image=cf_image, cf_input=cf_input, cf_target=cf_target,
                      cf_run=cf_run, cf_cancel=cf_cancel, cf_norm=cf_norm, cf_eps=cf_eps, cf_steps=cf_steps,
                      cf_step_size=cf_step_size, cf_prediction=cf_prediction, cf_energy=cf_energy, cf_share=cf_share,
                      cf_link=cf_link, cf_summary=cf_summary, cf_retry=cf_retry, cf_step=cf_step, cf_play=cf_play,
                      cf_caption=cf_caption, cf_frame=cf_frame, cf_diff=cf_diff, cf_probs=cf_probs,
                      cf_energy_plot=cf_energy_plot, cf_prob_plot=cf_prob_plot, cf_distance_plot=cf_distance_plot,
                      cf_gif=cf_gif, cf_json=cf_json, cf_timer=cf_timer, examples=examples, tools=tools)


# ---------------------------------------------------------------- handlers

@user_errors
def preview(ex: Explainer, image, state) -> Preview:
    """The image at model resolution, its top-k prediction and its energy E(x); an upload browsers cannot show
    (TIFF) is replaced by a PNG copy in the image box."""
    state = ex.session(state)
    loaded = ex.session_model(state)
    if image_source(image) is None:
        return Preview(state, gr.skip(), None, charts.placeholder(NO_IMAGE), "", gr.update())
    shown = browser_copy(image, ex.files)
    x = try_again.read_image(ex, state, loaded, shown or image)
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
    return Preview(state, shown if shown else gr.skip(), upscale(image_u8, charts.display_scale(loaded.image_size)),
                   bars, text, gr.update(value=names[runner_up]), *try_again.after_choice(ex, state, loaded, x))


def _without_image(ex: Explainer, state, message: str) -> Preview:
    """Tab 1 with no image: the image box empty and everything that depends on the image at its placeholder; a
    stored path stays below, headed by a note that it is of the previous image (a note asking to press Run for
    "this one" could stay from an earlier choice)."""
    view = ex.get(state, "cf")
    note = f"_Below: the path of the previous image; choose an image to run another._\n\n{view.summary()}" if view \
        else gr.skip()
    return Preview(gr.skip(), None, None, charts.placeholder(message, 300, 80), "", gr.skip(), note,
                   gr.update(visible=False) if view else gr.skip())


def cleared(ex: Explainer, state) -> Preview:
    """The image box's clear button."""
    return _without_image(ex, state, NO_IMAGE)


def failed_upload(ex: Explainer, state) -> Preview:
    """After an upload that could not be used (its one message was the failed event's toast)."""
    return _without_image(ex, state, "That file could not be used: try another image")


@user_errors
def pick_example(ex: Explainer, state, evt: gr.SelectData) -> Preview:
    """A click on the example strip: that example becomes the image (chosen by index, never by a path sent)."""
    strip = ex.examples.strip()
    i = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    if not isinstance(i, int) or not 0 <= i < len(strip):
        raise gr.Error("No such example.", print_exception=False)
    path = ex.examples.paths[strip[i]]  # a Path: made here, trusted by image_source
    return preview(ex, path, state)._replace(cf_image=path)


def norm_defaults(ex: Explainer, norm, state) -> Settings:
    """Default radius and step size for a threat model at the session model's resolution."""
    loaded = ex.session_model(ex.session(state))
    d = explain.default_params(loaded.image_size, norm if norm in NORMS else "L2")
    _, eps, _, step_size = settings_shown(d, loaded.image_size)
    return Settings(eps, step_size)


def show(ex: Explainer, state: dict, view: CounterfactualView) -> Shown:
    """Store a path for this session and return everything tab 1 shows for it.

    The downloads are written afterwards by `export` (a chained event): the GIF's per-frame palettes take
    about as long as the PGD path itself, and the frame should not wait for them.
    """
    ex.put(state, "cf", view)
    last = len(view) - 1
    pending = gr.update(value=None, interactive=False)
    return Shown(state=state, cf_step=gr.update(maximum=last, value=last, interactive=True), **step_view(view, last),
                 cf_summary=view.summary(), cf_retry=try_again.button(view),
                 cf_play=gr.update(interactive=True), cf_gif=pending, cf_json=pending,
                 land_step=gr.update(value=0, maximum=last, interactive=False),
                 land_info="Press **Compute landscape** to see the energy around this path.", attr_figure=None,
                 attr_info="Press **Compute attributions** to explain this counterfactual.")


def _request(ex: Explainer, image, target, norm, eps, steps, step_size, state) -> tuple[Any, ...]:
    """A run's inputs checked: (session, its model, PGD settings, model input, target index, painted region)."""
    state = ex.session(state)
    loaded = ex.session_model(state)
    req = pgd_params(norm, eps, steps, step_size)
    x, target = try_again.read_image(ex, state, loaded, image), target_index(target, loaded)
    return state, loaded, req, x, target, region.for_model(ex, state, loaded)


@user_errors
def run(ex: Explainer, image, target, norm, eps, steps, step_size, state, progress=gr.Progress()) -> Shown:
    """Targeted PGD from the image toward `target`; the path is kept for scrubbing. Cancel stops it."""
    state, loaded, req, x, target, mask = _request(ex, image, target, norm, eps, steps, step_size, state)
    with ex.cancellable(state) as cancel:
        traj = ex.trajectory(loaded, x, target, req, progress, cancel=cancel, mask=mask)
    return show(ex, state, CounterfactualView.build(traj, loaded.key, loaded.version))


@user_errors
def run_live(ex: Explainer, image, target, norm, eps, steps, step_size, state) -> Iterator[Shown]:
    """`run` as the Run button calls it: while PGD runs (`Explainer.stream`) the frame, what changed, the
    probabilities and the caption ("Running: step t of T", the progress: a progress bar between frames would
    flicker) show where it stands; the rest follows when the path is done."""
    state, loaded, req, x, target, mask = _request(ex, image, target, norm, eps, steps, step_size, state)
    start = x[0].numpy()
    with ex.cancellable(state) as cancel:
        for seen in ex.stream(loaded, x, target, req, cancel=cancel, mask=mask):
            if isinstance(seen, Running):
                live = running_view(RunningView(seen, start, loaded.class_names, target, req["norm"]))
                yield Shown(**{**dict.fromkeys(Shown._fields, gr.skip()), **live})
            else:
                yield show(ex, state, CounterfactualView.build(seen, loaded.key, loaded.version))


def retry(ex: Explainer, *request: Any) -> Retried:
    """`retry_live`'s finished result, without the frames on the way."""
    return list(retry_live(ex, *request))[-1]


@user_errors
def retry_live(ex: Explainer, image, target, norm, eps, steps, step_size, state) -> Iterator[Retried]:
    """`retry` as the Try again button calls it: streamed like `run_live`, the new settings shown at the end."""
    norm, suggested = try_again.suggested(ex, state, image, target)
    for shown in run_live(ex, image, target, norm, suggested.eps, suggested.steps, suggested.step_size, state):
        done = isinstance(shown.cf_summary, str)  # a streamed frame leaves the summary as it is (a skip)
        req = {"norm": norm, "eps": suggested.eps, "steps": suggested.steps, "step_size": suggested.step_size}
        yield Retried(*shown, *(settings_shown(req, ex.session_model(ex.session(state)).image_size) if done
                                else (gr.skip(),) * 4))


def cancel(ex: Explainer, state, step) -> scrubber.Stopped:
    """The Cancel button: this session's PGD run stops at its next step (the event itself is cancelled too), and
    the page shows the stored path again (`scrubber.restore`, as after a failure)."""
    stop(ex, state)
    return scrubber.restore(ex, state, step)


@user_errors
def export(ex: Explainer, state) -> Exports:
    """The GIF and JSON downloads of the path the session shows now."""
    view = ex.view(state, "cf", "counterfactual")
    gif, js = ex.view_exports(view)
    return Exports(gr.update(value=gif, interactive=True), gr.update(value=js, interactive=True))


# ---------------------------------------------------------------- events

def chain_exports(event: Any, ex: Explainer, ui: Components, state: gr.State) -> None:
    """Write the downloads after a path is shown (here, and when the all-targets grid opens one)."""
    event.success(bind(export, ex), [state], outputs(Exports, ui), show_progress="hidden", **PRIVATE)
    cf_tools.follow(event, ui.tools)


def wire(ex: Explainer, ui: Components, *, state: gr.State, followers: Followers) -> None:
    preview_out = outputs(Preview, ui, state=state)
    uploaded = ui.cf_image.upload(bind(preview, ex), [ui.cf_image, state], preview_out, show_progress="minimal",
                                  show_progress_on=[ui.cf_input], **COMPUTE)
    uploaded.failure(bind(failed_upload, ex), [state], preview_out, **INSTANT)
    ui.cf_image.clear(bind(cleared, ex), [state], preview_out, **INSTANT)
    picked = ui.cf_examples.select(bind(pick_example, ex), [state], preview_out, show_progress="minimal",
                                   show_progress_on=[ui.cf_input], **COMPUTE)
    no_error_badge(picked, ui.cf_input)
    ui.cf_norm.input(bind(norm_defaults, ex), [ui.cf_norm, state], outputs(Settings, ui), **RAW, **PRIVATE)
    ui.cf_target.input(bind(try_again.on_target, ex), [state, ui.cf_image, ui.cf_target], [ui.cf_retry], **INSTANT)
    request = [ui.cf_image, ui.cf_target, *ui.settings, state]
    buttons = {"run": [ui.cf_run, ui.cf_retry], "cancel": ui.cf_cancel, "progress_on": ui.cf_summary}
    ran = cancellable(ui.cf_run.click, bind(run_live, ex), request, outputs(Shown, ui, followers, state=state),
                      **buttons)
    retried = cancellable(ui.cf_retry.click, bind(retry_live, ex), request,
                          outputs(Retried, ui, followers, state=state), **buttons)
    stopped = outputs(scrubber.Stopped, ui, ui.tools.card)
    ui.cf_cancel.click(bind(cancel, ex), [state, ui.cf_step], stopped, cancels=[ran, retried], **STOP)
    for button, event in ((ui.cf_run, ran), (ui.cf_retry, retried)):   # the stored path's controls: off meanwhile
        button.click(scrubber.held, None, outputs(scrubber.Held, ui, ui.tools.card), **INSTANT)
        event.failure(bind(scrubber.restore, ex), [state, ui.cf_step], stopped, **INSTANT)   # a failure, as a Cancel
    chain_exports(ran, ex, ui, state)
    chain_exports(retried, ex, ui, state)
    frame = outputs(Frame, ui, followers)
    ui.cf_step.input(bind(scrub, ex), [state, ui.cf_step], frame, **INSTANT)
    ui.cf_play.click(bind(play, ex), [state, ui.cf_step, ui.cf_play], frame, **INSTANT)
    ui.cf_timer.tick(bind(play_tick, ex), [state, ui.cf_step], frame, **INSTANT)
    share.wire(ex, ui.cf_share, request, ui.cf_link, ui.cf_input)
