"""Checks of a model config (a checkpoint's config.json) before anything is built from it, and `build_model`,
the one constructor, which checks the config it makes the same way.

A config may come from anyone (a Hub repo, an uploaded folder), so every field is checked for type,
finiteness and range, and the model it describes must stay under a size and memory budget: one
visitor's `image_size: 2048` must not stall a shared server. Errors name the field.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .base import Classifier, check_class_names, default_class_names
from .registry import find_arch

MAX_PARAMETERS = 400_000_000
"""Largest model we load (the paper's largest: WRN-50-4 with 223M parameters, ConvNeXt-L-CvSt with 198M)."""

TEMPERATURE_RANGE = (0.01, 100.0)
"""Calibration temperatures a config may hold: beyond them the logits say (almost) nothing or everything."""

NUM_CLASSES = (1, 22_000)
"""The class counts a config may hold (ImageNet-21k has 21,843)."""

IMAGE_SIZE = (8, 512)
"""The input sides a config may hold, in pixels."""

NORMALIZATION_RANGE = (1e-4, 1e4)
"""The smallest std and largest |mean| or std a config may hold: the model keeps them as float32, where a std of
5e-324 is 0 and a mean of 1e308 is inf, so the logits of every image were NaN."""

MAX_ACTIVATION_BYTES = 2 * 2**30
"""Largest fp32 activation memory of one image's forward pass (a PGD step keeps about this for backward);
the paper's largest, ConvNeXt-L-CvSt at 256 px, needs about 0.4 GiB by this count."""


class ModelConfig(BaseModel):
    """The fields `build_model` reads; other keys (energy quantiles, training notes) pass through."""

    model_config = ConfigDict(extra="allow", strict=True)

    arch: str = Field(min_length=1, max_length=64)
    num_classes: int = Field(ge=NUM_CLASSES[0], le=NUM_CLASSES[1])
    image_size: int | None = Field(default=None, ge=IMAGE_SIZE[0], le=IMAGE_SIZE[1])
    class_names: list[str] | None = None
    mean: list[float] | None = Field(default=None, min_length=3, max_length=3)
    std: list[float] | None = Field(default=None, min_length=3, max_length=3)
    temperature: float | None = Field(default=None, ge=TEMPERATURE_RANGE[0], le=TEMPERATURE_RANGE[1],
                                      allow_inf_nan=False)
    # read by the tools beyond the model itself: typicality, the benchmark's energy band, model cards
    energy_quantiles: dict[str, float] | None = Field(default=None, min_length=1, max_length=1000)
    code_version: dict[str, str | None] | None = Field(default=None, max_length=10)

    @field_validator("arch")
    @classmethod
    def _known(cls, arch: str) -> str:
        find_arch(arch)  # ValueError lists the known architectures
        return arch

    @field_validator("mean", "std", "temperature", mode="before")
    @classmethod
    def _numbers(cls, v: Any) -> Any:  # JSON ints are fine as floats; bools are not numbers
        if isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            return [float(x) for x in v]
        if isinstance(v, int) and not isinstance(v, bool):
            return float(v)
        return v

    @field_validator("mean", "std")
    @classmethod
    def _finite(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and not all(math.isfinite(x) for x in v):
            raise ValueError("must hold finite numbers")
        return v

    @field_validator("mean")
    @classmethod
    def _pixel_scale(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and not all(abs(x) <= NORMALIZATION_RANGE[1] for x in v):
            raise ValueError(f"must lie within ±{NORMALIZATION_RANGE[1]:g} (pixels are in [0, 1])")
        return v

    @field_validator("std")
    @classmethod
    def _positive(cls, v: list[float] | None) -> list[float] | None:
        lo, hi = NORMALIZATION_RANGE
        if v is not None and not all(lo <= x <= hi for x in v):
            raise ValueError(f"must be in [{lo:g}, {hi:g}] in every channel")
        return v

    @field_validator("energy_quantiles")
    @classmethod
    def _quantiles(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for level, energy in (v or {}).items():
            try:
                ok = 0 < float(level) < 1 and math.isfinite(energy)
            except ValueError:
                ok = False
            if not ok:
                raise ValueError('must map quantile levels in (0, 1) to finite energies, like {"0.5": -3.1}; '
                                 f"got {level[:20]!r}: {energy!r}")
        return v

    @field_validator("code_version")
    @classmethod
    def _short(cls, v: dict[str, str | None] | None) -> dict[str, str | None] | None:
        if v is not None and any(len(k) > 64 or len(x or "") > 200 for k, x in v.items()):
            raise ValueError("keys of at most 64 and values of at most 200 characters")
        return v

    @field_validator("class_names")
    @classmethod
    def _names(cls, v: list[str] | None) -> list[str] | None:
        return v if v is None else check_class_names(v)

    @model_validator(mode="after")
    def _one_name_per_class(self) -> "ModelConfig":
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names holds {len(self.class_names)} class names for num_classes="
                             f"{self.num_classes}")
        return self


def field_errors(e: ValidationError) -> str:
    """The first few errors of a pydantic check, each as `dotted.field: message`."""
    parts = []
    for err in e.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def check_fields(config: dict[str, Any], source: str = "config.json") -> None:
    """ValueError naming the field unless every field of `config` is one a checkpoint may hold (no size check:
    `build_model` calls this, so a model it builds is one `save_model` can write and `load_model` read again)."""
    try:
        ModelConfig.model_validate(config)
    except ValidationError as e:
        raise ValueError(f"{source} is not a valid model config: {field_errors(e)}") from None


def validate_model_config(config: Any, source: str = "config.json") -> dict[str, Any]:
    """`config` checked field by field and against the size budget; ValueError names the field."""
    if not isinstance(config, dict):
        raise ValueError(f"{source} must hold a JSON object, got {type(config).__name__}")
    check_fields(config, source)
    try:
        params, activations = model_cost(config)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    except Exception as e:  # noqa: BLE001 (PyTorch's own refusals: a kernel larger than the image, 0 channels)
        said = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ValueError(f"{source}: arch {config['arch']!r} cannot be built at image_size="
                         f"{config.get('image_size')} ({said})") from None
    if params > MAX_PARAMETERS:
        raise ValueError(f"{source}: arch {config['arch']!r} with num_classes={config['num_classes']} has "
                         f"{params / 1e6:.0f}M parameters, more than the {MAX_PARAMETERS / 1e6:.0f}M we load")
    if activations > MAX_ACTIVATION_BYTES:
        raise ValueError(f"{source}: arch {config['arch']!r} at image_size={config.get('image_size')} needs about "
                         f"{activations / 2**30:.1f} GiB of activations per image, more than the "
                         f"{MAX_ACTIVATION_BYTES / 2**30:.0f} GiB we allow")
    return config


def model_cost(config: dict[str, Any]) -> tuple[int, int]:
    """(parameters, fp32 activation bytes of one image's forward) of the model `config` describes,
    measured on PyTorch's meta device: nothing is allocated and no arithmetic runs."""
    with torch.device("meta"):
        model = build_model(**config)
        size = int(model.config["image_size"])
        total = 0

        def count(_module, _inputs, output) -> None:
            nonlocal total
            if isinstance(output, torch.Tensor):
                total += output.numel() * 4

        hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
        try:
            model.eval()(torch.empty(1, 3, size, size))
        finally:
            for h in hooks:
                h.remove()
    return sum(p.numel() for p in model.parameters()), total


def build_model(arch: str, num_classes: int = 10, image_size: int | None = None,
                class_names: list[str] | None = None, mean: tuple[float, ...] | None = None,
                std: tuple[float, ...] | None = None, **extra: Any) -> Classifier:
    """Build a freshly initialised classifier; the arguments become its `.config` (and config.json).

    Unset (None) image size and normalization take the architecture's registered defaults; `extra` keys
    (e.g. stored energy quantiles) are kept in the config untouched. Every field is checked before anything
    is built (`check_fields`): a model built here saves as a checkpoint that loads again, and a class
    count of 10**8 is refused before its default names or its head are made.
    """
    if not isinstance(arch, str):   # the one field read before the check: it picks the defaults the check sees
        raise ValueError(f"arch must be the name of an architecture, not a {type(arch).__name__}")
    arch = arch.lower()
    spec, params = find_arch(arch)
    config = dict(extra, arch=arch, num_classes=num_classes,
                  image_size=spec.image_size if image_size is None else image_size,
                  class_names=_listed(class_names), mean=_listed(spec.normalization[0] if mean is None else mean),
                  std=_listed(spec.normalization[1] if std is None else std))
    check_fields(config, source=f"the config of {arch}")
    if config["class_names"] is None:
        config["class_names"] = default_class_names(num_classes)
    return spec.builder(config, **params)


def _listed(values: Any) -> Any:
    """A tuple, list or array as a list (as config.json holds it); anything else as it is, for the check to name."""
    if hasattr(values, "tolist"):  # numpy arrays and tensors
        return values.tolist()
    return list(values) if isinstance(values, (tuple, list)) else values
