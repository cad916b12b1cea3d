"""Tab 5, Robust vs standard: tab 1's request on the session's (robust) model, on a standard classifier, and on the
standard classifier guided by the robust one (its gradient projected into a cone around the DAT model's:
`dat_core.guidance`), scrubbed with one slider."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import gradio as gr
import numpy as np

from dat_core.guidance import CONE_ANGLE

from .. import charts, page
from ..explainer import Explainer
from ..inputs import echo, model_input, pgd_params, target_index, user_errors
from ..views import CompareView
from ..wiring import INSTANT, STOP, bind, cancellable, outputs, stop_run
from . import counterfactual
from .scrubber import gone

PRESS = "Press **Compare** to run the first tab's image, target and settings on every model."


@dataclass
class Components:
    cmp_run: gr.Button
    cmp_cancel: gr.Button
    cmp_summary: gr.Markdown
    cmp_step: gr.Slider
    cmp_caption: gr.Markdown
    cmp_robust_frame: gr.Image
    cmp_robust_diff: gr.Image
    cmp_standard_frame: gr.Image
    cmp_standard_diff: gr.Image
    cmp_guided_frame: gr.Image
    cmp_guided_diff: gr.Image
    cmp_cone: gr.Slider
    cmp_prob_plot: gr.HTML
    cmp_energy_plot: gr.HTML


class Frame(NamedTuple):
    """Step t on every model."""
    cmp_robust_frame: np.ndarray
    cmp_robust_diff: np.ndarray
    cmp_standard_frame: np.ndarray
    cmp_standard_diff: np.ndarray
    cmp_guided_frame: np.ndarray
    cmp_guided_diff: np.ndarray
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
                    "to paint the target class. The third column explains the standard model *guided by DAT*: each "
                    "of its steps is turned to within α degrees of the DAT model's direction. " + ex.standard_note,
                    elem_id="cmp-note")
        with gr.Row(equal_height=False):
            cmp_run = gr.Button("Compare", variant="primary", elem_id="cmp-run", interactive=ex.standard is not None,
                                scale=2)
            cmp_cancel = gr.Button("■ Cancel the comparison", variant="stop", visible=False, elem_id="cmp-cancel",
                                   scale=2)
            cmp_cone = gr.Slider(0, 180, value=CONE_ANGLE, step=1, label="Cone angle α of the guided path (degrees)",
                                 info="0: follow the DAT model's gradient only; 180: no guidance", elem_id="cmp-cone",
                                 scale=3)
        cmp_summary = gr.Markdown(PRESS, elem_id="cmp-summary")   # never empty: the progress bar shows here
        cmp_step = gr.Slider(0, 1, value=0, step=1, label="PGD step t (every model)", interactive=False,
                             elem_id="cmp-step")
        cmp_caption = gr.Markdown("", elem_id="cmp-caption")
        with gr.Row(equal_height=False):
            columns = {}
            for key, name in (("robust", "Robust (DAT)"), ("standard", "Standard"), ("guided", "Guided by DAT")):
                with gr.Column(min_width=260):
                    with gr.Row(equal_height=False):
                        columns[key] = (gr.Image(label=f"{name}: step t", interactive=False, format="png", height=200,
                                                 elem_id=f"cmp-{key}-frame", buttons=[], min_width=120),
                                        gr.Image(label="change", interactive=False, format="png", height=200,
                                                 elem_id=f"cmp-{key}-diff", buttons=[], min_width=120))
        with gr.Row(equal_height=False):
            cmp_prob_plot = gr.HTML(charts.placeholder("Target probability, every model"), elem_id="cmp-prob-plot",
                                    elem_classes=[page.CHART])
            cmp_energy_plot = gr.HTML(charts.placeholder("Energy, every model"), elem_id="cmp-energy-plot",
                                      elem_classes=[page.CHART])
    return Components(cmp_run=cmp_run, cmp_cancel=cmp_cancel, cmp_summary=cmp_summary, cmp_step=cmp_step,
                      cmp_caption=cmp_caption,
                      cmp_robust_frame=columns["robust"][0], cmp_robust_diff=columns["robust"][1],
                      cmp_standard_frame=columns["standard"][0], cmp_standard_diff=columns["standard"][1],
                      cmp_guided_frame=columns["guided"][0], cmp_guided_diff=columns["guided"][1], cmp_cone=cmp_cone,
                      cmp_prob_plot=cmp_prob_plot, cmp_energy_plot=cmp_energy_plot)


def frame_at(view: CompareView, i: int) -> Frame:
    g = view.guided
    return Frame(view.robust.frame(i), view.robust.diff(i), view.standard.frame(i), view.standard.diff(i),
                 None if g is None else g.frame(i), None if g is None else g.diff(i),
                 view.charts["confidence"].svg(i), view.charts["energy"].svg(i), view.caption(i))


def cone_angle(value: Any) -> float:
    """The guided path's cone angle in degrees, 0..180."""
    try:
        angle = float(value)
    except (TypeError, ValueError, OverflowError):
        angle = math.nan
    if isinstance(value, bool) or not 0 <= angle <= 180:
        raise ValueError(f"the cone angle must be a number of degrees from 0 to 180; got {echo(value)}")
    return angle


