"""The one policy for turning an image file into RGB pixels, shared by the training/eval loader
(`dat_core.data.folders`) and explanations/the app (`explain.image`): a model is trained on the pixels it is
explained on.

1. The header is read first (PIL opens lazily); images above `MAX_PIXELS` are refused before any pixel is
   decoded (decompression-bomb guard). Unreadable data raises `ImageError` naming the source. The EXIF
   orientation is applied (phone photos stand upright).
2. Greyscale of more than 8 bits is scaled by the depth its file declares (16-bit: 255/65535, not clipped),
   never by its pixel values: a dark 16-bit image must not read 257x brighter than one with a bright pixel. An
   in-memory 'I' image declares nothing: 16-bit when a value is above 255, else 8-bit values (`convert("I")`).
3. Mode -> RGB: transparency (RGBA, LA, palette with a transparent index) is composited on white; 32-bit float
   ('F') is read as [0,1] when its maximum is <= 1, else as 0..255; other modes use PIL's own conversion.
4. Geometry: the shorter side is resized to S (antialiased bicubic), then the centre S x S square is cropped; an
   S x S image passes untouched; one whose sides differ by more than `MAX_ASPECT` has its centre square cut first.
"""

from __future__ import annotations

import io
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000
"""Largest accepted image (width x height) before decoding: ~40 MP covers any camera photo."""

MAX_ASPECT = 8
"""Beyond this ratio of sides the centre square is cut before resizing: a 1 x 1,000,000 strip resized whole
first was 32 x 32,000,000 (6.6 GB) on its way to a 32 x 32 input. Up to it, resize-then-crop as always."""

POLICY_VERSION = 2
"""Bump when the pixels this module gives for a file change: caches of decoded images are keyed on it."""

# catch_warnings swaps process-wide filters: threads opening at once (the lazy loader's pool) could restore each
# other's state. Only the header is read under the lock, so decoding itself stays parallel.
_OPEN_LOCK = threading.Lock()


class ImageError(ValueError):
    """The input cannot be turned into a model input (unreadable, too large, wrong shape or range)."""


def _white_level(im: Image.Image) -> int:
    """The value of white in a greyscale 'I' image, from the sample depth its file declares (read before load(),
    which drops the tile). Pillow opens 16-bit PNG/PGM as 'I' in some versions: 16 bits unless the file says 32."""
    for tile in getattr(im, "tile", None) or ():
        args = tile[3]
        raw = args if isinstance(args, str) else (args[0] if args else "")
        if raw == "I" or raw.startswith("I;32"):
            return 2 ** 31 - 1
    return 65535


def _grey_to_8bit(im: Image.Image, white: int) -> Image.Image:
    # in place: a 40-megapixel 16-bit scan took 1 GB in float64 copies. float32 rounds every 16-bit value to
    # the same byte as float64 (checked for all 65536)
    a = np.array(im, dtype=np.float32)
    a *= 255.0 / white
    a += 0.5
    np.clip(a, 0, 255, out=a)
    return Image.fromarray(a.astype(np.uint8), "L")


def open_image(source: str | Path | bytes, max_side: int | None = None, name: str | None = None) -> Image.Image:
    """Open a file path or encoded bytes as an upright, decoded PIL image, checking the pixel count (and, given
    `max_side`, the longer side) before decoding; greyscale above 8 bits comes back as 8-bit 'L'."""
    if name is None:
        name = "the uploaded bytes" if isinstance(source, (bytes, bytearray)) else str(source)
    if isinstance(source, (str, Path)) and not str(source).strip():   # Path("") is this folder: "is a directory"
        raise ImageError("no image given: the path is empty")
    try:
        fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else Path(source).expanduser()
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(fp)  # lazy: only the header is read here
        with im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise ImageError(f"{name} is {w}x{h} = {w * h:,} pixels; images above {MAX_PIXELS:,} pixels "
                                 "are refused (downscale it first)")
            if max_side is not None and max(w, h) > max_side:
                raise ImageError(f"{name} is {w}x{h} px; at most {max_side} px a side is accepted here")
            white = _white_level(im) if im.mode == "I" else 65535
            upright = ImageOps.exif_transpose(im)  # decodes; always a new image (the file can close)
            upright.load()
        if upright.mode == "I" or upright.mode.startswith("I;16"):
            upright = _grey_to_8bit(upright, white)
        return upright
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"image file not found: {name}") from None
    except IsADirectoryError:
        raise ImageError(f"{name} is a directory, not an image file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # Pillow's own, larger limit
        raise ImageError(f"{name} has far more than {MAX_PIXELS:,} pixels; images above {MAX_PIXELS:,} pixels are "
                         "refused (downscale it first)") from None
    except UnidentifiedImageError:  # Pillow's text names its file object ("<_io.BytesIO object at 0x...>")
        raise ImageError(f"cannot read {name} as an image (not an image, or a format Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated / corrupt data
        raise ImageError(f"cannot read {name} as an image (corrupt or truncated?): {e}") from None


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB (rules: module docstring). An in-memory 'I' image has no file to declare its
    depth (files are read by `open_image`, which does): it is 16-bit when a value is above 255, else 8-bit values
    as `Image.convert("I")` of an 8-bit image holds them (read as 16-bit, those turned black)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I;16") or mode == "I":
        white = 65535 if mode.startswith("I;16") or np.asarray(im).max(initial=0) > 255 else 255
        return _grey_to_8bit(im, white).convert("RGB")
    if mode == "F":  # float keeps float64, where float32 rounding can differ
        a = np.array(im, dtype=np.float64)
        a *= 255.0 if a.max(initial=0) <= 1.0 else 1.0
        a += 0.5
        np.clip(a, 0, 255, out=a)
        return Image.fromarray(a.astype(np.uint8), "L").convert("RGB")
    if mode == "La":   # premultiplied: PIL converts it to RGBA only by way of LA
        im = im.convert("LA")
    if mode in ("P", "PA", "LA", "La", "RGBa") or (mode in ("L", "RGB") and "transparency" in im.info):
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode == "RGBA":
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, im).convert("RGB")
    return im.convert("RGB")


def square_offsets(w: int, h: int) -> tuple[int, int, int] | None:
    """(left, top, side) of the centre square when the sides differ by more than `MAX_ASPECT`, else None."""
    side = min(w, h)
    if max(w, h) <= MAX_ASPECT * side:
        return None
    return (w - side) // 2, (h - side) // 2, side


def resize_crop(im: Image.Image, size: int) -> Image.Image:
    """Shorter side to `size`, then the centre square (an extreme strip: its centre square first)."""
    if (square := square_offsets(*im.size)) is not None:
        left, top, side = square
        im = im.crop((left, top, left + side, top + side))
    w, h = im.size
    if (w, h) == (size, size):
        return im
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    im = im.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)  # PIL bicubic antialiases
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def decode_rgb(source: str | Path | bytes, image_size: int | None, name: str | None = None) -> np.ndarray:
    """A file or its bytes -> HxWx3 uint8 RGB under this policy, resized and centre-cropped to `image_size`
    when given (None: the image's own size)."""
    rgb = to_rgb(open_image(source, name=name))
    if image_size is not None:
        rgb = resize_crop(rgb, image_size)
    return np.asarray(rgb, dtype=np.uint8)
