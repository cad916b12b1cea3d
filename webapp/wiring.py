"""How the tabs wire their events: the event options they share, handlers bound to the `Explainer`, and
outputs found by the field names of a handler's result type (a NamedTuple), so nothing is matched by position.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Any, Callable, Iterator, NamedTuple

import gradio as gr
import torch

from .explainer import Cancelled, Explainer
from .inputs import user_errors

PRIVATE = {"api_visibility": "private"}  # UI events are not API endpoints; the API is webapp/api.py
# Handlers read what the browser sent as it is and check it themselves (webapp/inputs.py): images are decoded by
# us (inputs.image_source), and Gradio's own checks of choices would answer a forged value with a message
# quoting all of it.
RAW = {"preprocess": False}
# one model computation at a time on the whole server (PGD, landscapes, attributions, model loading)
COMPUTE = {"concurrency_id": "model", "concurrency_limit": 1, **RAW, **PRIVATE}
# slider moves and animation ticks: answered at once, only the latest position counts
INSTANT = {"queue": False, "show_progress": "hidden", "trigger_mode": "always_last", **RAW, **PRIVATE}
# a quick answer without the model that may refuse the request: queued, because only a queued event shows the
# refusal's toast (an INSTANT one fails silently)
CHECKED = {"show_progress": "hidden", **RAW, **PRIVATE}
# a Cancel button: queued too, for its toast (`stop`), in a queue of its own with no limit, so it never waits
STOP = {"concurrency_limit": None, **CHECKED}
CANCELLED = "Cancelled: the run stops at its next step; nothing was changed."
FAILED = ("Something went wrong on the server ({kind}); nothing was changed. Try again, and if it fails again, ask for "
          "less: fewer steps, samples, paths or grid points.")
OUT_OF_MEMORY = ("The server ran out of memory for this request; nothing was changed. Ask for less: fewer steps, "
                 "samples, paths or grid points.")


def bind(handler: Callable[..., Any], ex: Explainer, *, toasts: bool = True) -> Callable[..., Any]:
    """`handler` with `ex` as its first argument, as Gradio wants to see it, its errors shown safely
    (`user_errors`: every event's handler, so a new one cannot forget it; what Gradio refuses before any
    handler runs: `inputs.CheckedBlocks`; an unexpected error: one plain message, `_failures`). `toasts`: its
    refusals are shown as the page's toasts (`_toasts`); False for the API endpoints, whose callers read the
    message as text.

    Gradio reads the handler's signature: a `gr.Progress()` default asks for a progress bar, a `gr.SelectData`
    hint for the click, the parameter names name API inputs. `functools.partial` would hide the hints.
    """
    handler = user_errors(handler)
    shown = _toasts if toasts else contextlib.nullcontext

    @functools.wraps(handler)
    def bound(*args, **kwargs):
        with _failures(), shown():
            return handler(ex, *args, **kwargs)

    @functools.wraps(handler)
    def streaming(*args, **kwargs):  # Gradio streams the outputs of a generator function only
        with _failures(), shown():
            yield from handler(ex, *args, **kwargs)
    bound = streaming if inspect.isgeneratorfunction(handler) else bound
    signature = inspect.signature(handler)
    bound.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=list(signature.parameters.values())[1:])
    return bound


@contextlib.contextmanager
def _failures() -> Iterator[None]:
    """An unexpected error (a bug; the GPU out of memory partway through a run) as one message. Gradio sends none
    for it unless the app is launched with `show_error` (which would send any exception's text, server paths
    included), and the failed event's red badge is taken off (`no_error_badge`): the page said nothing at all.
    The message names the error's type only; the server's log still has the traceback."""
    try:
        yield
    except gr.Error:
        raise
    except Exception as e:
        raise gr.Error(OUT_OF_MEMORY if _out_of_memory(e) else FAILED.format(kind=type(e).__name__)) from e


def _out_of_memory(e: Exception) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError, or torch's CPU allocator failing (a plain RuntimeError)."""
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(e, RuntimeError) and "can't allocate memory" in str(e))


