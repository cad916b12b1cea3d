"""Tab 6, Generate: class samples by PGD on the class logit from noise or an uploaded image, scrubbed by
sampling step. `samples` also serves the `/generate` API endpoint."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import numpy as np

import explain
from dat_core.sampling import default_step_size, default_steps
from explain import params
from explain.export import save_gif

from .. import charts, page
from ..explainer import Cancelled, Explainer, progress_steps
from ..inputs import (
    EVERY_CLASS,
    MAX_ALL_TARGETS,
    MAX_REQUEST_STEPS,
    MAX_SAMPLES_PER_CLASS,
    SEED_KINDS,
    echo,
    model_input,
    target_index,
    user_errors,
)
from ..state import LoadedModel
from ..views import SamplingView
from ..wiring import INSTANT, STOP, bind, cancellable, outputs, stop_run
from .scrubber import gone


@dataclass
class Components:
    gen_target: gr.Dropdown
    gen_seed_kind: gr.Radio
    gen_seed_image: gr.Image
    gen_seed: gr.Number
    gen_n: gr.Number
    gen_steps: gr.Number
    gen_step_size: gr.Number
    gen_run: gr.Button
    gen_cancel: gr.Button
    gen_step: gr.Slider
    gen_caption: gr.Markdown
    gen_grid: gr.Image
    gen_plot: gr.HTML
    gen_gif: gr.DownloadButton


class Frame(NamedTuple):
    """Sampling step t: the grid of samples, the probability chart's marker, the caption."""
    gen_grid: np.ndarray
    gen_plot: str
    gen_caption: str


class Generated(NamedTuple):
    """A new sampling run at its last step, with its animation to download."""
    state: dict
    gen_step: Any
    gen_grid: np.ndarray
    gen_plot: str
    gen_caption: str
    gen_gif: Any


def layout(loaded: LoadedModel) -> Components:
    with gr.Tab("Generate", id="generate", elem_id="tab-generate"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=300):
                gr.Markdown("Start from a photo of something else (as DAT was trained), noise or your image, and "
                            "let PGD lower the energy of a class: the model paints what it thinks the class looks "
                            "like.")
                gen_target = gr.Dropdown([EVERY_CLASS, *loaded.class_names], value=EVERY_CLASS,
                                         label="Class to generate", elem_id="gen-target")
                gen_seed_kind = gr.Radio(list(SEED_KINDS), value=next(iter(SEED_KINDS)), label="Start from",
                                         elem_id="gen-seed-kind")
                gen_seed_image = gr.Image(type="filepath", image_mode=None, height=140, label="Seed image",
                                          visible=False, sources=["upload", "clipboard"], elem_id="gen-seed-image")
                with gr.Row():
                    gen_seed = gr.Number(0, label="Random seed", precision=0, elem_id="gen-seed")
                    gen_n = gr.Number(1, label="Samples per class", precision=0, elem_id="gen-n")
                with gr.Row():
                    gen_steps = gr.Number(default_steps(loaded.image_size), label=f"Steps (1–{MAX_REQUEST_STEPS})",
                                          precision=0, elem_id="gen-steps")
                    gen_step_size = gr.Number(default_step_size(loaded.image_size), label="Step size",
                                              elem_id="gen-step-size")
                gen_run = gr.Button("Generate", variant="primary", elem_id="gen-run")
                gen_cancel = gr.Button("■ Cancel", variant="stop", visible=False, elem_id="gen-cancel")
            with gr.Column(scale=7):
                gen_step = gr.Slider(0, 1, value=0, step=1, label="Sampling step t — drag to scrub", interactive=False,
                                     elem_id="gen-step")
                gen_caption = gr.Markdown("", elem_id="gen-caption")
                with gr.Row(equal_height=False):
                    gen_grid = gr.Image(label="Samples at step t", interactive=False, format="png", height=320,
                                        elem_id="gen-grid", buttons=["download"])
                    gen_plot = gr.HTML(charts.placeholder("Class probability vs step"), elem_id="gen-plot",
                                       elem_classes=[page.CHART])
                gen_gif = gr.DownloadButton("Download sampling animation (GIF)", interactive=False, size="sm",
                                            elem_id="gen-gif", elem_classes=["dl-button"])
    return Components(gen_target=gen_target, gen_seed_kind=gen_seed_kind, gen_seed_image=gen_seed_image,
                      gen_seed=gen_seed, gen_n=gen_n, gen_steps=gen_steps, gen_step_size=gen_step_size,
                      gen_run=gen_run, gen_cancel=gen_cancel, gen_step=gen_step, gen_caption=gen_caption,
                      gen_grid=gen_grid, gen_plot=gen_plot, gen_gif=gen_gif)


