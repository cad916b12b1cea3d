"""Checkpoints: the directory format, loading from anywhere, and import of the paper's released weights.

A checkpoint is a directory in the `PyTorchModelHubMixin` layout (DESIGN §4):

    config.json        the model's `.config`; `build_model(**config)` rebuilds the architecture
    model.safetensors  the state dict (never a pickle)
    README.md          optional model card (Hub YAML metadata on top)

`load_model(source)` takes `"default"` (the bundled model under assets/models/), a local checkpoint
directory, or a Hub repo id `owner/name` (downloaded through `huggingface_hub` into its cache).
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from .models import Classifier, build_model

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
CHECKPOINT_FILES = (CONFIG_NAME, WEIGHTS_NAME)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"
"""Bundled checkpoints; `assets/models/DEFAULT` (one line) names the default, else the first `dat-*` dir."""

_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "ema")
_NORMALIZATION_KEYS = ("mu", "sigma", "mean", "std")
_NORMALIZATION_PREFIXES = ("normalizer.", "normalize.", "normalization.")


# ---------------------------------------------------------------- saving

def save_model(model: Classifier, directory: str | Path, card: str | None = None) -> Path:
    """Write `model` as a checkpoint dir (config.json + model.safetensors [+ README.md card]); returns the dir.

    Each file is written to a temporary name beside it and renamed into place, so a reader never sees
    a half-written checkpoint file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = json.dumps(model.config, indent=2) + "\n"  # fails early (TypeError) on a non-JSON config
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    # serialized in memory and written by us: file modes follow the umask (safetensors' own writer uses 0600)
    _write_atomic(directory / WEIGHTS_NAME, safetensors_bytes(tensors, metadata={"format": "pt"}))
    _write_atomic(directory / CONFIG_NAME, config.encode("utf-8"))
    if card is not None:
        _write_atomic(directory / CARD_NAME, card.encode("utf-8"))
    return directory


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # same dir: rename is atomic
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- loading

def load_model(source: str | Path = "default", revision: str | None = None,
               device: str | torch.device | None = None, cache_dir: str | Path | None = None,
               endpoint: str | None = None, token: str | bool | None = None,
               local_files_only: bool | None = None) -> Classifier:
    """Load a classifier in eval mode from `"default"`, a local checkpoint dir, or a Hub repo id.

    Hub arguments (`revision`, `cache_dir`, `endpoint`, `token`, `local_files_only`) go to
    `huggingface_hub.snapshot_download`; pin `revision` to a commit sha for reproducibility.
    """
    from . import hub  # lazily: local loads never import huggingface_hub

    if isinstance(source, str) and source == "default":
        directory = default_model_dir()
    elif str(source) and Path(source).expanduser().exists():
        directory = Path(source).expanduser()
        if revision is not None:
            raise ValueError(f"revision={revision!r} only applies to Hub repo ids; {source} is a local path")
    elif hub.is_repo_id(str(source)):
        directory = hub.download(str(source), revision=revision, cache_dir=cache_dir, endpoint=endpoint,
                                 token=token, local_files_only=local_files_only)
    else:
        raise ValueError(f"model source {str(source)!r} is neither an existing checkpoint directory nor a "
                         f"Hub repo id of the form 'owner/name' ({hub.repo_id_problem(str(source))})")
    model = load_checkpoint_dir(directory)
    return model.to(device) if device is not None else model


def default_model_dir(root: Path | None = None) -> Path:
    """The bundled default checkpoint dir under `root` (default: `DEFAULT_MODEL_DIR`)."""
    root = Path(root if root is not None else DEFAULT_MODEL_DIR)
    how = ("pass a checkpoint directory or a Hub repo id instead (load_model('path/to/dir') or "
           "load_model('owner/name'); app.py --model DIR|REPO_ID)")
    marker = root / "DEFAULT"
    if marker.is_file():
        name = marker.read_text(encoding="utf-8").strip()
        if not (root / name).is_dir():
            raise FileNotFoundError(f"{marker} names the default model {name!r}, but {root / name} does not "
                                    f"exist; {how}")
        return root / name
    candidates = sorted(p for p in root.glob("dat-*") if p.is_dir()) if root.is_dir() else []
    if not candidates:
        raise FileNotFoundError(f"no bundled model is available yet (nothing under {root}); {how}")
    return candidates[0]


