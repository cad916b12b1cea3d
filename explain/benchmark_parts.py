"""A benchmark's run folder: `run.json` (the settings a resumed run must match) and the saved work under `parts/`.

Every file appears whole or not at all (`dat_core.files.replacing`), so a stop loses at most the pairs in flight.
A saved file that still cannot be read (a full disk, a copy cut short) is set aside as *.damaged and its work
is done again, never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Collection

import numpy as np

from dat_core.files import read_json, replacing, write_text
from dat_core.logs import get_logger

log = get_logger(__name__)

DAMAGED = (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile)
"""What reading a saved file cut short or overwritten raises (numpy, zipfile, zlib), or reading one that holds
something else (a JSON object where a number belongs, a part without one of its arrays)."""


def check_run_folder(out: Path, settings: dict[str, Any], located: tuple[str, ...] = (),
                     earlier: dict[str, str] | None = None) -> None:
    """Record `settings` in out/run.json, or check that a previous run there used the same ones. The `located`
    settings say where something was read (a path, a Hub id): recorded, not compared, since `settings` holds a
    sha256 of what was read there (a relative path, a symlink or a moved copy continues the run). `earlier`:
    the value an earlier version recorded for a key whose fingerprint has changed since (accepted, then the
    record is brought up to date)."""
    path = out / "run.json"
    if path.is_file():
        try:
            old = read_json(path, 2**20, str(path), "a benchmark's settings")
            if not isinstance(old, dict):
                raise ValueError(f"{path} holds no benchmark settings")
        except ValueError as e:
            raise ValueError(f"{e} (delete the folder to start over)") from None
        earlier = earlier or {}
        differ = sorted(k for k in set(old) | set(settings) if k not in located and old.get(k) != settings.get(k))
        refused = [k for k in differ if not (k in earlier and old.get(k) == earlier[k])]
        if refused:
            raise ValueError(f"{out} holds a benchmark with other settings ({', '.join(refused)} differ): "
                             "re-run the same command to continue it, or choose another --out")
        if differ:
            write_text(path, json.dumps({**old, **{k: settings[k] for k in differ}}, indent=2))
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(settings, indent=2))


def sha256_of(arrays: list[Any]) -> str:
    """One sha256 over tensors and arrays (their dtypes, shapes and values), to recognise them in a later run."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a.detach().cpu().float().numpy() if hasattr(a, "detach") else a)
        digest.update(f"{a.dtype}{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def model_sha256(model: Any) -> str:
    """sha256 of a model's weights and config (a calibration's temperature, the energy band, the input
    normalization change results as much as the weights do)."""
    config = json.dumps(getattr(model, "config", None) or {}, sort_keys=True, default=str).encode()
    return sha256_of([*model.state_dict().values(), np.frombuffer(config, dtype=np.uint8)])


def read_saved(path: Path, read: Callable[[Path], Any]) -> Any | None:
    """`read(path)`, or None when the file is damaged: it is set aside as *.damaged, kept for a look."""
    try:
        return read(path)
    except DAMAGED as e:
        os.replace(path, path.with_name(path.name + ".damaged"))
        log.warning("%s is damaged (%s): set aside as %s.damaged, its pairs run again", path.name,
                    type(e).__name__, path.name)
        return None


def _read_part(path: Path, keys: Collection[str]) -> dict[str, np.ndarray]:
    """A part's arrays; KeyError when one of `keys` is missing, ValueError when they hold unequal numbers of pairs."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    missing = sorted({"job", *keys} - set(arrays))
    if missing:
        raise KeyError(f"no {', '.join(missing)}")
    if len({len(a) for a in arrays.values()}) != 1:
        raise ValueError("arrays of unequal length")
    return arrays


def save_part(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with replacing(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def read_parts(parts: Path, tag: str, keys: Collection[str] = ("job",)) -> dict[str, np.ndarray]:
    """What a radius saved so far under `parts` (`{tag}-p*.npz`): the per-pair arrays all its parts hold, in job
    order, with `job` (a damaged part, or one without one of `keys`, is set aside: its pairs count as not done)."""
    chunks = [c for path in sorted(parts.glob(f"{tag}-p*.npz"))
              if (c := read_saved(path, lambda p: _read_part(p, keys))) is not None]
    if not chunks:
        return {"job": np.zeros(0, dtype=np.int64)}
    saved = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0] if all(k in c for c in chunks)}
    _, first = np.unique(saved["job"], return_index=True)   # sorted by job; a pair saved twice counts once
    return {k: v[first] for k, v in saved.items()}


def save_radii(path: Path, radii: np.ndarray) -> None:
    with replacing(path) as tmp, open(tmp, "wb") as f:
        np.save(f, radii)


def read_radii(path: Path) -> np.ndarray | None:
    """Minimal radii saved at `path`; None when there are none yet, or they were damaged (and set aside)."""
    return read_saved(path, _read_radii) if path.is_file() else None


def _read_radii(path: Path) -> np.ndarray:
    radii = np.load(path, allow_pickle=False)
    if radii.ndim != 1 or radii.dtype != np.float64:
        raise ValueError(f"{path.name} holds no list of radii")
    return radii


def _read_seconds(path: Path) -> float:
    seconds = read_json(path, 1024, path.name, "seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < math.inf:
        raise ValueError(f"{path.name} holds no number of seconds")
    return float(seconds)


class SpentTime:
    """Seconds a run folder's benchmark has taken over all the processes that worked on it (a resumed run's
    report counts the stopped ones too; running a finished one again adds none): out/seconds.json, added to at
    every `tick` once this process has work to do (`work`); `added`: this process's share."""

    def __init__(self, out: Path, since: float):
        """`since`: when this process started on the run (`time.perf_counter()`)."""
        self.path, self.last, self.working, self.added = out / "seconds.json", since, False, 0.0
        saved = read_saved(self.path, _read_seconds) if self.path.is_file() else None
        self.total = 0.0 if saved is None else saved

    def work(self) -> None:
        """This process runs what no earlier one saved: its time counts, from its start."""
        self.working = True

    def tick(self) -> float:
        if self.working:
            now = time.perf_counter()
            self.total, self.added, self.last = self.total + now - self.last, self.added + now - self.last, now
            write_text(self.path, json.dumps(self.total))
        return self.total
