"""AutoAugment (Cubuk et al. 2019) with the CIFAR-10 policy, as the paper's code applies it, on float batches.

The paper's classification batch (METHOD §3.2 `autoaugment_cutout`) runs the official `CIFAR10Policy`
(InNOutRobustness `augmentations/autoaugment.py`, PIL): each image draws one of 25 sub-policies, each of its two
operations fires with its probability, at a fixed magnitude (index 0-9 into the operation's range: 0 = no change,
9 = the largest), shears, translations and enhancements with a random sign. kornia's `AutoAugment("cifar10")`
lists the same table but reads the indices as bins of a signed scale (index 5 = no change): rotate 2 turns by
-12 to -18 degrees instead of +6.7, color 0 makes images nearly grey instead of leaving them, posterize 7 keeps
7 bits instead of 5. So the operations are written here, each equal to the PIL call the official code makes
(`tests/test_autoaugment.py` checks them against PIL): in 8-bit values, rounded after every operation, geometric
ones filling with 0 (the paper's "mean 0") except rotate, which the official code fills with grey 128.
Equalize is kornia's (the torchvision/PIL algorithm). Every draw comes from the stream's generator.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["autoaugment", "POLICIES", "CIFAR10_POLICY"]

POLICIES = ("cifar10",)

# (operation, probability, magnitude index) x 2 per sub-policy: the AutoAugment paper's CIFAR-10 policy, in the
# official code's order and names.
CIFAR10_POLICY = (
    (("invert", 0.1, 7), ("contrast", 0.2, 6)), (("rotate", 0.7, 2), ("translateX", 0.3, 9)),
    (("sharpness", 0.8, 1), ("sharpness", 0.9, 3)), (("shearY", 0.5, 8), ("translateY", 0.7, 9)),
    (("autocontrast", 0.5, 8), ("equalize", 0.9, 2)), (("shearY", 0.2, 7), ("posterize", 0.3, 7)),
    (("color", 0.4, 3), ("brightness", 0.6, 7)), (("sharpness", 0.3, 9), ("brightness", 0.7, 9)),
    (("equalize", 0.6, 5), ("equalize", 0.5, 1)), (("contrast", 0.6, 7), ("sharpness", 0.6, 5)),
    (("color", 0.7, 7), ("translateX", 0.5, 8)), (("equalize", 0.3, 7), ("autocontrast", 0.4, 8)),
    (("translateY", 0.4, 3), ("sharpness", 0.2, 6)), (("brightness", 0.9, 6), ("color", 0.2, 8)),
    (("solarize", 0.5, 2), ("invert", 0.0, 3)), (("equalize", 0.2, 0), ("autocontrast", 0.6, 0)),
    (("equalize", 0.2, 8), ("equalize", 0.6, 4)), (("color", 0.9, 9), ("equalize", 0.6, 6)),
    (("autocontrast", 0.8, 4), ("solarize", 0.2, 8)), (("brightness", 0.1, 3), ("color", 0.7, 0)),
    (("solarize", 0.4, 5), ("autocontrast", 0.9, 3)), (("translateY", 0.9, 9), ("translateY", 0.7, 9)),
    (("autocontrast", 0.9, 2), ("solarize", 0.8, 3)), (("equalize", 0.8, 8), ("invert", 0.1, 3)),
    (("translateY", 0.7, 9), ("autocontrast", 0.9, 1)),
)

RANGES = {  # magnitude index -> value, as the official SubPolicy
    "shearX": np.linspace(0, 0.3, 10), "shearY": np.linspace(0, 0.3, 10),
    "translateX": np.linspace(0, 150 / 331, 10), "translateY": np.linspace(0, 150 / 331, 10),
    "rotate": np.linspace(0, 30, 10), "color": np.linspace(0.0, 0.9, 10),
    "posterize": np.round(np.linspace(8, 4, 10), 0).astype(np.int32), "solarize": np.linspace(256, 0, 10),
    "contrast": np.linspace(0.0, 0.9, 10), "sharpness": np.linspace(0.0, 0.9, 10),
    "brightness": np.linspace(0.0, 0.9, 10),
}
SIGNED = {"shearX", "shearY", "translateX", "translateY", "color", "contrast", "sharpness", "brightness"}
ROTATE_FILL = 128.0  # the official rotate composites onto grey 128 whatever the policy's fill colour


def _grid_sample(x: torch.Tensor, matrix: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """PIL's `Image.transform(AFFINE)`: output pixel centre (u, v) reads input (a u + b v + c, d u + e v + f),
    in pixel units; `matrix` (n, 2, 3) holds those coefficients. Returns the image, 0 where the source lies
    outside it, and that (n, 1, H, W) inside mask. As PIL: nearest takes the pixel under the source point, bicubic
    reads replicated borders for a point inside (its kernel: torch's a = -0.75, PIL's -0.5)."""
    n, _, h, w = x.shape
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                          indexing="ij")
    points = torch.stack([u, v, torch.ones_like(u)], -1).reshape(1, -1, 3)           # (1, h*w, 3)
    source = points @ matrix.to(torch.float64).transpose(1, 2)                         # (n, h*w, 2) pixel units
    sx, sy = source[..., 0], source[..., 1]
    inside = ((sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)).reshape(n, 1, h, w).to(x)
    if mode == "nearest":  # grid_sample rounds; PIL takes floor: sample the centre of the pixel under the point
        sx, sy = torch.floor(sx) + 0.5, torch.floor(sy) + 0.5
    grid = torch.stack([sx * 2 / w - 1, sy * 2 / h - 1], -1).reshape(n, h, w, 2).to(x)  # matrices: CPU float64
    out = F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)
    return out * inside, inside


def _affine(a, b, c, d, e, f) -> torch.Tensor:
    return torch.stack([torch.stack([a, b, c], -1), torch.stack([d, e, f], -1)], 1)


def _blend(x: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance (Image.blend): degenerate + factor (x - degenerate), truncated to 8 bits as PIL does."""
    return (degenerate + factor.to(x).view(-1, 1, 1, 1) * (x - degenerate)).floor()


