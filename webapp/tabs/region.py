"""Tab 1's region: a brush on the model's view of the image paints where the path may change; pixels outside stay
bit-identical to the image at every step (`mask=` of `explain.counterfactual`, `dat_core.pgd`).

The painted region is checked here (size, shape, something painted) and kept in the session, at the editor's
resolution: each run reads it (`for_model`) at its model's resolution, so a region survives switching models. A new
image clears it (the editor shows the new image, unpainted).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import numpy as np
import torch

import explain
from explain.image import open_image

from ..explainer import Explainer
from ..inputs import image_source, user_errors
from ..state import LoadedModel
from ..wiring import CHECKED, INSTANT, bind, no_error_badge, outputs

SLOT = "region"
MAX_SIDE = 2048  # the editor shows the model's view (at most 256 px x its display scale); a larger layer is forged
NOTHING = "nothing is painted: paint the region the path may change (or press Whole image)"
NO_REGION = "No region: the whole image may change. Paint on the image, then press **Use this region**."


@dataclass
class Components:
    cf_region: gr.ImageEditor
    cf_region_use: gr.Button
    cf_region_clear: gr.Button
    cf_region_info: gr.Markdown


class Region(NamedTuple):
    state: dict
    cf_region_info: str


class Fresh(NamedTuple):
    """A new image: the editor shows it unpainted, and no region is kept."""
    state: dict
    cf_region: Any
    cf_region_info: str


def layout() -> Components:
    with gr.Accordion("Region: paint where it may change (optional)", open=False, elem_id="cf-region-panel"):
        # the accordion names it; the editor's own label ran under its toolbar on a narrow screen
        cf_region = gr.ImageEditor(label="Paint the region the path may change", show_label=False, sources=[],
                                   type="filepath",
                                   image_mode="RGBA", layers=False, transforms=[], format="png", height=260,
                                   brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed", default_size=12),
                                   elem_id="cf-region", buttons=[])
        with gr.Row():
            cf_region_use = gr.Button("Use this region", size="sm", variant="primary", elem_id="cf-region-use")
            cf_region_clear = gr.Button("Whole image", size="sm", elem_id="cf-region-clear")
        cf_region_info = gr.Markdown(NO_REGION, elem_id="cf-region-info")
    return Components(cf_region=cf_region, cf_region_use=cf_region_use, cf_region_clear=cf_region_clear,
                      cf_region_info=cf_region_info)


def painted(editor: Any) -> np.ndarray:
    """The editor's strokes as an (H, W) bool array (True = painted), checked: one square layer the size of the
    image it was painted on, at most MAX_SIDE a side, something painted."""
    if not isinstance(editor, dict) or not isinstance(editor.get("layers"), list):
        raise ValueError("the painted region could not be read: paint on the image again")
    layers = [image_source(layer) for layer in editor["layers"] if layer]
    background = image_source(editor.get("background"))
    if background is None:
        raise ValueError("pick an example or upload an image first, then paint on it")
    if not layers:
        raise ValueError(NOTHING)
    if len(layers) > 1:
        raise ValueError("paint the region on one layer")
    size = open_image(background, max_side=MAX_SIDE).size  # sides from the header: a forged huge one is not decoded
    layer = open_image(layers[0], max_side=MAX_SIDE)
    if layer.size != size or size[0] != size[1] or size[0] > MAX_SIDE:
        raise ValueError(f"the painted layer is {layer.size[0]}x{layer.size[1]} px; it must cover the image "
                         f"({size[0]}x{size[1]}, square, at most {MAX_SIDE} px a side)")
    alpha = np.asarray(layer.convert("RGBA"))[..., 3] > 0
    if not alpha.any():
        raise ValueError(NOTHING)
    return alpha


def for_model(ex: Explainer, state: Any, loaded: LoadedModel) -> torch.Tensor | None:
    """The session's region at `loaded`'s resolution as the (S, S) {0, 1} mask a run takes, or None. The region
    lives in the shared, bounded result cache; the session remembers that it set one (`is_set`), so a region
    other visitors' results pushed out is an error to repaint, never a silent run on the whole image."""
    region = ex.get(state, SLOT)
    if region is None:
        if is_set(state):
            raise ValueError("the painted region was dropped from the server's memory (many visitors' results "
                             "since): paint it again and press Use region, or press Whole image")
        return None
    return explain.to_mask(region.astype(np.float32), loaded.image_size)[0, 0].float()


@user_errors
def use(ex: Explainer, editor, state) -> Region:
    """Keep the painted region for this session's next runs."""
    state = ex.session(state)
    region = painted(editor)
    loaded = ex.session_model(state)
    try:
        share = float(explain.to_mask(region.astype(np.float32), loaded.image_size).float().mean())
    except explain.ImageError:
        raise ValueError(f"the strokes are too thin to cover a whole pixel of the model's {loaded.image_size}×"
                         f"{loaded.image_size} input: paint with a wider brush") from None
    ex.put(state, SLOT, region)
    state[SLOT] = True   # the session's own record that a region is set (see `for_model`)
    return Region(state, f"**Region set:** {share:.0%} of the pixels may change; the rest stays exactly as it is "
                         "in every run of this tab until you press **Whole image** or pick another image.")


def is_set(state: Any) -> bool:
    """Whether this session painted a region it has not cleared (kept or not)."""
    return isinstance(state, dict) and state.get(SLOT) is True


def clear(ex: Explainer, state) -> Region:
    state = ex.session(state)
    state.pop(SLOT, None)
    ex.cache.discard(f"{state['id']}/{SLOT}")
    return Region(state, NO_REGION)


def fresh(ex: Explainer, view, state) -> Fresh:
    """After tab 1 showed a new image (`view`: what the model sees), or Whole image was pressed: the editor shows
    the image without strokes, no region is kept."""
    state, info = clear(ex, state)
    path = image_source(view)
    background = str(path) if isinstance(path, (str, Path)) else None
    return Fresh(state, {"background": background, "layers": [], "composite": background}, info)


def wire(ex: Explainer, ui: Components, *, state: gr.State, view: gr.Image) -> None:
    """`view`: tab 1's "what the model sees" image, the editor's background."""
    region = outputs(Region, ui, state=state)
    used = ui.cf_region_use.click(bind(use, ex), [ui.cf_region, state], region, **CHECKED)
    no_error_badge(used, ui.cf_region_info)
    # Whole image: the strokes go too (pressing Use this region again would bring the old region back)
    for event in (ui.cf_region_clear.click, view.change):
        event(bind(fresh, ex), [view, state], outputs(Fresh, ui, state=state), **INSTANT)
