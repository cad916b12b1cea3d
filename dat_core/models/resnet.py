"""ResNet-50 and its wide variants for ImageNet in the timm/torchvision key layout
(`conv1, bn1, layer1..4, fc`), so the official DAT checkpoints load by key.

The official code builds these with timm's `resnet50` / `wide_resnet50_2` / `wide_resnet50_4`
(bottleneck with the stride on the 3x3 conv; WRN-50-k widens the bottleneck's inner width k-fold,
`base_width=64k`, and keeps the outer widths). Its timm fork normalizes inputs inside `forward` with
the ImageNet mean/std and stores nothing for it in the state dict; here that is the registered
"imagenet" normalization (non-persistent buffers, so the keys match too).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import Classifier, init_weights
from .registry import IMAGENET_NORMALIZATION, register


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


class ResNet(Classifier):
    """Bottleneck ResNet for ImageNet; `layers` blocks per stage, inner width `planes * width_per_group / 64`
    (64: ResNet-50; 128: WRN-50-2; 256: WRN-50-4)."""

    def __init__(self, config: dict[str, Any], layers: tuple[int, ...] = (3, 4, 6, 3), width_per_group: int = 64):
        super().__init__(config)
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        c, stages = 64, []
        for i, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512))):
            width = planes * width_per_group // 64
            stages.append(nn.Sequential(*[Bottleneck(c if j == 0 else planes * 4, width, planes * 4,
                                                     2 if (j == 0 and i > 0) else 1) for j in range(n)]))
            c = planes * 4
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(c, config["num_classes"])
        init_weights(self)

    @property
    def head(self) -> nn.Module:
        return self.fc

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        o = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        o = self.layer4(self.layer3(self.layer2(self.layer1(o))))
        return F.adaptive_avg_pool2d(o, 1).flatten(1)


register("resnet50", ResNet, image_size=224, normalization=IMAGENET_NORMALIZATION)
register("wide-resnet50-2", lambda cfg: ResNet(cfg, width_per_group=128), image_size=224,
         normalization=IMAGENET_NORMALIZATION)
register("wide-resnet50-4", lambda cfg: ResNet(cfg, width_per_group=256), image_size=224,
         normalization=IMAGENET_NORMALIZATION)
