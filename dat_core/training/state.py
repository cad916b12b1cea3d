"""The run directory on disk: the resumable state.pt (written atomically, the previous one kept as
state.prev.pt), reading it back with one clear message when it is unusable, what may change on resume,
and the logs cut back to the saved step so every step is logged once.

Nothing here is ever unpickled beyond tensors and plain data (`torch.load(weights_only=True)`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..files import claimed, remove_stale, sync_folder
from .config import ConfigError, TrainConfig, flat
from .errors import StateError, StorageError

STATE_FILE = "state.pt"
PREVIOUS_FILE = "state.prev.pt"
LOGS = ("metrics.jsonl", "eval.jsonl")
RUN_FILES = {"run_config.json": False, STATE_FILE: False, PREVIOUS_FILE: False, "metrics.jsonl": False,
             "eval.jsonl": False, "curves.png": False, "samples": True, "best": True, "final": True}
"""What a run directory holds: name -> is a directory."""

REQUIRED = ("step", "config", "world_size", "model", "ema", "optimizer", "stage", "best", "ranks")

REFUSED_ON_RESUME = ("stage", "batch_size", "model.arch", "data.dataset", "data.train_split", "data.image_size",
                     "data.val_size", "data.ood", "data.ood_holdout", "data.ood_seed_bank", "data.allow_empty_classes",
                     "data.ood_noise_fraction", "contrastive.buffer_size", "optim.name", "optim.decay_norm_and_bias")
"""They define the model, the data or the batch of a run, or the shape of its saved streams, chains and optimizer
state: a resumed run keeps them (the last four were accepted, then the saved state did not fit). The carve-outs
stay as they began: a seed bank resized on resume held images the run had drawn as contrastive seeds."""

FREE_ON_RESUME = ("out_dir", "device", "compile", "log_every", "ckpt_every", "model.init", "data.root",
                  "data.cache_dir", "data.lazy")
"""They do not change what is trained (`model.init` only seeds a new run's weights)."""


# ---------------------------------------------------------------- writing

def storage_error(path: Path, error: BaseException) -> StorageError:
    """One line with the path and the cause (plus the free space when the disk may be full)."""
    cause = error.strerror if isinstance(error, OSError) and error.strerror else str(error).splitlines()[0]
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        try:
            free = shutil.disk_usage(next(p for p in (path, *path.parents) if p.exists())).free
            cause += f" ({free / 2 ** 20:.0f} MiB free there)"
        except (OSError, StopIteration):
            pass
    return StorageError(f"cannot write {path}: {cause}")


class _Writer:
    """A raw file for torch.save that keeps the OSError behind torch's own 'unexpected pos' error."""

    def __init__(self, f: Any):
        self.f, self.error = f, None

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            try:
                done += self.f.write(view[done:])
            except OSError as e:
                self.error = e
                raise
        return len(view)

    def flush(self) -> None:
        self.f.flush()


SCALARS = (str, int, float, bool, type(None))
TORCH_VALUES = (torch.Tensor, torch.dtype, torch.device)
"""What `torch.load(weights_only=True)` reads back, beside dicts, lists and tuples of them."""


def plain_data(obj: Any, where: str = "state") -> Any:
    """`obj` with NumPy scalars (e.g. class names read back from a .npz cache) made Python values, so the
    file loads with weights_only=True; anything else that would not raises TypeError naming its place."""
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, dict):
        return {plain_data(k, where): plain_data(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [plain_data(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    if type(obj) in SCALARS or isinstance(obj, TORCH_VALUES):
        return obj
    for kind in (bool, int, float, str):  # subclasses (np.str_ is one) become the Python type
        if isinstance(obj, kind):
            return str.__str__(obj) if kind is str else kind(obj)
    raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}")


def atomic_save(obj: Any, path: Path, keep_previous: bool = False) -> None:
    """torch.save to PATH.tmp, fsync, then rename over PATH: a crash leaves the old PATH intact and a
    failed write leaves no .tmp behind. `keep_previous`: the old PATH stays as state.prev.pt. Only plain
    data is written (`plain_data`): a state that `--resume` would refuse is never saved."""
    try:
        obj = plain_data(obj)
    except TypeError as e:
        raise StorageError(f"cannot write {path}: it would hold an object that cannot be resumed "
                           f"(only tensors and plain data are read back): {e}") from None
    remove_stale(path.parent, f"{path.name}.", grace=0)       # killed while writing (the run dir is claimed)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")   # its own, should two processes ever write
    writer = None
    try:
        with open(tmp, "wb", buffering=0) as f:
            writer = _Writer(f)
            torch.save(obj, writer)
            os.fsync(f.fileno())
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, Exception):
            raise storage_error(path, writer.error if writer is not None and writer.error else e) from e
        raise
    try:
        if keep_previous and path.is_file():
            previous = path.with_name(PREVIOUS_FILE)
            link = previous.with_name(previous.name + ".tmp")
            link.unlink(missing_ok=True)
            try:
                os.link(path, link)  # no copy: the old file lives on under the new name
                os.replace(link, previous)
            except OSError:
                link.unlink(missing_ok=True)  # a file system without hard links: no previous state
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise storage_error(path, e) from e
    sync_folder(path.parent)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def claim_run_dir(out: Path, held: contextlib.ExitStack) -> None:
    """Hold `out` for this process while `held` is open: a second run on it (resumed or fresh) is refused at once;
    two would write one state.pt and cut each other's logs."""
    _make_run_dir(out)
    try:
        held.enter_context(claimed(out, "training run"))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    except OSError as e:
        raise storage_error(out, e) from e


def writes(fn: Any, where: Path) -> Any:
    """Run `fn` (rank 0's writes), turning an OSError into one StorageError line with path and cause."""
    def run():
        try:
            return fn()
        except OSError as e:
            raise storage_error(Path(e.filename) if e.filename else where, e) from e
    return run


def _make_run_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise StorageError(f"cannot create the run directory {out}: {blocker} is a file") from e
        raise storage_error(out, e) from e


def prepare_run_dir(out: Path) -> None:
    """Create `out` and check, before any training, that everything a run writes can go there. What a killed run
    left half-written is removed, and an export it had not yet renamed into place is put there (the directory is
    claimed: no other writer)."""
    _make_run_dir(out)
    remove_stale(out, f"{STATE_FILE}.", grace=0)
    for folder in (out, out / "samples"):
        remove_stale(folder, None, grace=0)
    for name, is_dir in RUN_FILES.items():
        p = out / name
        if p.exists() and p.is_dir() != is_dir:
            what = "a directory" if p.is_dir() else "a file"
            raise StorageError(f"cannot write {p}: it is {what}, where the run keeps its "
                               f"{'folder' if is_dir else 'file'} {name}")
    probe = out / ".write-test"
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise storage_error(out, e) from e


# ---------------------------------------------------------------- reading

def _cause(error: BaseException, path: Path) -> str:
    text = str(error)
    if "Weights only load failed" in text or "Unsupported global" in text:
        return "it holds objects other than tensors and plain data (refused; nothing in it was run)"
    if not zipfile.is_zipfile(path) or "central directory" in text or isinstance(error, EOFError):
        return "truncated, or not a file written by torch.save"
    return f"{type(error).__name__}: {text.splitlines()[0][:200] if text else 'unreadable'}"


def load_state_file(path: Path, mmap: bool = False) -> dict[str, Any]:
    """The state at `path`, checked to be a training state; StateError (without the alternatives) if not. `mmap`:
    tensors stay in the file until read (a reader of its config only, not of GBs of weights and chains)."""
    if path.is_dir():
        raise StateError(f"{path} is a directory, not a state file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise StateError(f"{path} does not exist") from None
    except Exception as e:
        raise StateError(f"cannot read {path}: {_cause(e, path)}") from None
    if not isinstance(state, dict):
        raise StateError(f"{path} is not a training state (it holds a {type(state).__name__})")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise StateError(f"{path} is not a training state (missing {', '.join(missing)})")
    if not isinstance(state["step"], int) or state["step"] < 0 or not isinstance(state["ranks"], list) \
            or not isinstance(state["config"], dict) or not isinstance(state["model"], dict):
        raise StateError(f"{path} is not a training state (malformed step, config, model or ranks)")
    return state


def alternative(out: Path) -> str:
    """The last good thing to go on from when state.pt is unusable."""
    previous = out / PREVIOUS_FILE
    if previous.is_file():
        try:
            step = load_state_file(previous)["step"]
            return (f"the last good state is {previous} (step {step}): to resume from it, "
                    f"mv {previous} {out / STATE_FILE}")
        except StateError as e:
            note = f"{previous} is unusable too ({e}); "
    else:
        note = ""
    exported = []
    for name in ("best", "final"):
        if (step := export_step(out / name)) is not None:
            exported.append(f"{out / name} (EMA weights of step {step})")
    if exported:
        return (note + f"no resumable state is left; {' and '.join(exported)} can start a new run "
                f"(model.init=DIR), or delete {out / STATE_FILE} to start over")
    return note + f"no earlier state or checkpoint exists: delete {out / STATE_FILE} (or pick another out_dir)"


def refuse_fresh_run(out: Path) -> None:
    """A run started without --resume where one is (its state.pt, or only the state.prev.pt that --resume names as
    the last good state) trained over it: it cut the logs and, at its second save, replaced state.prev.pt."""
    held = [name for name in (STATE_FILE, PREVIOUS_FILE) if (out / name).is_file()]
    if held:
        raise ConfigError(f"{out} already holds a run ({held[0]}); pass --resume to continue it or pick another "
                          "out_dir")


def read_state(out: Path) -> dict[str, Any]:
    """state.pt of the run in `out`, or a StateError naming the file and the last good alternative."""
    path = out / STATE_FILE
    if not path.exists() and not (out / PREVIOUS_FILE).exists():
        raise ConfigError(f"--resume: there is no {STATE_FILE} in {out} (nothing to resume)")
    try:
        return load_state_file(path)
    except StateError as e:
        raise StateError(f"--resume: {e}; {alternative(out)}") from None


# ---------------------------------------------------------------- resuming

def data_fingerprint(*sets: Any) -> str:
    """sha256 of what the data give a run, cheap at any size: each set's size, labels and class names. The same
    `data.dataset` path over other images redrew the validation carve-out on resume, from images it trained on."""
    digest = hashlib.sha256()
    for s in sets:
        digest.update(f"{len(s)}|{list(getattr(s, 'class_names', []))}|".encode())
        labels = getattr(s, "labels", None)
        if labels is not None:
            digest.update(labels.detach().cpu().numpy().astype("int64").tobytes())
    return digest.hexdigest()


def check_resume_data(saved: dict[str, Any], fingerprint: str, ood_images: int, out: Path) -> None:
    """A resumed run must find the data it began with: `data_fingerprint` of its splits and the count of images
    behind data.ood (states written before either check carry none)."""
    if saved.get("data_sha256", fingerprint) != fingerprint or saved.get("ood_images", ood_images) != ood_images:
        raise ConfigError(f"--resume: the images behind data.dataset (or data.ood) are not the ones the run in {out} "
                          "began with (other images, classes or counts): its held-out images would be redrawn from "
                          "images it trained on; start a new run in another out_dir")


def check_resume_config(saved: dict[str, Any], cfg: TrainConfig, world: int, allow_change: bool,
                        out: Path) -> list[str]:
    """Compare the run's saved config with this one; returns the accepted changes ("key: old -> new").

    Keys of REFUSED_ON_RESUME may not change; any other change (but FREE_ON_RESUME) needs `allow_change`.
    """
    old, new = flat(saved["config"]), flat(cfg)
    changed = {k: (old[k], new[k]) for k in new if k in old and old[k] != new[k] and k not in FREE_ON_RESUME}
    if saved.get("world_size", world) != world:
        changed["world size"] = (saved["world_size"], world)
    listing = {k: f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items()}
    refused = [listing[k] for k in REFUSED_ON_RESUME if k in changed]
    if refused:
        raise ConfigError(f"--resume: the run in {out} cannot change {'; '.join(refused)} (they define its "
                          f"model, data, batch or optimizer); start a new run in another out_dir instead")
    if changed and not allow_change:
        raise ConfigError(f"--resume: the config differs from the run in {out}: {'; '.join(listing.values())}; "
                          "pass --allow-config-change to continue with the new values")
    return list(listing.values())


def restored_best(saved: dict[str, Any], metric: str) -> dict[str, Any]:
    """The saved record of best/, without its value when `best_metric` changed on resume: a value of another metric
    is no bar for this one (best/ stayed the old metric's choice), so the best is chosen again from here on."""
    best = dict(saved)
    if best.get("metric") != metric:
        best.update(metric=metric, value=None)
    return best


def log_sizes(out: Path) -> dict[str, int]:
    return {name: (out / name).stat().st_size if (out / name).is_file() else 0 for name in LOGS}


def truncate_logs(out: Path, sizes: dict[str, int]) -> None:
    """Cut each log back to its size at the saved step: the steps redone after a resume are logged once."""
    for name, size in sizes.items():
        path = out / name
        try:
            if path.is_file() and path.stat().st_size > size:
                os.truncate(path, size)
        except OSError as e:
            raise storage_error(path, e) from e


def export_step(folder: Path) -> int | None:
    """The step an export (best/, final/) was written at, from its config.json; None without one."""
    try:
        return int(json.loads((folder / "config.json").read_text(encoding="utf-8"))["training"]["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def keep_position(saved: Any, fresh: Any) -> Any:
    """A stream state with `saved`'s position (epoch and batch, the same on every rank) and `fresh`'s generators
    (one per rank: they do not carry over to another number of ranks)."""
    if isinstance(saved, dict) and isinstance(fresh, dict):
        return {k: fresh[k] if k == "generator" and k in fresh else keep_position(v, fresh.get(k))
                for k, v in saved.items()}
    return saved
