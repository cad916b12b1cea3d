"""Tab 7, Model: switch this session's model (bundled, a checkpoint folder, a Hub repo) and read about it.
Loading a model updates the banner, the class pickers of tabs 1 and 6, and tab 1's preview."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import gradio as gr
import numpy as np

from dat_core.loading import ModelSource, resolve_source

from .. import charts, describe, sources
from ..describe import card_text, describe_model
from ..explainer import Explainer
from ..inputs import EVERY_CLASS, image_source, user_errors
from ..state import LoadedModel
from ..wiring import COMPUTE, INSTANT, bind, no_error_badge, outputs
from . import counterfactual, generate

BUNDLED, LOCAL, HUB = "Bundled model", "Local folder", "Hugging Face Hub"
ALIASES = {"Bundled default": BUNDLED}  # the kind's earlier name


def kinds(ex: Explainer) -> list[str]:
    """Where this server lets a visitor load a model from: folders on it only with --allow-local-models."""
    return [BUNDLED, *([LOCAL] if ex.allow_local_models else []), HUB]


@dataclass
class Components:
    model_kind: gr.Radio
    model_bundled: gr.Dropdown
    model_path: gr.Textbox
    model_repo: gr.Textbox
    model_revision: gr.Textbox
    model_load: gr.Button
    model_info: gr.Markdown
    model_card: gr.Markdown


class Loaded(NamedTuple):
    """The session's new model, described, with tab 1's preview and both class pickers redone for it."""
    state: dict
    banner: str
    model_info: str
    model_card: str
    cf_target: Any
    gen_target: Any
    cf_input: np.ndarray | None
    cf_prediction: str
    cf_energy: str
    cf_summary: Any = gr.skip()   # tab 1's stored path, noted as made by the previous model
    cf_retry: Any = gr.skip()     # Try again, hidden with that note
    saved_model: Any = gr.skip()  # what this browser remembers (a BrowserState): the choice as typed


def layout(ex: Explainer) -> Components:
    loaded = ex.default
    bundled = list(sources.bundled_models())
    with gr.Tab("Model", id="model", elem_id="tab-model"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=300):
                model_kind = gr.Radio(kinds(ex), value=BUNDLED, label="Load a model from", elem_id="model-kind")
                model_bundled = gr.Dropdown(bundled, value=bundled[0] if bundled else None, label="Bundled model",
                                            elem_id="model-bundled")
                model_path = gr.Textbox(label="Checkpoint folder on this server (config.json + model.safetensors)",
                                        placeholder="runs/my-run/final", elem_id="model-path", visible=False)
                with gr.Row(visible=False) as hub_row:
                    model_repo = gr.Textbox(label="Hub repo id", placeholder="owner/name", elem_id="model-repo",
                                            scale=3)
                    model_revision = gr.Textbox(label="Revision (optional)", placeholder="main or sha",
                                                elem_id="model-revision", scale=2)
                model_load = gr.Button("Load model", variant="primary", elem_id="model-load")
                gr.Markdown("The model applies to your session only (and is remembered by this browser). If "
                            "loading fails, the current model stays."
                            + ("" if ex.allow_local_models else " Folders on this server cannot be loaded here."))
            with gr.Column(scale=7):
                model_info = gr.Markdown(describe_model(loaded), elem_id="model-info")
                with gr.Accordion("Model card", open=False):
                    model_card = gr.Markdown(card_text(loaded), elem_id="model-card")
    model_kind.change(source_fields, model_kind, [model_bundled, model_path, hub_row], **INSTANT)
    return Components(model_kind=model_kind, model_bundled=model_bundled, model_path=model_path,
                      model_repo=model_repo, model_revision=model_revision, model_load=model_load,
                      model_info=model_info, model_card=model_card)


@user_errors
def source_fields(kind: Any) -> tuple[Any, Any, Any]:
    """The input that belongs to the kind of source picked: a bundled model's name, a folder, a Hub repo."""
    return gr.update(visible=kind == BUNDLED), gr.update(visible=kind == LOCAL), gr.Row(visible=kind == HUB)


