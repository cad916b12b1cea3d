"""What users send the app, checked before any computation: limits, choices, the error wrapper that turns
clear ValueError/OSError messages into readable toasts, raw image payloads, images, classes, PGD settings,
attribution methods, radii."""

from __future__ import annotations

import base64
import functools
import math
from pathlib import Path
from typing import Any, Callable, TypeVar

import gradio as gr
import torch

import explain
from dat_core.data.seeds import NOISE_KINDS
from explain import params
from explain.attribution import METHODS

from .state import LoadedModel

# A server time budget, not a library limit: explain.params.MAX_STEPS (1000) bounds what PGD accepts, while one
# web request may run at most this many steps so a shared server answers every queued user in reasonable time.
MAX_REQUEST_STEPS = 500
MAX_ALL_TARGETS = 100
MAX_SAMPLES_PER_CLASS = 16
# UI labels of the seed kinds: the noise kinds are explain.generate's, "image" is the user's upload
NOISE_LABELS = {"uniform": "Random noise", "lowfreq": "Smooth noise"}
SEED_KINDS = {**{NOISE_LABELS[kind]: kind for kind in NOISE_KINDS}, "My image": "image"}
EVERY_CLASS = "every class"
ATTR_FRAMES = ("start x₀", "current step t", "end x_T")

# user-caused failures become a readable toast; anything else is a bug and keeps its traceback
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, ConnectionError, OSError)

Handler = TypeVar("Handler", bound=Callable[..., Any])


def user_errors(fn: Handler) -> Handler:
    """Turn the clear ValueError / OSError messages of explain and dat_core into `gr.Error`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except USER_ERRORS as e:
            text = str(e) or type(e).__name__
            text = text[:1].upper() + text[1:] if text[:1].isascii() else text
            raise gr.Error(text, print_exception=False) from e
    return wrapper  # type: ignore[return-value]


def image_source(image: Any) -> Any:
    """A handler's image argument -> what `explain.to_model_input` reads (a path, bytes, an array).

    Events with image inputs run with `preprocess=False`, so the handler gets Gradio's raw file payload
    (the upload, already checked to lie in Gradio's upload folder) and decodes it itself: Gradio's own
    preprocessing would open and convert the image first, before our pixel cap and clear messages.
    """
    if isinstance(image, dict):
        if image.get("path"):
            return image["path"]
        url = image.get("url") or ""
        if url.startswith("data:"):
            try:
                return base64.b64decode(url.split(",", 1)[1])
            except (ValueError, IndexError):
                raise gr.Error("The image data could not be decoded.", print_exception=False) from None
        return None
    return image


def model_input(image: Any, loaded: LoadedModel) -> torch.Tensor:
    """The image as the model's (1, 3, H, W) input; errors name the file as the person knows it."""
    image = image_source(image)
    if image is None or (isinstance(image, str) and not image.strip()):
        raise gr.Error("Upload an image first (or click an example).", print_exception=False)
    try:
        return explain.to_model_input(image, loaded.image_size)
    except explain.ImageError as e:  # name the file as the person knows it, not by its server path
        name = Path(image).name if isinstance(image, str) else ""
        text = str(e).replace(image, name) if name else str(e)
        text = text if name and text.startswith(name) else text[:1].upper() + text[1:]
        raise gr.Error(text, print_exception=False) from None


def target_index(target: Any, loaded: LoadedModel) -> int:
    """A class name or index typed or picked by the user -> the model's class index."""
    if target is None or (isinstance(target, str) and not target.strip()):
        raise gr.Error("Choose a target class.", print_exception=False)
    return explain.resolve_class(target, loaded.class_names)


def pgd_params(norm: Any, eps: Any, steps: Any, step_size: Any) -> dict[str, Any]:
    """The PGD settings of a request, canonicalized, with at most MAX_REQUEST_STEPS steps."""
    return explain.validate_params(norm or "L2", params.parse_eps(eps),
                                   params.parse_positive("step size", step_size),
                                   params.parse_int("steps", steps, 1, MAX_REQUEST_STEPS))


def parse_methods(methods: Any) -> tuple[str, ...]:
    """Attribution methods from the checkbox group (a list) or the API (comma-separated text)."""
    items = methods.split(",") if isinstance(methods, str) else list(methods or [])
    chosen = tuple(dict.fromkeys(str(m).strip() for m in items if str(m).strip()))
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        raise ValueError(f"unknown attribution method(s) {', '.join(unknown) or '(none chosen)'}; "
                         f"choose from {', '.join(METHODS)}")
    return chosen


def eps_text(eps: float, norm: str) -> str:
    """A radius as the ε box shows it: ∞, k/255 for Linf budgets, else a short number."""
    if math.isinf(eps):
        return "∞"
    if norm == "Linf" and abs(eps * 255 - round(eps * 255)) < 1e-6:
        return f"{round(eps * 255)}/255"
    return f"{eps:g}"


def eps_choices(norm: str, image_size: int) -> list[str]:
    """The ε dropdown's suggestions; L2 radii scale with the resolution like `explain.default_params`."""
    if norm == "Linf":
        return ["2/255", "4/255", "8/255", "16/255", "32/255", "∞"]
    s = image_size / 32
    return [f"{v * s:g}" for v in (0.5, 1, 2, 3, 4, 6)] + ["∞"]
