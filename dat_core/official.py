"""Import of the paper's released checkpoints (`.pth` state dicts) into our checkpoint format, and the
reading of the official repository's model configs (`model_configs/*.yaml`).

The only place a `.pth` is read, always with `torch.load(weights_only=True)`: tensors in dicts, nothing
else is ever unpickled.

Wrappers whose key prefixes are stripped (the official `rebm/training/modeling.py::load_checkpoint`
handles the same): `module.` (DataParallel / DDP), `module.module.` with the EMA counter `module.n_averaged`
(an `AveragedModel` of a DataParallel model: the released `model_bestfid.pth` files), `base_model.` (the
ConvNeXt-CvSt checkpoints of Singh et al.), in any combination. MadryLab `robustness` checkpoints (the
format Salman et al. released their L2-robust ImageNet ResNets in; the stage-1 checkpoints' names point
there) keep the weights under `model.` beside an `attacker.model.` copy and `normalizer.` statistics: the
copy and the statistics are dropped, `model.` is stripped.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from .checkpoint import check_state_dict, save_model
from .files import read_text_at_most
from .models import Classifier, build_model
from .models.config import validate_model_config

_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "ema")
_WRAPPER_PREFIXES = ("module.", "base_model.")
_NORMALIZATION_KEYS = ("mu", "sigma", "mean", "std")
_NORMALIZATION_PREFIXES = ("normalizer.", "normalize.", "normalization.")


def import_official(checkpoint_path: str | Path, arch: str = "wrn-34-10", num_classes: int = 10,
                    out_dir: str | Path | None = None, **config: Any) -> Classifier:
    """Import a released DAT checkpoint (a `.pth` state dict in the official key layout of `arch`).

    Accepts a raw state dict or one held under "state_dict" / "model_state_dict" / "model" / "ema";
    strips the wrapper prefixes of the module docstring, drops the EMA counter `n_averaged` and any
    input-normalization entries (normalization comes from config mean/std). Loaded with
    `torch.load(weights_only=True)`: no arbitrary unpickling. `config` (image_size, class_names, mean,
    std) goes to `build_model`; the result is checked like any checkpoint's config and saved to
    `out_dir` when given. A ValueError lists missing / unexpected keys.
    """
    path = Path(checkpoint_path)
    as_json = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}   # as config.json holds it
    validate_model_config({"arch": arch, "num_classes": num_classes, **as_json},   # sized before it is built
                          source=f"the config for {path.name}")
    try:
        with warnings.catch_warnings():   # a pickle protocol torch does not write: two lines above the one error
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:   # missing, a folder, unreadable: the CLI words it
        raise
    except Exception as e:  # UnpicklingError and friends: the file holds more than tensors and containers
        raise ValueError(f"could not read {path} with torch.load(weights_only=True): {_unpickling_problem(e)}; only "
                         "plain state dicts (tensors in dicts) are accepted, nothing else is ever unpickled") from None
    state_dict = official_state_dict(obj, source=str(path))
    model = build_model(arch, num_classes=num_classes, **config)
    validate_model_config(model.config, source=f"the config for {path.name}")  # so the result loads again
    for key, value in model.state_dict().items():  # pre-1.0 BatchNorm checkpoints lack this counter
        if key.endswith("num_batches_tracked") and key not in state_dict:
            state_dict[key] = value
    check_state_dict(model, state_dict, source=str(path))
    model.load_state_dict(state_dict)
    model.eval()
    if out_dir is not None:
        save_model(model, out_dir)
    return model


def _unpickling_problem(error: Exception) -> str:
    """Why torch.load(weights_only=True) refused a file, in words. Its own message runs to 7 lines whose first ones
    advise loading with weights_only=False (running the file's code), and a text file fails with "KeyError: 101"."""
    said = re.sub(r"\x1b\[[0-9;]*m", "", str(error))   # torch's message carries terminal colour codes
    if found := re.search(r"Unsupported global: GLOBAL ([\w.]+)", said):
        return f"it holds {found.group(1)} objects, which are not tensors or containers"
    if isinstance(error, EOFError):
        return "the file is empty or cut short"
    return "it is not a whole file written by torch.save"


def _unwrapped(key: str) -> str:
    while key.startswith(_WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key


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
    madry = any(_unwrapped(k).startswith("attacker.") for k in obj)
    out: dict[str, torch.Tensor] = {}
    dropped_norm = []
    for key, value in obj.items():
        name = _unwrapped(key)
        if name == "n_averaged" or (madry and name.startswith("attacker.")):
            continue
        if name in _NORMALIZATION_KEYS or name.startswith(_NORMALIZATION_PREFIXES):
            dropped_norm.append(f"{key}={_shown(value)}")
            continue
        if madry:
            name = name.removeprefix("model.")
        if name in out:
            raise ValueError(f"{source}: keys collide after stripping wrapper prefixes "
                             f"({', '.join(_WRAPPER_PREFIXES)}): {name}")
        out[name] = value
    if dropped_norm:
        warnings.warn(f"{source}: dropped input-normalization entries {', '.join(dropped_norm)}; our models "
                      "normalize with config mean/std, so pass mean=/std= if these differ", stacklevel=3)
    return out


def _shown(value: torch.Tensor, most: int = 6) -> str:
    """A tensor in a message: its values when it has a few (the three channel statistics), else its shape (an 80 MB
    "mean" was written into the warning whole: 100 million characters)."""
    if value.numel() <= most:
        return str(value.flatten().tolist())
    return f"<{value.numel()} values of shape {tuple(value.shape)}>"


# ---------------------------------------------------------------- official model configs

_DATASETS = {"cifar10": (10, 32), "cifar100": (100, 32), "imagenet": (1000, 224)}
"""dataset -> (classes, image size); 224 is what the official ImageNet evaluation uses when a config names none."""

_IMAGENET_RESNETS = {"resnet50imagenet": "resnet50", "wideresnet50x2imagenet": "wide-resnet50-2",
                     "wideresnet50x4imagenet": "wide-resnet50-4"}


def official_arch(model_type: str, use_convstem: bool = True) -> tuple[str, str, bool]:
    """(our arch, the statistics its official model normalizes with, whether it normalizes by default)
    for an official `model_type`."""
    t = model_type.lower()
    if t in _IMAGENET_RESNETS:  # timm fork: ImageNet statistics inside forward
        return _IMAGENET_RESNETS[t], "imagenet", True
    if m := re.fullmatch(r"wideresnet(\d+)x(\d+)", t, re.ASCII):  # InNOut WRN: CIFAR-10 statistics, for CIFAR-100 too
        return f"wrn-{m[1]}-{m[2]}", "cifar10", True
    if m := re.fullmatch(r"convnext_(small|base|large)", t):
        if not use_convstem:
            raise ValueError(f"{model_type} with the patch stem (use_convstem=false) is not supported; "
                             "only the ConvStem variants are")
        # timm fork: ImageNet statistics when normalize_input; the official evaluation builds them without
        return f"convnext-{m[1]}-convstem", "imagenet", False
    raise ValueError(f"official model_type {model_type!r} has no architecture here; known: WideResNet<d>x<k>, "
                     "ResNet50ImageNet, WideResNet50x2ImageNet, WideResNet50x4ImageNet, convnext_{small,base,large}")


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


MAX_OFFICIAL_CONFIG_BYTES = 2**20


def read_official_config(path: str | Path) -> dict[str, Any]:
    """What an official model config (`model_configs/*.yaml`) says about its checkpoint.

    Returns `arch`, `num_classes`, `image_size`, `normalization` (a `NORMALIZATIONS` name),
    `class_names` (a class-name set), `checkpoint` (where the official repo keeps the weights) and `method`.
    The image size is the config's `image_size`, else its `train_cmd` override `data.image_size=`, else the
    dataset's; `model.normalize_input=` and `model.use_convstem=` overrides in `train_cmd` are honoured.
    """
    path = Path(path)
    try:
        doc = yaml.safe_load(read_text_at_most(path, MAX_OFFICIAL_CONFIG_BYTES, str(path),
                                               "an official DAT model config (those are about 1 kB)"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {e}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text file: not an official DAT model config") from None
    except RecursionError:
        raise ValueError(f"{path} is not an official DAT model config: its YAML is nested too deeply") from None
    if not (isinstance(doc, dict) and isinstance(doc.get("model_type"), str) and isinstance(doc.get("dataset"), str)):
        raise ValueError(f"{path} is not an official DAT model config (it needs model_type and dataset)")
    dataset = doc["dataset"].lower()
    if dataset not in _DATASETS:
        raise ValueError(f"{path}: dataset {doc['dataset']!r} is not one of {', '.join(_DATASETS)}")
    overrides = dict(tok.split("=", 1) for tok in str(doc.get("train_cmd") or "").split() if "=" in tok)
    arch, stats, normalizes = official_arch(doc["model_type"], _flag(overrides.get("model.use_convstem", True)))
    if "model.normalize_input" in overrides:
        normalizes = _flag(overrides["model.normalize_input"])
    num_classes, image_size = _DATASETS[dataset]
    image_size = doc.get("image_size") or overrides.get("data.image_size") or image_size
    if not (type(image_size) is int or (isinstance(image_size, str) and image_size.isascii()
                                        and image_size.strip().isdigit())):
        raise ValueError(f"{path}: image size {str(image_size)[:40]!r} is not a whole number of pixels")
    for key in ("checkpoint", "method"):
        if doc.get(key) is not None and not isinstance(doc[key], str):
            raise ValueError(f"{path}: {key} must be text, not a {type(doc[key]).__name__}")
    return {"arch": arch, "num_classes": num_classes, "image_size": int(image_size),
            "normalization": stats if normalizes else "none", "class_names": dataset,
            "checkpoint": doc.get("checkpoint"), "method": doc.get("method")}
