"""argparse types and checks shared by the `explain` and `train` command lines (and app.py): an out-of-range number
is a usage error (exit 2, one line) before anything loads, never a traceback later or a silently different run; an
option given for a part of the run that does not happen is refused rather than silently ignored; so are a blank value
and an empty item of a comma-separated list. `--help` names real defaults only."""

from __future__ import annotations

import argparse
import errno
import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable, NoReturn

import numpy as np

MAX_SEED = 2**63 - 1
"""Seeds are 0..2**63-1: what torch's and numpy's generators both take (`dat_core.runtime.check_seed`)."""


def int_in(lo: int, hi: int = 10**9, odd: bool = False) -> Callable[[str], int]:
    """An integer in lo..hi (and odd, with `odd`)."""
    what = f"an {'odd ' if odd else ''}integer in {lo}..{hi}"

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not lo <= v <= hi or (odd and v % 2 == 0):
            raise argparse.ArgumentTypeError(f"expected {what}, got {v}")
        return v
    return parse


def refuse_unused(args: argparse.Namespace, options: Iterable[str], used: bool, needs: str) -> None:
    """Options that shape a part of a run that does not happen (`used` False) would be silently ignored: a
    ValueError names those given (not None or False) and what they need, e.g. "--split goes with --data"."""
    given = [f"--{o.replace('_', '-')}" for o in options if _given(getattr(args, o))]
    if given and not used:
        raise ValueError(f"{', '.join(given)} {'goes' if len(given) == 1 else 'go'} with {needs}")


def refuse_writing_inputs(outputs: Iterable[tuple[str, Any]], inputs: Iterable[tuple[str, Any]]) -> None:
    """An output that resolves (symlinks followed) to an input or into an input folder would replace it (a report
    over a checkpoint's weights) or join it (a file in a folder of images the next run reads): a ValueError naming
    the output and the innermost such input, before any work. Outputs are (option, path) pairs, inputs (what names
    it, e.g. "--model m1", path); a None or "" path is skipped (no such output, or an input that is no path)."""
    held = sorted(((name, Path(path).resolve()) for name, path in inputs if path),
                  key=lambda item: -len(item[1].parts))   # the innermost first: ood/ inside the data folder
    for option, path in outputs:
        if not path:
            continue
        target = Path(path).resolve()
        for name, where in held:
            if target.is_relative_to(where):
                raise ValueError(f"{option} {path} {'is' if target == where else 'is inside'} {name}, an input: an "
                                 "output never replaces or joins an input; write it elsewhere")


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
    except (ValueError, argparse.ArgumentTypeError) as e:   # a parse of its own, or one of these types
        raise ValueError(f"{option}: {e}") from None


def probability(text: str) -> float:
    """A probability strictly between 0 and 1 (a confidence to reach or to stop at)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability in (0, 1), got {text!r}") from None
    if not 0 < v < 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a probability in (0, 1), got {text}")
    return v


def refuse_blank_values(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Every text option and single positional of `parser` and its subcommands refuses a blank value: `--out ''` or
    `--images "$DIR"` with DIR unset would otherwise mean the current folder, and `--cache-dir ''` the default,
    silently. Options with a type of their own keep it; those whose default is blank text keep their default
    (argparse passes string defaults through the type)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                refuse_blank_values(sub)
        elif (action.type is None and action.nargs in (None, "?")
              and not action.choices and not (isinstance(action.default, str) and not action.default.strip())):
            action.type = _nonblank
    return parser


def _nonblank(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a value, got a blank one (an unset shell variable?)")
    return text


class _StdoutWithoutReader:
    """sys.stdout, whose reader may go away (`python -m explain ... | head -1`): from then on what is printed goes
    to /dev/null and the work goes on; its files are the result. It stopped at the next line with "Broken pipe"."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def _guarded(self, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return call(*args)
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())   # also for the interpreter's last flush of the buffer
            os.close(devnull)
            return call(*args)

    def write(self, text: str) -> int:
        return self._guarded(self._stream.write, text)

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def outlive_the_reader() -> None:
    """A CLI's output may lose its reader without the CLI losing its work (`_StdoutWithoutReader`), and may be
    unable to encode a character ("Fréchet", "∞" on an ASCII redirect): escaped, as stderr does, not an error."""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    if not isinstance(sys.stdout, _StdoutWithoutReader) and hasattr(sys.stdout, "fileno"):
        try:
            sys.stdout.fileno()
        except (OSError, ValueError):   # not a real stream (a test's capture): nothing to guard
            return
        sys.stdout = _StdoutWithoutReader(sys.stdout)


