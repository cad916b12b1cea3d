"""Tab 1's Copy link: a link naming the example, the target, the settings and the model, so that the run opens
and runs by itself for whoever follows it (webapp/links.py reads it back). An upload never leaves this server:
it gets no link."""

from __future__ import annotations

from typing import Any

import gradio as gr

from .. import links, page, sources
from ..explainer import Explainer
from ..inputs import eps_text, image_source, pgd_params, target_index, user_errors
from ..wiring import CHECKED, bind


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
    fields = {"example": example, "target": target, "norm": req["norm"], "eps": eps_text(req["eps"], req["norm"]),
              "steps": req["steps"], "step_size": f"{req['step_size']:g}",
              **sources.link_fields(ex.models.source(loaded.key), loaded.key == ex.default.key)}
    return gr.update(visible=True, label="Link to this run (copied)", value=links.query(fields))


def wire(ex: Explainer, button: gr.Button, request: list[Any], link: gr.Textbox) -> None:
    """`request`: tab 1's image, target, settings and session state, as its Run button reads them."""
    shared = button.click(bind(share, ex), request, link, **CHECKED)
    shared.success(None, [link], None, js=page.COPY_LINK_JS)
