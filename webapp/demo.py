"""`build_demo()`: the app's page, a header above one tab per module of webapp/tabs/, wired to a shared
`Explainer`, plus the hidden components of the named API endpoints (webapp/api.py)."""

from __future__ import annotations

import inspect

import gradio as gr

from . import api, describe, fairness, opening, page
from .explainer import Explainer
from .inputs import CheckedBlocks
from .tabs import all_targets, attributions, cf_tools, compare, counterfactual, generate, landscape
from .tabs import model as model_tab  # `model` is build_demo's model source
from .wiring import PRIVATE, RAW, bind, outputs

# Requests waiting for the model at once (the model computes one at a time). Each waiting request holds only its
# small inputs (an upload is at most 25 MB and already on disk), so a long queue costs little memory; past it a
# visitor reads "queue is full". 256 covers a class of students pressing Run together (benchmarks/app.py).
QUEUE_SIZE = 256
PREVIEWS = {inspect.unwrap(counterfactual.preview), inspect.unwrap(counterfactual.pick_example)}
"""Tab 1's previews of a new image: a visitor may have one beside their computation in flight."""

def build_demo(model: str = "default", *, standard_model: str | None = "auto", revision: str | None = None,
               explainer: Explainer | None = None, autocast: str = "auto",
               allow_local_models: bool | None = None, compile: str = "off", workers: int = 1) -> gr.Blocks:
    """The app. Loads the model (and the comparison model) now; raises if the model cannot be loaded.
    `allow_local_models`: may visitors load checkpoint folders of this server (see `Explainer`); `compile`:
    each loaded model's fast path (webapp/fastpath.py; compiled in the background, eager until then);
    `workers`: model computations (PGD, landscapes, attributions, model loading) run at once, the rest queue."""
    ex = explainer or Explainer(model, standard_model=standard_model, revision=revision, autocast=autocast,
                                allow_local_models=allow_local_models, compile=compile)
    loaded = ex.default
    with CheckedBlocks(title="DAT Explainer", delete_cache=(900, 3600)) as demo:
        state = gr.State(None)
        saved_model = gr.BrowserState(None, storage_key="dat-explainer-model")  # the Model tab's last choice
        autorun = gr.Checkbox(False, visible=False)                           # a shared link starts its run
        gr.Markdown(page.INTRO, elem_id="intro")
        with gr.Accordion("What am I looking at?", open=False, elem_id="help"):
            gr.Markdown(page.HELP)
        banner = gr.Markdown(describe.banner(loaded), elem_id="model-banner")
        with gr.Tabs(elem_id="tabs") as tabs:
            cf = counterfactual.layout(loaded)
            grid = all_targets.layout()
            land = landscape.layout()
            attr = attributions.layout()
            cmp = compare.layout(ex)
            gen = generate.layout(loaded)
            mdl = model_tab.layout(ex)
        ex.examples = cf.examples
        # what a new path on tab 1 moves or resets elsewhere
        followers = counterfactual.Followers(land_step=land.land_step, land_map=land.land_map,
                                             land_path=land.land_path, land_info=land.land_info,
                                             attr_figure=attr.attr_figure, attr_info=attr.attr_info)

        demo.load(None, js=page.ON_LOAD_JS)
        opened = demo.load(bind(opening.open_page, ex), [saved_model],
                           outputs(opening.Opened, cf, mdl, gen, state=state, banner=banner, cf_autorun=autorun),
                           show_progress="hidden", concurrency_limit=4, **RAW, **PRIVATE)
        opened.success(None, [autorun], None, js=opening.AUTORUN_JS)
        counterfactual.wire(ex, cf, state=state, followers=followers)
        cf_tools.wire(ex, cf.tools, state=state, request=[cf.cf_image, cf.cf_target, *cf.settings],
                      view=cf.cf_input)
        all_targets.wire(ex, grid, state=state, tabs=tabs, cf=cf, followers=followers)
        landscape.wire(ex, land, state=state, cf=cf)
        attributions.wire(ex, attr, state=state, cf=cf)
        compare.wire(ex, cmp, state=state, cf=cf)
        generate.wire(ex, gen, state=state)
        model_tab.wire(ex, mdl, state=state, banner=banner, cf=cf, gen=gen, saved_model=saved_model)
        api.build(ex)
    demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    visitors, previews = fairness.Visitors(), fairness.Visitors()
    for fn in demo.fns.values():  # every model computation shares one limit (concurrency_id "model")
        if fn.concurrency_id == "model":
            fn.concurrency_limit = workers
            # and a visitor holds at most one of its workers, and one more for the preview of an image chosen
            # meanwhile (one forward): refused as a second computation, the upload was dropped
            fn.fn = (previews if inspect.unwrap(fn.fn) in PREVIEWS else visitors).one_at_a_time(fn.fn)
    demo.unload(visitors.leave)   # a page that goes (reload, closed tab) stops its computation
    demo.explainer = ex  # handy for tests and benchmarks
    return demo
