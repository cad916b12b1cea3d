"""Tab 2, All targets: the counterfactual of tab 1's image toward every class at once; a click on a result
opens its path in tab 1's scrubber."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import gradio as gr
import numpy as np
import torch

import explain

from .. import charts
from ..explainer import Cancelled, Explainer, progress_steps
from ..inputs import MAX_ALL_TARGETS, model_input, pgd_params, settings_shown, user_errors
from ..state import paths_at_once
from ..views import AllTargetsView, CounterfactualView
from ..wiring import COMPUTE, INSTANT, STOP, bind, cancellable, no_error_badge, outputs, stop_run
from . import counterfactual

BATCH = 64  # most paths per PGD batch (explain.counterfactuals' max_batch; fewer for a large model,
#            `paths_at_once`); the progress bar counts the batches' steps


@dataclass
class Components:
    all_run: gr.Button
    all_cancel: gr.Button
    all_grid: gr.Gallery
    all_table: gr.Markdown


class Grid(NamedTuple):
    state: dict
    all_grid: list[tuple[np.ndarray, str]]
    all_table: str


# tab 1 showing the clicked path, switched to, with the path's target and settings in its boxes (Run repeats it)
Opened = NamedTuple("Opened", [*counterfactual.Shown.__annotations__.items(), ("tabs", Any), ("cf_target", Any),
                               ("cf_norm", Any), ("cf_eps", Any), ("cf_steps", Any), ("cf_step_size", Any)])


def layout() -> Components:
    with gr.Tab("All targets", id="all", elem_id="tab-all"):
        gr.Markdown("One click runs the counterfactual from the image in the first tab toward **every class** "
                    "(same settings). Click a result to scrub its path in the first tab.")
        all_run = gr.Button("Run toward every class", variant="primary", elem_id="all-run")
        all_cancel = gr.Button("■ Cancel the run", variant="stop", visible=False, elem_id="all-cancel")
        all_grid = gr.Gallery(label="Final image per target class (in class order)", columns=5, height=540,
                              object_fit="contain", format="png", allow_preview=False, elem_id="all-grid")
        all_table = gr.Markdown("", elem_id="all-table")
    return Components(all_run=all_run, all_cancel=all_cancel, all_grid=all_grid, all_table=all_table)


@user_errors
def run(ex: Explainer, image, norm, eps, steps, step_size, state, progress=gr.Progress()) -> Grid:
    """Counterfactuals toward every class (the most probable MAX_ALL_TARGETS ones for big label sets)."""
    state = ex.session(state)
    loaded = ex.session_model(state)
    req = pgd_params(norm, eps, steps, step_size)
    x = model_input(image, loaded)
    k = len(loaded.class_names)
    if k <= MAX_ALL_TARGETS:
        targets, note = list(range(k)), ""
    else:
        with torch.no_grad():
            order = loaded.model(x.to(loaded.device)).float()[0].argsort(descending=True)
        targets = sorted(int(c) for c in order[:MAX_ALL_TARGETS])
        note = f"\n\n_Showing the {MAX_ALL_TARGETS} most probable of {k} classes._"
    batch = min(BATCH, paths_at_once(loaded.config))   # a large model runs fewer paths a batch: the tab has no
    ex.check_budget(loaded, len(targets), req["steps"], at_once=batch)   # control for how many targets it takes
    batches = math.ceil(len(targets) / batch)
    with ex.cancellable(state) as cancel:
        on_step = progress_steps(progress, f"PGD toward {len(targets)} classes", batches * req["steps"], cancel)
        trajs = explain.counterfactuals(loaded.model, x, targets, autocast=ex.uses_bf16(loaded), max_batch=batch,
                                        on_step=on_step, **req)
    if len(trajs) < len(targets) or int(trajs[-1].steps[-1]) < req["steps"]:
        raise Cancelled(int(trajs[-1].steps[-1]) if trajs else 0, req["steps"])
    view = AllTargetsView(trajs, loaded.key, charts.display_scale(loaded.image_size), loaded.version)
    ex.put(state, "all", view)
    return Grid(state, view.gallery(), view.table() + note)


def forget(ex: Explainer, state) -> Grid:
    """After another image or model is chosen: the grid was of the previous one, and a click on it would open
    that path in tab 1 beside the new image (its target perhaps no class of the new model). Gone, and said."""
    if not ex.forget(state, "all"):
        return Grid(*(gr.skip(),) * len(Grid._fields))
    return Grid(state, [], "_Press **Run toward every class** for this image (the grid shown was of the previous "
                           "image or model)._")



@user_errors
def open_target(ex: Explainer, state, evt: gr.SelectData) -> Opened:
    """A click on a cell of the all-targets grid opens that path in the scrubber (tab 1)."""
    state = ex.session(state)
    view = ex.view(state, "all", "all-targets grid")
    i = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    if not isinstance(i, int) or not 0 <= i < len(view.trajectories):
        raise gr.Error(f"No grid cell {evt.index!r}.", print_exception=False)
    traj = view.trajectories[i]
    shown = counterfactual.show(ex, state, CounterfactualView.build(traj, view.model_key, view.model_version))
    return Opened(*shown, gr.Tabs(selected="counterfactual"), gr.update(value=traj.class_names[traj.target]),
                  *settings_shown(traj.params, ex.session_model(state).image_size))


def wire(ex: Explainer, ui: Components, *, state: gr.State, tabs: gr.Tabs, cf: counterfactual.Components,
         followers: counterfactual.Followers) -> None:
    ran = cancellable(ui.all_run.click, bind(run, ex), [cf.cf_image, *cf.settings, state],
                      outputs(Grid, ui, state=state), run=[ui.all_run], cancel=ui.all_cancel,
                      progress_on=ui.all_grid)
    ui.all_cancel.click(bind(stop_run, ex), [state], [ui.all_run, ui.all_cancel], cancels=[ran], **STOP)
    cf.cf_input.change(bind(forget, ex), [state], outputs(Grid, ui, state=state), **INSTANT)   # image or model
    opened = ui.all_grid.select(bind(open_target, ex), [state],
                                outputs(Opened, cf, followers, state=state, tabs=tabs),
                                show_progress_on=cf.cf_summary, **COMPUTE)
    no_error_badge(opened, cf.cf_summary)
    counterfactual.chain_exports(opened, ex, cf, state)
