"""How a training run ends, as exceptions with their process exit codes (one home for both).

`python -m train stage1|stage2` exits with the code of the exception that stopped it; under torchrun
every rank exits with the same code, because the ranks agree on stopping before anyone stops.
"""

from __future__ import annotations


class TrainingError(RuntimeError):
    """Training stopped on an error that is not the config's (exit code 1)."""

    exit_code = 1
    shared = False  # True: every rank raised this same error, and rank 0 reports it for all


class NonFiniteError(TrainingError):
    """A loss, logit or AUC became NaN/inf; nothing of that step was saved (exit code 3)."""

    exit_code = 3


class StorageError(TrainingError):
    """The run directory could not be written: full disk, a file where a folder belongs, ... (exit code 4)."""

    exit_code = 4


class StateError(TrainingError):
    """`--resume` found no usable state.pt: unreadable, not a training state, or not this run's (exit code 5)."""

    exit_code = 5


class Interrupted(SystemExit):
    """SIGTERM/SIGINT: the state was saved at the end of the current step; exit code 128 + signal."""


def interrupt_now(signum: int, frame: object) -> None:
    """A signal handler for work after the last saved state (the final evaluation): stop at once."""
    raise Interrupted(128 + signum)


EXIT_CODES = {
    0: "the run finished (or had already finished: `--resume` of a finished run changes nothing)",
    1: "another training error",
    2: "bad config, option or input data (ConfigError): nothing was trained",
    NonFiniteError.exit_code: "non-finite loss, logit or AUC; the message names the step and the last good state.pt",
    StorageError.exit_code: "the run directory could not be written; the message names the path and the cause",
    StateError.exit_code: "--resume could not use state.pt; the message names the last good alternative",
    "128+N": "stopped by signal N (143 = SIGTERM, 130 = SIGINT) after saving state.pt; continue with --resume",
}
