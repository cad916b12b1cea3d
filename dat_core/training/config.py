"""Training configuration: pydantic models of the TOML tables, `key=value` overrides, errors by dotted key.

One `TrainConfig` serves both stages; `stage` picks the step. Every value is checked against its range
or its choices, unknown keys are rejected (`extra="forbid"`), and the checks that involve two keys run
once the whole config is known; a `ConfigError` names the offending key, so a typo or a bad value never
silently trains the wrong thing. `config_schema()` is the JSON schema of it all (`python -m train schema`).
"""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..data.augment import AUGMENTATIONS
from ..data.seeds import NOISE_KINDS, SEED_KINDS
from ..models import find_arch
from ..models.config import IMAGE_SIZE
from ..pgd import NORMS, check_pixel_units
from ..runtime import AUTOCAST_CHOICES


class ConfigError(ValueError):
    """A bad config file, key or value (the CLI's exit code 2)."""


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic's lax mode would read true as 1
        raise ValueError("must be a number, not true/false")
    if isinstance(value, str):   # and "2" as 2: a quoted number in TOML is text, most likely a slip
        raise ValueError(f"must be a number, not the text {value[:40]!r} (write it without quotes)")
    return value


MAX_INT = 2 ** 53
"""The largest integer a config takes: beyond it a count means nothing here and overflows C sizes (a window of
10**20 steps ended in an OverflowError after the data had loaded)."""
Int = Annotated[int, BeforeValidator(_not_bool), Field(le=MAX_INT)]
Float = Annotated[float, BeforeValidator(_not_bool)]
PositiveInt = Annotated[Int, Field(ge=1)]
Count = Annotated[Int, Field(ge=0)]
Fraction = Annotated[Float, Field(ge=0, le=1)]
Augment = Literal[tuple(AUGMENTATIONS)]  # type: ignore[valid-type]


def _path(value: str) -> str:
    """A path that is blank meant the current folder (`data.root=` downloaded CIFAR into it) or one named "  "."""
    if not value.strip():
        raise ValueError("is blank: give a file or folder")
    return value


def _optional_path(value: str) -> str:
    """A path where "" means none: only "  " (a slip, an unset variable) is blank."""
    if value and not value.strip():
        raise ValueError('is blank: give a file or folder, or "" for none')
    return value


PathText = Annotated[str, AfterValidator(_path)]
OptionalPath = Annotated[str, AfterValidator(_optional_path)]
_DEVICE = r"^(auto|cpu|mps|cuda(:\d+)?)$"


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, coerce_numbers_to_str=True,
                              validate_assignment=True)


class DataConfig(_Table):
    dataset: PathText = Field("cifar10",
                              description="cifar10 | cifar100 (official archives) | class-folder dir / .tar(.gz)")
    root: PathText = Field("data", description="where official archives live (downloaded if missing)")
    train_split: OptionalPath = Field("train",
                                      description='split folder of a class-folder dataset ("" = no split level)')
    image_size: Int = Field(32, ge=IMAGE_SIZE[0], le=IMAGE_SIZE[1],  # what a checkpoint's config can hold
                            description="side of the square training images, pixels")
    val_size: Count = Field(1000, description="images carved from train for validation, deterministic (never tune "
                                              "on test); 0 trains on all of them and selects the last EMA weights")
    ood: PathText = Field("uniform",
                          description="OOD seeds of stage 2: uniform | lowfreq | image dir / archive")
    ood_holdout: Count = Field(0, description="OOD images kept out of the seeds (for OOD-detection evaluation)")
    ood_noise_fraction: Fraction = Field(0.0, description="share of each OOD seed batch replaced by noise seeds "
                                                          "(half uniform, half lowfreq) when data.ood is an image set")
    ood_seed_bank: Count = Field(0, description="OOD images carved out of the seeds (after the holdout) for the "
                                                "sampling seed bank (`python -m train seeds`): never trained on")
    gen_augment: Augment = Field("crop_flip", description='real EBM batch ("original" in METHOD §3.2)')
    clf_augment: Augment = Field("crop_flip_cutout", description='classification batch; "autoaugment_cutout" is '
                                 "the paper's CIFAR pipeline (crop, flip, AutoAugment CIFAR-10 policy, Cutout)")
    ood_augment: Augment = Field("crop_flip", description="OOD seed batch")
    cache_dir: OptionalPath = Field("", description='decoded-image cache for archives ("" = none)')
    lazy: bool = Field(False, description="directories: decode each batch's files on demand, not all up front")
    allow_empty_classes: bool = Field(False, description="keep a class folder that is empty or whose images are "
                                                        "all unreadable (it trains with zero images)")

    @field_validator("train_split")
    @classmethod
    def _not_test(cls, split: str) -> str:
        """Never train (nor tune) on a test split: `train eval --split test` would then report training accuracy."""
        if split.strip().lower() == "test":
            raise ValueError("is the test split: training never reads it (evaluate on it with `train eval`); "
                             "use the training split, e.g. train")
        return split

    @field_validator("gen_augment", "clf_augment", "ood_augment")
    @classmethod
    def _installed(cls, name: str) -> str:
        """AutoAugment's equalize is kornia's, imported at its first draw: without kornia a run failed there."""
        if "autoaugment" in name and importlib.util.find_spec("kornia") is None:
            raise ValueError(f"{name} needs kornia: pip install kornia (or pip install '.[train]')")
        return name


