"""Import of the paper's released checkpoints (`.pth` state dicts) into our checkpoint format.

The only place a `.pth` is read, always with `torch.load(weights_only=True)`: tensors in dicts, nothing
else is ever unpickled.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .checkpoint import check_state_dict, save_model
from .models import Classifier, build_model

_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "ema")
_NORMALIZATION_KEYS = ("mu", "sigma", "mean", "std")
_NORMALIZATION_PREFIXES = ("normalizer.", "normalize.", "normalization.")


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
