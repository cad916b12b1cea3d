"""The Hub download cache of checkpoints: one folder per repo whatever the case it is typed in, and a bounded total.

The Hub looks repo ids up whatever their case, but huggingface_hub's cache names a repo's folder as it was typed
(`cached_spelling` finds the one already there). A public app downloads any repo a visitor names, so the checkpoint
repos cached are bounded in all (`cache_cap`, $DAT_HUB_CACHE_GB): the least recently used make room (`reserve`).
"""

from __future__ import annotations

import math
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from huggingface_hub import errors as hf_errors
from huggingface_hub import scan_cache_dir
from huggingface_hub.file_download import repo_folder_name

from .checkpoint import CARD_NAME, CHECKPOINT_FILES, CONFIG_NAME, read_config

HUB_FILES = [*CHECKPOINT_FILES, CARD_NAME]
"""What is downloaded and pushed: nothing else in a repo is ever fetched."""

HUB_CACHE_ENV = "DAT_HUB_CACHE_GB"
DEFAULT_HUB_CACHE_GB = 20.0
"""The checkpoint repos of a Hub cache hold at most this many GiB in all by default: six of the largest checkpoint
we load (3 GB each), hundreds of CIFAR ones."""


def cache_cap() -> int | None:
    """The most bytes the checkpoint repos of a Hub cache may hold together: $DAT_HUB_CACHE_GB GiB (default 20), or
    None for no bound when it says `off`. A repo counts when it holds only the files we fetch (`HUB_FILES`): other
    libraries' repos in a shared cache are neither counted nor ever deleted."""
    text = os.environ.get(HUB_CACHE_ENV, "").strip()
    if text.lower() == "off":
        return None
    try:
        gib = float(text) if text else DEFAULT_HUB_CACHE_GB
    except ValueError:
        gib = math.nan
    if not 0 < gib < math.inf:
        raise ValueError(f"{HUB_CACHE_ENV}={text[:20]!r} is not a positive number of GiB (or 'off' for no bound "
                         "on the Hub checkpoints cached)")
    return int(gib * 2**30)


def cached_spelling(root: Path, repo_id: str) -> str | None:
    """The spelling under which the cache at `root` holds `repo_id` already (its folder keeps the case it was first
    fetched in), the typed one first; None when it holds none."""
    typed = repo_folder_name(repo_id=repo_id, repo_type="model")
    if (root / typed).is_dir():
        return repo_id
    try:
        found = sorted(p.name for p in root.iterdir() if p.name.lower() == typed.lower() and p.is_dir())
    except OSError:   # no cache yet
        return None
    return "/".join(found[0].split("--")[1:]) if found else None


def missing_bytes(snapshot: Path, sizes: dict[str, int], force_download: bool) -> int:
    """What fetching the files listed with `sizes` into `snapshot` adds to the cache."""
    return sum(size for name, size in sizes.items() if force_download or not (snapshot / name).is_file())


_CACHE_LOCK = threading.Lock()
_RESERVED: dict[str, int] = {}
"""Bytes the downloads in flight in this process may still add, by repo folder (lower case)."""
_HELD: dict[str, int] = {}
"""Repo folders (resolved paths) of the models this process has loaded (`hold`), by how many hold each: never
evicted."""


def hold(snapshot: Path) -> Callable[[], None]:
    """Keep the cached repo of `snapshot` (a loaded model's folder: its card and weights are read again, for the
    Model tab and card exports) from eviction until the returned function is called."""
    folder = str(snapshot.parent.parent.resolve())
    with _CACHE_LOCK:
        _HELD[folder] = _HELD.get(folder, 0) + 1

    def release() -> None:
        with _CACHE_LOCK:
            _HELD[folder] -= 1
            if not _HELD[folder]:
                del _HELD[folder]
    return release


def reserve(root: Path, repo_id: str, needed: int, cap: int | None) -> Callable[[], None]:
    """Make room for `needed` more bytes of `repo_id` in the cache at `root` and hold it while it downloads (call the
    returned function when done): the least recently used checkpoint repos, neither this one nor one downloading,
    are deleted until the cached checkpoints and the downloads in flight fit `cap`; a ValueError when they cannot.
    Never deleted: a repo downloading or held by a loaded model (`hold`), or one whose folder is a link."""
    folder = repo_folder_name(repo_id=repo_id, repo_type="model").lower()
    if cap is None or needed <= 0:
        return lambda: None
    with _CACHE_LOCK:
        repos = _checkpoint_repos(root)
        total = sum(size for _, size, _ in repos) + sum(_RESERVED.values())
        idle = sorted(r for r in repos if r[2].name.lower() not in (folder, *_RESERVED)
                      and str(r[2].resolve()) not in _HELD and not r[2].is_symlink())
        if total - sum(size for _, size, _ in idle) + needed <= cap:   # else nothing is deleted in vain
            for _, size, path in idle:   # least recently used first
                if total + needed <= cap:
                    break
                shutil.rmtree(path, ignore_errors=True)
                total -= size
        if total + needed > cap:
            raise ValueError(f"the Hub download cache of this server is full: {repo_id} needs {needed / 2**20:.1f} MB "
                             f"more, and the checkpoints loaded or downloading now take {total / 2**20:.1f} MB of the "
                             f"{cap / 2**20:.0f} MB allowed ({HUB_CACHE_ENV}); try again later")
        _RESERVED[folder] = _RESERVED.get(folder, 0) + needed

    def release() -> None:
        with _CACHE_LOCK:
            _RESERVED[folder] -= needed
            if not _RESERVED[folder]:
                del _RESERVED[folder]
    return release


def _checkpoint_repos(root: Path) -> list[tuple[float, int, Path]]:
    """(last use, bytes, folder) of each model repo in the cache at `root` that holds only files we fetch, each
    snapshot with a config.json of ours (`read_config`): a timm model fetches config.json and model.safetensors
    too, and another library's repo is neither counted nor deleted."""
    try:
        repos = scan_cache_dir(root).repos
    except (hf_errors.CacheNotFound, OSError):
        return []
    ours = [r for r in repos if r.repo_type == "model" and all(
        f.file_path.relative_to(rev.snapshot_path).as_posix() in HUB_FILES for rev in r.revisions for f in rev.files)
        and all(_our_config(rev.snapshot_path / CONFIG_NAME) for rev in r.revisions)]
    out = []
    for repo in ours:
        try:
            out.append((repo.repo_path.stat().st_mtime, repo.size_on_disk, repo.repo_path))
        except OSError:   # deleted meanwhile
            pass
    return out


def _our_config(path: Path) -> bool:
    try:
        read_config(path)
    except (OSError, ValueError):
        return False
    return True


def touch(repo_folder: Path) -> None:
    """Mark a cached repo as just used (the cache's eviction order); nothing where the cache is read-only."""
    try:
        os.utime(repo_folder)
    except OSError:
        pass