class ModelConfig(_Table):
    arch: str = Field("wrn-16-4", description="architecture name from the registry (e.g. wrn-34-10, resnet50)")
    init: OptionalPath = Field("", description='checkpoint to start from: dir, Hub id, or "" (random init)')

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        find_arch(arch)  # ValueError listing the known names
        return arch


class AttackConfig(_Table):
    """Classification adversarial training: untargeted PGD on cross-entropy (METHOD §3.3 step 5)."""

    norm: Literal[tuple(NORMS)] = "L2"  # type: ignore[valid-type]
    eps: Float = Field(0.5, ge=0, description="radius of the threat model in [0,1] pixel space")
    step_size: Float = Field(0.1, gt=0, description="PGD step (the periodic evaluation's attack too)")
    steps: Count = Field(10, description="PGD steps (0 = standard, non-adversarial training)")
    random_start: bool = False
    pgd: Literal["pgd", "argmin"] = Field("pgd", description='pgd: the last iterate | argmin: InNOut\'s default '
                                          "(the authors' stage-1 code): momentum on L1-normalized gradients, the "
                                          "highest-loss iterate (training/attack.py)")
    momentum: Float = Field(0.9, ge=0, lt=1, description="argmin: the velocity's momentum")


MAX_CHAIN_BYTES = 16 << 30
"""Persistent contrastive chains per rank, in bytes: the official 10,000 at 224 px is 6 GiB; a typo's 200 million
was a 614 GB allocation that failed, with a traceback, after the data had loaded."""


class ContrastiveConfig(_Table):
    """Stage-2 contrastive samples and the T curriculum (METHOD §3.3 step 2, §3.4)."""

    step_size: Float = Field(0.1, gt=0, description="eta: L2-normalized steps, eps = inf")
    start_steps: Count = Field(0, description="T at the start")
    max_steps: Count = Field(50, description="T_max")
    auc_threshold: Fraction = 0.8
    window_images: PositiveInt = Field(1000, description="AUC window = ceil(window_images / batch_size) steps")
    buffer_size: Count = Field(0, description="persistent contrastive chains per rank (0 = restart every sample "
                                              "from an OOD seed each step, as the paper; see training/chains.py)")
    reinit: Fraction = Field(0.05, description="with buffer_size > 0: fraction of each batch restarted from seeds")


class OptimConfig(_Table):
    name: Literal["sgd", "adamw"] = Field("sgd", description="sgd (momentum, Nesterov) | adamw")
    lr: Float = Field(0.1, gt=0, description="stage 2 without one: 1e-3 (STAGE2_OPTIM)")
    momentum: Float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    betas: list[Annotated[Float, Field(ge=0, lt=1)]] = Field([0.9, 0.95], min_length=2, max_length=2,
                                                             description="AdamW (beta1, beta2)")
    weight_decay: Float = Field(5e-4, ge=0, lt=1)
    decay_norm_and_bias: bool = Field(True, description="weight decay on every parameter, as the official code; "
                                                        "false exempts BatchNorm/LayerNorm affine parameters and "
                                                        "biases (every parameter with one dimension)")
    schedule: Literal["cosine", "constant", "step", "onecycle"] = Field(
        "cosine", description="stage 2 without one: constant (STAGE2_OPTIM)")
    warmup_steps: Count = Field(0, description="linear warm-up steps (fewer than `steps`)")
    step_milestones: list[Annotated[Float, Field(gt=0, lt=1)]] = Field(
        [0.5, 0.75], description='fractions of training, increasing, where "step" divides the lr by 10')
    final_lr_fraction: Fraction = Field(0.0, description="cosine / onecycle end value as a fraction of lr")

    @field_validator("step_milestones")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError("must increase")
        return v


def _autocast(value: Any) -> Any:
    return str(value).lower() if isinstance(value, bool) else value  # TOML `autocast = true`