def load_checkpoint_dir(directory: str | Path) -> Classifier:
    """Build and load the model stored in a checkpoint dir (see the module docstring), in eval mode."""
    directory = Path(directory)
    if not directory.is_dir():
        hint = (" (a .pth/.pt state dict from the paper goes through import_official)"
                if directory.suffix in (".pth", ".pt", ".bin") else "")
        raise NotADirectoryError(f"{directory} is a file, not a checkpoint directory "
                                 f"({' + '.join(CHECKPOINT_FILES)}){hint}")
    missing = [name for name in CHECKPOINT_FILES if not (directory / name).is_file()]
    if missing:
        present = sorted(p.name for p in directory.iterdir())
        raise FileNotFoundError(f"checkpoint directory {directory} is missing {' and '.join(missing)} "
                                f"(it holds: {', '.join(present) or 'nothing'}); a checkpoint needs "
                                f"{' + '.join(CHECKPOINT_FILES)}")
    config = read_config(directory / CONFIG_NAME)
    model = build_model(**config)
    state_dict = load_file(directory / WEIGHTS_NAME, device="cpu")
    check_state_dict(model, state_dict, source=str(directory / WEIGHTS_NAME))
    model.load_state_dict(state_dict)
    return model.eval()


def read_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(config).__name__}")
    missing = [k for k in ("arch", "num_classes") if k not in config]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}; a model config needs at least arch and num_classes")
    return config


def model_card(directory: str | Path) -> str | None:
    """The README.md model card of a checkpoint dir, or None if it has none."""
    path = Path(directory) / CARD_NAME
    return path.read_text(encoding="utf-8") if path.is_file() else None


# ---------------------------------------------------------------- state-dict checks

def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise ValueError naming the missing / unexpected keys and shape mismatches of `state_dict` vs `model`."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [f"{k} checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    if missing or unexpected or mismatched:
        config = getattr(model, "config", {})
        what = f"{config.get('arch', type(model).__name__)} with num_classes={config.get('num_classes', '?')}"
        parts = [_listing(one, many, items) for one, many, items in
                 (("missing key", "missing keys", missing), ("unexpected key", "unexpected keys", unexpected),
                  ("shape mismatch", "shape mismatches", mismatched)) if items]
        raise ValueError(f"{source} does not match {what}: " + "; ".join(parts)
                         + ". Is it a checkpoint for another architecture or number of classes?")


def _listing(one: str, many: str, items: list[str], shown: int = 5) -> str:
    head = ", ".join(items[:shown]) + (f", ... ({len(items) - shown} more)" if len(items) > shown else "")
    return f"{len(items)} {one if len(items) == 1 else many} ({head})"


# ---------------------------------------------------------------- official checkpoints

def import_official(checkpoint_path: str | Path, arch: str = "wrn-34-10", num_classes: int = 10,
                    out_dir: str | Path | None = None, **config: Any) -> Classifier:
    """Import a released DAT checkpoint (a `.pth` state dict in the WRN layout) into our format.

    Accepts a raw state dict or one held under "state_dict" / "model_state_dict" / "model" / "ema";
    strips `module.` prefixes (DataParallel, EMA wrappers; repeated), drops the EMA counter `n_averaged`
    and any input-normalization entries (normalization comes from config mean/std). Loaded with
    `torch.load(weights_only=True)`: no arbitrary unpickling. `config` goes to `build_model`; the result
    is saved to `out_dir` when given.
    """
    path = Path(checkpoint_path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # UnpicklingError and friends: the file holds more than tensors and containers
        raise ValueError(f"could not read {path} with torch.load(weights_only=True): {e}. Only plain "
                         "state dicts (tensors in dicts) are accepted; nothing else is ever unpickled") from e
    state_dict = official_state_dict(obj, source=str(path))
    model = build_model(arch, num_classes=num_classes, **config)
    for key, value in model.state_dict().items():  # pre-1.0 BatchNorm checkpoints lack this counter
        if key.endswith("num_batches_tracked") and key not in state_dict:
            state_dict[key] = value
    check_state_dict(model, state_dict, source=str(path))
    model.load_state_dict(state_dict)
    model.eval()
    if out_dir is not None:
        save_model(model, out_dir)
    return model


def official_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Normalize a loaded official checkpoint object to a plain state dict in our key layout."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source} holds a {type(obj).__name__}, not a state dict")
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _STATE_DICT_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            raise ValueError(f"{source} is neither a state dict nor holds one under "
                             f"{', '.join(_STATE_DICT_KEYS)} (top-level keys: {', '.join(map(str, list(obj)[:10]))})")
        return official_state_dict(inner, source)
    out: dict[str, torch.Tensor] = {}
    dropped_norm = []
    for key, value in obj.items():
        name = key
        while name.startswith("module."):
            name = name[len("module."):]
        if name == "n_averaged":
            continue
        if name in _NORMALIZATION_KEYS or name.startswith(_NORMALIZATION_PREFIXES):
            dropped_norm.append(f"{key}={value.flatten().tolist()}")
            continue
        if name in out:
            raise ValueError(f"{source}: keys collide after stripping 'module.' prefixes: {name}")
        out[name] = value
    if dropped_norm:
        warnings.warn(f"{source}: dropped input-normalization entries {', '.join(dropped_norm)}; our models "
                      "normalize with config mean/std, so pass mean=/std= if these differ", stacklevel=3)
    return out
