"""explain: counterfactual trajectories, landscapes, attributions, generation, exports and the CLI.

Built on dat_core; never imports gradio or webapp (layering: app.py -> webapp -> explain -> dat_core). Every name
loads on first use, so `import explain` pulls in neither torch nor matplotlib nor captum.
"""

from importlib import import_module
from typing import Any

# each name from the module that defines it; cheap, so `python -m explain` can answer a Ctrl-C while torch
# is still loading (__main__.py)
_LAZY = {
    **dict.fromkeys(["Alternatives", "alternatives"], "diverse"),
    **dict.fromkeys(["contact_strip", "save_apng", "save_figure", "save_gif", "save_metrics_json"], "export"),
    **dict.fromkeys(["Samples", "generate"], "generation"),
    **dict.fromkeys(["MAX_PIXELS", "ImageError", "mask_fraction", "to_mask", "to_model_input"], "image"),
    **dict.fromkeys(["DEFAULTS", "default_params", "parse_eps", "resolve_class", "validate_params"], "params"),
    **dict.fromkeys(["MinimalCounterfactual", "MinimalSearch", "Trajectory", "compare", "counterfactual",
                     "counterfactuals", "minimal_counterfactual"], "trajectory"),
    **dict.fromkeys(["Landscape", "energy_landscape", "plot_landscape"], "landscape"),
    **dict.fromkeys(["METHODS", "attribute", "attribute_trajectory", "plot_attributions"], "attribution"),
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = globals()[name] = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
