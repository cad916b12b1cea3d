"""Pre-activation Wide-ResNets (Zagoruyko & Komodakis), `wrn-<depth>-<widen>`, in the official DAT key
layout (InNOutRobustness / xternalz): the paper's CIFAR models are `wrn-34-10`; `wrn-16-2` fits a CPU."""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import Classifier, init_weights
from .registry import CIFAR10_NORMALIZATION, register_family


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
        init_weights(self)

    @property
    def head(self) -> nn.Module:
        return self.fc

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        o = self.block3(self.block2(self.block1(self.conv1(x))))
        o = F.relu(self.bn1(o))
        return F.adaptive_avg_pool2d(o, 1).flatten(1)


MAX_DEPTH, MAX_WIDEN = 202, 32
"""WRN-202 and a widen of 32 are beyond any published WRN (the largest RobustBench ones are 106-16); the
bound comes before building, since a config's depth is built block by block before its size is known."""


def _depth_and_widen(m: re.Match) -> dict[str, int]:
    depth, widen = int(m["depth"]), int(m["widen"])
    if not (10 <= depth <= MAX_DEPTH and (depth - 4) % 6 == 0) or not 1 <= widen <= MAX_WIDEN:
        raise ValueError(f"architecture wrn-{depth}-{widen}: WRN depth must be 6n+4 from 10 to {MAX_DEPTH} and "
                         f"widen from 1 to {MAX_WIDEN}")
    if (m["depth"], m["widen"]) != (str(depth), str(widen)):  # one name per model: the name is compared and shown
        raise ValueError(f"architecture {m[0]!r}: write it wrn-{depth}-{widen} (no leading zeros)")
    return {"depth": depth, "widen": widen}


register_family(r"wrn-(?P<depth>\d{1,6})-(?P<widen>\d{1,6})", WideResNet,
                examples=("wrn-16-2", "wrn-16-4", "wrn-28-10", "wrn-34-10"), image_size=32,
                normalization=CIFAR10_NORMALIZATION, parse=_depth_and_widen)