def _grey(x: torch.Tensor) -> torch.Tensor:
    """PIL's convert("L"): ITU-R 601-2 luma, rounded to 8 bits."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).round()


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL's ImageFilter.SMOOTH (3x3, centre 5, the rest 1, /13), border pixels kept."""
    kernel = torch.ones(3, 3, dtype=x.dtype, device=x.device)
    kernel[1, 1] = 5
    out = F.conv2d(x, (kernel / 13).expand(x.shape[1], 1, 3, 3).contiguous(), groups=x.shape[1], padding=1).round()
    out[..., 0, :], out[..., -1, :], out[..., :, 0], out[..., :, -1] = x[..., 0, :], x[..., -1, :], x[..., :, 0], \
        x[..., :, -1]
    return out


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    """PIL's ImageOps.autocontrast: each channel stretched from [min, max] to [0, 255] (truncated), flat ones kept."""
    x64 = x.double()   # PIL's lookup table is computed in double: 255 must stay 255
    lo, hi = x64.amin((2, 3), keepdim=True), x64.amax((2, 3), keepdim=True)
    flat = hi <= lo
    scale = 255 / torch.where(flat, torch.ones_like(hi), hi - lo)
    return torch.where(flat, x64, (x64 * scale - lo * scale).floor().clamp(0, 255)).to(x.dtype)


def apply(op: str, x: torch.Tensor, magnitude: float, sign: torch.Tensor) -> torch.Tensor:
    """One official operation on 8-bit values (float 0..255) of images (n, 3, H, W); `sign` (n,) is each image's
    random sign (read by the signed operations)."""
    n, _, h, w = x.shape
    s = sign.to(x.dtype) * float(magnitude)
    one, zero = torch.ones(n, dtype=x.dtype), torch.zeros(n, dtype=x.dtype)
    if op == "shearX":
        out = _grid_sample(x, _affine(one, s, zero, zero, one, zero), "bicubic")[0]
    elif op == "shearY":
        out = _grid_sample(x, _affine(one, zero, zero, s, one, zero), "bicubic")[0]
    elif op == "translateX":
        out = _grid_sample(x, _affine(one, zero, s * w, zero, one, zero), "nearest")[0]
    elif op == "translateY":
        out = _grid_sample(x, _affine(one, zero, zero, zero, one, s * h), "nearest")[0]
    elif op == "rotate":  # counter-clockwise about the centre, nearest; grey where no source pixel lands
        r = math.radians(magnitude)
        cos, sin, cx, cy = math.cos(r) * one, math.sin(r) * one, w / 2, h / 2
        matrix = _affine(cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy)
        out, inside = _grid_sample(x, matrix, "nearest")
        out = out + (1 - inside) * ROTATE_FILL
    elif op == "color":
        out = _blend(x, _grey(x), 1 + s)
    elif op == "contrast":
        mean = _grey(x).mean((1, 2, 3), keepdim=True).add(0.5).floor()
        out = _blend(x, mean.expand_as(x), 1 + s)
    elif op == "brightness":
        out = _blend(x, torch.zeros_like(x), 1 + s)
    elif op == "sharpness":
        out = _blend(x, _smooth(x), 1 + s)
    elif op == "posterize":
        out = torch.floor(x / 2 ** (8 - int(magnitude))) * 2 ** (8 - int(magnitude))
    elif op == "solarize":
        out = torch.where(x < magnitude, x, 255 - x)
    elif op == "autocontrast":
        out = _autocontrast(x)
    elif op == "equalize":
        from kornia.enhance import equalize  # ~1.7 s to import kornia: only when the pipeline is used

        out = equalize(x / 255) * 255
    elif op == "invert":
        out = 255 - x
    else:
        raise ValueError(f"unknown AutoAugment operation {op!r}")
    return out.round().clamp(0, 255)


def autoaugment(x: torch.Tensor, generator: torch.Generator | None = None, policy: str = "cifar10") -> torch.Tensor:
    """The official CIFAR-10 AutoAugment on a float [0,1] NCHW batch, one sub-policy per image."""
    if policy not in POLICIES:
        raise ValueError(f"unknown AutoAugment policy {policy!r}; choose one of {', '.join(POLICIES)}")
    n = x.shape[0]
    choice = torch.randint(len(CIFAR10_POLICY), (n,), generator=generator)
    fires = torch.rand(n, 2, generator=generator)
    signs = torch.randint(0, 2, (n, 2), generator=generator) * 2 - 1
    out = (x.detach().float() * 255).round()  # on x's device: the draws stay on the CPU
    for i in choice.unique().tolist():
        for k, (op, p, index) in enumerate(CIFAR10_POLICY[i]):
            idx = ((choice == i) & (fires[:, k] < p)).nonzero().squeeze(1)
            if len(idx):
                signed = signs[idx, k] if op in SIGNED else torch.ones(len(idx), dtype=torch.long)
                magnitude = float(RANGES[op][index]) if op in RANGES else 0.0
                at = idx.to(x.device)
                out[at] = apply(op, out[at], magnitude, signed)
    return out.div_(255).to(x.dtype)