@user_errors
def seed_fields(kind: Any) -> tuple[Any, Any, Any]:
    """My image: its upload box; a seed kind: the random seed and samples per class, which only a kind draws
    from (an image is one fixed start: a second sample per class would repeat the first)."""
    image = isinstance(kind, str) and SEED_KINDS.get(kind) == "image"
    return gr.update(visible=image), gr.update(visible=not image), gr.update(visible=not image)


def samples(ex: Explainer, loaded: LoadedModel, target, seed_kind, seed_image, seed, n_per_class, steps, step_size,
            progress: Any = None, cancel: threading.Event | None = None) -> tuple[SamplingView, Path]:
    """Validate a sampling request, run it, and write the animation of its sampling path."""
    kind = SEED_KINDS.get(seed_kind, seed_kind) if isinstance(seed_kind, str) else None
    if kind not in SEED_KINDS.values():
        raise gr.Error(f"Unknown seed kind {echo(seed_kind)!r}; choose one of {', '.join(SEED_KINDS)}.",
                       print_exception=False)
    if kind == "image":   # its random seed and samples per class are hidden (`seed_fields`): one start
        seed, n = 0, 1
    else:
        seed = params.parse_int("random seed", seed, 0, 2**63 - 1)
        n = params.parse_int("samples per class", n_per_class, 1, MAX_SAMPLES_PER_CLASS)
    steps = params.parse_int("steps", steps, 1, MAX_REQUEST_STEPS)
    step_size = params.parse_step(step_size)
    targets = "all" if str(target).strip().lower() in (EVERY_CLASS, "all") else target_index(target, loaded)
    k = len(loaded.class_names) if targets == "all" else 1
    if k * n > MAX_ALL_TARGETS:
        raise gr.Error(f"{k} classes × {n} samples is more than {MAX_ALL_TARGETS} samples; pick one class or fewer "
                       "samples per class.", print_exception=False)
    seeds = model_input(seed_image, loaded, "Upload the image to start from (the examples of the first tab do not "
                        "count here), or pick another start.") if kind == "image" else kind
    ex.check_budget(loaded, k * n, steps,   # every sample's frames are kept
                    "steps, samples per class or classes" if k > 1 else "steps or samples")
    result = explain.generate(loaded.model, targets, n, seed=seed, seeds=seeds, steps=steps, step_size=step_size,
                              record_every=1, autocast=ex.uses_bf16(loaded),
                              on_step=progress_steps(progress, "Sampling", steps, cancel))
    if int(result.steps[-1]) < steps:
        raise Cancelled(int(result.steps[-1]), steps)
    view = SamplingView.build(result)
    return view, save_gif(view.grids(), ex.files.path("samples.gif"), scale=1)


@user_errors
def run(ex: Explainer, target, seed_kind, seed_image, seed, n_per_class, steps, step_size, state,
        progress=gr.Progress()) -> Generated:
    """Class-conditional samples by PGD on the class logit from noise or from an uploaded seed image."""
    state = ex.session(state)
    with ex.cancellable(state) as cancel:
        view, gif = samples(ex, ex.session_model(state), target, seed_kind, seed_image, seed, n_per_class, steps,
                            step_size, progress, cancel)
    ex.put(state, "gen", view)
    last = len(view) - 1
    return Generated(state, gr.update(maximum=last, value=last, interactive=True), view.grid(last),
                     view.chart.svg(last), view.caption(last), gr.update(value=str(gif), interactive=True))



@user_errors
def scrub(ex: Explainer, state, step) -> Frame:
    view = ex.get(state, "gen")
    if view is None:
        return gone("gen_caption", "sampling run", Frame)
    i = view.index(step)
    return Frame(view.grid(i), view.chart.svg(i), view.caption(i))


def forget(ex: Explainer, state) -> Generated:
    """After another model is loaded the samples shown were the previous model's: gone."""
    if not ex.forget(state, "gen"):
        return Generated(*(gr.skip(),) * len(Generated._fields))
    return Generated(state, gr.update(value=0, maximum=1, interactive=False), None,
                     charts.placeholder("Class probability vs step"), "", gr.update(value=None, interactive=False))


def wire(ex: Explainer, ui: Components, *, state: gr.State) -> None:
    ran = cancellable(ui.gen_run.click, bind(run, ex), [ui.gen_target, ui.gen_seed_kind, ui.gen_seed_image,
                                                       ui.gen_seed, ui.gen_n, ui.gen_steps, ui.gen_step_size, state],
                      outputs(Generated, ui, state=state), run=[ui.gen_run], cancel=ui.gen_cancel,
                      progress_on=ui.gen_grid)
    ui.gen_cancel.click(bind(stop_run, ex), [state], [ui.gen_run, ui.gen_cancel], cancels=[ran], **STOP)
    ui.gen_seed_kind.change(seed_fields, ui.gen_seed_kind, [ui.gen_seed_image, ui.gen_seed, ui.gen_n], **INSTANT)
    ui.gen_step.input(bind(scrub, ex), [state, ui.gen_step], outputs(Frame, ui), **INSTANT)
