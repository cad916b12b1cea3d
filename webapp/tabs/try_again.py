"""Tab 1's Try again: the one-click retry under a path that fell short, with the larger ε, more steps or larger
step size `views.retry_for` suggests. It reruns the path shown and nothing else: once another image or model is
chosen the summary says the path below is the previous one's and Try again hides, and a retry whose image,
model or target is not the path's is refused (a click sent anyway, or one after the target box changed)."""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
import torch

import explain

from ..explainer import Explainer
from ..inputs import MAX_REQUEST_STEPS, eps_text, image_digest, model_input, target_index
from ..retry import Retry, retry_for
from ..state import LoadedModel
from ..views import CounterfactualView
from . import region

SEEN = "seen"
"""The slot of the image tab 1 read last (its digest, the model it was read for, its model input): the target box's
check finds it there. Decoding the image again on every change of the box, an unqueued event, was up to 40 MP and
~360 MB a request outside the model queue, however many at once."""


def button(view: CounterfactualView) -> Any:
    """Try again under a path that did not reach its target, naming what it changes (hidden otherwise)."""
    retry = retry_for(view.trajectory, MAX_REQUEST_STEPS)
    if retry is None or not retry.changes(view.trajectory.params):   # the summary says why: nothing to change
        return gr.update(visible=False)
    params, norm = view.trajectory.params, view.trajectory.params.get("norm", "L2")
    what = [f"ε = {eps_text(retry.eps, norm)}"] if retry.eps != params.get("eps") else []
    what += [f"{retry.steps} steps"] if retry.steps != params.get("steps") else []
    what += [f"step size {eps_text(retry.step_size, norm)}"] if retry.step_size != params.get("step_size") else []
    return gr.update(visible=True, value=f"↻ Try again with {' and '.join(what)}")


def made_for_another(view: CounterfactualView, loaded: LoadedModel, x: Any) -> list[str]:
    """What the stored path was made from that differs from the image `x` (1, 3, H, W) and the model `loaded`
    now chosen (its key and, a Hub branch moving on, its weights): [], or "image" and/or "model"."""
    start = view.trajectory.images[0]
    same = start.shape == tuple(x.shape[1:]) and np.abs(start - x[0].numpy()).max() < 1 / 255
    model = view.model_key == loaded.key and view.model_version in ("", loaded.version)
    return ([] if same else ["image"]) + ([] if model else ["model"])


def after_choice(ex: Explainer, state: Any, loaded: LoadedModel, x: Any) -> tuple[Any, Any]:
    """Tab 1's summary and Try again once the image `x` on the model `loaded` is chosen: the stored path's summary,
    headed by a note when it was made from another image or model (its frames and downloads stay until Run),
    and Try again only for a path of this image and model."""
    view = ex.get(state, "cf")
    if view is None:
        return gr.skip(), gr.skip()
    other = made_for_another(view, loaded, x)
    if not other:
        return view.summary(), button(view)
    note = f"_Below: the path of the previous {' and '.join(other)}; press **Run** for this one._\n\n"
    return note + view.summary(), gr.update(visible=False)


def read_image(ex: Explainer, state: dict, loaded: LoadedModel, image: Any) -> torch.Tensor:
    """`image` as `loaded`'s model input (tab 1's preview and runs), remembered for the target box (`SEEN`)."""
    x = model_input(image, loaded)
    ex.put(state, SEEN, (image_digest(image), loaded.key, x))
    return x


def _seen(ex: Explainer, state: Any, loaded: LoadedModel, image: Any) -> torch.Tensor | None:
    """The model input tab 1 last read, if `image` is that image and `loaded` the model it was read for."""
    seen = ex.get(state, SEEN)
    if seen is None or seen[1] != loaded.key or seen[0] is None:
        return None
    return seen[2] if image_digest(image) == seen[0] else None


def _not_shown(ex: Explainer, state: Any, image: Any, target: Any, known: bool = False) -> list[str]:
    """What of a request (image, the session's model, target, painted region) is not the path shown's: [] when
    all is. `known`: the image only as tab 1 last read it (`_seen`), never decoded again (another: "image")."""
    view = ex.view(state, "cf", "counterfactual")
    loaded = ex.session_model(ex.session(state))
    x = _seen(ex, state, loaded, image) if known else model_input(image, loaded)
    if x is None:
        return ["image"]
    other = made_for_another(view, loaded, x)
    other += [] if target_index(target, loaded) == view.trajectory.target else ["target"]
    mask, then = region.for_model(ex, state, loaded), view.trajectory.params.get("mask_fraction")
    now = None if mask is None else explain.mask_fraction(mask)   # as the path records its region
    return other + ([] if now == then else ["painted region"])


def on_target(ex: Explainer, state: Any, image: Any, target: Any) -> Any:
    """Try again as the target box changes: offered only while the box (and image) are the path shown's. An
    unqueued event, so it answers with the button and never raises (an unusable choice hides it), and decodes no
    image: it compares the image tab 1 read last (`read_image`)."""
    view = ex.get(state, "cf")
    if view is None:
        return gr.skip()
    try:
        other = _not_shown(ex, state, image, target, known=True)
    except (gr.Error, ValueError):
        other = ["choice"]
    return gr.update(visible=False) if other else button(view)


def suggested(ex: Explainer, state: Any, image: Any, target: Any) -> tuple[str, Retry]:
    """The norm and the settings to rerun the path shown with; a request for another image, model or target,
    or under a path that reached its target, is refused."""
    other = _not_shown(ex, state, image, target)
    if other:
        raise gr.Error(f"Try again reruns the path shown, which is of another {' and '.join(other)}: press Run "
                       "for this one.", print_exception=False)
    view = ex.view(state, "cf", "counterfactual")
    retry = retry_for(view.trajectory, MAX_REQUEST_STEPS)
    if retry is None:
        raise gr.Error("The last path reached its target: there is nothing to retry.", print_exception=False)
    if not retry.changes(view.trajectory.params):
        raise gr.Error(f"Other settings would not help: {retry.why}.", print_exception=False)
    return view.trajectory.params.get("norm", "L2"), retry