def choose(ex: Explainer, kind: Any, path: Any, repo_id: Any, revision: Any, bundled: Any) -> ModelSource:
    """What the visitor picked on the Model tab, checked (webapp.sources): a bundled model by name, a Hub repo,
    or (only where this server allows it) a checkpoint folder on the server."""
    kind = ALIASES.get(kind, kind) if isinstance(kind, str) else kind
    if kind == LOCAL:
        if not str(path or "").strip():
            raise gr.Error("Enter the path of a checkpoint folder.", print_exception=False)
        return sources.local_source(str(path), ex.allow_local_models)
    if kind == HUB:
        if not str(repo_id or "").strip():
            raise gr.Error("Enter a Hub repo id like owner/name.", print_exception=False)
        return sources.hub_source(str(repo_id), revision if isinstance(revision, str) else None)
    if kind == BUNDLED:
        if bundled is None or not str(bundled).strip():
            return resolve_source("default")
        return sources.bundled_source(str(bundled))
    raise gr.Error(f"Choose where to load a model from: {', '.join(kinds(ex))}.", print_exception=False)


@user_errors
def load(ex: Explainer, kind, path, repo_id, revision, image, state, bundled=None,
         progress=gr.Progress()) -> Loaded:
    """Switch this session's model; on any failure the current model stays."""
    state = ex.session(state)
    source = choose(ex, kind, path, repo_id, revision, bundled)
    if source.kind == "hub":
        progress(None, desc=f"Downloading {source.name}")
    choice = {"kind": ALIASES.get(kind, kind), "path": path, "repo": repo_id, "revision": revision, "bundled": bundled}
    return switched(ex, ex.models.load(source), image, state)._replace(
        saved_model={k: str(v)[:500] for k, v in choice.items() if isinstance(v, str) and v.strip()})


def switched(ex: Explainer, loaded: LoadedModel, image: Any, state: dict) -> Loaded:
    """The session on `loaded`: its description, tab 1's preview and both class pickers redone for it."""
    new_state = {**state, "source": loaded.source, "revision": loaded.revision, "key": loaded.key}
    names = loaded.class_names
    runner_up = names[min(1, len(names) - 1)]
    try:
        preview = counterfactual.preview(ex, image, new_state) if image_source(image) is not None else None
    except gr.Error:   # the image is gone (Gradio prunes uploads after an hour) or unusable: the model still switches
        preview = counterfactual.failed_upload(ex, new_state)
    if preview is None:
        preview = counterfactual.Preview(new_state, gr.skip(), None, charts.placeholder(counterfactual.NO_IMAGE),
                                         "", gr.update(value=runner_up))
    return Loaded(new_state, describe.banner(loaded), describe_model(loaded), card_text(loaded),
                  cf_target=gr.update(choices=names, value=preview.cf_target.get("value", runner_up)),
                  gen_target=gr.update(choices=[EVERY_CLASS, *names], value=EVERY_CLASS),
                  cf_input=preview.cf_input, cf_prediction=preview.cf_prediction, cf_energy=preview.cf_energy,
                  cf_summary=preview.cf_summary, cf_retry=preview.cf_retry)


def remembered(ex: Explainer, saved: Any) -> ModelSource | None:
    """The model this browser used last (its `saved_model`), checked like a new choice; None when there is none
    or it does not check."""
    if not isinstance(saved, dict) or not saved.get("kind"):
        return None
    text = {k: v if isinstance(v, str) else "" for k, v in saved.items()}
    try:
        return choose(ex, text.get("kind"), text.get("path"), text.get("repo"), text.get("revision"),
                      text.get("bundled") or None)
    except (gr.Error, ValueError):
        return None


def open_source(ex: Explainer, source: ModelSource) -> LoadedModel | None:
    """The model a page may open on without waiting in the model queue: a Hub model only when it is loaded here
    already (a download waits for the visitor's Load, queued like any computation; page loads run four at a time
    outside that queue), a bundled model or server folder as it loads. OSError/ValueError when it cannot load."""
    return ex.models.loaded(source) if source.kind == "hub" else ex.models.load(source)


NOT_LOADED = "is on the Hugging Face Hub and not loaded here yet: press Load model on the Model tab to download it"


def wire(ex: Explainer, ui: Components, *, state: gr.State, banner: gr.Markdown, cf: counterfactual.Components,
         gen: generate.Components, saved_model: gr.BrowserState) -> None:
    loading = ui.model_load.click(bind(load, ex), [ui.model_kind, ui.model_path, ui.model_repo, ui.model_revision,
                                                   cf.cf_image, state, ui.model_bundled],
                                  outputs(Loaded, ui, cf, gen, state=state, banner=banner, saved_model=saved_model),
                                  show_progress_on=ui.model_info, **COMPUTE)
    no_error_badge(loading, ui.model_info)
    loading.success(bind(generate.forget, ex), [state], outputs(generate.Generated, gen, state=state), **INSTANT)
