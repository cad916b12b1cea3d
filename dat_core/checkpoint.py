"""The checkpoint format: a directory in the `PyTorchModelHubMixin` layout (DESIGN §4).

    config.json        the model's `.config`; `build_model(**config)` rebuilds the architecture; `code_version`
                       records the code that wrote it ({"version", "git_sha"}, `dat_core.version`)
    model.safetensors  the state dict (never a pickle)
    README.md          optional model card (Hub YAML metadata on top)

Where a checkpoint comes from (bundled, a folder, the Hub) is `dat_core.loading`'s job; the paper's
`.pth` files are converted by `dat_core.official`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from .files import read_json, replacing, replacing_dir
from .models import Classifier, build_model
from .models.config import validate_model_config
from .version import code_version

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
CHECKPOINT_FILES = (CONFIG_NAME, WEIGHTS_NAME)


# ---------------------------------------------------------------- saving

def save_model(model: Classifier, directory: str | Path, card: str | None = None) -> Path:
    """Write `model` as a checkpoint dir (config.json + model.safetensors [+ README.md card]); returns the dir.

    A new folder, or one that holds a checkpoint and nothing else, is written whole (`replacing_dir`): its weights,
    config and card change together, so a kill between two files never leaves new weights beside an old config, and
    an earlier model's card (its numbers) goes unless `card` is given. Into a folder that holds other files too (a
    git clone of a Hub repo) each file is written to a temporary name beside it and renamed into place, so a
    reader never sees a half-written file. All is fsynced. `model.config["code_version"]` is set to the code
    writing it (version and git sha), so the saved config and the model in memory agree on where it came from.
    """
    directory = Path(directory)
    model.config["code_version"] = code_version()
    config = json.dumps(model.config, indent=2) + "\n"  # fails early (TypeError) on a non-JSON config
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    # serialized in memory and written by us: file modes follow the umask (safetensors' own writer uses 0600)
    files = {WEIGHTS_NAME: safetensors_bytes(tensors, metadata={"format": "pt"}), CONFIG_NAME: config.encode("utf-8"),
             **({CARD_NAME: card.encode("utf-8")} if card is not None else {})}
    if _swappable(directory):
        with replacing_dir(directory, durable=True) as tmp:
            for name, data in files.items():
                (tmp / name).write_bytes(data)
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        with replacing(directory / name, durable=True) as tmp:   # a checkpoint outlives a power cut whole
            tmp.write_bytes(data)
    return directory


def _swappable(directory: Path) -> bool:
    """Whether `save_model` may write `directory` whole: a folder that is not there yet, or a real folder holding at
    most a checkpoint's files that is not a link, the working folder or a mount point (a volume cannot be renamed),
    in a folder it may write (the swap renames it there; file by file needs only the folder itself)."""
    if not directory.exists() and not directory.is_symlink():
        return True
    if not directory.is_dir() or directory.is_symlink() or directory.resolve() == Path.cwd().resolve():
        return False
    if os.path.ismount(directory) or not os.access(directory.resolve().parent, os.W_OK | os.X_OK):
        return False
    return {p.name for p in directory.iterdir()} <= {*CHECKPOINT_FILES, CARD_NAME}


# ---------------------------------------------------------------- reading

def load_checkpoint_dir(directory: str | Path, label: str | None = None) -> Classifier:
    """Build and load the model stored in a checkpoint dir (see the module docstring), in eval mode.

    Everything in it is checked before use (`read_config`, `read_weights`); messages call the checkpoint
    `label` (default: its path), so a server can name it without showing its own paths.
    """
    directory = Path(directory)
    label = str(directory) if label is None else label
    if not directory.is_dir():
        hint = (" (a .pth/.pt state dict from the paper goes through import_official)"
                if directory.suffix in (".pth", ".pt", ".bin") else "")
        raise NotADirectoryError(f"{label} is a file, not a checkpoint directory "
                                 f"({' + '.join(CHECKPOINT_FILES)}){hint}")
    missing = [name for name in CHECKPOINT_FILES if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{label} is missing {' and '.join(missing)}: a checkpoint directory needs "
                                f"{' + '.join(CHECKPOINT_FILES)}")
    config = read_config(directory / CONFIG_NAME, label=f"{label}/{CONFIG_NAME}")
    weights, source = directory / WEIGHTS_NAME, f"{label}/{WEIGHTS_NAME}"
    with torch.device("meta"):   # its shape, nothing allocated: a 136-byte config naming a 400M-parameter model
        skeleton = build_model(**config)   # cost a GiB and seconds before weights that did not fit it were read
    check_state_dict(skeleton, read_header(weights, len(skeleton.state_dict()), label=source), source=source)
    state_dict = read_weights(weights, label=source)
    model = build_model(**config)
    check_state_dict(model, state_dict, source=source)
    model.load_state_dict(state_dict)
    return model.eval()


MAX_CONFIG_BYTES = 4 * 2**20
MAX_HEADER_BYTES = 16 * 2**20
"""safetensors' own limit on the JSON header (anything larger is not a checkpoint of ours)."""


