"""What users send the app, checked before any computation: limits, choices, the error wrapper that turns
clear ValueError/OSError messages into readable toasts, raw image payloads, images, classes, PGD settings,
attribution methods, radii."""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import inspect
import re
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import gradio as gr
import gradio.utils as gr_utils
import httpx
import pydantic
import torch
from gradio.exceptions import InvalidPathError
from PIL import Image as PILImage

import explain
from dat_core.data.seeds import SEED_KINDS as DATA_SEED_KINDS
from explain import params
from explain.attribution import METHODS
from explain.image import open_image, to_rgb

from . import limits
from .charts import eps_text
from .state import LoadedModel, TempFiles

# A server time budget, not a library limit: explain.params.MAX_STEPS (1000) bounds what PGD accepts, while one
# web request may run at most this many steps so a shared server answers every queued user in reasonable time.
MAX_REQUEST_STEPS = 500
MAX_ALL_TARGETS = 100
MAX_SAMPLES_PER_CLASS = 16
# UI labels of the seed kinds (dat_core.data.seeds.SEED_KINDS, the first is the default); "image" is the upload
SEED_LABELS = {"bank": "A photo of something else (how DAT was trained)", "gaussian": "A class-average blur",
               "uniform": "Random noise", "lowfreq": "Smooth noise"}
SEED_KINDS = {**{SEED_LABELS[kind]: kind for kind in DATA_SEED_KINDS}, "My image": "image"}
EVERY_CLASS = "every class"
ATTR_FRAMES = ("start x₀", "current step t", "end x_T")

# user-caused failures become a readable toast; anything else is a bug and keeps its traceback
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, ConnectionError, OSError,
               OverflowError)
"""What a handler turns into a message; OverflowError as a backstop for numbers beyond any float (10**400)."""

NOT_UPLOADED = "That image did not come from an upload: upload it again."
NOT_TAKEN = "This request sends a value in a form this app does not take."
NOT_FETCHED = ("The image could not be fetched from that address: upload it, or send it as a data: URL "
               "(data:image/png;base64,...).")

ECHO_LIMIT = 60
"""At most this many characters of a visitor's input come back in a message."""
MAX_MESSAGE = 600
# What a message must not show: a path on the server. Each alternative is not glued to a word, so "8/255",
# "owner/name", "L2/Linf" and a URL's "//host" stay; "~" alone is the server's home.
_PART = r"[^\s/\\'\"`,;()<>|]"
_SERVER_PATH = re.compile("|".join([
    rf"(?<![\w.:/\\~-])(?:~|[A-Za-z]:)?[/\\]{_PART}+(?:[/\\]{_PART}*)*",  # /etc/x, ~/.ssh, C:\\models
    r"(?<![\w.:/\\-])~(?=[/\\\s]|$)",                                   # ~
    rf"(?<![\w.])\.{{1,2}}[/\\](?:{_PART}|[/\\])*",                       # ../../etc, ./x
]))

Handler = TypeVar("Handler", bound=Callable[..., Any])


def echo(value: Any) -> str:
    """A visitor's input as a message may quote it: at most ECHO_LIMIT characters, "…" where it was cut.
    Every message that repeats input goes through here (directly, or through `safe_message`)."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= ECHO_LIMIT else text[:ECHO_LIMIT - 1] + "…"


def _strings(values: Any, depth: int = 0) -> list[str]:
    """The strings in a handler's arguments (and one level into lists and dicts): what a visitor typed."""
    if isinstance(values, str):
        return [values]
    if depth < 3 and isinstance(values, (list, tuple, set)):
        return [s for v in values for s in _strings(v, depth + 1)]
    if depth < 3 and isinstance(values, dict):
        return [s for v in values.values() for s in _strings(v, depth + 1)]
    return []


def safe_message(text: str, inputs: Any = ()) -> str:
    """A message fit to show a visitor: long `inputs` it quotes cut to `echo` length, absolute server paths
    replaced by "…", the whole at most MAX_MESSAGE characters."""
    for value in sorted({s for s in _strings(inputs) if len(s) > ECHO_LIMIT}, key=len, reverse=True):
        for form in dict.fromkeys((value, value.strip(), value.strip().lower())):
            if len(form) > ECHO_LIMIT:
                text = text.replace(repr(form), repr(echo(form))).replace(form, echo(form))
    text = _SERVER_PATH.sub("…", text)
    # and what was derived from input (a piece of a comma list, a stripped word): no word longer than an echo
    text = re.sub(rf"\S{{{ECHO_LIMIT + 1},}}", lambda m: echo(m.group()), text)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 1] + "…"