STAGE2_OPTIM = {"lr": 1e-3, "schedule": "constant"}
"""Stage 2's optimizer defaults where its config names none: the paper fine-tunes at a constant 1e-3 (METHOD §3.5;
the official code refuses any other schedule), not at stage 1's cosine from 0.1."""


class TrainConfig(_Table):
    stage: Literal["stage1", "stage2"] = "stage1"
    out_dir: PathText = "runs/default"
    seed: Int = Field(0, ge=0, lt=2 ** 32)
    steps: PositiveInt = Field(1000, description="optimizer steps")
    batch_size: PositiveInt = Field(128, description="global batch (split across DDP ranks), same for all loaders")
    ema_decay: Float = Field(0.999, ge=0, lt=1, description="EMA decay min(ema_decay, (1+n)/(10+n))")
    device: str = Field("auto", pattern=_DEVICE, description="auto | cpu | cuda | cuda:N | mps")
    autocast: Annotated[Literal[tuple(AUTOCAST_CHOICES)], BeforeValidator(_autocast)] = Field(  # type: ignore
        "auto", description="bf16 autocast: auto (where native: CUDA, AVX512-BF16/AMX CPUs) | true | false")
    channels_last: bool = True
    compile: bool = False
    fused_forward: bool = Field(True, description="stage 2: one forward for real+contrastive+adversarial")
    log_every: PositiveInt = 10
    ckpt_every: PositiveInt = Field(100, description="state.pt every this many steps (and on SIGTERM/SIGINT)")
    eval_every: Count = Field(500, description="0 = only at the end")
    eval_size: Count = Field(1000, description="validation images used by periodic evaluation "
                                               "(0 only with data.val_size = 0)")
    eval_attack_steps: Count = 10
    best_metric: Literal["robust_accuracy", "clean_accuracy"] = "robust_accuracy"
    sample_grid: bool = Field(True, description="class-conditional sample grid PNG at each evaluation")
    sample_seeds: Literal[tuple(SEED_KINDS)] = Field(  # type: ignore[valid-type]
        SEED_KINDS[0], description="seeds of the sample grid: bank (out-of-distribution photos, METHOD §4) | "
                                   "gaussian (class-conditional, CIFAR-10 only) | uniform | lowfreq")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    contrastive: ContrastiveConfig = Field(default_factory=ContrastiveConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)

    @model_validator(mode="before")
    @classmethod
    def _stage_defaults(cls, values: Any) -> Any:
        """`STAGE2_OPTIM` under whatever the tables set themselves."""
        if isinstance(values, dict) and values.get("stage") == "stage2" and isinstance(values.get("optim", {}), dict):
            values = {**values, "optim": {**STAGE2_OPTIM, **values.get("optim", {})}}
        return values

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        """Checks that involve two keys; each message starts with the key to change."""
        if self.stage == "stage2" and not self.model.init:
            raise ValueError("model.init: stage2 starts from a stage-1 checkpoint: set model.init=DIR (or a Hub id)")
        if self.optim.warmup_steps and self.optim.warmup_steps >= self.steps:
            raise ValueError(f"optim.warmup_steps ({self.optim.warmup_steps}) must be smaller than steps "
                             f"({self.steps})")
        if self.contrastive.start_steps > self.contrastive.max_steps:
            raise ValueError(f"contrastive.start_steps ({self.contrastive.start_steps}) must be <= "
                             f"contrastive.max_steps ({self.contrastive.max_steps})")
        if 0 < self.contrastive.buffer_size < self.batch_size:
            raise ValueError(f"contrastive.buffer_size ({self.contrastive.buffer_size}) must be 0 (restarts) or at "
                             f"least batch_size ({self.batch_size})")
        if self.stage == "stage2" and self.data.ood in NOISE_KINDS:   # noise seeds: no images to carve or mix
            given = [k for k in ("ood_holdout", "ood_seed_bank", "ood_noise_fraction") if getattr(self.data, k)]
            if given:
                raise ValueError(f"data.{', data.'.join(given)}: {'it needs' if len(given) == 1 else 'they need'} "
                                 f"OOD images, and data.ood = {self.data.ood} is noise: set data.ood to an image "
                                 "folder or archive")
        chains = self.contrastive.buffer_size * 3 * self.data.image_size ** 2 * 4   # fp32 samples, per rank
        if chains > MAX_CHAIN_BYTES:
            raise ValueError(f"contrastive.buffer_size ({self.contrastive.buffer_size}) at {self.data.image_size} px "
                             f"holds {chains / 2**30:.0f} GiB of chains per rank, more than the "
                             f"{MAX_CHAIN_BYTES >> 30} GiB allowed")
        if self.data.dataset in ("cifar10", "cifar100") and self.data.image_size != 32:
            raise ValueError(f"data.image_size: {self.data.dataset} images are 32 px, got {self.data.image_size}")
        if self.data.val_size and not self.eval_size:   # no metric: best/ would never be chosen, nor written
            raise ValueError(f"eval_size: 0 measures nothing on the {self.data.val_size} validation images, so best/ "
                             "is never chosen; set eval_size > 0, or data.val_size=0 (best/ = the last weights)")
        if self.attack.steps and not self.attack.eps:  # PGD in a ball of radius 0 returns x: standard training
            raise ValueError("attack.eps must be > 0 when attack.steps > 0 (attack.steps=0 trains without an attack)")
        if self.attack.pgd == "argmin" and self.attack.random_start:
            raise ValueError("attack.random_start: the argmin attack starts at the image, as InNOut's default")
        for key in ("eps", "step_size"):
            try:
                check_pixel_units(self.attack.norm, **{key: getattr(self.attack, key)})
            except ValueError as e:
                raise ValueError(f"attack.{key}: {e}") from None
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


