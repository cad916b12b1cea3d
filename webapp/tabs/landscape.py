"""Tab 3, Energy landscape: the energy on a plane through tab 1's start image and its counterfactual, with the
PGD path on it; this tab's step slider and tab 1's move together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import gradio as gr

from explain import params
from explain.landscape import (
    LANDSCAPE_BUDGET_S,
    LandscapePlan,
    energy_landscape,
    plan_landscape,
    seconds_per_image,
)

from .. import page
from ..explainer import Explainer, stoppable
from ..inputs import user_errors
from ..state import LoadedModel, activation_bytes
from ..views import LandscapeView
from ..wiring import COMPUTE, INSTANT, bind, no_error_badge, outputs
from . import counterfactual
from .scrubber import empty_landscape, gone

ENERGIES = ("E(x) — how typical the image is", "E(x, y) — how typical it is as the target class")
GRID_SIDE = (5, 65)  # grid points per side the slider offers and a request may ask for (a large grid is shrunk by time)


@dataclass
class Components:
    land_energy: gr.Radio
    land_grid: gr.Slider
    land_run: gr.Button
    land_step: gr.Slider
    land_map: gr.HTML
    land_path: gr.HTML
    land_info: gr.Markdown


class Landscape(NamedTuple):
    land_map: str
    land_path: str
    land_step: Any
    land_info: str


def layout() -> Components:
    with gr.Tab("Energy landscape", id="landscape", elem_id="tab-landscape"):
        gr.Markdown("The energy on a flat slice of image space through the start image: one axis points toward the "
                    "counterfactual, the other is a random direction. The white line is the PGD path. Uses the latest "
                    "result of the first tab.")
        with gr.Row(equal_height=True):
            land_energy = gr.Radio(list(ENERGIES), value=ENERGIES[0], label="Energy", elem_id="land-energy", scale=3)
            land_grid = gr.Slider(*GRID_SIDE, value=21, step=2, label="Grid points per side", elem_id="land-grid",
                                  scale=2)
            land_run = gr.Button("Compute landscape", variant="primary", elem_id="land-run", scale=1)
        land_step = gr.Slider(0, 1, value=0, step=1, label="PGD step t (linked to the first tab)", interactive=False,
                              elem_id="land-step")
        with gr.Row(equal_height=False):
            empty_map, empty_path = empty_landscape()
            land_map = gr.HTML(empty_map, elem_id="land-map", elem_classes=[page.CHART])
            land_path = gr.HTML(empty_path, elem_id="land-path", elem_classes=[page.CHART])
        land_info = gr.Markdown("Run a counterfactual first, then press **Compute landscape**.", elem_id="land-info")
    return Components(land_energy=land_energy, land_grid=land_grid, land_run=land_run, land_step=land_step,
                      land_map=land_map, land_path=land_path, land_info=land_info)


@user_errors
def run(ex: Explainer, state, step, energy, grid, progress=gr.Progress()) -> Landscape:
    """The energy on a plane through x_0 containing the counterfactual direction."""
    state = ex.session(state)
    view = ex.view(state, "cf", "counterfactual (run one in the first tab)")
    grid = params.parse_int("grid size", grid, *GRID_SIDE)
    if grid % 2 == 0:
        raise gr.Error("The grid size must be odd (so the start image is a grid point).", print_exception=False)
    loaded = ex.view_model(view)
    bf16 = ex.uses_bf16(loaded)
    plan = plan_for(ex, loaded, len(view), grid)
    progress(None, desc=f"Evaluating the energy on {plan.grid}×{plan.grid} points (about {plan.seconds:.0f} s)")
    joint = str(energy).startswith("E(x, ")
    land = energy_landscape(stoppable(loaded.model), view.trajectory, grid=plan.grid, autocast=bf16,  # leaving stops it
                            batch_size=plan.batch_size, energy="joint" if joint else "marginal")
    view.landscape = LandscapeView.build(land)
    ex.put(state, "cf", view)  # re-measured: the landscape is part of the view now
    i = view.index(step)
    return Landscape(view.landscape.map(i), view.landscape.path(i),
                     gr.update(value=i, maximum=len(view) - 1, interactive=True),
                     sized(plan) + view.landscape.info())


def plan_for(ex: Explainer, loaded: LoadedModel, frames: int, grid: int) -> LandscapePlan:
    """The grid (at most `grid` a side) and batch that fit one request's time and memory budget on `loaded`, for a
    path of `frames` frames: what this tab and the /landscape API compute."""
    return plan_landscape(grid, frames, seconds_per_image(loaded.model, loaded.image_size, ex.uses_bf16(loaded)),
                          activation_bytes(loaded.config))


def grid_note(plan: LandscapePlan) -> dict[str, Any]:
    """The grid a landscape was computed on, for the API's JSON."""
    return {"points_per_side": plan.grid, "requested": plan.requested,
            "reason": f"the time budget of one request ({LANDSCAPE_BUDGET_S:.0f} s)" if plan.reduced else None}


def sized(plan: LandscapePlan) -> str:
    """Why the grid is smaller than asked (nothing when it is not)."""
    if not plan.reduced:
        return ""
    return (f"**{plan.grid}×{plan.grid} points, not {plan.requested}×{plan.requested}:** this model takes long "
            f"enough per image here that a larger grid would run past {LANDSCAPE_BUDGET_S:.0f} s. ")


@user_errors
def scrub(ex: Explainer, state, step) -> counterfactual.Frame:
    """This tab's slider moves tab 1's scrubber (and so the marker on the landscape)."""
    view = ex.get(state, "cf")
    if view is None:
        return gone("cf_caption", "counterfactual")
    i = view.index(step)
    return counterfactual.frame_at(view, i, cf_step=gr.update(value=i))


def wire(ex: Explainer, ui: Components, *, state: gr.State, cf: counterfactual.Components) -> None:
    computed = ui.land_run.click(bind(run, ex), [state, cf.cf_step, ui.land_energy, ui.land_grid],
                                 outputs(Landscape, ui), show_progress_on=ui.land_map, **COMPUTE)
    no_error_badge(computed, ui.land_map)
    ui.land_step.input(bind(scrub, ex), [state, ui.land_step], outputs(counterfactual.Frame, cf, ui), **INSTANT)
