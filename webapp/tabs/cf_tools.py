"""Tab 1's tools: the explanation card (card_export.py) and the alternatives (alternatives.py) under the scrubber,
and the painted region (region.py) under the settings; wired as one group so that tab 1's module stays about the
path itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from ..explainer import Explainer
from . import alternatives, card_export, region


@dataclass
class Tools:
    card: card_export.Components
    alts: alternatives.Components
    region: region.Components


def layout(card: card_export.Components, painted: region.Components) -> Tools:
    """Below the downloads' row (which holds the card's button): the card's files, then the alternatives."""
    card.cf_card_files.render()
    return Tools(card=card, alts=alternatives.layout(), region=painted)


def follow(event: Any, tools: Tools) -> None:
    """After `event` showed a new path on tab 1."""
    card_export.follow(event, tools.card)


def wire(ex: Explainer, tools: Tools, *, state: gr.State, request: list[Any], view: gr.Image) -> None:
    """`request`: tab 1's image, target and settings (threat model, ε, steps, step size); `view`: what the
    model sees of the image (the region's brush paints on it)."""
    card_export.wire(ex, tools.card, state=state, image=request[0])
    alternatives.wire(ex, tools.alts, state=state, request=request, view=view)
    region.wire(ex, tools.region, state=state, view=view)
