"""What a training run starts from: the device of each rank and the initial model (fresh, from
`model.init`, or rebuilt from a saved state's architecture)."""

from __future__ import annotations

from typing import Any

import torch

from ..loading import load_model
from ..models import Classifier, build_model
from ..models.base import check_class_names
from ..models.class_names import CLASS_NAME_SETS, dataset_class_names
from ..runtime import resolve_device
from .config import ConfigError, TrainConfig


def training_device(spec: str, local_rank: int) -> torch.device:
    """The device of this rank, with the CUDA switches training wants (cuDNN autotuning, TF32)."""
    try:
        device = resolve_device(spec, local_rank)
    except ValueError as e:  # unknown, or not on this machine (CUDA, MPS)
        raise ConfigError(f"device={spec}: {e}") from None
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return device


def _check_init(cfg: TrainConfig, init: dict[str, Any], class_names: list[str]) -> None:
    """`model.init` continues as it is: the config may not ask for another architecture (it was ignored), nor the
    data have other classes (they were renamed: the outputs got other meanings). An init whose names are generic
    ("0".."K-1") or a shipped set in its standard order (ImageNet's names for `train/<wnid>/` folders, CIFAR's)
    takes the data's; those must be names a checkpoint can hold."""
    try:
        check_class_names(list(class_names))
    except ValueError as e:
        raise ConfigError(f"data.dataset: its class folders cannot name a model's classes: {e}") from None
    if init["num_classes"] != len(class_names):
        raise ConfigError(f"model.init has {init['num_classes']} classes, the data {len(class_names)}")
    if "arch" in cfg.model.model_fields_set and cfg.model.arch.lower() != init["arch"]:
        raise ConfigError(f"model.arch={cfg.model.arch}, but model.init is a {init['arch']}: stage 2 continues the "
                          "init's architecture (leave model.arch out, or set it to that)")
    names = list(init["class_names"])
    standard = [[str(i) for i in range(len(names))]] + [dataset_class_names(d) for d in CLASS_NAME_SETS]
    if names != list(class_names) and names not in standard:
        raise ConfigError(f"model.init's classes ({_few(names)}) are not the data's ({_few(class_names)}): its "
                          "outputs would be given other meanings")


def _few(names: list[str]) -> str:
    return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")


def initial_model(cfg: TrainConfig, class_names: list[str], device: torch.device,
                  saved_config: dict[str, Any] | None = None) -> Classifier:
    """A resumed run rebuilds its architecture from the state (model.init is not read again)."""
    if saved_config is not None:
        c = dict(saved_config)
        model = build_model(c.pop("arch"), c.pop("num_classes"), c.pop("image_size"), c.pop("class_names"),
                            c.pop("mean", None), c.pop("std", None), **c)
    elif cfg.model.init:
        try:
            model = load_model(cfg.model.init, device="cpu")
        except Exception as e:  # a missing, truncated or foreign checkpoint: one line naming the key
            text = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"model.init={cfg.model.init}: cannot load the checkpoint ({text})") from None
        _check_init(cfg, model.config, class_names)
        model.config["class_names"] = list(class_names)
        model.config["image_size"] = cfg.data.image_size   # trained (e.g. fine-tuned at 256 px) and exported so
        for key in ("temperature", "calibration"):  # fitted for the init's weights; training moves them
            model.config.pop(key, None)
    else:
        model = build_model(cfg.model.arch, num_classes=len(class_names), image_size=cfg.data.image_size,
                            class_names=list(class_names))
    model.freeze_bn(cfg.stage == "stage2")
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
