"""Signals for the command-line entry points: SIGTERM stops a command as Ctrl-C does, so `finally` blocks run."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def is_main_thread() -> bool:
    """Signal handlers can only be set from the main thread (a run started from a UI worker has none)."""
    return threading.current_thread() is threading.main_thread()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is (a CLI exits 143): `finally` blocks run, so no temporary file is left."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block SIGTERM stops the command like Ctrl-C does (the default handler kills the process on the
    spot: half-written temporaries stay behind); the previous handler is back afterwards."""
    if not is_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:   # a handler the command chose on its way out stays (a torchrun rank ignores the SIGTERM that
        if signal.getsignal(signal.SIGTERM) is _terminate:   # stops its peers: its own exit code must stand)
            signal.signal(signal.SIGTERM, previous)
