"""The app's named API endpoints (`/counterfactual`, `/generate`, `/landscape`, `/attribute`).

Stateless handlers on the model the app started with, for `gradio_client` and HTTP callers (README,
"Use the app"), and MCP tools of the same names with `python app.py --mcp`. They share the UI's validation,
trajectory memo and exports through the `Explainer`. Their parameter names are the endpoints' keyword inputs:
keep them. Their docstrings are what an agent reads (Gradio's MCP server turns the summary, `Args:` and `Returns:`
into the tool's description and input schema): say what each input means and accepts, in the user's words.
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
from .explainer import Explainer, stoppable
from .inputs import (
    EVERY_CLASS,
    MAX_ALL_TARGETS,
    SEED_LABELS,
    eps_text,
    model_input,
    parse_methods,
    pgd_params,
    target_index,
    user_errors,
)
from .state import LoadedModel, attribution_batch
from .tabs import generate as generate_tab
from .tabs import landscape as landscape_tab
from .wiring import RAW, bind

GRID = 33
"""Points per side of the /landscape grid, where the model is quick enough (`landscape_tab.plan_for`)."""


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
    """Counterfactual explanation of an image classifier: the smallest change, found by targeted L2 PGD on a robust
    (DAT) model, that turns the image into the target class, with its probabilities and energies at every step.

    Args:
        image: the image to explain (PNG, JPEG, WebP, GIF, BMP or TIFF), resized to the model's input size.
        target: the class to move toward, by name (e.g. "dog") or index; empty for the second most likely class.
        eps: the L2 budget of the change (images in [0, 1]): a number, a fraction like "8/255", or "inf".
        steps: number of PGD steps (whole number, e.g. 60).
        step_size: L2 length of each PGD step (e.g. 0.1).

    Returns:
        metrics: JSON per step (prediction, target confidence, probabilities, energies, L2 and Linf distance)
        and flip_step (the first step predicted as the target; null if none)
        image: the final image at the model's resolution (PNG)
        gif: the whole path as an animated GIF
    """
    loaded, traj = _trajectory(ex, image, target, eps, steps, step_size, progress)
    gif, _ = ex.exports(traj, charts.display_scale(loaded.image_size))
    return {"model": loaded.label, **traj.to_dict()}, traj.frames[-1], gif


@user_errors
def generate(ex: Explainer, target, seed, steps, step_size, progress=gr.Progress()):
    """Class samples from the model's energy: PGD that raises the logit of the target class, starting from
    photos of other things (the seed bank, as DAT was trained), showing what the robust model has learned each
    class looks like.

    Args:
        target: the class to sample, by name or index, or "all" for one sample of every class (at most 100 classes).
        seed: random seed that picks the starting photos (whole number >= 0); the same seed gives the same samples.
        steps: number of sampling steps (whole number, e.g. 33).
        step_size: L2 length of each step (e.g. 0.2).

    Returns:
        samples: JSON with the class, probability and energy of each sample
        grid: the samples side by side (PNG)
        gif: the sampling path as an animated GIF
    """
    loaded = ex.default
    if target is None or str(target).strip().lower() in ("all", EVERY_CLASS, ""):
        k = len(loaded.class_names)
        if k > MAX_ALL_TARGETS:   # the tab's message names its samples-per-class box, which the API has not
            raise ValueError(f'target "all" asks for one sample of each of the {k} classes, and one request makes '
                             f'at most {MAX_ALL_TARGETS}: name one class (by name or index)')
        target = EVERY_CLASS
    view, gif = generate_tab.samples(ex, loaded, target, SEED_LABELS["bank"], None, seed, 1, steps, step_size, progress)
    return {"model": loaded.label, **view.samples.to_dict()}, view.grid(len(view) - 1, labels=False), str(gif)


@user_errors
def landscape(ex: Explainer, image, target, eps, steps, step_size, progress=gr.Progress()):
    """Energy landscape around an image: the model's marginal energy E(x) = -logsumexp f(x) on a 33x33 grid of the
    plane through the image that contains its counterfactual path toward the target (lower energy = more typical
    of the data the model was trained on). A model slow enough that 33x33 forwards would pass 60 s gets a smaller
    odd grid, as the Energy landscape tab does; the JSON's `grid` says which and why.

    Args:
        image: the image (PNG, JPEG, WebP, GIF, BMP or TIFF).
        target: the class the counterfactual path moves toward, by name or index; empty for the second most likely.
        eps: the L2 budget of the path: a number, a fraction like "8/255", or "inf".
        steps: number of PGD steps of the path (e.g. 60).
        step_size: L2 length of each PGD step (e.g. 0.1).

    Returns:
        figure: the landscape with the path drawn on it (PNG)
        landscape: JSON with the grid's energies and the path's coordinates and energies
    """
    loaded, traj = _trajectory(ex, image, target, eps, steps, step_size, progress)
    plan = landscape_tab.plan_for(ex, loaded, len(traj), GRID)   # the tab's budget: one request, bounded time
    land = energy_landscape(stoppable(loaded.model), traj, grid=plan.grid, batch_size=plan.batch_size,  # a caller
                            autocast=ex.uses_bf16(loaded))   # that went (`fairness.LEFT`) stops it, as its PGD
    return figure_to_array(plot_landscape(land, step=-1)), {**land.to_dict(), "grid": landscape_tab.grid_note(plan)}


@user_errors
def attribute(ex: Explainer, image, target, methods, eps, steps, step_size, progress=gr.Progress()):
    """Attribution maps (Captum) of an image for its predicted class and for the target class, beside the change the
    counterfactual toward the target makes.

    Args:
        image: the image (PNG, JPEG, WebP, GIF, BMP or TIFF).
        target: the target class, by name or index; empty for the second most likely class.
        methods: comma-separated, of saliency, integrated_gradients, smoothgrad, gradient_shap, occlusion.
        eps: the L2 budget of the counterfactual: a number, a fraction like "8/255", or "inf".
        steps: number of PGD steps of the counterfactual (e.g. 60).
        step_size: L2 length of each PGD step (e.g. 0.1).

    Returns:
        figure: the maps side by side (PNG)
        maps: JSON with each method's map for the predicted and the target class, and the counterfactual change
    """
    methods = parse_methods(methods)
    loaded, traj = _trajectory(ex, image, target, eps, steps, step_size, progress)
    result = attribute_trajectory(stoppable(loaded.model), traj, methods,   # stops once the caller went, as PGD
                                  internal_batch_size=attribution_batch(loaded.config))
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

    def endpoint(handler):  # its caller reads a refusal's message as text, not as a toast's HTML
        return bind(handler, ex, toasts=False)
    trigger.click(endpoint(counterfactual), [image, target, eps, steps, step_size], [metrics, image_out, file],
                  api_name="counterfactual", **api)
    trigger.click(endpoint(generate), [gen_target, seed, gen_steps, gen_step_size], [metrics, image_out, file],
                  api_name="generate", **api)
    trigger.click(endpoint(landscape), [image, target, eps, steps, step_size], [image_out, metrics],
                  api_name="landscape", **api)
    trigger.click(endpoint(attribute), [image, target, methods, eps, steps, step_size], [image_out, metrics],
                  api_name="attribute", **api)
