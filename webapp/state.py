"""Per-session state for the app, without gradio: results computed once, kept, and found again.

- `TrajectoryCache`: a process-wide, thread-safe LRU cache bounded by bytes. Results are stored
  under keys that start with an unguessable per-session id (uuid4), so one session cannot reach
  another's results, and the total memory stays bounded however many sessions come and go.
- `ModelRegistry`: loaded models by source (bundled default, checkpoint dir, Hub repo id + revision).
- `request_hash` (memo keys for results computed by content) and `TempFiles` (the downloads).
The scrub views are in `views.py`, model descriptions in words in `describe.py`.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from dat_core import hub_cache
from dat_core.hub import current_commit
from dat_core.loading import ModelSource, resolve_source
from dat_core.models import class_names_of
from dat_core.models.config import model_cost
from dat_core.runtime import FastPath, channels_last, model_device

from . import sources

DEFAULT_CACHE_BYTES = 512 * 2**20

REQUEST_ACTIVATION_BYTES = 2 * 2**30
"""The fp32 activations (as `model_cost` counts them for one forward) a request's batch of paths may need at once:
100 paths of the bundled WRN-16-2 need 0.2 GiB, of a WRN-34-10 2.3 GiB, of an ImageNet ConvNeXt-L 43 GiB (one path
of any model we load fits: its config is refused past 2 GiB an image)."""


@functools.lru_cache(maxsize=64)
def _activation_bytes(arch: str, num_classes: int, image_size: int | None) -> int:
    return model_cost({"arch": arch, "num_classes": num_classes, "image_size": image_size})[1]


def paths_at_once(config: dict[str, Any]) -> int:
    """The most paths of the model `config` describes one request may run in one batch (at least one)."""
    return max(1, REQUEST_ACTIVATION_BYTES // activation_bytes(config))


ATTRIBUTION_BATCH = 32
"""Images `explain.attribution` runs at once by default (integrated gradients' steps, occlusion's windows)."""


def attribution_batch(config: dict[str, Any]) -> int:
    """Images one attribution batch may hold on the model `config` describes, each with its activations kept for the
    backward: at most the paths one request may run at once (4 of an ImageNet ConvNeXt-L, where 32 needed 13 GiB)."""
    return min(ATTRIBUTION_BATCH, paths_at_once(config))


def activation_bytes(config: dict[str, Any]) -> int:
    """One image's forward activations in bytes for the model `config` describes (measured on the meta device once
    per architecture, class count and size)."""
    return _activation_bytes(config["arch"], config["num_classes"], config.get("image_size"))


def new_key() -> str:
    """An unguessable id (uuid4, 122 random bits)."""
    return uuid.uuid4().hex


def nbytes_of(obj: Any, _seen: set[int] | None = None) -> int:
    """Approximate memory held by `obj`: numpy arrays, tensors, strings and bytes, found recursively
    through dicts, sequences and object attributes (each object counted once)."""
    seen = set() if _seen is None else _seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, torch.Tensor):
        return obj.element_size() * obj.nelement()
    if isinstance(obj, (str, bytes, bytearray)):
        return len(obj)
    if isinstance(obj, dict):
        return 64 + sum(nbytes_of(k, seen) + nbytes_of(v, seen) for k, v in obj.items())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return 64 + sum(nbytes_of(v, seen) for v in obj)
    if hasattr(obj, "__dict__") and not callable(obj):
        return 64 + sum(nbytes_of(v, seen) for v in vars(obj).values())
    return 16


class TrajectoryCache:
    """Thread-safe LRU cache bounded by the total (approximate) bytes of its values.

    `put` evicts the least recently used entries until the total fits; `get` returns None for a
    key that was never stored or has been evicted. A value larger than the whole budget is refused.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()

    def put(self, key: str, value: Any, nbytes: int | None = None) -> str:
        """Store (or replace) `value` under `key`, re-measuring its size; returns the key."""
        size = nbytes_of(value) if nbytes is None else int(nbytes)
        if size > self.max_bytes:
            raise ValueError(f"this result needs about {size / 2**20:.0f} MB, more than the "
                             f"{self.max_bytes / 2**20:.0f} MB kept per server; ask for fewer steps or targets")
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._total -= old[1]
            self._items[key] = (value, size)
            self._total += size
            while self._total > self.max_bytes and len(self._items) > 1:
                _, (_, evicted) = self._items.popitem(last=False)
                self._total -= evicted
        return key

    def get(self, key: str) -> Any:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def discard(self, key: str) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._total -= old[1]

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return self._total


