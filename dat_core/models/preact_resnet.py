"""PreAct ResNet-18 for CIFAR (He et al. 2016), built from the Wide-ResNet's pre-activation block."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import Classifier, init_weights
from .registry import CIFAR10_NORMALIZATION, register
from .wrn import WideBasicBlock


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
        init_weights(self)

    @property
    def head(self) -> nn.Module:
        return self.linear

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        o = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        o = F.relu(self.bn(o))
        return F.adaptive_avg_pool2d(o, 1).flatten(1)


register("preact-resnet18", PreActResNet18, image_size=32, normalization=CIFAR10_NORMALIZATION)
