"""Files that appear whole or not at all, even with several writers at once, and small JSON files read with a bound.

DDP ranks, two runs sharing a data cache, or two app workers may write the same file at the same moment: each
writes its own private temporary file beside the target and renames it over the target (atomic on one file
system), so no reader sees half a file and no writer removes another's temporary file.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
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


def sync_folder(folder: Path) -> None:
    """fsync a folder, so a rename into it survives a power cut (the file's own fsync does not cover it); nothing
    where the system cannot open a folder for it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sync_tree(path: Path) -> None:
    """fsync every file under `path` (or `path` itself), then each folder: the data is on disk before the rename
    that publishes it (else a power cut could leave a renamed checkpoint of empty files)."""
    if path.is_file():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        return
    for root, _dirs, names in os.walk(path, topdown=False):
        for name in names:
            _sync_tree(Path(root) / name)
        sync_folder(Path(root))


@contextmanager
def replacing(path: Path, durable: bool = False) -> Iterator[Path]:
    """A private temporary path beside `path`: write it inside the block; on success it replaces `path`,
    on any error it is removed and `path` is left as it was. Temporaries a killed process left are removed first.
    `durable`: the data and the rename are fsynced, so the new file survives a power cut whole (checkpoints)."""
    remove_stale(path.parent, f".{path.name}.")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with _writing(tmp):
            yield tmp
            if durable:
                _sync_tree(tmp)
            os.replace(tmp, path)
            if durable:
                sync_folder(path.parent)
    except OSError as e:
        if str(tmp) not in (e.filename, e.filename2):   # not the write itself (e.g. a download feeding it)
            raise
        raise OSError(f"cannot write {path}: {e.strerror or e}") from e   # named as asked, not its twin
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def replacing_dir(path: Path, durable: bool = False) -> Iterator[Path]:
    """A private temporary folder beside the folder `path`: fill it inside the block; on success it takes the place
    of `path` (files of an earlier tree never mix with the new ones), on any error it is removed and `path` is left
    as it was. Temporary folders that a killed process left beside `path` are removed first. `durable`: every file
    and the renames are fsynced (a power cut keeps the old tree or the whole new one)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path.name} is a file, not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, f".{path.name}.")
    tag = f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    tmp, old = path.with_name(tag + ".tmp"), path.with_name(tag + ".old.tmp")
    with _writing(tmp, old):
        try:
            tmp.mkdir()
            yield tmp
            if durable:
                _sync_tree(tmp)
            if path.exists():
                os.replace(path, old)   # two renames: a SIGKILL between them leaves the whole new tree as `tmp`
            os.replace(tmp, path)       # beside `old`, which `remove_stale` puts in place
            if durable:
                sync_folder(path.parent)
        finally:
            if old.is_dir() and not path.exists():   # stopped between the renames here (Ctrl-C, SIGTERM, an error;
                os.replace(tmp if tmp.is_dir() else old, path)   # a signal is raised as a call returns, too)
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)


_TEMPORARY = r"(?P<pid>\d+)\.[0-9a-f]{8}(?P<old>\.old)?\.tmp"
"""What follows `.<target>.` in the name of a temporary of `replacing` or `replacing_dir`."""


def remove_stale(folder: Path, prefix: str | None = None, grace: float = GRACE) -> None:
    """Remove the temporaries that killed writers left in `folder` (a SIGKILL mid-write left one, a full-size
    state.pt copy per kill, that nothing else ever removed): those of `prefix` (`.<target>.` for `replacing` and
    `replacing_dir`, `<target>.` for `atomic_save`), or of every target (None). A temporary is left behind when its
    process is not running here, or has this pid but is not being written by this process, and when it (every file
    in it, with its twin) has sat unchanged for `grace` seconds: 0 where the folder is claimed (no other writer).
    A new tree that `replacing_dir` had not yet renamed into place is put there."""
    folder = Path(folder)
    if prefix is None:
        pattern, found = re.compile(r"\.(?P<target>.+)\." + _TEMPORARY), folder.glob(".*.tmp")
    else:
        rest = _TEMPORARY if prefix.startswith(".") else r"(?P<pid>\d+)\.tmp"
        pattern, found = re.compile(re.escape(prefix) + rest), folder.glob(glob.escape(prefix) + "*.tmp")
    pairs: dict[str, tuple[int, str, list[Path]]] = {}
    for p in found:
        m = pattern.fullmatch(p.name)
        if m:
            target = m.group("target") if prefix is None else prefix[1:-1] if prefix.startswith(".") \
                else prefix[:-1]
            tag = p.name[:-len(".old.tmp")] if m.groupdict().get("old") else p.name[:-len(".tmp")]
            pairs.setdefault(tag, (int(m.group("pid")), target, []))[2].append(p)
    cutoff = time.time() - grace
    for tag, (pid, target, members) in pairs.items():
        if not _left_behind(members, pid, cutoff if grace > 0 else None):
            continue
        new, old = folder / (tag + ".tmp"), folder / (tag + ".old.tmp")
        if new.is_dir() and old.is_dir() and not (folder / target).exists():
            os.replace(new, folder / target)   # killed between replacing_dir's two renames: its new tree was whole
        for p in members:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _left_behind(members: list[Path], pid: int, cutoff: float | None) -> bool:
    if any(str(p) in _WRITING for p in members):   # ours, at work
        return False
    if pid != os.getpid() and _alive(pid):
        return False
    return cutoff is None or all(_newest(p) <= cutoff for p in members)


def _newest(path: Path) -> float:
    """The latest mtime in `path` (a folder's own mtime misses writes into its subfolders); inf while it changes."""
    try:
        newest = path.stat().st_mtime
        for root, dirs, names in os.walk(path):
            for name in dirs + names:
                newest = max(newest, os.stat(os.path.join(root, name), follow_symlinks=False).st_mtime)
        return newest
    except OSError:
        return math.inf


def _alive(pid: int) -> bool:
    """Whether the process `pid` runs here."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):   # another user's process; a number no pid can be: not ours to judge
        pass
    return True


def sweep(folder: Path) -> None:
    """`remove_stale(..., grace=0)` in `folder` and every folder below it (not into the temporaries themselves)."""
    for root, dirs, _ in os.walk(folder):
        remove_stale(Path(root), None, grace=0)
        dirs[:] = [d for d in dirs if not d.endswith(".tmp") and (Path(root) / d).is_dir()]


@contextmanager
def claimed(folder: Path, what: str) -> Iterator[None]:
    """Hold `folder` for one process while the block runs (an advisory lock on folder/.lock, released when the
    block ends or the process dies, even by SIGKILL): two runs writing one folder would interleave their saved
    work. A second claimant is refused at once, with a ValueError naming the folder and what holds it. Once held,
    what killed writers left anywhere in it is removed at once (`sweep`): no other writer can be at work there."""
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
            name = folder.resolve().name or str(folder.resolve())   # `--out .` named no folder: " is in use"
            raise ValueError(f"{name} is in use by another {what} (wait for it to end, or choose another "
                             "folder)") from None
        try:
            sweep(folder)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_text(path: Path, text: str) -> Path:
    """`path.write_text(text)` (UTF-8) that never leaves half a file: a stop or an error mid-write keeps the old
    one (run settings a resume reads, model cards a person wrote)."""
    with replacing(Path(path)) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def read_text_at_most(path: Path, max_bytes: int, label: str, what: str) -> str:
    """The UTF-8 text of `path`, refused when it is larger than `max_bytes` (configs and cards come from users): no
    more than that is read, also from a file that says size 0 (/dev/zero, a FIFO). UnicodeDecodeError for non-text;
    ValueError names it `label`, and `what` it should be."""
    if path.is_dir():
        raise ValueError(f"{label} is a folder, not {what}")
    too_large = ValueError(f"{label} is larger than {max_bytes >> 20} MB: not {what}")
    if path.stat().st_size > max_bytes:
        raise too_large
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise too_large
    return data.decode("utf-8")


def read_json(path: Path, max_bytes: int, label: str, what: str) -> Any:
    """The JSON value in `path`, refused unread when it is larger than `max_bytes` (`read_text_at_most`). ValueError
    names it `label`, and `what` it should be."""
    try:
        return json.loads(read_text_at_most(path, max_bytes, label, what))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{label} is not valid JSON: {e}") from None
    except RecursionError:
        raise ValueError(f"{label} is not valid JSON: nested too deeply") from None


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
