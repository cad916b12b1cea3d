"""Tab 4, Attributions: Captum maps of tab 1's path (at its start, current step or end) for the predicted and
the target class, beside the change the counterfactual made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import gradio as gr
import numpy as np

from explain.attribution import METHODS, TITLES, attribute_trajectory, plot_attributions
from explain.plots import figure_to_array

from ..explainer import Explainer, stoppable
from ..inputs import ATTR_FRAMES, parse_methods, user_errors
from ..state import attribution_batch
from ..wiring import STOP, bind, cancellable, outputs, stop_run
from . import counterfactual


@dataclass
class Components:
    attr_methods: gr.CheckboxGroup
    attr_at: gr.Radio
    attr_run: gr.Button
    attr_cancel: gr.Button
    attr_figure: gr.Image
    attr_info: gr.Markdown


class Attributions(NamedTuple):
    attr_figure: np.ndarray
    attr_info: str


def layout() -> Components:
    with gr.Tab("Attributions", id="attributions", elem_id="tab-attributions"):
        gr.Markdown("Which pixels raise (red) or lower (blue) the score of the predicted class and of the target "
                    "class, beside the change the counterfactual made. Uses the latest result of the first tab.")
        with gr.Row(equal_height=True):
            attr_methods = gr.CheckboxGroup([(TITLES[k], k) for k in METHODS],
                                            value=["saliency", "integrated_gradients", "smoothgrad"],
                                            label="Methods (Captum)", elem_id="attr-methods", scale=3)
            attr_at = gr.Radio(list(ATTR_FRAMES), value=ATTR_FRAMES[0], label="Explain the image at",
                               elem_id="attr-at", scale=2)
            attr_run = gr.Button("Compute attributions", variant="primary", elem_id="attr-run", scale=1)
            attr_cancel = gr.Button("■ Cancel", variant="stop", visible=False, elem_id="attr-cancel", scale=1)
        attr_figure = gr.Image(label="Attributions", interactive=False, format="png", elem_id="attr-figure",
                               buttons=["download", "fullscreen"])
        attr_info = gr.Markdown("Run a counterfactual first, then press **Compute attributions**.",
                                elem_id="attr-info")
    return Components(attr_methods=attr_methods, attr_at=attr_at, attr_run=attr_run, attr_cancel=attr_cancel,
                      attr_figure=attr_figure, attr_info=attr_info)


@user_errors
def run(ex: Explainer, state, methods, at, step, progress=gr.Progress()) -> Attributions:
    """Captum maps for the predicted and the target class beside the counterfactual difference; Cancel (or the
    visitor leaving) stops them at the model's next forward."""
    if not isinstance(at, str) or at not in ATTR_FRAMES:   # a forged list was a TypeError (unhashable) below
        raise ValueError(f"explain the image at: choose one of {', '.join(ATTR_FRAMES)}")
    state = ex.session(state)
    view = ex.view(state, "cf", "counterfactual (run one in the first tab)")
    methods = parse_methods(methods)
    frame = {ATTR_FRAMES[0]: 0, ATTR_FRAMES[2]: len(view) - 1}.get(at)
    frame = view.index(step) if frame is None else frame
    progress(None, desc="Computing attributions")
    loaded = ex.view_model(view)
    with ex.cancellable(state) as cancel:
        result = attribute_trajectory(stoppable(loaded.model, cancel), view.trajectory, methods, step=-1,
                                      frame=frame, internal_batch_size=attribution_batch(loaded.config))
    timing = ", ".join(f"{TITLES[m]} {s:.1f} s" for m, s in result.seconds.items())
    return Attributions(figure_to_array(plot_attributions(result)),
                        f"Explained the image at step {frame}. Time: {timing}.")


def wire(ex: Explainer, ui: Components, *, state: gr.State, cf: counterfactual.Components) -> None:
    computed = cancellable(ui.attr_run.click, bind(run, ex), [state, ui.attr_methods, ui.attr_at, cf.cf_step],
                           outputs(Attributions, ui), run=[ui.attr_run], cancel=ui.attr_cancel,
                           progress_on=ui.attr_figure)
    ui.attr_cancel.click(bind(stop_run, ex), [state], [ui.attr_run, ui.attr_cancel], cancels=[computed], **STOP)