def config_schema() -> dict[str, Any]:
    """The JSON schema of a training config (TOML tables = objects; ranges, choices, descriptions)."""
    return TrainConfig.model_json_schema()


# ---------------------------------------------------------------- reading files and overrides

def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _table_keys(loc: tuple) -> list[str]:
    model: Any = TrainConfig
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        sub = getattr(field, "annotation", None)
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return []
        model = sub
    return sorted(model.model_fields)


def _describe(error: ValidationError) -> str:
    lines = []
    for e in error.errors():
        key, kind = _dotted(e["loc"]), e["type"]
        if kind == "extra_forbidden":
            lines.append(f"unknown config key {key!r}; valid keys here: {', '.join(_table_keys(e['loc'][:-1]))}")
        elif not key:  # a check across keys names them in its message
            lines.append(e["msg"].removeprefix("Value error, "))
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: {msg[:1].lower()}{msg[1:]} (got {e['input']!r})")
    return "invalid config: " + "; ".join(lines)


def validate(values: dict[str, Any] | TrainConfig) -> TrainConfig:
    """A TrainConfig from nested tables (or a TrainConfig re-checked); ConfigError names every bad key."""
    try:
        return TrainConfig.model_validate(values.to_dict() if isinstance(values, TrainConfig) else values)
    except ValidationError as e:
        raise ConfigError(_describe(e)) from None


def _set(tables: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    target = tables
    for i, part in enumerate(parents):
        sub = target.setdefault(part, {})
        if not isinstance(sub, dict):
            raise ConfigError(f"config key {'.'.join(parents[:i + 1])!r} is a value, not a table (in {dotted!r})")
        target = sub
    if not leaf:
        raise ConfigError(f"malformed config key {dotted!r}")
    target[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`optim.lr=0.01` -> ("optim.lr", 0.01); values are parsed as TOML, else kept as strings."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, raw = (s.strip() for s in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
        for number in (int, float):   # what TOML does not read as a number but a shell user means as one: .1
            try:
                return key, number(raw)
            except ValueError:
                pass
    return key, value


def repeated_key(overrides: list[str]) -> str | None:
    """Why the overrides cannot be taken as given, where one key (or a table and a key in it) is set twice: the
    last value won without a word (`steps=5 ... steps=6` trained 6 steps)."""
    seen: dict[str, str] = {}
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if "=" not in text or not key:
            continue   # load_config says what is wrong with it
        for other, said in seen.items():
            if key == other or key.startswith(other + ".") or other.startswith(key + "."):
                shorter = min(key, other, key=len)
                return f"config key {shorter!r} is set twice ({said[:60]}, {text.strip()[:60]}): give each key once"
        seen[key] = text.strip()
    return None


def load_config(path: str | Path | None = None, overrides: list[str] = (), **values: Any) -> TrainConfig:
    """Defaults <- TOML file <- keyword values (dotted keys) <- `key=value` overrides, then validated."""
    tables: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            tables = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: invalid TOML: {e}") from None
    if twice := repeated_key(list(overrides)):
        raise ConfigError(twice)
    for key, value in [*values.items(), *(parse_override(o) for o in overrides)]:
        _set(tables, key, value)
    try:
        return validate(tables)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path is not None else str(e)) from None


def flat(cfg: TrainConfig | dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim.lr": 0.1, ...}: every leaf value under its dotted key."""
    table = cfg.to_dict() if isinstance(cfg, TrainConfig) else cfg
    out: dict[str, Any] = {}
    for k, v in table.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out