@contextlib.contextmanager
def _toasts() -> Iterator[None]:
    """How a UI event's refusal is shown. A toast renders its message as HTML, and a refusal may quote what a
    visitor typed ("Unknown class '<img ...>'"): < and > go as entities, so the quote reads as typed and adds no
    markup (escaping only these two is idempotent: a message passed on by two handlers is not escaped twice).
    An API endpoint's caller gets the message as text, unescaped (`bind(..., toasts=False)`).
    A run ended by its Cancel shows nothing: the Cancel button said so (`stop`)."""
    try:
        yield
    except Cancelled as e:  # the visitor's own Cancel: no error toast (the event still fails: no success chains)
        e.visible = False
        raise
    except gr.Error as e:
        e.message = str(e.message).replace("<", "&lt;").replace(">", "&gt;")
        raise


def outputs(result: type[NamedTuple], *groups: object, **named: gr.components.Component) -> list[Any]:
    """The components a handler's `result` fills, in its field order, looked up by name in the tabs'
    component groups (dataclasses) and in `named`. A name found nowhere, or twice, is an error now."""
    found = []
    for name in result._fields:
        owners = [g for g in groups if hasattr(g, name)] + ([named] if name in named else [])
        if len(owners) != 1:
            raise LookupError(f"{result.__name__}.{name}: {len(owners)} components have this name")
        owner = owners[0]
        found.append(owner[name] if owner is named else getattr(owner, name))
    return found


def cancellable(trigger: Callable[..., Any], fn: Callable[..., Any], inputs: list[Any], outputs: list[Any], *,
                run: list[gr.Button], cancel: gr.Button, progress_on: gr.components.Component) -> Any:
    """A model computation started by `trigger` (e.g. `button.click`) that a Cancel button can stop.

    While it runs, Cancel takes the place of the first `run` button, the other `run` buttons are off, and the
    progress bar shows on `progress_on` alone (not over every output). Returns the computation's event (for
    `.success` chains and for `cancel.click(..., cancels=[...])`, which the tab wires with `idle_buttons`).
    """
    busy = trigger(lambda: busy_buttons(len(run)), None, [*run, cancel], queue=False, show_progress="hidden",
                   **PRIVATE)
    work = busy.then(fn, inputs, outputs, show_progress_on=progress_on, **COMPUTE)
    for ended in (work.success, work.failure):   # Gradio 6 runs no `.then` after a failure: Run would stay hidden
        ended(lambda: idle_buttons(len(run)), None, [*run, cancel], queue=False, show_progress="hidden", **PRIVATE)
    no_error_badge(work, progress_on)
    return work


def no_error_badge(event: Any, shown_on: gr.components.Component) -> None:
    """After `event` failed, its one message is the toast: take Gradio's red "Error" badge off the component
    its progress showed on (`shown_on`), which keeps what it showed before."""
    event.failure(lambda: gr.skip(), None, shown_on, queue=False, show_progress="hidden", **PRIVATE)


def stop(ex: Explainer, state: Any) -> None:
    """What every Cancel button does first: this session's run in flight ends at its next PGD step, and an Info
    toast says so (one's own Cancel is no error). The toast comes from here, not from the run's `Cancelled`:
    the button's `cancels=` also cancels the run's event, and whether that came before the run's own stop was a
    race that often left no toast at all."""
    if ex.cancel(state):
        gr.Info(CANCELLED, title="Cancelled", duration=4)


def stop_run(ex: Explainer, state: Any) -> list[Any]:
    """The Cancel button beside one Run button (all targets, alternatives, compare, generate): `stop`, and Run
    is back."""
    stop(ex, state)
    return idle_buttons(1)


def busy_buttons(n_run: int) -> list[Any]:
    return [gr.update(visible=False), *[gr.update(interactive=False)] * (n_run - 1), gr.update(visible=True)]


def idle_buttons(n_run: int) -> list[Any]:
    return [gr.update(visible=True), *[gr.update(interactive=True)] * (n_run - 1), gr.update(visible=False)]
