"""Classifiers whose logits double as energies.

Every model maps [0,1] NCHW images to logits; input normalization lives inside the model as
non-persistent buffers, so state-dict keys match the official checkpoints exactly
(WRN: InNOutRobustness / xternalz layout; ResNet-50: torchvision/timm layout).
"""

from __future__ import annotations

import re
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


class Classifier(nn.Module):
    """Base class: normalization inside, `.config` for checkpoints, and the stage-2 BN freeze.

    With `bn_frozen = True`, every BatchNorm stays in eval mode (running statistics fixed) even
    when the model is put in train mode; its affine parameters still receive gradients (METHOD §3.1).
    """

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = dict(config)
        self.bn_frozen = False
        self.register_buffer("mean", torch.tensor(config["mean"]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config["std"]).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits((x - self.mean) / self.std)

    def logits(self, x: torch.Tensor) -> torch.Tensor:  # normalized input -> logits
        raise NotImplementedError

    def train(self, mode: bool = True) -> "Classifier":
        super().train(mode)
        if self.bn_frozen:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def freeze_bn(self, frozen: bool = True) -> "Classifier":
        """Switch the stage-2 BatchNorm freeze on or off (re-applies the current mode)."""
        self.bn_frozen = frozen
        return self.train(self.training)


# ---------------------------------------------------------------- Wide-ResNet (pre-activation)

class WideBasicBlock(nn.Module):
    """Pre-activation basic block (BN -> ReLU -> conv3x3, twice); a 1x1 shortcut conv when widths differ."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.equal_in_out = c_in == c_out
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(c_in, c_out, 1, stride, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        # xternalz layout: the shortcut of a widening block sees the pre-activated input
        shortcut = x if self.equal_in_out else self.convShortcut(o)
        o = self.conv2(F.relu(self.bn2(self.conv1(o))))
        return o + shortcut


class NetworkBlock(nn.Module):
    def __init__(self, n: int, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(*[WideBasicBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1)
                                     for i in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(Classifier):
    """WRN-depth-widen (Zagoruyko & Komodakis) in the official DAT key layout."""

    def __init__(self, config: dict[str, Any], depth: int, widen: int):
        super().__init__(config)
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        w = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, w[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, w[0], w[1], 1)
        self.block2 = NetworkBlock(n, w[1], w[2], 2)
        self.block3 = NetworkBlock(n, w[2], w[3], 2)
        self.bn1 = nn.BatchNorm2d(w[3])
        self.fc = nn.Linear(w[3], config["num_classes"])
        _init_weights(self)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        o = self.block3(self.block2(self.block1(self.conv1(x))))
        o = F.relu(self.bn1(o))
        return self.fc(F.adaptive_avg_pool2d(o, 1).flatten(1))


# ---------------------------------------------------------------- PreAct ResNet-18 (CIFAR)

class PreActResNet18(Classifier):
    """PreAct ResNet-18 for CIFAR (He et al. 2016), built from the same pre-activation block as the WRN."""

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        layers, c = [], 64
        for i, width in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(WideBasicBlock(c, width, stride), WideBasicBlock(width, width, 1)))
            c = width
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, config["num_classes"])
        _init_weights(self)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        o = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        o = F.relu(self.bn(o))
        return self.linear(F.adaptive_avg_pool2d(o, 1).flatten(1))


# ---------------------------------------------------------------- ResNet-50 (ImageNet, torchvision keys)

class Bottleneck(nn.Module):
    def __init__(self, c_in: int, width: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.downsample = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                           if stride != 1 or c_in != c_out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(self.conv1(x)))
        o = F.relu(self.bn2(self.conv2(o)))
        o = self.bn3(self.conv3(o))
        return F.relu(o + (x if self.downsample is None else self.downsample(x)))


class ResNet50(Classifier):
    """ResNet-50 (and WRN-50-k via a wider bottleneck) with torchvision/timm state-dict keys."""

    def __init__(self, config: dict[str, Any], width_per_group: int = 64):
        super().__init__(config)
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        c, stages = 64, []
        for i, (n, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
            width = planes * width_per_group // 64
            stages.append(nn.Sequential(*[Bottleneck(c if j == 0 else planes * 4, width, planes * 4,
                                                     2 if (j == 0 and i > 0) else 1) for j in range(n)]))
            c = planes * 4
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(c, config["num_classes"])
        _init_weights(self)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        o = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        o = self.layer4(self.layer3(self.layer2(self.layer1(o))))
        return self.fc(F.adaptive_avg_pool2d(o, 1).flatten(1))


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------- registry

_WRN = re.compile(r"^wrn-(\d+)-(\d+)$")

ARCHS: dict[str, Callable[[dict[str, Any]], Classifier]] = {
    "preact-resnet18": PreActResNet18,
    "resnet50": ResNet50,
    "wide-resnet50-4": lambda cfg: ResNet50(cfg, width_per_group=256),
}
"""Named architectures besides the Wide-ResNet family, which is spelled `wrn-<depth>-<widen>`."""

KNOWN_ARCHS = ("wrn-16-2", "wrn-16-4", "wrn-28-10", "wrn-34-10", *ARCHS)


def build_model(arch: str, num_classes: int = 10, image_size: int | None = None,
                class_names: list[str] | None = None, mean: tuple[float, ...] | None = None,
                std: tuple[float, ...] | None = None, **extra: Any) -> Classifier:
    """Build a freshly initialised classifier; the arguments become its `.config` (and config.json).

    `extra` keys (e.g. stored energy quantiles) are kept in the config untouched.
    """
    arch = arch.lower()
    imagenet = arch in ("resnet50", "wide-resnet50-4")
    m = _WRN.match(arch)
    if m is None and arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(KNOWN_ARCHS)} "
                         "(any wrn-<6n+4>-<k> works)")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if class_names is None:
        class_names = list(CIFAR10_CLASSES) if num_classes == 10 else [str(i) for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    config = dict(extra, arch=arch, num_classes=num_classes,
                  image_size=image_size or (224 if imagenet else 32),
                  class_names=list(class_names),
                  mean=list(mean or (IMAGENET_MEAN if imagenet else CIFAR10_MEAN)),
                  std=list(std or (IMAGENET_STD if imagenet else CIFAR10_STD)))
    if m is not None:
        return WideResNet(config, depth=int(m.group(1)), widen=int(m.group(2)))
    return ARCHS[arch](config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
