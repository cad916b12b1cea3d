"""Tab 1's alternatives: N paths toward the chosen target from random starts in the ε-ball (`explain.alternatives`),
their final images and changes side by side with a diversity score. One path is one answer to "what would make
this a dog?"; alternatives show whether the model knows others.

The paths run as one PGD batch of at most MAX_PATHS images (a server bound, like tab 1's step limit), in the model
queue with the other computations; Cancel (tab 1's) stops them at the next step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import gradio as gr
import numpy as np

import explain
from dat_core.pgd import PGDStep
from explain.export import upscale
from explain.params import parse_int

from .. import charts
from ..explainer import Cancelled, Explainer, progress_steps
from ..inputs import model_input, pgd_params, target_index, user_errors
from ..wiring import INSTANT, STOP, bind, cancellable, outputs, stop_run
from . import region

MAX_PATHS = 4
MAX_SEED = 2**31 - 1


@dataclass
class Components:
    alt_n: gr.Slider
    alt_seed: gr.Number
    alt_run: gr.Button
    alt_cancel: gr.Button
    alt_gallery: gr.Gallery
    alt_info: gr.Markdown


class Shown(NamedTuple):
    state: dict
    alt_gallery: Any            # one row of n + 1 images, then one of n + 1 changes
    alt_info: str


def layout() -> Components:
    with gr.Accordion("Alternatives: other paths to the same target", open=False, elem_id="cf-alternatives"):
        gr.Markdown("Runs several paths toward the target above, each from a different random start inside the "
                    "ε-ball (same settings; ε must be finite). Similar changes: the model knows one way to the "
                    "target; different ones: several.")
        with gr.Row(equal_height=False):
            alt_n = gr.Slider(2, MAX_PATHS, value=3, step=1, label="Paths", elem_id="alt-n", scale=2)
            alt_seed = gr.Number(0, label="Seed of the random starts", precision=0, minimum=0, maximum=MAX_SEED,
                                 elem_id="alt-seed", scale=1, min_width=120)
            alt_run = gr.Button("Show alternatives", variant="primary", elem_id="alt-run", scale=1, min_width=160,
                                size="md")
            alt_cancel = gr.Button("■ Cancel", variant="stop", visible=False, elem_id="alt-cancel", scale=1,
                                   min_width=160)
        alt_info = gr.Markdown("", elem_id="alt-info")
        alt_gallery = gr.Gallery(label="Start x₀, then each path's end x_T (p(target), L2 change); below, x_T − x₀",
                                 columns=MAX_PATHS + 1,
                                 height="auto", object_fit="contain", format="png", allow_preview=False,
                                 elem_id="alt-gallery", buttons=[])
    return Components(alt_n=alt_n, alt_seed=alt_seed, alt_run=alt_run, alt_cancel=alt_cancel, alt_gallery=alt_gallery,
                      alt_info=alt_info)


def gallery(alts: explain.Alternatives, scale: int) -> list[tuple[np.ndarray, str]]:
    """x₀ and each x_T in one row, then x₀'s own (grey: none) and each change x_T − x₀ (one colour scale for all)."""
    images = np.concatenate([alts.image[None], alts.images]).astype(np.float32)
    diffs, _ = charts.difference_frames(images)
    frames = (images.transpose(0, 2, 3, 1) * 255 + 0.5).astype(np.uint8)
    ends = [(upscale(frames[i + 1], scale), f"{i + 1} · {c:.0%} · L2 {charts.fmt(d)}")
            for i, (c, d) in enumerate(zip(alts.confidence, alts.l2))]
    changes = [(upscale(diffs[i + 1], scale), f"change {i + 1}") for i in range(len(alts.images))]
    return [(upscale(frames[0], scale), "start x₀"), *ends, (upscale(diffs[0], scale), "no change"), *changes]


def info(alts: explain.Alternatives) -> str:
    name = alts.class_names[alts.target]
    reached = int(np.sum(alts.confidence >= 0.5))
    inside = (f" Only the painted region ({alts.params['mask_fraction']:.0%} of the pixels) could change."
              if "mask_fraction" in alts.params else "")
    return (f"**Diversity {alts.diversity:.2f}**: the mean distance between two paths' changes, relative to their "
            f"size (about 0 when every path makes the same change, about 1.4 for unrelated changes). "
            f"{reached} of {len(alts.images)} paths reach p({name}) ≥ 50%.{inside}")


@user_errors
def run(ex: Explainer, image, target, norm, eps, steps, step_size, n, seed, state, progress=gr.Progress()) -> Shown:
    """`n` (2..MAX_PATHS) paths toward the target from seeded random starts in the ε-ball."""
    state = ex.session(state)
    loaded = ex.session_model(state)
    req = pgd_params(norm, eps, steps, step_size)
    if not 0 < req["eps"] < math.inf:   # said in the app's words (ε, the settings), not the library's "eps-ball"
        raise ValueError("alternatives start at random points inside the ε-ball: set a finite ε > 0 in the "
                         "settings (∞ has no ball to draw from)")
    n, seed = parse_int("the number of paths", n, 2, MAX_PATHS), parse_int("the seed", seed, 0, MAX_SEED)
    ex.check_budget(loaded, n, 0, "paths")   # one batch of n paths, bounded by its activations (no frames are kept)
    x, t = model_input(image, loaded), target_index(target, loaded)
    reached = [0]
    with ex.cancellable(state) as cancel:
        hook = progress_steps(progress, f"PGD from {n} random starts", req["steps"], cancel)

        def on_step(step: PGDStep) -> str | None:
            reached[0] = step.step
            return hook(step)
        alts = explain.alternatives(loaded.model, x, t, n, seed=seed, autocast=ex.uses_bf16(loaded),
                                    on_step=on_step, mask=region.for_model(ex, state, loaded), **req)
    if reached[0] < req["steps"]:
        raise Cancelled(reached[0], req["steps"])
    ex.put(state, "alts", t)   # shown: what `forget` drops after another image or model
    return Shown(state, gr.update(value=gallery(alts, charts.display_scale(loaded.image_size)), columns=n + 1),
                 info(alts))



def forget(ex: Explainer, state) -> Shown:
    """After another image or model is chosen: the alternatives shown were of the previous one. Gone, and said."""
    if not ex.forget(state, "alts"):
        return Shown(*(gr.skip(),) * len(Shown._fields))
    return Shown(state, gr.update(value=[]), "_Press **Show alternatives** for this image (those shown were of the "
                                             "previous image or model)._")


def wire(ex: Explainer, ui: Components, *, state: gr.State, request: list[Any], view: gr.Image) -> None:
    """`request`: tab 1's image, target and settings (threat model, ε, steps, step size); `view`: what the model
    sees of the image (it changes with the image and the model)."""
    shown = cancellable(ui.alt_run.click, bind(run, ex), [*request, ui.alt_n, ui.alt_seed, state],
                        outputs(Shown, ui, state=state), run=[ui.alt_run], cancel=ui.alt_cancel,
                        progress_on=ui.alt_info)
    ui.alt_cancel.click(bind(stop_run, ex), [state], [ui.alt_run, ui.alt_cancel], cancels=[shown], **STOP)
    view.change(bind(forget, ex), [state], outputs(Shown, ui, state=state), **INSTANT)
