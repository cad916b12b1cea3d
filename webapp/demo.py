"""`build_demo()`: the app's page, a header above one tab per module of webapp/tabs/, wired to a shared
`Explainer`, plus the hidden components of the named API endpoints (webapp/api.py)."""

from __future__ import annotations

import gradio as gr

from . import api, describe
from .explainer import Explainer
from .tabs import all_targets, attributions, compare, counterfactual, generate, landscape
from .tabs import model as model_tab  # `model` is build_demo's model source
from .wiring import PRIVATE

INTRO = """## DAT Explainer: watch a robust classifier change its mind
Pick an image and a target class. PGD changes the image step by step until the model sees the target; because the
model was trained with Dual Adversarial Training, the changes look like the target class. **Scrub the slider** to
watch every step. Energy E(x): lower means more like the training data."""


def build_demo(model: str = "default", *, standard_model: str | None = "auto", revision: str | None = None,
               explainer: Explainer | None = None, autocast: str = "auto",
               allow_local_models: bool | None = None) -> gr.Blocks:
    """The app. Loads the model (and the comparison model) now; raises if the model cannot be loaded.
    `allow_local_models`: may visitors load checkpoint folders of this server (see `Explainer`)."""
    ex = explainer or Explainer(model, standard_model=standard_model, revision=revision, autocast=autocast,
                                allow_local_models=allow_local_models)
    loaded = ex.default
    with gr.Blocks(title="DAT Explainer", delete_cache=(900, 3600)) as demo:
        state = gr.State(None)
        gr.Markdown(INTRO, elem_id="intro")
        banner = gr.Markdown(describe.banner(loaded), elem_id="model-banner")
        with gr.Tabs(elem_id="tabs") as tabs:
            cf = counterfactual.layout(loaded)
            grid = all_targets.layout()
            land = landscape.layout()
            attr = attributions.layout()
            cmp = compare.layout(ex)
            gen = generate.layout(loaded)
            mdl = model_tab.layout(ex)
        # what a new path on tab 1 moves or resets elsewhere
        followers = counterfactual.Followers(land_step=land.land_step, land_map=land.land_map,
                                             land_path=land.land_path, land_info=land.land_info,
                                             attr_figure=attr.attr_figure, attr_info=attr.attr_info)

        demo.load(ex.new_session, None, state, **PRIVATE)
        counterfactual.wire(ex, cf, state=state, followers=followers)
        all_targets.wire(ex, grid, state=state, tabs=tabs, cf=cf, followers=followers)
        landscape.wire(ex, land, state=state, cf=cf)
        attributions.wire(ex, attr, state=state, cf=cf)
        compare.wire(ex, cmp, state=state, cf=cf)
        generate.wire(ex, gen, state=state)
        model_tab.wire(ex, mdl, state=state, banner=banner, cf=cf, gen=gen)
        api.build(ex)
    demo.queue(default_concurrency_limit=1, max_size=32)
    demo.explainer = ex  # handy for tests and benchmarks
    return demo
