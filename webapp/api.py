"""The app's named API endpoints (`/counterfactual`, `/generate`, `/landscape`, `/attribute`).

Stateless handlers on the model the app started with, for `gradio_client` and HTTP callers (README,
"Use the app"). They share the UI's validation, trajectory memo and exports through the `Explainer`.
Their parameter names are the endpoints' keyword inputs: keep them.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
import torch

import explain
from dat_core.sampling import default_step_size, default_steps
from explain.attribution import attribute_trajectory, plot_attributions
from explain.landscape import energy_landscape, plot_landscape
from explain.plots import figure_to_array
from explain.trajectory import Trajectory

from . import charts
from .explainer import Explainer
from .inputs import (
    EVERY_CLASS,
    SEED_LABELS,
    eps_text,
    model_input,
    parse_methods,
    pgd_params,
    target_index,
    user_errors,
)
from .state import LoadedModel
from .tabs import generate as generate_tab
from .wiring import RAW, bind


def _trajectory(ex: Explainer, image, target, eps, steps, step_size, progress) -> tuple[LoadedModel, Trajectory]:
    loaded = ex.default
    req = pgd_params("L2", eps, steps, step_size)
    x = model_input(image, loaded)
    if target is None or (isinstance(target, str) and not target.strip()):
        with torch.no_grad():
            order = loaded.model(x.to(loaded.device)).float()[0].argsort(descending=True)
        target = int(order[1] if len(order) > 1 else order[0])
    return loaded, ex.trajectory(loaded, x, target_index(target, loaded), req, progress)


@user_errors
def counterfactual(ex: Explainer, image, target, eps, steps, step_size, progress=gr.Progress()):
    """L2 counterfactual toward `target` (name or index; empty = the second most likely class).
    Returns per-step metrics (JSON), the final image at model resolution (PNG) and an animated GIF."""
    loaded, traj = _trajectory(ex, image, target, eps, steps, step_size, progress)
    gif, _ = ex.exports(traj, charts.display_scale(loaded.image_size))
    return {"model": loaded.label, **traj.to_dict()}, traj.frames[-1], gif


@user_errors
def generate(ex: Explainer, target, seed, steps, step_size, progress=gr.Progress()):
    """Samples of `target` (a class, or "all") from seed photos of other things (the seed bank) with random
    `seed`."""
    target = EVERY_CLASS if str(target).strip().lower() in ("all", EVERY_CLASS, "") else target
    loaded = ex.default
    view, gif = generate_tab.samples(ex, loaded, target, SEED_LABELS["bank"], None, seed, 1, steps, step_size, progress)
    return {"model": loaded.label, **view.samples.to_dict()}, view.grid(len(view) - 1, labels=False), str(gif)


@user_errors
def landscape(ex: Explainer, image, target, eps, steps, step_size, progress=gr.Progress()):
    """The energy E(x) on a 33×33 plane through the image containing the counterfactual direction."""
    loaded, traj = _trajectory(ex, image, target, eps, steps, step_size, progress)
    land = energy_landscape(loaded.model, traj, autocast=ex.uses_bf16(loaded))
    return figure_to_array(plot_landscape(land, step=-1)), land.to_dict()


@user_errors
def attribute(ex: Explainer, image, target, methods, eps, steps, step_size, progress=gr.Progress()):
    """Captum attributions (comma-separated `methods`) at the image for its predicted and the target class."""
    methods = parse_methods(methods)
    loaded, traj = _trajectory(ex, image, target, eps, steps, step_size, progress)
    result = attribute_trajectory(loaded.model, traj, methods)
    names = traj.class_names

    def rounded(m: Any) -> list:
        return np.round(np.asarray(m, dtype=np.float64), 6).tolist()
    data = {"source": result.source, "source_name": names[result.source], "target": result.target,
            "target_name": names[result.target], "methods": list(result.methods),
            "source_maps": {m: rounded(v) for m, v in result.source_maps.items()},
            "target_maps": {m: rounded(v) for m, v in result.target_maps.items()},
            "difference_map": rounded(result.difference_map)}
    return figure_to_array(plot_attributions(result)), data


def build(ex: Explainer) -> None:
    """The endpoints' hidden input and output components, and the endpoints themselves (public, named)."""
    size = ex.default.image_size
    d = explain.default_params(size, "L2")
    with gr.Column(visible=False):
        image = gr.Image(type="filepath", image_mode=None, label="image")
        target = gr.Textbox("", label="target")
        eps = gr.Textbox(eps_text(d["eps"], "L2"), label="eps")
        steps = gr.Number(d["steps"], label="steps")
        step_size = gr.Number(d["step_size"], label="step_size")
        methods = gr.Textbox("saliency,integrated_gradients", label="methods")
        gen_target = gr.Textbox("all", label="target")
        seed = gr.Number(0, label="seed")
        gen_steps = gr.Number(default_steps(size), label="steps")
        gen_step_size = gr.Number(default_step_size(size), label="step_size")
        metrics = gr.JSON(label="metrics")
        image_out = gr.Image(type="numpy", format="png", label="image")
        file = gr.File(label="file")
        trigger = gr.Button(visible=False)
    api = {"concurrency_id": "model", "concurrency_limit": 1, "api_visibility": "public", **RAW}
    trigger.click(bind(counterfactual, ex), [image, target, eps, steps, step_size], [metrics, image_out, file],
                  api_name="counterfactual", **api)
    trigger.click(bind(generate, ex), [gen_target, seed, gen_steps, gen_step_size], [metrics, image_out, file],
                  api_name="generate", **api)
    trigger.click(bind(landscape, ex), [image, target, eps, steps, step_size], [image_out, metrics],
                  api_name="landscape", **api)
    trigger.click(bind(attribute, ex), [image, target, methods, eps, steps, step_size], [image_out, metrics],
                  api_name="attribute", **api)
