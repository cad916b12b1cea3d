"""Explanation cards: one counterfactual as PNG + JSON that says exactly how to get it again.

The JSON holds the model source with its resolved revision and the sha256 of its weights, the sha256 of the
image as given, the exact model input x_0 (float32, zlib + base64: the resized input is not a uint8 image),
every parameter (and the mask or guide model when used), the device and dtype, the code version, the metrics
and a sha256 of all frames. `replay` loads the same model, checks the weights' hash, runs the path again and
compares the frames bit for bit (same device and dtype; across devices only approximately).
"""

from __future__ import annotations

import base64
import hashlib
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from dat_core.checkpoint import WEIGHTS_NAME, load_checkpoint_dir
from dat_core.files import read_json
from dat_core.guidance import CONE_ANGLE
from dat_core.loading import ModelSource, locate, resolve_source
from dat_core.models.config import field_errors
from dat_core.runtime import channels_last, model_device, resolve_device
from dat_core.version import code_version
from dat_core.zoo import weights_sha256

from .export import save_json
from .image import to_model_input
from .trajectory import Trajectory, counterfactual, model_info

CARD_FORMAT = "dat-explainer/explanation-card/1"
MAX_CARD_BYTES = 64 * 2 ** 20


def _pack(a: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(a)
    return {"dtype": str(a.dtype), "shape": list(a.shape), "zlib_base64": base64.b64encode(zlib.compress(
        a.tobytes(), 6)).decode("ascii")}


MAX_ARRAY_ELEMENTS = 4 * 1024 * 1024   # a 3 x 1024 x 1024 image fits; a decompression bomb does not


def _unpack(d: dict[str, Any]) -> np.ndarray:
    """An array written by `_pack`; its dtype, shape and size are checked before and while it is inflated."""
    try:
        dtype = np.dtype(d["dtype"])
        shape = [int(s) for s in d["shape"]]
        packed = base64.b64decode(d["zlib_base64"], validate=True)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"a malformed array in the card ({type(e).__name__})") from None
    if dtype not in (np.dtype(np.float32), np.dtype(np.bool_)):
        raise ValueError(f"an explanation card holds float32 or bool arrays, not {dtype}")
    if not 1 <= len(shape) <= 4 or min(shape) < 1 or math.prod(shape) > MAX_ARRAY_ELEMENTS:
        raise ValueError(f"an array of shape {shape[:8]} does not belong in an explanation card")
    expected = math.prod(shape) * dtype.itemsize
    try:
        raw = zlib.decompressobj().decompress(packed, expected + 1)   # never inflates past what the shape needs
    except zlib.error:
        raise ValueError("a malformed array in the card (not zlib data)") from None
    if len(raw) != expected:
        raise ValueError(f"a malformed array in the card ({len(raw)} bytes for shape {shape})")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


SHA256 = r"^[0-9a-f]{64}$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)   # JSON's NaN/Infinity are no card values


class ModelIdentity(_Section):
    source: str = Field(min_length=1, max_length=1000)
    kind: Literal["bundled", "local", "hub"]
    revision: str | None = Field(max_length=200)
    weights_sha256: str = Field(pattern=SHA256)


class PackedArray(_Section):
    dtype: str
    shape: list[StrictInt]
    zlib_base64: str


class CardImage(_Section):
    sha256: str | None = Field(pattern=SHA256)
    x0: PackedArray
    xT: PackedArray


class CardParams(_Section):
    norm: str                                  # values are checked where they are used, by `counterfactual`
    eps: float | Literal["inf"]
    step_size: float
    steps: StrictInt
    objective: str
    cone_angle: float = CONE_ANGLE


class CardMetrics(_Section):
    source_name: str
    confidence_target: float


class Card(_Section):
    """The fields `replay` reads, each checked before anything runs: a card may come from anyone."""

    model: ModelIdentity
    guide: ModelIdentity | None = None
    image: CardImage
    mask: PackedArray | None = None
    target: StrictInt
    target_name: str
    params: CardParams
    device: str = Field(max_length=64)
    dtype: Literal["float32", "bfloat16 autocast"]
    memory_format: Literal["channels_last", "contiguous"] = "contiguous"
    metrics: CardMetrics
    frames_sha256: str = Field(pattern=SHA256)

    @field_validator("device")
    @classmethod
    def _a_device(cls, device: str) -> str:
        """A device name torch knows (another machine's GPU too): compared after the path runs, so a name that is
        none would end a whole replay in a traceback."""
        try:
            if torch.device(device).type in ("cpu", "cuda", "mps"):
                return device
        except (RuntimeError, TypeError):
            pass
        raise ValueError(f"{device!r} is not a device (cpu, cuda, cuda:N or mps)")


