"""Tab 5, Robust vs standard: tab 1's request on the session's (robust) model and on a standard classifier,
scrubbed with one slider."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import gradio as gr
import numpy as np

from .. import charts
from ..explainer import Explainer
from ..inputs import model_input, pgd_params, target_index, user_errors
from ..views import CompareView
from ..wiring import COMPUTE, INSTANT, bind, no_error_badge, outputs
from . import counterfactual


@dataclass
class Components:
    cmp_run: gr.Button
    cmp_summary: gr.Markdown
    cmp_step: gr.Slider
    cmp_caption: gr.Markdown
    cmp_robust_frame: gr.Image
    cmp_robust_diff: gr.Image
    cmp_standard_frame: gr.Image
    cmp_standard_diff: gr.Image
    cmp_prob_plot: gr.HTML
    cmp_energy_plot: gr.HTML


class Frame(NamedTuple):
    """Step t on both models."""
    cmp_robust_frame: np.ndarray
    cmp_robust_diff: np.ndarray
    cmp_standard_frame: np.ndarray
    cmp_standard_diff: np.ndarray
    cmp_prob_plot: str
    cmp_energy_plot: str
    cmp_caption: str


# A new comparison at its last step.
Compared = NamedTuple("Compared", [("state", dict), ("cmp_step", Any), *Frame.__annotations__.items(),
                                   ("cmp_summary", str)])


def layout(ex: Explainer) -> Components:
    with gr.Tab("Robust vs standard", id="compare", elem_id="tab-compare"):
        gr.Markdown("The same request (image, target and settings of the first tab) on the robust DAT model and on a "
                    "standard, non-robust classifier. A standard model flips with invisible noise; the robust one has "
                    "to paint the target class. " + ex.standard_note, elem_id="cmp-note")
        cmp_run = gr.Button("Compare", variant="primary", elem_id="cmp-run", interactive=ex.standard is not None)
        cmp_summary = gr.Markdown("", elem_id="cmp-summary")
        cmp_step = gr.Slider(0, 1, value=0, step=1, label="PGD step t (both models)", interactive=False,
                             elem_id="cmp-step")
        cmp_caption = gr.Markdown("", elem_id="cmp-caption")
        with gr.Row(equal_height=False):
            cmp_robust_frame = gr.Image(label="Robust (DAT): image at step t", interactive=False, format="png",
                                        height=200, elem_id="cmp-robust-frame", buttons=[])
            cmp_robust_diff = gr.Image(label="Robust: change", interactive=False, format="png", height=200,
                                       elem_id="cmp-robust-diff", buttons=[])
            cmp_standard_frame = gr.Image(label="Standard: image at step t", interactive=False, format="png",
                                          height=200, elem_id="cmp-standard-frame", buttons=[])
            cmp_standard_diff = gr.Image(label="Standard: change", interactive=False, format="png", height=200,
                                         elem_id="cmp-standard-diff", buttons=[])
        with gr.Row(equal_height=False):
            cmp_prob_plot = gr.HTML(charts.placeholder("Target probability, both models"), elem_id="cmp-prob-plot")
            cmp_energy_plot = gr.HTML(charts.placeholder("Energy, both models"), elem_id="cmp-energy-plot")
    return Components(cmp_run=cmp_run, cmp_summary=cmp_summary, cmp_step=cmp_step, cmp_caption=cmp_caption,
                      cmp_robust_frame=cmp_robust_frame, cmp_robust_diff=cmp_robust_diff,
                      cmp_standard_frame=cmp_standard_frame, cmp_standard_diff=cmp_standard_diff,
                      cmp_prob_plot=cmp_prob_plot, cmp_energy_plot=cmp_energy_plot)


def frame_at(view: CompareView, i: int) -> Frame:
    return Frame(view.robust.frame(i), view.robust.diff(i), view.standard.frame(i), view.standard.diff(i),
                 view.charts["confidence"].svg(i), view.charts["energy"].svg(i), view.caption(i))


@user_errors
def run(ex: Explainer, image, target, norm, eps, steps, step_size, state, progress=gr.Progress()) -> Compared:
    """The same counterfactual request on the session's (robust) model and the standard model."""
    if ex.standard is None:
        raise gr.Error(ex.standard_note, print_exception=False)
    state = ex.session(state)
    loaded = ex.session_model(state)
    std = ex.standard
    if std.class_names != loaded.class_names:
        raise gr.Error("The standard model has different classes than the current model; load a model with the "
                       "same classes to compare.", print_exception=False)
    req = pgd_params(norm, eps, steps, step_size)
    target = target_index(target, loaded)
    robust = ex.trajectory(loaded, model_input(image, loaded), target, req, progress, "PGD on the robust model")
    standard = ex.trajectory(std, model_input(image, std), target, req, progress, "PGD on the standard model")
    view = CompareView.build(robust, standard, loaded.key, std.key)
    ex.put(state, "cmp", view)
    last = len(view) - 1
    return Compared(state=state, cmp_step=gr.update(maximum=last, value=last, interactive=True),
                    **frame_at(view, last)._asdict(), cmp_summary=view.summary())


@user_errors
def scrub(ex: Explainer, state, step) -> Frame:
    view = ex.view(state, "cmp", "comparison")
    return frame_at(view, view.index(step))


def wire(ex: Explainer, ui: Components, *, state: gr.State, cf: counterfactual.Components) -> None:
    compared = ui.cmp_run.click(bind(run, ex), [cf.cf_image, cf.cf_target, *cf.settings, state],
                                outputs(Compared, ui, state=state), show_progress_on=ui.cmp_summary, **COMPUTE)
    no_error_badge(compared, ui.cmp_summary)
    ui.cmp_step.input(bind(scrub, ex), [state, ui.cmp_step], outputs(Frame, ui), **INSTANT)
