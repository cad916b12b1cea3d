"""explain: counterfactual trajectories, landscapes, attributions, generation, exports and the CLI.

Built on dat_core; never imports gradio or webapp (layering: app.py -> webapp -> explain -> dat_core). The landscape and
attribution names load on first use, so `import explain` does not pull in matplotlib or captum.
"""

from importlib import import_module
from typing import Any

from .diverse import Alternatives, alternatives
from .export import contact_strip, save_apng, save_figure, save_gif, save_metrics_json
from .generate import Samples, generate
from .image import MAX_PIXELS, ImageError, to_mask, to_model_input
from .params import DEFAULTS, default_params, parse_eps, resolve_class, validate_params
from .trajectory import (
    MinimalCounterfactual,
    MinimalSearch,
    Trajectory,
    compare,
    counterfactual,
    counterfactuals,
    minimal_counterfactual,
)

_LAZY = {"Landscape": "landscape", "energy_landscape": "landscape", "plot_landscape": "landscape",
         "METHODS": "attribution", "attribute": "attribution", "attribute_trajectory": "attribution",
         "plot_attributions": "attribution"}

__all__ = [
    "to_model_input", "to_mask", "ImageError", "MAX_PIXELS",
    "Trajectory", "counterfactual", "counterfactuals", "compare", "minimal_counterfactual",
    "MinimalCounterfactual", "MinimalSearch", "Alternatives", "alternatives", "DEFAULTS", "default_params",
    "validate_params",
    "resolve_class", "parse_eps",
    "Samples", "generate",
    "save_gif", "save_apng", "contact_strip", "save_metrics_json", "save_figure",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
