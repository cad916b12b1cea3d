"""Tab 1's explanation card: one click exports the path shown as `card.png` + `card.json` (explain/card.py), which
`python -m explain replay card.json` reproduces bit for bit on the same device and dtype.

The card is made from the path as a single run computes it (`Explainer.trajectory`, memoized: a path run on tab 1
is found at once); a path opened from the all-targets grid ran in a batch, whose arithmetic may differ in the last
bit, so it is run once more alone. The card names the model without a server path: "default", a Hub repo id with
its resolved commit, or a checkpoint folder by its name (its weights' sha256 pins it either way).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch

from dat_core.loading import DEFAULT_MODEL_DIR
from explain.card import located_identity, make_card, write_card
from explain.image import to_mask
from explain.params import validate_params

from ..explainer import Explainer
from ..inputs import image_digest, model_input, user_errors
from ..state import LoadedModel
from ..wiring import COMPUTE, INSTANT, bind, no_error_badge
from . import region

MAX_HASHED_BYTES = 64 * 2**20  # an upload is at most 25 MB; anything larger is not hashed
REPLAY = "Replay it with: python -m explain replay card.json (same device and dtype: bit for bit)."


@dataclass
class Components:
    cf_card: gr.Button
    cf_card_files: gr.File


def layout() -> Components:
    """The button (in the downloads' row); the files' box is rendered by the caller below it."""
    cf_card = gr.Button("Export explanation card (PNG + JSON)", interactive=False, size="sm", elem_id="cf-card",
                        elem_classes=["dl-button"])
    cf_card_files = gr.File(label="Explanation card: x₀ beside x_T, and everything needed to replay it",
                            file_count="multiple", interactive=False, visible=False, elem_id="cf-card-files",
                            render=False)
    return Components(cf_card=cf_card, cf_card_files=cf_card_files)


def card_source(ex: Explainer, loaded: LoadedModel) -> dict[str, Any]:
    """The card's model identity, named as `resolve_source` finds it again off this server: "default", the Hub
    repo id, "assets/models/NAME" for a bundled folder, else the checkpoint folder's name."""
    src = ex.models.source(loaded.key)
    if src is None:
        raise ValueError("the model of this path is no longer loaded: run it again")
    directory = Path(loaded.directory)
    if src.kind == "local":
        bundled = directory.parent.resolve() == DEFAULT_MODEL_DIR.resolve()
        name = f"assets/models/{directory.name}" if bundled else directory.name
    else:
        name = src.name
    return located_identity(src, directory, name)


def image_sha256(image: Any, x0: np.ndarray, loaded: LoadedModel) -> str | None:
    """sha256 of the image file as given, when it is still the one the path started from (else None)."""
    try:
        same = np.array_equal(model_input(image, loaded)[0].numpy(), x0)
    except (OSError, ValueError, gr.Error):
        return None
    return image_digest(image, MAX_HASHED_BYTES) if same else None


@user_errors
def export_card(ex: Explainer, image, state) -> Any:
    """The card of the path tab 1 shows, written to a fresh download folder."""
    view = ex.view(state, "cf", "counterfactual")
    shown = view.trajectory
    loaded = ex.view_model(view)
    p = shown.params
    if "cone_angle" in p:
        raise ValueError("cards of guided paths are written by `python -m explain counterfactual --guide ... --card`")
    req = validate_params(p["norm"], p["eps"], p["step_size"], p["steps"], p["objective"])
    x0 = torch.from_numpy(shown.images[:1].copy())
    masked = "mask_fraction" in p
    mask = region.for_model(ex, state, loaded) if masked else None
    changed = ValueError("the painted region changed since this path ran: run it again to export its card")
    if masked and mask is None:
        raise changed
    if masked and not np.array_equal(ex.trajectory(loaded, x0, shown.target, req, mask=mask).images, shown.images):
        raise changed   # (memoized: the path as tab 1 ran it, with the region kept now)
    # on the eager model, which the card names and replay runs (a compiled graph rounds otherwise)
    traj = ex.trajectory(loaded, x0, shown.target, req, desc="Running the path alone for its card", mask=mask,
                         eager=True)
    identity = card_source(ex, loaded)
    card = make_card(traj, loaded.fast.eager, identity["source"], model_id=identity, autocast=ex.uses_bf16(loaded),
                     image_sha256=image_sha256(image, shown.images[0], loaded), device=loaded.device,
                     mask=None if mask is None else to_mask(mask, loaded.image_size))
    names = traj.class_names
    folder = ex.files.path(f"card_{names[traj.source]}_to_{names[traj.target]}")
    written = write_card(card, traj, folder, scale=view.scale)
    return gr.update(value=[str(f) for f in reversed(written)], visible=True,
                     label=f"Explanation card: {names[traj.source]} → {names[traj.target]}. {REPLAY}")


def follow(event: Any, ui: Components) -> None:
    """After `event` showed a new path on tab 1: the button on, an older path's card hidden."""
    event.success(lambda: (gr.update(interactive=True), gr.update(value=None, visible=False)), None,
                  [ui.cf_card, ui.cf_card_files], **INSTANT)


def wire(ex: Explainer, ui: Components, *, state: gr.State, image: gr.Image) -> None:
    exported = ui.cf_card.click(bind(export_card, ex), [image, state], ui.cf_card_files,
                                show_progress_on=ui.cf_card_files, **COMPUTE)
    no_error_badge(exported, ui.cf_card_files)
