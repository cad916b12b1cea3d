"""What a page opens on: the model this browser chose before (kept in its local storage) and the run a shared
link describes (`webapp.links`: example, target, settings, model). Both are read like any input: a part that
does not check is left out and said so, never an error; a complete link starts its run by itself.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gradio as gr

import explain
from dat_core.cli_types import norm_name
from explain.params import NORMS

from . import charts, links, sources
from .explainer import Explainer
from .inputs import pgd_params, settings_shown, target_index
from .tabs import counterfactual
from .tabs import model as model_tab


class Opened(NamedTuple):
    """A new session on its model, with what a link asked for in tab 1 (or the defaults)."""
    state: dict
    banner: Any
    model_info: Any
    model_card: Any
    cf_target: Any
    gen_target: Any
    cf_image: Any
    cf_input: Any
    cf_prediction: Any
    cf_energy: Any
    model_kind: Any
    model_bundled: Any
    model_repo: Any
    model_revision: Any
    model_path: Any
    cf_norm: Any
    cf_eps: Any
    cf_steps: Any
    cf_step_size: Any
    cf_summary: Any
    cf_autorun: bool


def open_page(ex: Explainer, saved: Any, request: gr.Request | None = None) -> Opened:
    """A new session: on the model this browser used last (or the model a link names), showing the link's run."""
    state = ex.new_session()
    asked = links.read(dict(request.query_params) if request is not None else {})
    notes: list[str] = []
    loaded, choice, waiting = None, {}, None
    if "model" in asked:
        try:
            source = sources.link_source(asked["model"], asked.get("revision"))
            model = asked["model"]
            choice = ({"kind": model_tab.HUB, "repo": model[len(sources.HUB_PREFIX):],
                       "revision": asked.get("revision", "")} if model.startswith(sources.HUB_PREFIX)
                      else {"kind": model_tab.BUNDLED, "bundled": model})
            loaded = model_tab.open_source(ex, source)
            if loaded is None:   # a download is the visitor's Load, in the model queue, not this page load's
                waiting = f"its model {model_tab.NOT_LOADED}, then Run"
                notes.append(waiting)
        except (ValueError, OSError):
            notes.append("the model it names could not be loaded here, so it opens on this app's model")
    elif isinstance(saved, dict) and (source := model_tab.remembered(ex, saved)) is not None:
        try:
            loaded = model_tab.open_source(ex, source)
        except (ValueError, OSError):
            loaded = None
        else:
            choice = saved
            if loaded is None:
                waiting = f"**The model this browser used last ({source.name})** {model_tab.NOT_LOADED}."
    keep = gr.skip()
    out = dict.fromkeys(Opened._fields, keep)
    out.update(state=state, cf_autorun=False)
    if waiting is not None and "model" not in asked:   # the remembered one; a link's says so in tab 1
        out["model_info"] = waiting
    if waiting is not None or (loaded is not None and loaded.key != ex.default.key):
        if loaded is not None:
            switched = model_tab.switched(ex, loaded, None, state)._asdict()
            out.update({k: v for k, v in switched.items() if k in Opened._fields})
            state = out["state"]
        out.update(model_kind=choice.get("kind", keep), model_bundled=choice.get("bundled", keep),
                   model_repo=choice.get("repo", keep), model_revision=choice.get("revision", keep),
                   model_path=choice.get("path", keep))
    if asked:
        out.update(_link_run(ex, state, asked, notes))
    return Opened(**out)


def _link_run(ex: Explainer, state: dict, asked: dict[str, str], notes: list[str]) -> dict[str, Any]:
    """Tab 1 as a link describes it; the run starts by itself when image and target check."""
    out: dict[str, Any] = {}
    loaded = ex.session_model(state)
    example = ex.examples.paths.get(asked.get("example", ""))
    if example is not None:
        shown = counterfactual.preview(ex, example, state)
        out.update(cf_image=str(example), cf_input=shown.cf_input, cf_prediction=shown.cf_prediction,
                   cf_energy=shown.cf_energy, cf_target=shown.cf_target)
    elif "example" in asked:
        notes.append("its image is not one of this app's examples")
    target_ok = False
    if "target" in asked:
        try:
            out["cf_target"] = gr.update(value=loaded.class_names[target_index(asked["target"], loaded)])
            target_ok = True
        except (gr.Error, ValueError):
            notes.append("its target is not a class of this model")
    if any(k in asked for k in ("norm", "eps", "steps", "step_size")):
        norm = norm_name(asked.get("norm", "L2"))   # "l2" as the norm box and the API take it
        d = explain.default_params(loaded.image_size, norm) if norm in NORMS else None
        try:
            if d is None:
                raise ValueError("norm")
            req = pgd_params(d["norm"], asked.get("eps", d["eps"]), asked.get("steps", d["steps"]),
                             asked.get("step_size", d["step_size"]))
            out.update(zip(("cf_norm", "cf_eps", "cf_steps", "cf_step_size"), settings_shown(req, loaded.image_size)))
        except (gr.Error, ValueError):
            notes.append("its settings are not valid here, so the defaults are used")
    out["cf_autorun"] = example is not None and target_ok and not notes
    if notes:
        out["cf_summary"] = "This shared link could not be opened in full: " + "; ".join(notes) + "."
    elif out["cf_autorun"]:
        out["cf_summary"] = "Opening the shared run…"
    if example is None and "cf_input" not in out:
        out["cf_prediction"] = charts.placeholder(counterfactual.NO_IMAGE, 300, 80)
    return out


# after the page opened: a complete link presses Run (the usual path: progress, Cancel, downloads)
AUTORUN_JS = "(go) => { if (go) setTimeout(() => document.querySelector('#cf-run')?.click(), 50); }"