# ---------------------------------------------------------------- models

@dataclass
class LoadedModel:
    key: str
    fast: FastPath               # the model, compiled in the background where the app compiles (webapp/fastpath.py)
    source: str                  # "default", a resolved local dir, or a Hub repo id
    revision: str | None
    directory: Path              # where config.json / model.safetensors / README.md live
    label: str = ""              # how visitors read its name (sources.label: never a server path)
    checked: float = field(default_factory=time.monotonic)   # when its Hub branch was last looked up

    @property
    def model(self) -> nn.Module:
        """What requests run: the eager model, then (once warm-ups compiled) the compiled one for the warmed
        shapes. Read it per request, not once: it changes when compiling finishes."""
        return self.fast.model

    @model.setter
    def model(self, model: nn.Module) -> None:
        """Serve `model` from now on, eager (tests swap in stand-ins)."""
        self.fast = FastPath(model, enabled=False, name=self.label)

    @property
    def version(self) -> str:
        """Which weights: the folder read (a Hub snapshot is named by its commit). A moved branch loads a new
        version under the same key, so what was made with a model records both."""
        return self.directory.name

    @property
    def config(self) -> dict[str, Any]:
        return self.fast.eager.config

    @property
    def class_names(self) -> list[str]:
        cfg = self.config
        return class_names_of(cfg)

    @property
    def image_size(self) -> int:
        return int(self.config.get("image_size", 32))

    @property
    def device(self) -> torch.device:
        return model_device(self.model)


