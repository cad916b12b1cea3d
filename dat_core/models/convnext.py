"""ConvNeXt (Liu et al. 2022) with a convolutional stem ("ConvStem", Singh, Croce & Hein 2023), in the
timm key layout of the official DAT ImageNet checkpoints: `convnext-{small,base,large}-convstem`.

The official code builds timm's `convnext_{small,base,large}` and replaces the 4x4 patch stem with a
stack of 3x3 convolutions, each followed by a channels-first LayerNorm (eps 1e-6) and GELU, stored under
`stem.stem.<i>` (the ConvBlock module's own `stem` Sequential):

    small: 3 -> 48 (s2) -> 96 (s2)             (ConvBlock1(48))
    base:  3 -> 64 (s2) -> 96 (s2) -> 128 (s1)  (ConvBlock3(64))
    large: 3 -> 96 (s2) -> 144 (s2) -> 192 (s1) (ConvBlockLarge(96))

Every stem ends at stride 4 with the first stage's width, so stage 0 has no downsample layer (as in
timm). The rest is timm's ConvNeXt: `stages.<n>.downsample` = (LayerNorm2d, 2x2 stride-2 conv) for
n >= 1; blocks `stages.<n>.blocks.<m>.{conv_dw, norm, mlp.fc1, mlp.fc2, gamma}` (7x7 depthwise conv,
channels-last LayerNorm, 4x MLP with GELU, layer scale `gamma`); head `head.norm` (LayerNorm of the
pooled features) and `head.fc`.

These checkpoints take [0,1] pixels as they are (trained with `normalize_input=false`), so they
register with the "none" normalization. `features()` ends after `head.norm` (timm's pre-logits: the
LayerNorm of the average-pooled last stage), so `head` is `head.fc` alone, the last linear layer.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import Classifier
from .registry import NO_NORMALIZATION, register

EPS = 1e-6  # every LayerNorm in timm's ConvNeXt and in the official ConvStem

STEMS = {  # (out channels, stride) of each 3x3 conv of the ConvStem
    "small": ((48, 2), (96, 2)),
    "base": ((64, 2), (96, 2), (128, 1)),
    "large": ((96, 2), (144, 2), (192, 1)),
}
VARIANTS = {  # blocks per stage, widths per stage (timm's convnext_small / base / large)
    "small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
}


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvStem(nn.Module):
    def __init__(self, layers: tuple[tuple[int, int], ...]):
        super().__init__()
        mods: list[nn.Module] = []
        c = 3
        for out, stride in layers:
            mods += [nn.Conv2d(c, out, 3, stride, 1), LayerNorm2d(out, eps=EPS), nn.GELU()]
            c = out
        self.stem = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """x + gamma * MLP(LN(dwconv7x7(x))), the MLP and LayerNorm channels-last."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=EPS)
        self.mlp = Mlp(dim, 4 * dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))  # layer scale, timm's initial value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(self.conv_dw(x).permute(0, 2, 3, 1))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class Stage(nn.Module):
    def __init__(self, c_in: int, c_out: int, depth: int, downsample: bool):
        super().__init__()
        self.downsample = (nn.Sequential(LayerNorm2d(c_in, eps=EPS), nn.Conv2d(c_in, c_out, 2, 2))
                           if downsample else nn.Identity())
        self.blocks = nn.Sequential(*[Block(c_out) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class Head(nn.Module):
    """timm's classifier head keys (`head.norm`, `head.fc`). `norm` runs at the end of
    `ConvNeXt.forward_features`, so calling the head applies the last linear layer alone."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=EPS)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)


class ConvNeXt(Classifier):
    """ConvNeXt with a ConvStem; `features()` = LayerNorm(avg-pool(last stage)), `head` = the linear layer."""

    def __init__(self, config: dict[str, Any], depths: tuple[int, ...], dims: tuple[int, ...],
                 stem: tuple[tuple[int, int], ...]):
        super().__init__(config)
        if stem[-1][0] != dims[0] or [s for _, s in stem].count(2) != 2 or len(depths) != len(dims):
            raise ValueError("the stem must end at stride 4 with the first stage's width")
        self.stem = ConvStem(stem)
        self.stages = nn.Sequential(*[Stage(dims[max(i - 1, 0)], dims[i], depths[i], downsample=i > 0)
                                      for i in range(len(dims))])
        self.head = Head(dims[-1], config["num_classes"])  # a real submodule here (the property below returns it)
        for m in self.modules():  # timm's initialisation
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    @property
    def head(self) -> nn.Module:
        return self._modules["head"]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head.norm(self.stages(self.stem(x)).mean((2, 3)))


def _variant(size: str):
    depths, dims = VARIANTS[size]
    return lambda config: ConvNeXt(config, depths, dims, STEMS[size])


register("convnext-small-convstem", _variant("small"), image_size=224, normalization=NO_NORMALIZATION)
register("convnext-base-convstem", _variant("base"), image_size=224, normalization=NO_NORMALIZATION)
register("convnext-large-convstem", _variant("large"), image_size=256, normalization=NO_NORMALIZATION)
