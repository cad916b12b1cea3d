"""Any user image -> the model's input: a (1, 3, S, S) float tensor in [0, 1].

Files, bytes and PIL images follow `dat_core.images` (the policy the training loader uses too: pixel cap read
from the header, EXIF orientation, 16-bit depth as declared, transparency on white, resize + centre crop with
extreme proportions cut to their centre square first). numpy arrays and tensors get the same limits and
geometry: arrays may be HxW, HxWx{1,3,4} (uint8, uint16 or float in [0,1]); tensors must be 3xHxW or 1x3xHxW
floats in [0,1].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from dat_core.images import MAX_ASPECT, MAX_PIXELS, ImageError, open_image, resize_crop, square_offsets, to_rgb

from .params import parse_int

__all__ = ["MAX_ASPECT", "MAX_PIXELS", "ImageError", "ImageLike", "open_image", "to_rgb", "to_model_input",
           "to_mask", "mask_fraction", "check_frames"]

ImageLike = Union[str, Path, bytes, Image.Image, np.ndarray, torch.Tensor]


def _resize_crop_tensor(x: torch.Tensor, size: int) -> torch.Tensor:
    if (square := square_offsets(x.shape[-1], x.shape[-2])) is not None:
        left, top, side = square
        x = x[..., top:top + side, left:left + side]
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False).clamp_(0, 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[..., top:top + size, left:left + size]


def _pil_to_tensor(im: Image.Image) -> torch.Tensor:
    a = np.asarray(im, dtype=np.uint8)
    return torch.from_numpy(a.copy()).permute(2, 0, 1).unsqueeze(0).float().div_(255)


def _check_size(w: int, h: int) -> None:
    """The same limits for files, PIL images, arrays and tensors (an empty one divided by zero when resized)."""
    if w * h > MAX_PIXELS:
        raise ImageError(f"image is {w}x{h} = {w * h:,} pixels; images above {MAX_PIXELS:,} pixels are refused")
    if w < 1 or h < 1:
        raise ImageError(f"image has no pixels ({w}x{h})")


def _array_to_input(a: np.ndarray, size: int) -> torch.Tensor:
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        raise ImageError(f"numpy images must be HxW or HxWx{{1,3,4}}, got shape {a.shape}")
    _check_size(a.shape[1], a.shape[0])
    if a.dtype.kind == "u" and a.dtype.byteorder not in ("=", "|"):   # big-endian: the same numbers, native order
        a = a.astype(a.dtype.newbyteorder("="))
    if a.dtype == np.uint8:
        mode = {2: "L", 3: "RGB", 4: "RGBA"}[a.shape[-1] if a.ndim == 3 else 2]
        return _pil_to_tensor(resize_crop(to_rgb(Image.fromarray(a, mode)), size))
    if a.dtype == np.uint16:
        a = a.astype(np.float32) / 65535.0
    elif np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise ImageError("float numpy images must be finite and lie in [0,1]")
    else:
        raise ImageError(f"unsupported numpy image dtype {a.dtype} (use uint8, uint16 or float in [0,1])")
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.shape[-1] == 4:  # composite on white
        a = a[..., :3] * a[..., 3:] + (1.0 - a[..., 3:])
    return _resize_crop_tensor(torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None], size)


def _tensor_to_input(x: torch.Tensor, size: int) -> torch.Tensor:
    shape = tuple(x.shape)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[:2] != (1, 3):
        raise ImageError(f"image tensors must be 3xHxW or 1x3xHxW, got {shape}")
    _check_size(x.shape[3], x.shape[2])
    if not x.is_floating_point():
        raise ImageError(f"image tensors must be float in [0,1], got dtype {x.dtype}")
    x = x.detach().float()
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ImageError("image tensors must be finite and lie in [0,1]")
    return _resize_crop_tensor(x.cpu().clone(), size)   # a copy: the input is never the caller's own tensor


def to_model_input(image: ImageLike, image_size: int) -> torch.Tensor:
    """Convert `image` to a (1, 3, image_size, image_size) float CPU tensor in [0,1] (policy: module docstring)."""
    image_size = parse_int("image_size", image_size, 1)
    if isinstance(image, torch.Tensor):
        return _tensor_to_input(image, image_size).contiguous()
    if isinstance(image, np.ndarray):
        return _array_to_input(image, image_size).contiguous()
    if isinstance(image, (str, Path, bytes, bytearray)):
        image = open_image(image)
    if not isinstance(image, Image.Image):
        raise ImageError(f"unsupported image type {type(image).__name__}; pass a path, bytes, a PIL image, "
                         "a numpy array or a tensor")
    _check_size(*image.size)
    try:
        rgb = to_rgb(ImageOps.exif_transpose(image))  # no-op when already upright
    except (OSError, ValueError) as e:
        raise ImageError(f"cannot convert image of mode {image.mode!r} to RGB: {e}") from None
    return _pil_to_tensor(resize_crop(rgb, image_size)).contiguous()


def check_frames(images: Any, image_size: int | None = None) -> np.ndarray:
    """A path's frames as the explanations take them, (T+1, 3, S, S) float32 in [0,1] at the model's side S:
    NaN frames gave a NaN landscape, [0,255] frames one clamped flat, another size a map of nothing."""
    a = np.asarray(images, dtype=np.float32)
    if a.ndim != 4 or a.shape[0] < 1 or a.shape[1] != 3 or a.shape[2] != a.shape[3]:
        raise ImageError(f"trajectory.images must be (T+1, 3, S, S) frames, got shape {a.shape}")
    if image_size is not None and a.shape[2] != image_size:
        raise ImageError(f"trajectory.images are {a.shape[2]} px; the model takes {image_size} px")
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise ImageError("trajectory.images must be finite and lie in [0,1]")
    return a


def _hw(image: Any) -> tuple[int, int] | None:
    """(height, width) of an image as `to_model_input` reads it (upright), or None where it cannot tell."""
    try:
        if isinstance(image, torch.Tensor):
            return tuple(image.shape[-2:]) if image.dim() in (2, 3, 4) else None
        if isinstance(image, np.ndarray):
            return tuple(image.shape[:2]) if image.ndim in (2, 3) else None
        if isinstance(image, (str, Path, bytes, bytearray)):
            image = open_image(image)
        if isinstance(image, Image.Image):
            w, h = ImageOps.exif_transpose(image).size
            return h, w
    except (OSError, ValueError):
        return None
    return None


def to_mask(mask: ImageLike, image_size: int, image: ImageLike | None = None) -> torch.Tensor:
    """A (1, 1, S, S) bool mask (True = the path may change this pixel) from an image where white means
    "may change": resized and centre-cropped exactly like the image (`to_model_input`), so it lines up with
    it; grey counts as white above 0.5. An array or tensor of {0,1} / bools shaped HxW, 1xHxW or 1x1xHxW (the
    form this returns and `dat_core.pgd` takes) is accepted too. Given the `image`, a mask of another shape
    (neither the image's proportions nor the model's S x S) is refused: cropped on its own, it would not line
    up with the image."""
    if isinstance(mask, (np.ndarray, torch.Tensor)):
        while mask.ndim > 2 and mask.shape[0] == 1:
            mask = mask[0]
    mh, ih = _hw(mask), None if image is None else _hw(image)
    if mh and ih and mh != (image_size, image_size) and mh[0] * ih[1] != mh[1] * ih[0]:
        raise ImageError(f"the mask is {mh[1]}x{mh[0]} px and the image {ih[1]}x{ih[0]}: give the mask the image's "
                         f"size (or the model's {image_size}x{image_size}), or it would not line up with the image")
    if isinstance(mask, (np.ndarray, torch.Tensor)):
        if mask.ndim == 2:
            m = torch.as_tensor(np.asarray(mask, dtype=np.float32) if isinstance(mask, np.ndarray) else mask.float())
            mask = m.clamp(0, 1)[None].expand(3, -1, -1)
    try:
        m = to_model_input(mask, image_size).mean(1, keepdim=True) > 0.5
    except ImageError as e:
        raise ImageError(f"a mask is an image (white = may change) or an array or tensor of bools or 0/1 shaped HxW, "
                         f"1xHxW or 1x1xHxW; this one: {e}") from None
    if not bool(m.any()):
        raise ImageError("the mask allows no pixel to change (white = may change)")
    return m


def mask_fraction(mask: torch.Tensor) -> float:
    """The share of pixels a mask lets change, as a path's `params["mask_fraction"]` records it (6 decimals)."""
    return round(float(mask.float().mean()), 6)
