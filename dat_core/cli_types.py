"""argparse types and checks shared by the `explain` and `train` command lines (and app.py): an out-of-range number
is a usage error (exit 2, one line) before anything loads, never a traceback later or a silently different run, and
an option given for a part of the run that does not happen is refused rather than silently ignored."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any, Callable


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


def refuse_unused(args: argparse.Namespace, options: Iterable[str], used: bool, needs: str) -> None:
    """Options that shape a part of a run that does not happen (`used` False) would be silently ignored: a
    ValueError names those given (not None or False) and what they need, e.g. "--split goes with --data"."""
    given = [f"--{o.replace('_', '-')}" for o in options if _given(getattr(args, o))]
    if given and not used:
        raise ValueError(f"{', '.join(given)} {'goes' if len(given) == 1 else 'go'} with {needs}")


def _given(value: object) -> bool:
    """Set on the command line: not the None default or an unset flag (an explicit 0 is given)."""
    return value is not None and value is not False


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


def comma_list(text: str, option: str, parse: Callable[[str], Any] = str) -> list[Any]:
    """The items of a comma-separated option value ("1,2,3"), each stripped and parsed, each kept once in the
    order first named. An empty item ("1,,2", "1,", ",") or an empty value is a ValueError naming `option`:
    dropping it would run another list than the one typed, and a repeated item would run the same work twice."""
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise ValueError(f"{option} takes a comma-separated list without empty items; got {text!r}")
    try:
        return list(dict.fromkeys(parse(t) for t in items))
    except ValueError as e:
        raise ValueError(f"{option}: {e}") from None
