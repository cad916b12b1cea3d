"""Files that appear whole or not at all, even with several writers at once, and small JSON files read with a bound.

DDP ranks, two runs sharing a data cache, or two app workers may write the same file at the same moment: each
writes its own private temporary file beside the target and renames it over the target (atomic on one file
system), so no reader sees half a file and no writer removes another's temporary file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

GRACE = 600.0
"""Seconds a temporary must sit unchanged before `remove_stale` takes it for one a killed writer left: a writer
in another container (another PID namespace) on a shared folder has a pid that is not running here."""

_WRITING: set[str] = set()
"""The temporaries this process is writing now (its threads share its pid)."""


@contextmanager
def _writing(*paths: Path) -> Iterator[None]:
    _WRITING.update(map(str, paths))
    try:
        yield
    finally:
        _WRITING.difference_update(map(str, paths))


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A private temporary path beside `path`: write it inside the block; on success it replaces `path`,
    on any error it is removed and `path` is left as it was. Temporaries a killed process left are removed first."""
    remove_stale(path.parent, f".{path.name}.")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with _writing(tmp):
            yield tmp
        os.replace(tmp, path)
    except OSError as e:
        if str(tmp) not in (e.filename, e.filename2):   # not the write itself (e.g. a download feeding it)
            raise
        raise OSError(f"cannot write {path}: {e.strerror or e}") from e   # named as asked, not its twin
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def replacing_dir(path: Path) -> Iterator[Path]:
    """A private temporary folder beside the folder `path`: fill it inside the block; on success it takes the place
    of `path` (files of an earlier tree never mix with the new ones), on any error it is removed and `path` is left
    as it was. Temporary folders that a killed process left beside `path` are removed first."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path.name} is a file, not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, f".{path.name}.")
    tag = f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    tmp, old = path.with_name(tag + ".tmp"), path.with_name(tag + ".old.tmp")
    tmp.mkdir()
    try:
        with _writing(tmp, old):
            yield tmp
            if path.exists():
                os.replace(path, old)   # two renames: a stop between them leaves the whole new tree as `tmp`
            os.replace(tmp, path)       # beside `old`, which `remove_stale` puts in place
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def remove_stale(folder: Path, prefix: str, grace: float = GRACE) -> None:
    """Remove the temporaries `<prefix><pid>...tmp` in `folder` that a killed writer left (a SIGKILL mid-write left
    one, a full-size state.pt copy per kill, that nothing else ever removed): of a process not running here, or of
    this pid but not being written by this process, and unchanged for `grace` seconds (0 where the folder is
    claimed: no other writer). A new tree that `replacing_dir` had not yet renamed into place is put there."""
    folder, cutoff = Path(folder), time.time() - grace
    left = [p for p in folder.glob(f"{prefix}*.tmp") if _left_behind(p, prefix, cutoff)]
    target = folder / (prefix[1:-1] if prefix.startswith(".") else prefix[:-1])
    for old in left:
        new = old.with_name(old.name[:-len("old.tmp")] + "tmp")
        if old.name.endswith(".old.tmp") and new in left and new.is_dir() and not target.exists():
            os.replace(new, target)   # killed between replacing_dir's two renames: its new tree was whole
    for p in left:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _left_behind(p: Path, prefix: str, cutoff: float) -> bool:
    pid = p.name[len(prefix):].split(".")[0]
    if str(p) in _WRITING or not pid.isdigit():   # ours at work, or not one of ours at all
        return False
    if int(pid) != os.getpid() and _alive(pid):
        return False
    try:
        return p.stat().st_mtime <= cutoff
    except OSError:   # gone meanwhile
        return False


def _alive(pid: str) -> bool:
    """Whether the process `pid` (a decimal string from a temporary name) runs here."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's process: alive
        pass
    return True


@contextmanager
def claimed(folder: Path, what: str) -> Iterator[None]:
    """Hold `folder` for one process while the block runs (an advisory lock on folder/.lock, released when the
    block ends or the process dies, even by SIGKILL): two runs writing one folder would interleave their saved
    work. A second claimant is refused at once, with a ValueError naming the folder and what holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no advisory locks (Windows): the folder is not guarded
        yield
        return
    with open(folder / ".lock", "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{folder.name} is in use by another {what} (wait for it to end, or choose another "
                             "folder)") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_text(path: Path, text: str) -> Path:
    """`path.write_text(text)` (UTF-8) that never leaves half a file: a stop or an error mid-write keeps the old
    one (run settings a resume reads, model cards a person wrote)."""
    with replacing(Path(path)) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def read_json(path: Path, max_bytes: int, label: str, what: str) -> Any:
    """The JSON value in `path`, refused unread when it is larger than `max_bytes` (configs and cards come from
    users: no file is read whole before its size is known). ValueError names it `label`, and `what` it should be."""
    if path.is_dir():
        raise ValueError(f"{label} is a folder, not {what}")
    if path.stat().st_size > max_bytes:
        raise ValueError(f"{label} is larger than {max_bytes >> 20} MB: not {what}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{label} is not valid JSON: {e}") from None


def check_writable(path: str | Path | None, option: str, folder: bool = False) -> None:
    """An output written at the end of long work (a report, a folder of figures) fails before the work when it
    cannot be written: a file path that is a folder, a folder path that is a file, or no writable folder to make
    it in. Nothing is created (a run that fails later leaves nothing behind)."""
    if path is None:
        return
    target = Path(path)
    if target.exists() and target.is_dir() != folder:
        raise ValueError(f"{option} {path} is {'a file: give a folder' if folder else 'a folder: give a file name'}")
    where = (target if folder else target.parent).absolute()
    existing = next(p for p in (where, *where.parents) if p.exists())   # the folder, or what will hold it
    try:   # a file tried, not os.access: that says yes to root everywhere, /proc included
        tempfile.TemporaryFile(dir=existing).close()
    except OSError:   # a file where the folder should be is NotADirectoryError
        raise ValueError(f"{option}: cannot write {path} ({existing} is not a writable folder)") from None