def read_config(path: str | Path, label: str | None = None) -> dict[str, Any]:
    """A checkpoint's config.json, checked field by field (`dat_core.models.config`): ValueError names the field."""
    path = Path(path)
    label = str(path) if label is None else label
    config = read_json(path, MAX_CONFIG_BYTES, label, "a model config")
    if not isinstance(config, dict):
        raise ValueError(f"{label} must hold a JSON object, got {type(config).__name__}")
    missing = [k for k in ("arch", "num_classes") if k not in config]
    if missing:
        raise ValueError(f"{label} lacks {', '.join(missing)}; a model config needs at least arch and num_classes")
    return validate_model_config(config, source=label)


def read_weights(path: str | Path, label: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a model.safetensors file; ValueError "not a safetensors file" for anything else
    (a pickle, a truncated file, an absurd header). Nothing is ever unpickled."""
    path = Path(path)
    label = str(path) if label is None else label
    _header_length(path, label)
    try:
        return load_file(path, device="cpu")
    except Exception as e:  # SafetensorError and friends: a malformed header or data section
        raise ValueError(f"{label} is not a safetensors file ({type(e).__name__}: {e})") from None


HEADER_BYTES_PER_TENSOR = 512
"""Room in a safetensors header for one tensor's entry (ours take about 100 bytes): a header larger than the model's
tensors need is refused before it is parsed (16 MB describing 250,000 empty tensors took 7 s and 360 MB)."""

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64, "BOOL": torch.bool, "C64": torch.complex64,
           "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


def header_budget(tensors: int) -> int:
    """The largest safetensors header a model of `tensors` state-dict entries may have."""
    return min(MAX_HEADER_BYTES, 4096 + HEADER_BYTES_PER_TENSOR * tensors)


def max_weights_bytes(config: dict[str, Any]) -> int:
    """The largest model.safetensors the model `config` describes can have (every tensor in float64, the widest
    dtype it takes, and the fullest header): a download's cap, measured on the meta device."""
    with torch.device("meta"):
        state = build_model(**config).state_dict()
    return 8 + header_budget(len(state)) + sum(8 * v.numel() for v in state.values())


def read_header(path: str | Path, tensors: int, label: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors a model.safetensors file declares, as meta tensors of their dtype and shape (nothing loaded), for
    `check_state_dict` before the data is read. A header with more room than `tensors` entries need is refused
    unparsed."""
    path = Path(path)
    label = str(path) if label is None else label
    budget = header_budget(tensors)
    length = _header_length(path, label)
    if length > budget:
        raise ValueError(f"{label} has a header of {length} bytes; the model's {tensors} tensors need at most "
                         f"{budget}: it is not a checkpoint of this model")
    with path.open("rb") as f:
        f.seek(8)
        raw = f.read(length)
    try:
        header = json.loads(raw)
        declared = {k: v for k, v in header.items() if k != "__metadata__"}
        out = {}
        for key, entry in declared.items():
            shape = entry["shape"]
            if not (isinstance(shape, list) and len(shape) <= 8 and all(type(n) is int and 0 <= n < 2**40
                                                                         for n in shape)):
                raise ValueError(f"{key} has shape {str(shape)[:60]}")
            if entry["dtype"] not in _DTYPES:
                raise ValueError(f"{key} is {str(entry['dtype'])[:20]!r}, not a dtype the model takes")
            out[key] = torch.empty(shape, dtype=_DTYPES[entry["dtype"]], device="meta")
    except RecursionError:   # JSON nested deeper than the parser goes: no header of ours
        raise ValueError(f"{label} is not a safetensors file of this model (its header is nested too deeply)") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        said = str(e)[:120]
        raise ValueError(f"{label} is not a safetensors file of this model (its header: {said})") from None
    return out


def _header_length(path: Path, label: str) -> int:
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
    length = int.from_bytes(head, "little") if len(head) == 8 else -1
    if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
        raise ValueError(f"{label} is not a safetensors file (its first 8 bytes do not give a plausible header "
                         "length); checkpoints store weights as safetensors, never as pickles")
    return length


MAX_CARD_BYTES = 2**20
"""A model card is prose plus Hub metadata (ours are a few kB): a larger README.md is refused unread."""


def model_card(directory: str | Path) -> str | None:
    """The README.md model card of a checkpoint dir, or None if it has none. One larger than `MAX_CARD_BYTES`
    (cards come from downloads) is a ValueError before anything is read, not cut or skipped: `train eval
    --update-card` and `train push` rewrite the card from what this returns."""
    path = Path(directory) / CARD_NAME
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_CARD_BYTES:
        raise ValueError(f"{CARD_NAME} is larger than {MAX_CARD_BYTES >> 20} MB, more than a model card holds")
    return path.read_text(encoding="utf-8")


# ---------------------------------------------------------------- state-dict checks

WEIGHT_DTYPES = frozenset({torch.float32, torch.float16, torch.bfloat16, torch.float64})
"""What a float tensor of the model may be stored as: the formats checkpoints are published in, cast to the model's
dtype on load. float8 is refused: its range (about +-448) needs scales that a plain state dict does not carry."""


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise ValueError naming the missing / unexpected keys and shape mismatches of `state_dict` vs `model`, or
    the first tensor of a dtype the model cannot take (`load_state_dict` casts silently: bool weights, int8 ...)."""
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
    _check_dtypes(expected, state_dict, source)


def _check_dtypes(expected: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Float tensors of the model take `WEIGHT_DTYPES` and finite values (BatchNorm variances >= 0); others
    (BatchNorm's int64 num_batches_tracked) only their own dtype. Called once the keys match; meta tensors (a
    header's, `read_header`) have no values to check."""
    for key, mine in expected.items():
        dtype = state_dict[key].dtype
        if mine.is_floating_point() and dtype not in WEIGHT_DTYPES:
            allowed = ", ".join(sorted(str(d) for d in WEIGHT_DTYPES))
            raise ValueError(f"{source}: {key} is {dtype}, not a floating dtype the model takes ({allowed})")
        if not mine.is_floating_point() and dtype != mine.dtype:
            raise ValueError(f"{source}: {key} is {dtype}; the model stores {mine.dtype}")
        value = state_dict[key]
        if value.is_meta or not mine.is_floating_point():
            continue
        cast = value.to(mine.dtype)   # a float64 1e300 is inf in float32
        if not bool(torch.isfinite(cast).all()):
            raise ValueError(f"{source}: {key} holds NaN or infinite values (as {mine.dtype}), which make every "
                             "logit NaN")
        if key.endswith("running_var") and bool((cast < 0).any()):
            raise ValueError(f"{source}: {key} holds negative variances")


def _listing(one: str, many: str, items: list[str], shown: int = 5) -> str:
    head = ", ".join(items[:shown]) + (f", ... ({len(items) - shown} more)" if len(items) > shown else "")
    return f"{len(items)} {one if len(items) == 1 else many} ({head})"