@dataclass
class _Loading:
    """The lock of one source's load and how many requests hold or wait on it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0
    error: Exception | None = None   # why the load failed, for the requests that waited on it


def _nothing() -> None:
    """No cache hold to release (a bundled or local model)."""


class ModelRegistry:
    """Loaded models by (source, revision); at most `max_models` unpinned ones stay loaded (LRU). A Hub branch and
    the commit sha it names share one model.

    Loading a Hub branch or tag that is loaded already asks the Hub which commit it names now (at most once per
    `recheck_s` seconds): when it moved, the new commit is loaded in its place, so a visitor who pushed new weights
    and presses Load model again gets them. A commit sha, a folder, or a Hub that does not answer keeps the model.

    `fast_path(model, name)` puts each newly loaded model behind a FastPath (webapp.fastpath.fast_path: compiled
    in the background); by default a model stays eager.
    """

    def __init__(self, max_models: int = 4, device: str | torch.device | None = None,
                 hub_options: dict[str, Any] | None = None,
                 fast_path: Callable[[nn.Module, str], FastPath] | None = None, recheck_s: float = 60.0):
        self.max_models = max_models
        self.recheck_s = recheck_s
        self.device = device
        self.fast_path = fast_path or (lambda model, name: FastPath(model, enabled=False, name=name))
        self.hub_options = dict(hub_options or {})  # dat_core.hub.download's endpoint=, cache_dir=, token=
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._sources: dict[str, ModelSource] = {}  # every source loaded once, by key (to reload a dropped one)
        self._pinned: set[str] = set()
        self._lock = threading.RLock()          # held only to look up and update the dicts, never while loading
        self._loading: dict[str, _Loading] = {}   # a lock per source being loaded
        self._held: dict[str, Callable[[], None]] = {}   # releases a loaded Hub model's cache hold (hub_cache.hold)

    def load(self, source: str | ModelSource, revision: str | None = None, *, pin: bool = False) -> LoadedModel:
        """The model for (source, revision), loading (and downloading) it on first use.

        A `ModelSource` is what a visitor chose (webapp.sources: messages never show a server path); a string
        is the operator's `--model`, resolved by `dat_core.loading.resolve_source`.
        """
        visitor = isinstance(source, ModelSource)
        src = source if visitor else resolve_source(source, revision)
        with self._lock:
            hit = self._hit(src.key, pin)
        if hit is not None and not self._moved(src, hit):
            return hit
        with self._lock:   # none, or its branch moved on: load (the new commit); `hit` serves until that succeeds
            loading = self._loading.setdefault(src.key, _Loading())
            loading.users += 1
        try:
            return self._load(src, visitor, pin, loading, stale=hit)
        finally:
            with self._lock:   # kept while anyone waits on it (they share its result or error); then a fresh try
                loading.users -= 1
                if not loading.users and self._loading.get(src.key) is loading:
                    del self._loading[src.key]

    def _load(self, src: ModelSource, visitor: bool, pin: bool, loading: _Loading,
              stale: LoadedModel | None = None) -> LoadedModel:
        """Under the source's own lock: one load per source; other sources' visitors never wait for it."""
        with loading.lock:
            with self._lock:
                if (hit := self._hit(src.key, pin)) is not None and hit is not stale:
                    return hit
            if loading.error is not None:   # the load they waited on failed: each is told so, none retries it
                raise loading.error
            try:
                model, directory = sources.load(src, visitor=visitor, **self.hub_options)
            except Exception as e:
                loading.error = e
                raise
            label = sources.label(src, directory)
            with self._lock:   # a Hub snapshot is one commit's weights: a branch and its sha share one model
                twin = next((m for k, m in self._models.items() if src.kind == "hub" and m.directory == directory
                             and self._sources[k].kind == "hub"), None)
            fast = twin.fast if twin is not None else self.fast_path(
                channels_last(model if self.device is None else model.to(self.device)), label)
            loaded = LoadedModel(key=src.key, fast=fast, source=src.name, revision=src.revision,
                                 directory=directory, label=label)
            held = (hub_cache.hold(directory) if src.kind == "hub" and isinstance(directory, Path)   # not evicted
                    else _nothing)                                                                   # while loaded
            with self._lock:
                self._sources[src.key] = src
                self._held.pop(src.key, _nothing)()   # a moved branch's previous commit
                self._models[src.key], self._held[src.key] = loaded, held
                self._hit(src.key, pin)
                unpinned = [k for k in self._models if k not in self._pinned]
                for k in unpinned[:max(0, len(unpinned) - self.max_models)]:
                    del self._models[k]
                    self._held.pop(k, _nothing)()
            return loaded

    def _moved(self, src: ModelSource, loaded: LoadedModel) -> bool:
        """Whether the Hub branch or tag `loaded` came from names another commit now (one request asks the Hub per
        `recheck_s`; the others keep the loaded model meanwhile)."""
        if src.kind != "hub":
            return False
        with self._lock:
            if time.monotonic() - loaded.checked < self.recheck_s:
                return False
            loaded.checked = time.monotonic()
        commit = current_commit(src.name, src.revision, **self.hub_options)
        return commit is not None and commit != loaded.directory.name

    def _hit(self, key: str, pin: bool) -> LoadedModel | None:
        """The loaded model for `key`, marked most recently used (and pinned), or None; under `_lock`."""
        if key not in self._models:
            return None
        self._models.move_to_end(key)
        if pin:
            self._pinned.add(key)
        return self._models[key]

    def loaded(self, source: ModelSource) -> LoadedModel | None:
        """The model for `source` if it is loaded here now; nothing is loaded or downloaded."""
        with self._lock:
            return self._hit(source.key, False)

    def get(self, key: str) -> LoadedModel | None:
        with self._lock:
            return self._models.get(key)

    def source(self, key: str) -> ModelSource | None:
        """The source a model was loaded from (also after it was dropped), by its key."""
        with self._lock:
            return self._sources.get(key)


def request_hash(*parts: Any) -> str:
    """Content hash of a request (model key, input tensor, target, parameters) for memoizing results."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, torch.Tensor):
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        else:
            h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()


class TempFiles:
    """Download files (GIF, JSON, PNG) in one private temp dir; those older than `max_age_s`, and the oldest beyond
    `max_bytes` in all, are pruned as new ones are made (every run writes fresh ones: an hour of scripted calls
    was gigabytes); all are removed at exit."""

    def __init__(self, max_age_s: float = 3600.0, max_bytes: int = 1 << 30):
        self.dir = Path(tempfile.mkdtemp(prefix="dat-explainer-"))
        self.max_age_s, self.max_bytes = max_age_s, max_bytes
        atexit.register(shutil.rmtree, self.dir, True)

    def _prune(self) -> None:
        now, sized = time.time(), []
        for d in self.dir.iterdir():
            try:
                age = now - d.stat().st_mtime
                if age > self.max_age_s:
                    shutil.rmtree(d, ignore_errors=True)
                else:
                    sized.append((age, sum(f.stat().st_size for f in d.rglob("*") if f.is_file()), d))
            except FileNotFoundError:
                pass
        total = sum(size for _, size, _ in sized)
        for _, size, d in sorted(sized, key=lambda t: t[0], reverse=True):   # oldest first
            if total <= self.max_bytes:
                break
            shutil.rmtree(d, ignore_errors=True)
            total -= size

    def path(self, name: str) -> Path:
        self._prune()
        sub = self.dir / new_key()[:16]
        sub.mkdir()
        return sub / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