def frames_sha256(traj: Trajectory) -> str:
    return hashlib.sha256(np.ascontiguousarray(traj.images, dtype=np.float32).tobytes()).hexdigest()


def _located(source: str, revision: str | None = None) -> tuple[dict[str, Any], Path]:
    """A model's identity (its source as given, the commit a Hub revision resolved to, its weights' sha256) and
    the checkpoint directory it was read from (resolved and downloaded once)."""
    resolved = resolve_source(source, revision)
    directory = locate(resolved)
    if resolved.kind == "local":   # named absolute ("~" expanded, as it was loaded): it replays from any folder
        source = str(Path(source).expanduser().resolve())
    return located_identity(resolved, directory, str(source)), directory


def located_identity(resolved: ModelSource, directory: Path, source: str) -> dict[str, Any]:
    """The identity of a model already located in `directory` (the app's loaded models), named `source`."""
    commit = directory.name if resolved.kind == "hub" and len(directory.name) == 40 else None
    return {"source": source, "kind": resolved.kind, "revision": commit or resolved.revision,
            "weights_sha256": weights_sha256(directory / WEIGHTS_NAME)}


def model_identity(source: str, revision: str | None = None) -> dict[str, Any]:
    return _located(source, revision)[0]


def _load_checked(identity: dict[str, Any], device: str | torch.device) -> nn.Module:
    """The model a card names, refused unless its weights are the ones the card was made with."""
    found, directory = _located(identity["source"], identity["revision"] if identity["kind"] == "hub" else None)
    if found["weights_sha256"] != identity["weights_sha256"]:
        raise ValueError(f"the weights of {identity['source']} are not the ones the card was made with")
    return load_checkpoint_dir(directory).to(device)


def _is_channels_last(model: nn.Module) -> bool:
    conv = next((p for p in model.parameters() if p.dim() == 4), None)
    return conv is not None and conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


def make_card(traj: Trajectory, model: nn.Module, source: str, revision: str | None = None, *,
              image_sha256: str | None = None,
              autocast: bool = False, device: str | torch.device = "cpu", mask: torch.Tensor | None = None,
              guide: str | None = None, model_id: dict[str, Any] | None = None) -> dict[str, Any]:
    """The card of one trajectory computed by `model` (loaded from `source`; `guide` by its source) on `device`;
    `model_id`: the model's identity when the caller located it already (`located_identity`)."""
    params = {k: ("inf" if v == math.inf else v) for k, v in traj.params.items()}
    return {
        "format": CARD_FORMAT, "code_version": code_version(),
        "model": model_id or model_identity(source, revision),
        "guide": None if guide is None else model_identity(guide),
        "image": {"sha256": image_sha256, "x0": _pack(traj.images[0]), "xT": _pack(traj.images[-1])},
        "mask": None if mask is None else _pack(mask.detach().cpu().numpy().astype(bool)),
        "target": traj.target, "target_name": traj.class_names[traj.target], "params": params,
        "device": str(device), "dtype": "bfloat16 autocast" if autocast else "float32",
        "memory_format": "channels_last" if _is_channels_last(model) else "contiguous",
        "metrics": {"source_name": traj.class_names[traj.source], "flip_step": traj.flip_step,
                    "confidence_target": float(traj.confidence[-1]), "l2": float(traj.l2[-1]),
                    "linf": float(traj.linf[-1]), "energy": float(traj.energy[-1])},
        "frames_sha256": frames_sha256(traj),
    }


def write_card(card: dict[str, Any], traj: Trajectory, out: Path, scale: int = 8) -> list[Path]:
    """card.json and card.png (x_0 beside x_T)."""
    from dat_core.sampling import make_grid, save_png

    out.mkdir(parents=True, exist_ok=True)
    save_png(make_grid(traj.frames[[0, -1]], nrow=2, scale=scale), out / "card.png")
    return [save_json(card, out / "card.json"), out / "card.png"]


@dataclass
class Replay:
    trajectory: Trajectory
    identical: bool            # every frame equal, bit for bit
    max_abs_diff: float        # largest pixel difference of x_T (0.0 when every frame is identical)
    same_setting: bool         # the card's device and dtype were used


