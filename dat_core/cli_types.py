"""argparse types shared by the `explain` and `train` command lines: an out-of-range number is a usage error
(exit 2, one line) before anything loads, never a traceback later or a silently different run."""

from __future__ import annotations

import argparse
from typing import Callable


def int_in(lo: int, hi: int = 10**9) -> Callable[[str], int]:
    """An integer in lo..hi."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer in {lo}..{hi}, got {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer in {lo}..{hi}, got {v}")
        return v
    return parse


def float_in(lo: float, hi: float) -> Callable[[str], float]:
    """A finite number in lo..hi."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in {lo:g}..{hi:g}, got {text!r}") from None
        if not lo <= v <= hi:  # NaN fails this too
            raise argparse.ArgumentTypeError(f"expected a number in {lo:g}..{hi:g}, got {text}")
        return v
    return parse