def user_errors(fn: Handler) -> Handler:
    """Turn the clear ValueError / OSError messages of explain and dat_core into `gr.Error`, and make every
    message the handler raises safe to show (`safe_message`: bounded echoes, no server paths). A streaming
    handler (a generator) is checked while it is iterated."""
    if getattr(fn, "user_errors", False):
        return fn
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def streaming(*args, **kwargs):
            with _shown_safely([args, kwargs]):
                yield from fn(*args, **kwargs)
        streaming.user_errors = True  # type: ignore[attr-defined]
        return streaming  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _shown_safely([args, kwargs]):
            return fn(*args, **kwargs)
    wrapper.user_errors = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def _shown_safely(inputs: Any) -> Iterator[None]:
    try:
        yield
    except gr.Error as e:
        safe = safe_message(str(e.message), inputs)
        if safe == e.message:
            raise
        raise gr.Error(safe, duration=e.duration, visible=e.visible, title=e.title, print_exception=False) from None
    except USER_ERRORS as e:
        text = safe_message(str(e) or type(e).__name__, inputs)
        text = text[:1].upper() + text[1:] if text[:1].isascii() else text
        raise gr.Error(text, print_exception=False) from e


def image_source(image: Any) -> Any:
    """A handler's image argument -> what `explain.to_model_input` reads (a path, bytes, an array).

    Events with image inputs run with `preprocess=False`, so the handler gets the browser's raw file payload and
    decodes it itself: Gradio's own preprocessing would open and convert the image first, before our pixel cap and
    clear messages. Gradio checks a payload's path only when the payload says it is a file (its `meta`); a forged
    one without it would name any server file. So a path that came from the browser (a str, or a dict's "path") is
    used only inside Gradio's upload folder, where uploads and the files the app served live; a `pathlib.Path`
    is one this app made itself (an example, a converted copy) and cannot come from a request.
    """
    if isinstance(image, Path):
        return image
    if isinstance(image, dict):
        if image.get("path"):
            return uploaded(image["path"])
        url = image.get("url")
        if isinstance(url, str) and url[:5].lower() == "data:":   # a scheme is case-insensitive (RFC 3986)
            try:
                return base64.b64decode(url.split(",", 1)[1])
            except (ValueError, IndexError):
                raise gr.Error("The image data could not be decoded.", print_exception=False) from None
        return None
    if isinstance(image, str) and image.strip():
        return uploaded(image)
    return image


def image_digest(image: Any, max_bytes: int | None = None) -> str | None:
    """sha256 of an image payload's bytes as given (which image it is, without decoding it), read in chunks; None
    when it cannot be read or holds more than `max_bytes`."""
    try:
        source = image_source(image)
        if isinstance(source, (bytes, bytearray)):
            data = bytes(source)
        elif isinstance(source, (str, Path)):
            with open(source, "rb") as f:
                if max_bytes is None:
                    return hashlib.file_digest(f, "sha256").hexdigest()
                data = f.read(max_bytes + 1)
        else:
            return None
    except (OSError, gr.Error):
        return None
    return None if max_bytes is not None and len(data) > max_bytes else hashlib.sha256(data).hexdigest()


def uploaded(path: Any) -> str:
    """`path` when it lies in Gradio's upload folder (symlinks and '..' resolved); else one message that says
    nothing about the server's files (not whether the path exists, nor what it is)."""
    root = Path(gr_utils.get_upload_folder()).resolve()
    try:
        inside = isinstance(path, str) and Path(path).resolve().is_relative_to(root)
    except (OSError, ValueError, RuntimeError):
        inside = False
    if not inside:
        raise gr.Error(NOT_UPLOADED, print_exception=False)
    return path


class CheckedBlocks(gr.Blocks):
    """The app's page: what Gradio itself refuses in an event's payload is answered as `uploaded` answers, with a
    message. With `preprocess=False` Gradio still checks a file payload before any handler runs: a payload marked
    as a file (its `meta`) whose path no upload made raises InvalidPathError, and a value that is no file payload
    at all (a path sent as a plain string, as gradio_client sends a str) fails its data model's validation. Both
    raise outside the handler, where `user_errors` cannot see them: the caller got `"error": null`, the log a
    traceback per request, and Gradio's own text would name the server path. The app's only inputs with such
    checks are images (gr.Image, gr.ImageEditor). Too few input values (Gradio's count check), and an image URL that
    cannot be fetched (Gradio fetches it first), get a message too."""

    def launch(self, *args: Any, **kwargs: Any) -> Any:
        """Every launch keeps the app's request limits (webapp/limits.py), however the app is started."""
        return super().launch(*args, **limits.launch_kwargs(kwargs))

    async def preprocess_data(self, block_fn: Any, inputs: list[Any], *args: Any, **kwargs: Any) -> Any:
        if len(inputs) < len(block_fn.inputs):   # Gradio's own check raises ValueError, repeating what was sent
            raise gr.Error(f"This request sends {len(inputs)} input values; this event takes {len(block_fn.inputs)}.",
                           print_exception=False)
        try:
            return await super().preprocess_data(block_fn, inputs, *args, **kwargs)
        except (InvalidPathError, pydantic.ValidationError):
            images = any(isinstance(c, (gr.Image, gr.ImageEditor)) for c in block_fn.inputs)
            raise gr.Error(NOT_UPLOADED if images else NOT_TAKEN, print_exception=False) from None
        except (ValueError, OSError, httpx.HTTPError):   # Gradio fetches an image URL (MCP clients send them) first
            raise gr.Error(NOT_FETCHED if _sends_url(inputs) else NOT_TAKEN, print_exception=False) from None