class OneLineParser(argparse.ArgumentParser):
    """A usage error as the one `error:` line every other refusal is, with where to read more; argparse printed
    the whole usage (a screenful for the bigger commands) above it. Subcommands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` names each option's default, unless its help already does or there is none to name: an option whose
    None means "not given" (so that it can be refused when it would be ignored) would read "(default: None)"
    beside the real default its help states."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        nothing = action.default is None or action.default is False or action.default in ([], "", argparse.SUPPRESS)
        if "default" in text or nothing:   # (`is`: a default of 0 is named, though 0 == False)
            return text
        return super()._get_help_string(action)


_OS_ERRORS = {errno.ENOENT: "does not exist", errno.EISDIR: "is a folder, not a file",
              errno.ENOTDIR: "is not a folder (or a part of its path is a file)", errno.EACCES: "cannot be read: "
              "permission denied", errno.ENOSPC: "cannot be written: the disk is full"}


GOT_LIMIT = 80
"""The most characters of a value an error message quotes (a 5000-character box is not repeated back whole)."""


def _got(value: Any) -> str:
    """What a message says it got: an empty box (None, blank text) is "nothing", not "None" or "''"."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return "nothing"
    if isinstance(value, int) and abs(value) >= 10 ** 30:   # repr of 4300+ digits raises; none is worth quoting
        return "a number of 30 digits or more"
    try:
        text = repr(value)
    except ValueError:   # a container holding an int of 4300+ digits
        return f"a {type(value).__name__} holding a number too long to quote"
    return text if len(text) <= GOT_LIMIT else f"{text[:GOT_LIMIT - 1]}… ({len(text)} characters)"


def parse_eps(value: Any, name: str = "ε") -> float:
    """A radius >= 0: a number, a fraction like "8/255", or inf / ∞ / "infinity" for no limit."""
    hint = f"{name} must be >= 0: a number, a fraction like 8/255, or inf (∞) for no limit"
    if isinstance(value, bool):
        raise ValueError(f"{hint}; got {_got(value)}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        try:
            eps = float(value)
        except OverflowError:   # an int beyond any float (10**400): no radius anyone means
            raise ValueError(f"{hint}; got a number beyond any float") from None
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if text in ("∞", "inf", "+inf", "infinity", "none", "unbounded"):
            return math.inf
        try:
            if text.count("/") == 1:
                a, b = (float(s) for s in text.split("/"))
                eps = a / b if b != 0 else math.nan
            else:
                eps = float(text)
        except ValueError:
            raise ValueError(f"{hint}; got {_got(value)}") from None
        if eps == math.inf:   # "1e999", 400 nines: a slip, not the words that ask for no limit
            raise ValueError(f"{hint}; got a number beyond any float") from None
    else:
        raise ValueError(f"{hint}; got {_got(value)}")
    if math.isnan(eps) or eps < 0:
        raise ValueError(f"{hint}; got {_got(value)}")
    return eps


def eps_text(eps: float, norm: str) -> str:
    """A radius or step length as people write it: ∞, k/255 for Linf budgets, else a short number (the app's
    boxes, summaries and charts and the CLI's help say it the same way, so "16/255" typed does not come back
    as 0.0627)."""
    if math.isinf(eps):
        return "∞"
    if norm == "Linf" and abs(eps * 255 - round(eps * 255)) < 1e-6:
        return f"{round(eps * 255)}/255"
    return f"{eps:g}"


MAX_STEP_SIZE = 1e6
"""The longest PGD step any entry point takes (the API, the CLIs, the app): past it a number is a typo."""


def parse_step(value: Any, name: str = "step size", hi: float = MAX_STEP_SIZE) -> float:
    """A step length, finite and > 0, written as `parse_eps` reads a radius: an Linf step is 1/255 as its
    radius is 16/255 (a box or flag taking only decimals showed and took 0.00392156862745098)."""
    hint = f"{name} must be a finite number > 0 (a fraction like 1/255 is fine)"
    try:
        step = parse_eps(value, name)
    except ValueError:
        step = math.nan
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"{hint}; got {_got(value)}")
    if step > hi:
        raise ValueError(f"{name} must be at most {hi:g}; got {_got(value)}")
    return step


def step_size(text: str) -> float:
    """argparse type of --step-size (`parse_step`)."""
    try:
        return parse_step(text, "a step")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).replace("a step must be", "expected")) from None


def norm_name(text: str) -> str:
    """A threat model as typed in any case ("linf" -> "Linf"); argparse's `choices=` then checks it."""
    from .pgd import NORMS

    return {n.lower(): n for n in NORMS}.get(text.lower(), text)


def error_line(error: BaseException) -> str:
    """The one line a CLI prints for a refused input: an OSError names its file and says what is wrong in words
    (not "[Errno 21] Is a directory: 'x'")."""
    if isinstance(error, OSError) and error.filename is not None and error.errno in _OS_ERRORS:
        return f"error: {error.filename} {_OS_ERRORS[error.errno]}"
    return f"error: {error}"
