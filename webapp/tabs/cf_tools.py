"""Tab 1's tools under the scrubber: the explanation card (card_export.py) and the alternatives (alternatives.py),
laid out and wired as one group so that tab 1's module stays about the path itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from ..explainer import Explainer
from . import alternatives, card_export


@dataclass
class Tools:
    card: card_export.Components
    alts: alternatives.Components


def layout(card: card_export.Components) -> Tools:
    """Below the downloads' row (which holds the card's button): the card's files, then the alternatives."""
    card.cf_card_files.render()
    return Tools(card=card, alts=alternatives.layout())


def follow(event: Any, tools: Tools) -> None:
    """After `event` showed a new path on tab 1."""
    card_export.follow(event, tools.card)


def wire(ex: Explainer, tools: Tools, *, state: gr.State, request: list[Any]) -> None:
    """`request`: tab 1's image, target and settings (threat model, ε, steps, step size)."""
    card_export.wire(ex, tools.card, state=state, image=request[0])
    alternatives.wire(ex, tools.alts, state=state, request=request)
