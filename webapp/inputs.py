"""What users send the app, checked before any computation: limits, choices, the error wrapper that turns
clear ValueError/OSError messages into readable toasts, raw image payloads, attribution methods, radii."""

import base64
import functools
import math

import gradio as gr

from explain.attribution import METHODS

MAX_STEPS = 500
MAX_ALL_TARGETS = 100
MAX_SAMPLES_PER_CLASS = 16
NORMS = ("L2", "Linf")
SEED_KINDS = {"Random noise": "uniform", "Smooth noise": "lowfreq", "My image": "image"}
EVERY_CLASS = "every class"
ATTR_FRAMES = ("start x₀", "current step t", "end x_T")

# user-caused failures become a readable toast; anything else is a bug and keeps its traceback
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, ConnectionError, OSError)


def user_errors(fn):
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
    return wrapper


def image_source(image):
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


def parse_methods(methods) -> tuple[str, ...]:
    items = methods.split(",") if isinstance(methods, str) else list(methods or [])
    chosen = tuple(dict.fromkeys(str(m).strip() for m in items if str(m).strip()))
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        raise ValueError(f"unknown attribution method(s) {', '.join(unknown) or '(none chosen)'}; "
                         f"choose from {', '.join(METHODS)}")
    return chosen


def eps_text(eps: float, norm: str) -> str:
    if math.isinf(eps):
        return "∞"
    if norm == "Linf" and abs(eps * 255 - round(eps * 255)) < 1e-6:
        return f"{round(eps * 255)}/255"
    return f"{eps:g}"


def eps_choices(norm: str, image_size: int) -> list[str]:
    if norm == "Linf":
        return ["2/255", "4/255", "8/255", "16/255", "32/255", "∞"]
    s = image_size / 32
    return [f"{v * s:g}" for v in (0.5, 1, 2, 3, 4, 6)] + ["∞"]
