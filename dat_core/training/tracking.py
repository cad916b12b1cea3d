"""Mirror a run's metrics to one optional experiment tracker (`--track trackio|tensorboard|wandb`).

`metrics.jsonl` and `eval.jsonl` stay the record (resume truncates and continues them); a tracker
gets a copy of each row on rank 0, sent when the state that covers it is saved (every `ckpt_every`
steps): a tracker cannot take back rows, so rows a kill loses from the state (they are logged again
after --resume) must never have reached it. Each backend is a small adapter with the same
three calls (`log`, `close`), its package imported lazily: none of them is a dependency, and a
missing one is a ConfigError naming the package before training starts. A tracker that fails
mid-run is logged once and dropped; training goes on. A `--resume` continues the tracker run its run
began (wandb's run id, trackio's run name: kept in the run folder's tracker_run.json); a new run opens a new one.
"""

from __future__ import annotations

import importlib.util
import json
import secrets
from pathlib import Path
from typing import Any, Callable, Protocol

from ..files import write_text
from ..logs import get_logger
from .config import ConfigError
from .state import PREVIOUS_FILE, STATE_FILE

log = get_logger(__name__)


class Tracker(Protocol):
    def log(self, row: dict[str, Any], step: int) -> None: ...

    def close(self) -> None: ...


def _numbers(row: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric leaves of a metrics row, nested keys joined with '/' (strings, lists, None dropped)."""
    out: dict[str, float] = {}
    for k, v in row.items():
        if isinstance(v, dict):
            out.update(_numbers(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


IDENTITY_FILE = "tracker_run.json"
"""{backend: the tracker's run id or name} of the run in a run folder."""


def _recorded(out: Path, backend: str) -> str | None:
    """The tracker run that the run in `out` mirrors to, when this is a resume of it (a state is there); None for
    a new run, which must never continue another's tracker run, or when none was recorded."""
    if not _resuming(out):
        return None
    try:
        value = json.loads((out / IDENTITY_FILE).read_text(encoding="utf-8")).get(backend)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def _resuming(out: Path) -> bool:
    """Whether a run is in `out` already (this start continues it)."""
    return (out / STATE_FILE).exists() or (out / PREVIOUS_FILE).exists()


def _record(out: Path, backend: str, identity: str) -> None:
    """Keep `identity` for the next --resume of the run in `out`."""
    try:
        table = json.loads((out / IDENTITY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        table = {}
    table = table if isinstance(table, dict) else {}
    write_text(out / IDENTITY_FILE, json.dumps({**table, backend: identity}, indent=2))


class TrackioTracker:
    def __init__(self, out: Path, config: dict[str, Any]):
        import trackio

        self.trackio = trackio
        # trackio knows runs by name: "allow" on a new run joined an old one; a run begun before names were recorded
        # charted under its folder's name
        name = _recorded(out, "trackio") or (out.name if _resuming(out) else None)
        run = trackio.init(project=out.parent.name or "dat", name=name or out.name, config=config,
                           resume="allow" if name else "never")
        _record(out, "trackio", str(getattr(run, "name", None) or name or out.name))

    def log(self, row: dict[str, Any], step: int) -> None:
        self.trackio.log(_numbers(row), step=step)

    def close(self) -> None:
        self.trackio.finish()


class TensorBoardTracker:
    def __init__(self, out: Path, config: dict[str, Any]):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.writer = SummaryWriter(log_dir=str(out / "tensorboard"))

    def log(self, row: dict[str, Any], step: int) -> None:
        for k, v in _numbers(row).items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    def __init__(self, out: Path, config: dict[str, Any]):
        import wandb

        run_id = _recorded(out, "wandb") or secrets.token_hex(8)   # resume="allow" without an id: a new run
        self.run = wandb.init(project=out.parent.name or "dat", name=out.name, id=run_id, dir=str(out),
                              config=config, resume="allow")
        _record(out, "wandb", str(getattr(self.run, "id", None) or run_id))

    def log(self, row: dict[str, Any], step: int) -> None:
        self.run.log(_numbers(row), step=step)

    def close(self) -> None:
        self.run.finish()


# name -> (package that must be importable, adapter)
BACKENDS: dict[str, tuple[str, Callable[[Path, dict[str, Any]], Tracker]]] = {
    "trackio": ("trackio", TrackioTracker),
    "tensorboard": ("tensorboard", TensorBoardTracker),
    "wandb": ("wandb", WandbTracker),
}
TRACKERS = tuple(BACKENDS)


def check_tracker(name: str | None) -> None:
    """ConfigError unless `name` is None or a known tracker whose package is installed (cheap: no import)."""
    if name is None:
        return
    if name not in BACKENDS:
        raise ConfigError(f"--track {name}: unknown tracker; choose one of {', '.join(TRACKERS)}")
    package = BACKENDS[name][0]
    if importlib.util.find_spec(package) is None:
        raise ConfigError(f"--track {name}: the {package} package is not installed (pip install {package}); "
                          "metrics.jsonl is written either way")


class Mirror:
    """Rows written to metrics.jsonl / eval.jsonl, copied to a tracker (eval rows under `val/`)."""

    def __init__(self, tracker: Tracker | None):
        self.tracker = tracker
        self.pending: list[tuple[dict[str, Any], int]] = []  # rows not yet covered by a saved state

    @classmethod
    def open(cls, name: str | None, out: Path, config: dict[str, Any]) -> Mirror:
        if name is None:
            return cls(None)
        check_tracker(name)
        try:
            return cls(BACKENDS[name][1](out, config))
        except Exception as e:  # asked for by name, so a tracker that cannot start stops the run before step 1
            first = str(e).splitlines()[0] if str(e) else ""
            raise ConfigError(f"--track {name}: the tracker did not start ({type(e).__name__}: {first})") from None

    def _call(self, what: str, fn: Callable[[], None]) -> None:
        if self.tracker is None:
            return
        try:
            fn()
        except Exception as e:  # the tracker is a copy: losing it never stops training
            log.warning("tracker %s failed (%s: %s); metrics.jsonl goes on, the tracker stops here", what,
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            self.tracker = None

    def train_row(self, row: dict[str, Any]) -> None:
        if self.tracker is not None:
            self.pending.append(({k: v for k, v in row.items() if k != "step"}, row["step"]))

    def eval_row(self, row: dict[str, Any]) -> None:
        if self.tracker is not None:
            self.pending.append(({"val": {k: v for k, v in row.items() if k != "step"}}, row["step"]))

    def commit(self) -> None:
        """Send the rows logged up to now: a state covering them has just been saved."""
        rows, self.pending = self.pending, []
        for row, step in rows:
            self._call("log", lambda: self.tracker.log(row, step))
            if self.tracker is None:
                return

    def close(self) -> None:
        """Uncommitted rows are dropped: the resumed run logs them again."""
        self.pending = []
        self._call("close", lambda: self.tracker.close())
        self.tracker = None