def _sends_url(inputs: list[Any]) -> bool:
    """Whether a payload names a file by an http(s) address, which Gradio fetches before any handler runs."""
    def url(v: Any) -> bool:
        return isinstance(v, str) and v.lower().startswith(("http://", "https://"))
    return any(url(v) or (isinstance(v, dict) and (url(v.get("url")) or url(v.get("path")))) for v in inputs)


BROWSER_FORMATS = {"PNG", "JPEG", "GIF", "WEBP", "BMP"}
MAX_DISPLAY_SIDE = 2048


def browser_copy(image: Any, files: TempFiles) -> Path | None:
    """A PNG copy of an upload that browsers cannot show (TIFF, ...) for the image box (and for what reads it
    next), at most MAX_DISPLAY_SIDE px a side; None when the upload shows as it is (or is unreadable: the
    model input's own checks then say why)."""
    path = image_source(image)
    if not isinstance(path, (str, Path)) or not str(path):
        return None
    try:
        with PILImage.open(path) as im:
            if im.format in BROWSER_FORMATS:
                return None
        rgb = to_rgb(open_image(path))
    except (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError):
        return None
    rgb.thumbnail((MAX_DISPLAY_SIDE, MAX_DISPLAY_SIDE))
    out = files.path(Path(path).stem + ".png")
    rgb.save(out, format="PNG")
    return out


def model_input(image: Any, loaded: LoadedModel, missing: str = "Upload an image first (or click an example).",
                ) -> torch.Tensor:
    """The image as the model's (1, 3, H, W) input; errors name the file as the person knows it, and `missing`
    says where the image should come from when there is none."""
    image = image_source(image)
    if image is None or (isinstance(image, str) and not image.strip()):
        raise gr.Error(missing, print_exception=False)
    try:
        return explain.to_model_input(image, loaded.image_size)
    except explain.ImageError as e:  # name the file as the person knows it, not by its server path
        name = Path(image).name if isinstance(image, (str, Path)) else ""
        text = str(e).replace(str(image), name) if name else str(e)
        text = text if name and text.startswith(name) else text[:1].upper() + text[1:]
        raise gr.Error(text, print_exception=False) from None


_INDEX = re.compile(r"[+-]?[0-9]+")


def target_index(target: Any, loaded: LoadedModel) -> int:
    """A class name or index typed or picked by the user -> the model's class index."""
    if target is None or (isinstance(target, str) and not target.strip()):
        raise gr.Error("Choose a target class.", print_exception=False)
    names = loaded.class_names
    try:
        return explain.resolve_class(target, names)
    except ValueError:
        text = str(target).strip()
        if _INDEX.fullmatch(text):  # "-1", "+11", 5000 digits: an index, not a name; say which indices exist
            raise ValueError(f"class index {echo(text.lstrip('+'))} is out of range 0–{len(names) - 1}") from None
        raise


def pgd_params(norm: Any, eps: Any, steps: Any, step_size: Any) -> dict[str, Any]:
    """The PGD settings of a request, canonicalized, with at most MAX_REQUEST_STEPS steps."""
    return explain.validate_params(norm or "L2", params.parse_eps(eps),
                                   params.parse_step(step_size),
                                   params.parse_int("steps", steps, 1, MAX_REQUEST_STEPS))


def parse_methods(methods: Any) -> tuple[str, ...]:
    """Attribution methods from the checkbox group (a list) or the API (comma-separated text)."""
    if methods is not None and not isinstance(methods, (str, list, tuple)):
        raise ValueError(f"methods: give comma-separated names or a list of them, not a {type(methods).__name__}")
    items = methods.split(",") if isinstance(methods, str) else list(methods or [])
    chosen = tuple(dict.fromkeys(str(m).strip() for m in items if str(m).strip()))
    unknown = [m for m in chosen if m not in METHODS]
    if not chosen:
        raise ValueError(f"choose at least one attribution method: tick one (the API takes their names: "
                         f"{', '.join(METHODS)})")
    if unknown:
        named = ", ".join(echo(m) for m in unknown[:3]) + (", …" if len(unknown) > 3 else "")
        raise ValueError(f"unknown attribution method(s) {named}; choose from {', '.join(METHODS)}")
    return chosen


def eps_choices(norm: str, image_size: int) -> list[str]:
    """The ε dropdown's suggestions around the resolution's default (`explain.params.eps_suggestions`)."""
    return [eps_text(e, norm) for e in params.eps_suggestions(norm, image_size)]


def settings_shown(req: dict[str, Any], image_size: int) -> tuple[Any, Any, Any, Any]:
    """Tab 1's settings boxes (norm, ε, steps, step size) showing a request as written and exactly: a link,
    a grid cell or a retry opened there runs the same path again (16/255 and 1/255, not 0.0627 and
    0.00392156862745098; 1/3 with every digit, as "0.333333" is another radius)."""
    norm = req["norm"]
    return (norm, gr.update(choices=eps_choices(norm, image_size), value=params.exact_text(req["eps"], norm)),
            int(req["steps"]), params.exact_text(req["step_size"], norm))
