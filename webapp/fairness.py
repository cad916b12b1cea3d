"""One model computation per visitor at a time.

`workers` computations run at once and the rest wait in Gradio's queue. A visitor who sends several at once (two
API calls in parallel, a script) would hold every worker while everyone else waits behind them; so a computation
that starts while the same visitor's previous one still runs is refused at once, without work, and its worker goes
to the next request in the queue. A visitor is a page session (Gradio's `session_hash`; a `gradio_client.Client`
has one too), not an address: a class of students behind one NAT address must not block each other. (webapp.demo
gives tab 1's previews of a newly chosen image, one forward each, a `Visitors` of their own.)

A visitor who leaves (a reload, a closed tab: Gradio's unload event) stops their computation in flight at its
next PGD step or model forward (`LEFT`, read by `explainer.progress_steps` and `explainer.stoppable`): a reloaded
page is a new visitor, and the lost page's
run would otherwise hold a worker to the end. A streamed run (tab 1) is also closed by Gradio itself.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from contextvars import ContextVar
from typing import Any, Callable, Iterator

import gradio as gr

BUSY = "Your previous computation is still running: wait for it to finish (or cancel it), then try again."

LEFT: ContextVar[threading.Event | None] = ContextVar("visitor_left", default=None)
"""Set while a visitor's computation runs in this context: `Visitors.leave` sets the event when their page goes."""


class Visitors:
    """The visitors with a computation running now."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: dict[str, threading.Event] = {}   # visitor -> set when their page has gone

    @contextlib.contextmanager
    def _slot(self, key: str | None) -> Iterator[threading.Event | None]:
        """Hold `key`'s one slot while the block runs (yielding the event `leave` sets); refuse when it is held.
        No key (a handler called without a request: a test, a benchmark): nothing to count."""
        if key is not None:
            with self._lock:
                if key in self._busy:
                    raise gr.Error(BUSY, print_exception=False)
                self._busy[key] = threading.Event()
        try:
            yield None if key is None else self._busy[key]
        finally:
            if key is not None:
                with self._lock:
                    self._busy.pop(key, None)

    def leave(self, request: gr.Request) -> None:
        """The unload event of a page: its computation in flight, if any, stops at its next PGD step."""
        with self._lock:
            left = self._busy.get(getattr(request, "session_hash", None))
        if left is not None:
            left.set()

    def one_at_a_time(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn` (an event handler) refused for a visitor whose previous computation still runs. Gradio passes the
        request to the extra last parameter `request`; a streaming handler holds its slot while it streams."""
        signature = inspect.signature(fn)
        n = len(signature.parameters)

        def split(args: tuple, kwargs: dict) -> tuple[tuple, str | None]:
            request = kwargs.pop("request", None)
            if len(args) > n:
                args, request = args[:n], args[n]
            return args, getattr(request, "session_hash", None)

        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def streaming(*args: Any, **kwargs: Any) -> Iterator[Any]:
                args, key = split(args, kwargs)
                with self._slot(key):
                    yield from fn(*args, **kwargs)
            wrapper: Callable[..., Any] = streaming
        else:
            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                args, key = split(args, kwargs)
                with self._slot(key) as left:
                    token = LEFT.set(left)   # this thread's context: the handler and the workers it copies it to
                    try:
                        return fn(*args, **kwargs)
                    finally:
                        LEFT.reset(token)
        request = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                    annotation=gr.Request)
        wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*signature.parameters.values(), request])
        wrapper.__annotations__ = {**getattr(fn, "__annotations__", {}), "request": gr.Request}
        return wrapper