@user_errors
def run(ex: Explainer, image, target, norm, eps, steps, step_size, state, cone=CONE_ANGLE,
        progress=gr.Progress()) -> Compared:
    """The same counterfactual request on the session's (robust) model, the standard model, and the standard model
    guided by the robust one within a cone of `cone` degrees."""
    if ex.standard is None:
        raise gr.Error(ex.standard_note, print_exception=False)
    state = ex.session(state)
    loaded = ex.session_model(state)
    std = ex.standard
    if loaded.key == std.key:
        raise gr.Error("The model loaded is the standard model itself: load a robust (DAT) model in the Model tab "
                       "to compare the two.", print_exception=False)
    if std.class_names != loaded.class_names:
        raise gr.Error("The standard model has different classes than the current model; load a model with the "
                       "same classes to compare.", print_exception=False)
    if std.image_size != loaded.image_size:   # the guided path steps on both models' gradients of one image
        raise gr.Error(f"The standard model takes {std.image_size}×{std.image_size} px images, the current model "
                       f"{loaded.image_size}×{loaded.image_size}: load a model of the standard model's size to "
                       "compare.", print_exception=False)
    req = pgd_params(norm, eps, steps, step_size)
    angle = cone_angle(cone)
    target = target_index(target, loaded)
    x_std = model_input(image, std)
    for model in (loaded, std):   # the three paths' frames are kept together (each path runs alone)
        ex.check_budget(model, 3, req["steps"], "steps", at_once=1)
    with ex.cancellable(state) as cancel:
        robust = ex.trajectory(loaded, model_input(image, loaded), target, req, progress, "PGD on the robust model",
                               cancel=cancel)
        standard = ex.trajectory(std, x_std, target, req, progress, "PGD on the standard model", cancel=cancel)
        guided = ex.trajectory(std, x_std, target, req, progress, "PGD on the standard model, guided by DAT",
                               cancel=cancel, guide=loaded, cone_angle=angle)
    view = CompareView.build(robust, standard, loaded.key, std.key, guided)
    ex.put(state, "cmp", view)
    last = len(view) - 1
    return Compared(state=state, cmp_step=gr.update(maximum=last, value=last, interactive=True),
                    **frame_at(view, last)._asdict(), cmp_summary=view.summary())


def forget(ex: Explainer, state) -> Compared:
    """After another image or model is chosen the comparison shown was of the previous one: gone."""
    if not ex.forget(state, "cmp"):
        return Compared(*(gr.skip(),) * len(Compared._fields))
    return Compared(state, gr.update(value=0, maximum=1, interactive=False), *(None,) * 6,
                    charts.placeholder("Target probability, every model"), charts.placeholder("Energy, every model"),
                    "", PRESS)



@user_errors
def scrub(ex: Explainer, state, step) -> Frame:
    view = ex.get(state, "cmp")
    if view is None:
        return gone("cmp_caption", "comparison", Frame)
    return frame_at(view, view.index(step))


def wire(ex: Explainer, ui: Components, *, state: gr.State, cf: counterfactual.Components) -> None:
    compared = cancellable(ui.cmp_run.click, bind(run, ex), [cf.cf_image, cf.cf_target, *cf.settings, state,
                                                            ui.cmp_cone],
                           outputs(Compared, ui, state=state), run=[ui.cmp_run], cancel=ui.cmp_cancel,
                           progress_on=ui.cmp_summary)
    ui.cmp_cancel.click(bind(stop_run, ex), [state], [ui.cmp_run, ui.cmp_cancel], cancels=[compared], **STOP)
    ui.cmp_step.input(bind(scrub, ex), [state, ui.cmp_step], outputs(Frame, ui), **INSTANT)
    cf.cf_input.change(bind(forget, ex), [state], outputs(Compared, ui, state=state), **INSTANT)   # image or model
