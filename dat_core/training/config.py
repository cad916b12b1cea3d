"""Training configuration: dataclasses, TOML files and `key=value` overrides, validated by name.

One `TrainConfig` serves both stages; `stage` picks the step. Unknown keys and bad values are
rejected with the offending key named, so a typo never silently trains the wrong thing.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..pgd import NORMS


@dataclass
class DataConfig:
    dataset: str = "cifar10"         # cifar10 | cifar100 (official archives) | class-folder dir / .tar(.gz)
    root: str = "data"               # where official archives live (downloaded if missing)
    train_split: str = "train"       # split folder of a class-folder dataset ("" = no split level)
    image_size: int = 32
    val_size: int = 1000             # carved from train, deterministic; never tune on test
    ood: str = "uniform"             # uniform | lowfreq | image dir / archive (OOD seeds, stage 2)
    ood_holdout: int = 0             # OOD images kept out of the seeds (for OOD-detection evaluation)
    gen_augment: str = "crop_flip"   # real EBM batch ("original" in METHOD §3.2)
    clf_augment: str = "crop_flip_cutout"  # classification batch (AutoAugment not implemented)
    ood_augment: str = "crop_flip"
    cache_dir: str = ""              # decoded-image cache for archives ("" = none)
    lazy: bool = False               # directories: decode each batch's files on demand, not all up front


@dataclass
class ModelConfig:
    arch: str = "wrn-16-4"
    init: str = ""                   # checkpoint to start from: dir, Hub id, or "" (random init)


@dataclass
class AttackConfig:
    """Classification adversarial training: untargeted PGD on cross-entropy (METHOD §3.3 step 5)."""

    norm: str = "L2"
    eps: float = 0.5
    step_size: float = 0.1
    steps: int = 10
    random_start: bool = False


@dataclass
class ContrastiveConfig:
    """Stage-2 contrastive samples and the T curriculum (METHOD §3.3 step 2, §3.4)."""

    step_size: float = 0.1           # eta, L2-normalized steps, eps = inf
    start_steps: int = 0             # T at the start
    max_steps: int = 50              # T_max
    auc_threshold: float = 0.8
    window_images: int = 1000        # AUC window = ceil(window_images / batch_size) steps


@dataclass
class OptimConfig:
    name: str = "sgd"                # sgd (momentum, Nesterov) | adamw
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 5e-4
    schedule: str = "cosine"         # cosine | constant | step | onecycle
    warmup_steps: int = 0
    step_milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions, for "step"
    final_lr_fraction: float = 0.0   # cosine / onecycle end value as a fraction of lr


@dataclass
class TrainConfig:
    stage: str = "stage1"            # stage1 | stage2
    out_dir: str = "runs/default"
    seed: int = 0
    steps: int = 1000                # optimizer steps
    batch_size: int = 128            # global batch (split across DDP ranks), same for all loaders
    ema_decay: float = 0.999         # decay min(ema_decay, (1+n)/(10+n))
    device: str = "auto"             # auto | cpu | cuda | cuda:N
    autocast: str = "auto"           # auto (bf16 where native: CUDA, AVX512-BF16/AMX CPUs) | true | false
    channels_last: bool = True
    compile: bool = False
    fused_forward: bool = True       # stage 2: one forward for real+contrastive+adversarial (equivalent with frozen BN)
    log_every: int = 10
    ckpt_every: int = 100
    eval_every: int = 500            # 0 = only at the end
    eval_size: int = 1000            # validation images used by periodic evaluation
    eval_attack_steps: int = 10
    best_metric: str = "robust_accuracy"   # robust_accuracy | clean_accuracy
    sample_grid: bool = True         # class-conditional sample grid PNG at each evaluation
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ConfigError(ValueError):
    pass


_CHOICES = {
    "stage": ("stage1", "stage2"),
    "autocast": ("auto", "true", "false"),
    "best_metric": ("robust_accuracy", "clean_accuracy"),
    "attack.norm": NORMS,
    "optim.name": ("sgd", "adamw"),
    "optim.schedule": ("cosine", "constant", "step", "onecycle"),
}
_POSITIVE = ("steps", "batch_size", "log_every", "ckpt_every", "data.image_size", "optim.lr")
_NON_NEGATIVE = ("eval_every", "eval_size", "eval_attack_steps", "data.val_size", "data.ood_holdout", "attack.eps",
                 "attack.step_size", "attack.steps", "contrastive.step_size", "contrastive.start_steps",
                 "contrastive.max_steps", "contrastive.window_images", "optim.weight_decay",
                 "optim.warmup_steps", "optim.momentum")


def _set(obj: Any, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    target = obj
    for i, part in enumerate(parents):
        sub = getattr(target, part, None)
        if not dataclasses.is_dataclass(sub):
            raise ConfigError(f"unknown config key {'.'.join(parents[:i + 1])!r} (in {dotted!r})")
        target = sub
    fields = {f.name: f for f in dataclasses.fields(target)}
    if leaf not in fields or dataclasses.is_dataclass(getattr(target, leaf)):
        valid = ", ".join(sorted(fields))
        raise ConfigError(f"unknown config key {dotted!r}; valid keys here: {valid}")
    current = getattr(target, leaf)
    setattr(target, leaf, _coerce(dotted, value, current))


def _coerce(key: str, value: Any, current: Any) -> Any:
    kind = type(current)
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if kind is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [float(v) for v in value]
    if isinstance(value, bool):
        value = str(value).lower()
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value


def _flatten(table: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in table.items():
        key = f"{prefix}{k}"
        out += _flatten(v, key + ".") if isinstance(v, dict) else [(key, v)]
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """`optim.lr=0.01` -> ("optim.lr", 0.01); values are parsed as TOML, else kept as strings."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, raw = (s.strip() for s in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def validate(cfg: TrainConfig) -> TrainConfig:
    flat = dict(_flatten(cfg.to_dict()))
    for key, choices in _CHOICES.items():
        if flat[key] not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {flat[key]!r}")
    for key in _POSITIVE:
        if not flat[key] > 0:
            raise ConfigError(f"{key} must be > 0, got {flat[key]!r}")
    for key, value in flat.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key} must be finite, got {value!r}")
    for key in _NON_NEGATIVE:
        if flat[key] < 0:
            raise ConfigError(f"{key} must be >= 0, got {flat[key]!r}")
    if not 0 <= cfg.ema_decay < 1:
        raise ConfigError(f"ema_decay must be in [0, 1), got {cfg.ema_decay}")
    if not 0 <= cfg.contrastive.auc_threshold <= 1:
        raise ConfigError(f"contrastive.auc_threshold must be in [0, 1], got {cfg.contrastive.auc_threshold}")
    if cfg.contrastive.start_steps > cfg.contrastive.max_steps:
        raise ConfigError("contrastive.start_steps must be <= contrastive.max_steps")
    if cfg.stage == "stage2" and not cfg.model.init:
        raise ConfigError("stage2 starts from a stage-1 checkpoint: set model.init=DIR (or a Hub id)")
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] = (), **values: Any) -> TrainConfig:
    """Defaults <- TOML file <- keyword values <- `key=value` overrides, then validated."""
    cfg = TrainConfig()
    items: list[tuple[str, Any]] = []
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            items += _flatten(tomllib.loads(path.read_text()))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: invalid TOML: {e}") from None
    items += list(values.items())
    items += [parse_override(o) for o in overrides]
    for key, value in items:
        _set(cfg, key, value)
    return validate(cfg)

