"""Shared matplotlib helpers: signed-map display, figure -> uint8 array.

Figures are built with `matplotlib.figure.Figure` directly (never pyplot), so nothing is
registered in pyplot's global figure manager and a web server can draw from several threads.
"""

from __future__ import annotations

import sys

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

SIGNED_CMAP = "RdBu_r"
"""Diverging colormap for signed maps: red = positive (raises the score), blue = negative, white = 0."""

ENERGY_CMAP = "viridis"
"""Sequential colormap for energies: dark = low energy = typical of the training data."""


def signed_cmap() -> Colormap:
    return colormaps[SIGNED_CMAP]


def normalize_map(m: np.ndarray, percentile: float = 100.0) -> np.ndarray:
    """Scale a signed map into [-1, 1] for display, keeping 0 at 0 and the sign of every value.

    The scale is the `percentile` of |m| (100 = max |m|); values beyond it are clipped. An
    all-zero map returns zeros (no division by zero, no NaN); a single-sign map therefore lands
    in [0, 1] or [-1, 0]. Non-finite input is an error rather than something to paint over.
    """
    m = np.asarray(m, dtype=np.float32)
    if not np.isfinite(m).all():
        raise ValueError("map contains NaN or inf")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    if m.size == 0:
        return m.copy()
    mag = np.abs(m)
    scale = float(mag.max())
    if percentile < 100 and scale > 0:
        # a map that is mostly zeros has a zero percentile: keep the max then
        scale = float(np.percentile(mag, percentile)) or scale
    if scale == 0.0:
        return np.zeros_like(m)
    return np.clip(m / scale, -1.0, 1.0)


def colorize_signed(m: np.ndarray, percentile: float = 100.0) -> np.ndarray:
    """Signed (H, W) map -> (H, W, 3) uint8 RGB with the diverging colormap centred at 0."""
    n = normalize_map(m, percentile)
    rgba = signed_cmap()((n + 1.0) / 2.0)
    return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


def to_hwc(image: np.ndarray) -> np.ndarray:
    """(3, H, W) or (H, W, 3) float image -> (H, W, 3) float32 (display helpers take HWC)."""
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    return a


def new_figure(width: float, height: float, dpi: int = 100) -> Figure:
    """A figure outside pyplot's manager (nothing to leak, safe across threads)."""
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def close_figure(fig: Figure) -> None:
    """Release a figure: drop it from pyplot's manager if pyplot knows it, then clear it."""
    pyplot = sys.modules.get("matplotlib.pyplot")  # only if someone already imported pyplot
    if pyplot is not None:
        pyplot.close(fig)
    fig.clear()


def figure_to_array(fig: Figure, dpi: float | None = None) -> np.ndarray:
    """Render `fig` to an (H, W, 3) uint8 RGB array and always close it (even on error)."""
    try:
        canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
        if dpi is not None:
            fig.set_dpi(dpi)
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()
    finally:
        close_figure(fig)
