"""`python -m train.launch`: torchrun with the same options, minus its failure noise.

    python -m train.launch --standalone --nproc_per_node=8 -m train stage2 --config CFG.toml

torchrun reports any worker exiting non-zero (including a clean stop on SIGTERM, exit 143) with a
Python traceback of its own and exits 1. This runs the same launcher (`torch.distributed.run`), prints
one line with every rank's exit code instead, and exits with the workers' code (143 after SIGTERM,
3 after a non-finite loss, ...), so a job scheduler sees why the job ended.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys


def exit_code(code: int) -> int:
    """A worker's exit code as a shell reports it (killed by signal N: -N -> 128 + N)."""
    return code if code >= 0 else 128 - code


def process_count_problem(value: str) -> str | None:
    """Why `--nproc_per_node` cannot be taken, or None: a positive count or one of torchrun's words (gpu and xpu
    only where there is one: torchrun otherwise failed with a ValueError traceback)."""
    import torch

    if value in ("auto", "cpu"):
        return None
    if value in ("gpu", "xpu"):
        backend = torch.cuda if value == "gpu" else getattr(torch, "xpu", None)
        here = backend is not None and backend.is_available()
        return None if here else f"--nproc_per_node={value} asks for one process per {value.upper()}, and this " \
                                 f"machine has none (give a number of processes, or cpu)"
    try:
        ok = int(value) >= 1
    except ValueError:
        ok = False
    return None if ok else f"--nproc_per_node must be a number of processes >= 1 or auto|cpu|gpu|xpu, got {value!r}"


def torchrun_parser() -> argparse.ArgumentParser:
    """torchrun's own parser under this command's name, whose usage errors are one line like every other command's
    (it printed its whole usage, about 20 lines, as `launch.py`)."""
    from torch.distributed.run import get_args_parser

    from dat_core.cli_types import OneLineParser

    parser = get_args_parser()
    parser.prog = "python -m train.launch"
    parser.error = lambda message: OneLineParser.error(parser, message)
    return parser


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import run

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):   # what this adds to torchrun, then torchrun's own page
        print(__doc__.strip() + "\n\ntorchrun's options (all taken as they are):\n")
    parser = torchrun_parser()
    args = parser.parse_args(argv)
    problem = process_count_problem(str(args.nproc_per_node))
    if problem:   # torchrun took it and failed later with a traceback (an AssertionError for 0)
        parser.error(problem)   # exit 2
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # the line below says it
    try:
        run(args)
    except ChildFailedError as e:
        codes = {rank: exit_code(failure.exitcode) for rank, failure in sorted(e.failures.items())}
        code = exit_code(e.get_first_failure()[1].exitcode)  # the root cause; torchrun then stops the others
        print(f"train.launch: the workers stopped (exit code by rank: {codes}); exiting {code}", file=sys.stderr)
        return code
    except SignalException as e:
        print(f"train.launch: received {signal.Signals(e.sigval).name}; the workers were stopped", file=sys.stderr)
        return 128 + int(e.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
