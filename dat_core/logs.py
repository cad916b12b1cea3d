"""Logging and progress bars that speak once per job: rank 0 only under torchrun.

Library modules take their logger from `get_logger(__name__)`; its filter drops records on ranks
other than 0 (torchrun sets RANK in each worker's environment before Python starts), so a warning
about an unreadable image or a changed config appears once, not once per rank, with or without a
configured handler. `progress_bar` is tqdm, shown only on rank 0. CLIs call `setup_logging()` once:
one stderr handler for our packages (`LEVEL: message`, INFO and up); results a CLI prints for a
person or a script (JSON reports, "wrote FILE") stay on stdout.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from tqdm import tqdm

PACKAGES = ("dat_core", "explain", "train")


def rank() -> int:
    """This process's rank under torchrun (0 outside it)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def is_main_process() -> bool:
    return rank() == 0


class MainProcessOnly(logging.Filter):
    """Passes records on rank 0 only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return is_main_process()


_FILTER = MainProcessOnly()


def get_logger(name: str) -> logging.Logger:
    """`logging.getLogger(name)` with the rank-0 filter attached (once)."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


class _Handler(logging.Handler):
    """Writes to the current sys.stderr through tqdm, so a line never tears a progress bar apart."""

    _dat_handler = True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.levelno != logging.INFO:
                text = f"{record.levelname.lower()}: {text}"
            tqdm.write(text, file=sys.stderr)
        except Exception:  # logging's rule: a failing handler never raises into the caller
            self.handleError(record)


def setup_logging(level: int = logging.INFO) -> None:
    """One stderr handler for our packages' loggers (idempotent; other libraries' loggers untouched).
    The handler carries the rank-0 filter too, so records of loggers made without `get_logger` are
    also shown once. Records still propagate (pytest's caplog, a user's own handlers see them)."""
    for name in PACKAGES:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not any(getattr(h, "_dat_handler", False) for h in logger.handlers):
            handler = _Handler()
            handler.addFilter(_FILTER)
            logger.addHandler(handler)


def progress_bar(iterable: Any = None, *, disable: bool = False, **kwargs: Any) -> tqdm:
    """tqdm on rank 0 only (every rank would otherwise draw its own bar over the others)."""
    return tqdm(iterable, disable=disable or not is_main_process(), **kwargs)
