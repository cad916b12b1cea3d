"""Tab 1's Copy link: a link naming the example, the target, the settings and the model, so that the run opens
and runs by itself for whoever follows it (webapp/links.py reads it back). An upload never leaves this server:
it gets no link."""

from __future__ import annotations

from typing import Any

import gradio as gr

from explain.params import exact_text

from .. import links, page, sources
from ..explainer import Explainer
from ..inputs import image_source, pgd_params, target_index, user_errors
from ..wiring import CHECKED, INSTANT, bind
from . import region


@user_errors
def share(ex: Explainer, image, target, norm, eps, steps, step_size, state) -> Any:
    """The link to this run (examples only: an upload never leaves this server), shown to copy."""
    state = ex.session(state)
    example = ex.examples.which(image_source(image))
    if example is None:
        return gr.update(visible=True, label="Link to this run", value=(
            "Links can only name the example images: an uploaded image stays on this server, in your session. "
            "Pick an example to share a run."))
    loaded = ex.session_model(state)
    target = loaded.class_names[target_index(target, loaded)]
    req = pgd_params(norm, eps, steps, step_size)
    model = sources.link_fields(ex.models.source(loaded.key), loaded.key == ex.default.key)
    norm = req["norm"]
    fields = {"example": example, "target": target, "norm": norm, "eps": exact_text(req["eps"], norm),
              "steps": req["steps"], "step_size": exact_text(req["step_size"], norm), **model}
    left_out = ([] if model or loaded.key == ex.default.key else
                ["it opens on this app's own model (a folder on this server is never named in a link)"])
    if region.is_set(state):
        left_out.append("it runs on the whole image (a painted region is not in links)")
    return gr.update(visible=True, label="Link to this run (copied)" + "".join(f"; {w}" for w in left_out),
                     value=links.query(fields))


def wire(ex: Explainer, button: gr.Button, request: list[Any], link: gr.Textbox, view: gr.Image) -> None:
    """`request`: tab 1's image, target, settings and session state, as its Run button reads them; `view`: what
    the model sees of the image (it changes with the image and the model). A link shown goes once any of them
    changes: it named the run as it was."""
    shared = button.click(bind(share, ex), request, link, **CHECKED)
    shared.success(None, [link], None, js=page.COPY_LINK_JS)
    for changed in [view, *request[1:-1]]:
        changed.change(lambda: gr.update(visible=False, value=""), None, link, **INSTANT)