def read_card(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    card = read_json(path, MAX_CARD_BYTES, path.name, "an explanation card")
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise ValueError(f"{path.name} is not an explanation card ({CARD_FORMAT})")
    try:
        Card.model_validate(card)
    except ValidationError as e:
        raise ValueError(f"{path.name} is not a valid explanation card: {field_errors(e)}") from None
    return card


def _replay_device(card: dict[str, Any], device: str | torch.device | None) -> torch.device:
    """The device asked for, else the card's; a card made on a GPU says how to replay it here."""
    if device is not None:
        return resolve_device(device)
    try:
        return resolve_device(card["device"])
    except ValueError as e:
        raise ValueError(f"the card was made on {card['device']!r}, which is not here ({e.args[0].split(';')[0]}): "
                         f"pass --device cpu to replay it (approximately: another device rounds differently)") from None


def check_image(card: dict[str, Any], image: str | Path) -> str:
    """Say whether the file `image` is the one the card explains: its sha256 when the card holds one, else (an
    app upload not hashed) whether it gives the card's exact x_0. A ValueError when it is not."""
    path = Path(image).expanduser()
    want = card["image"].get("sha256")
    if want is not None:
        with open(path, "rb") as f:
            found = hashlib.file_digest(f, "sha256").hexdigest()
        if found != want:
            raise ValueError(f"{path.name} is not the card's image (its sha256 differs from the card's)")
        return f"{path.name} is the card's image (sha256)"
    x0 = _unpack(card["image"]["x0"])
    if not np.array_equal(to_model_input(path, int(x0.shape[-1]))[0].numpy(), x0):
        raise ValueError(f"{path.name} is not the card's image (it does not give the card's x_0)")
    return f"{path.name} gives the card's exact x_0 (the card holds no sha256 of its file)"


def replay(path: str | Path, device: str | torch.device | None = None) -> Replay:
    """Run the card's counterfactual again and compare every frame with the card's hash and x_T."""
    card = read_card(path)
    x0 = torch.from_numpy(_unpack(card["image"]["x0"]))[None]
    mask = None if card.get("mask") is None else torch.from_numpy(_unpack(card["mask"]))
    if x0.dim() != 4 or x0.shape[1] != 3:
        raise ValueError(f"image.x0 must be one 3 x H x W image, not of shape {list(x0.shape[1:])}")
    if mask is not None and (mask.dtype != torch.bool or list(mask.shape) != [1, 1, *x0.shape[2:]]):
        raise ValueError(f"mask must be a 1 x 1 x H x W bool array with the image's H x W, not {mask.dtype} "
                         f"{list(mask.shape)}")
    model = _load_checked(card["model"], _replay_device(card, device))
    if card.get("memory_format") == "channels_last":
        model = channels_last(model)
    guide = _load_checked(card["guide"], model_device(model)) if card.get("guide") else None
    size, names, _ = model_info(model)
    if tuple(x0.shape[2:]) != (size, size):   # it was resized, and the failure then blamed the source class
        raise ValueError(f"image.x0 is {x0.shape[3]}x{x0.shape[2]} px; the card's model takes {size}x{size}")
    if not card["target"] < len(names) or names[card["target"]] != card["target_name"]:
        raise ValueError(f"target_name {card['target_name'][:40]!r} is not the model's class {card['target']}")
    p = dict(card["params"])
    autocast = card["dtype"] != "float32"
    traj = _run(model, x0, card["target"], p, autocast, mask, guide)
    if names[traj.source] != card["metrics"]["source_name"]:
        raise ValueError(f"metrics.source_name {card['metrics']['source_name'][:40]!r} is not the class the model "
                         f"predicts at x_0 ({names[traj.source]})")
    here, made = model_device(model), torch.device(card["device"])   # "cpu:0" is "cpu", "cuda" is "cuda:0"
    same = here.type == made.type and (here.index or 0) == (made.index or 0)
    identical = frames_sha256(traj) == card["frames_sha256"]
    return Replay(traj, identical, 0.0 if identical else _diff(card, traj), same)


def _run(model: nn.Module, x0: torch.Tensor, target: int, p: dict[str, Any], autocast: bool,
         mask: torch.Tensor | None, guide: nn.Module | None) -> Trajectory:
    eps = math.inf if p["eps"] == "inf" else float(p["eps"])
    extra = {} if guide is None else {"guide": guide, "cone_angle": float(p.get("cone_angle", CONE_ANGLE))}
    m = None if mask is None else mask[0, 0].float()
    return counterfactual(model, x0, int(target), norm=p["norm"], eps=eps, step_size=float(p["step_size"]),
                          steps=int(p["steps"]), objective=p["objective"], autocast=autocast, mask=m, **extra)


def _diff(card: dict[str, Any], traj: Trajectory) -> float:
    """Largest pixel difference between the card's x_T and the replayed one."""
    return float(np.abs(traj.images[-1] - _unpack(card["image"]["xT"])).max())
