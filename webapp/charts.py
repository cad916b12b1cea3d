"""Fast, dependency-free rendering for the app: SVG charts with a movable step marker, probability
bars, the energy landscape as SVG, and uint8 image helpers.

A chart is laid out once per trajectory (`LineChart`, `LandscapeSVG`); moving the step marker only
formats one small SVG group and joins strings, so a slider move costs well under a millisecond
(a matplotlib render would cost tens). Everything returns plain SVG strings, crisp at any size.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from explain.params import eps_text  # noqa: F401  (re-exported: the app says radii as explain does)
from explain.plots import ENERGY_CMAP

BLUE, ORANGE, GREEN, RED, GREY, PURPLE = "#2563eb", "#ea580c", "#16a34a", "#dc2626", "#6b7280", "#7c3aed"
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"
DISPLAY_SIZE = 256
"""Frames are upscaled by an integer factor (nearest neighbour) to about this many pixels."""


def fitted_text(x: float, y: float, text: str, size: float, room: float, attrs: str = "") -> str:
    """An SVG <text> squeezed into `room` px when its estimated width (0.58 em a character) would not fit: a long
    class name in a title or a legend was cut off at the chart's edge."""
    fit = f' textLength="{room:.0f}" lengthAdjust="spacingAndGlyphs"' if len(text) * size * 0.58 > room else ""
    return f'<text x="{x:.1f}" y="{y}" font-size="{size}"{fit} {attrs}>{esc(text)}</text>'


def plural(n: Any, word: str) -> str:
    """ "1 step", "2 steps" (a count in words a person reads)."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def distance_text(d: float, norm: str | None) -> str:
    """A path's distance in its own norm, in the units its ε is typed in: Linf in k/255 (a caption read
    "distance 0.00784" beside "ε = 2/255"), L1 and L2 as short numbers."""
    return f"{fmt(float(d) * 255)}/255" if norm == "Linf" and math.isfinite(d) else fmt(d)


def fmt(v: float, digits: int = 3) -> str:
    """Short number with a real minus sign; inf/nan spelled out."""
    v = float(v)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    s = f"{v:.{digits}g}"
    return s.replace("-", "−")


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def nice_ticks(lo: float, hi: float, n: int = 5, whole: bool = False) -> list[float]:
    """About `n` round tick values covering [lo, hi]; `whole`: whole numbers only (a step of 1, 2, 5, 10, …)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(1, n - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = max(float(whole), next(m * mag for m in ((1, 2, 5, 10) if whole else (1, 2, 2.5, 5, 10)) if m * mag >= raw))
    first = math.ceil(lo / step - 1e-9) * step
    ticks, t = [], first
    while t <= hi + 1e-9 * step:
        ticks.append(0.0 if abs(t) < 1e-12 * step else round(t, 12))
        t += step
    return ticks


def _message_svg(text: str, width: int, height: int) -> str:
    return (f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" style="{FONT};max-width:{width * 1.6}px">'
            f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" rx="6" fill="#f9fafb" '
            f'stroke="#e5e7eb"/><text x="{width / 2}" y="{height / 2 + 4}" text-anchor="middle" font-size="12" '
            f'fill="{GREY}">{esc(text)}</text></svg>')


def placeholder(text: str, width: int = 300, height: int = 120) -> str:
    """A light box with a one-line hint, shown before anything is computed."""
    return _message_svg(text, width, height)


@dataclass
class Series:
    label: str
    y: np.ndarray
    color: str
    dash: bool = False
    shown: Callable[[float], str] | None = None   # how its value at the marker is written (None: `fmt`)


TICK_CHAR_PX = 6
"""About how wide one character of a 10 px tick label is (for laying out margins, not measured)."""


class LineChart:
    """Lines over PGD steps, laid out once; `svg(i)` adds a marker (and the values) at frame i.

    `flip` draws a dashed vertical line where the prediction flips; `hlines` are labelled
    horizontal reference lines (e.g. the eps radius). `yunit` (unit, suffix): the y ticks at whole multiples of
    1/unit, written "k{suffix}" (a Linf distance, data in [0,1], ticks "2/255" beside a value and an ε in k/255).
    """

    def __init__(self, x: Sequence[float], series: Sequence[Series], *, title: str, ylabel: str = "",
                 xlabel: str = "PGD step t", ylim: tuple[float, float] | None = None, flip: float | None = None,
                 hlines: Sequence[tuple[float, str]] = (), width: int = 300, height: int = 210,
                 yunit: tuple[float, str] | None = None):
        self.x = np.asarray(x, dtype=np.float64)
        self.series = [Series(s.label, np.asarray(s.y, dtype=np.float64), s.color, s.dash, s.shown) for s in series]
        self.width, self.height = width, height
        self.right, self.top, self.bottom = 10, 48, 34
        ph = height - self.top - self.bottom
        x0, x1 = (float(self.x[0]), float(self.x[-1])) if len(self.x) else (0.0, 1.0)
        if x1 <= x0:
            x1 = x0 + 1
        finite = np.concatenate([s.y[np.isfinite(s.y)] for s in self.series]
                                + [np.array([v for v, _ in hlines if math.isfinite(v)], dtype=np.float64)])
        if ylim is not None:
            y0, y1 = ylim
        elif finite.size:
            y0, y1 = float(finite.min()), float(finite.max())
            pad = 0.06 * (y1 - y0) if y1 > y0 else max(1.0, abs(y0) * 0.1)
            y0, y1 = y0 - pad, y1 + pad
        else:
            y0, y1 = 0.0, 1.0
        unit, suffix = yunit or (1.0, "")
        yticks = [(k / unit, fmt(k) + (suffix if k else "")) for k in nice_ticks(y0 * unit, y1 * unit, 5, bool(yunit))]
        # the margin fits the widest tick label beside the rotated axis title
        self.left = max(46, 24 + TICK_CHAR_PX * max((len(text) for _, text in yticks), default=0))
        pw = width - self.left - self.right
        self._sx = lambda v: self.left + (v - x0) / (x1 - x0) * pw  # noqa: E731
        self._sy = lambda v: self.top + (1 - (v - y0) / (y1 - y0)) * ph  # noqa: E731
        self._y0, self._y1 = y0, y1

        p = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{esc(title)}" '
             f'style="{FONT};max-width:{int(width * 1.4)}px;background:#fff">',
             fitted_text(4, 15, title, 12.5, width - 8, 'font-weight="600" fill="#111827"')]
        for t, text in yticks:
            yy = self._sy(t)
            p.append(f'<line x1="{self.left}" x2="{width - self.right}" y1="{yy:.1f}" y2="{yy:.1f}" '
                     f'stroke="#eef0f3"/><text x="{self.left - 5}" y="{yy + 3.5:.1f}" font-size="10" '
                     f'text-anchor="end" fill="{GREY}">{text}</text>')
        for t in nice_ticks(x0, x1, 6):
            xx = self._sx(t)
            p.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{self.top + ph}" y2="{self.top + ph + 4}" '
                     f'stroke="{GREY}"/><text x="{xx:.1f}" y="{self.top + ph + 15}" font-size="10" '
                     f'text-anchor="middle" fill="{GREY}">{fmt(t)}</text>')
        p.append(f'<rect x="{self.left}" y="{self.top}" width="{pw}" height="{ph}" fill="none" stroke="#d1d5db"/>')
        p.append(f'<text x="{self.left + pw / 2}" y="{height - 4}" font-size="11" text-anchor="middle" '
                 f'fill="#374151">{esc(xlabel)}</text>')
        if ylabel:
            p.append(f'<text transform="translate(11,{self.top + ph / 2}) rotate(-90)" font-size="10.5" '
                     f'text-anchor="middle" fill="#374151">{esc(ylabel)}</text>')
        # the flip label goes on the roomier side of its line and the reference-line labels on the other end,
        # so the two never overlap (both sit near the top of the plot)
        flip_x = self._sx(flip) if flip is not None and x0 <= flip <= x1 else None
        flip_right_half = flip_x is not None and flip_x > self.left + pw / 2
        for v, label in hlines:
            if math.isfinite(v) and y0 <= v <= y1:
                yy = self._sy(v)
                lx, anchor = (self.left + 3, "start") if flip_right_half else (width - self.right - 3, "end")
                p.append(f'<line x1="{self.left}" x2="{width - self.right}" y1="{yy:.1f}" y2="{yy:.1f}" '
                         f'stroke="{GREY}" stroke-dasharray="2 3"/><text x="{lx}" y="{yy - 3:.1f}" font-size="10" '
                         f'text-anchor="{anchor}" fill="{GREY}">{esc(label)}</text>')
        if flip_x is not None:
            lx, anchor = (flip_x - 3, "end") if flip_right_half else (flip_x + 3, "start")
            # at the top of the plot, or at its bottom where a reference line runs along the top: the label
            # crossed the ε or p = 0.9 line there (and ran into its label when the flip is near the middle)
            lines = [self._sy(v) for v, _ in hlines if math.isfinite(v) and y0 <= v <= y1]
            ly = max((self.top + 11, self.top + ph - 4), key=lambda y: min([abs(y - 4 - h) for h in lines] + [ph]))
            p.append(f'<line x1="{flip_x:.1f}" x2="{flip_x:.1f}" y1="{self.top}" y2="{self.top + ph}" '
                     f'stroke="{GREEN}" stroke-dasharray="5 3" stroke-width="1.5"/><text x="{lx:.1f}" '
                     f'y="{ly:.1f}" font-size="10" text-anchor="{anchor}" fill="{GREEN}">'
                     f'flips at t={fmt(flip)}</text>')
        for s in self.series:
            dash = ' stroke-dasharray="6 3"' if s.dash else ""
            for seg in self._segments(s.y):
                pts = " ".join(f"{self._sx(self.x[i]):.1f},{self._sy(s.y[i]):.1f}" for i in seg)
                if len(seg) == 1:
                    i = seg[0]
                    p.append(f'<circle cx="{self._sx(self.x[i]):.1f}" cy="{self._sy(s.y[i]):.1f}" r="2" '
                             f'fill="{s.color}"/>')
                else:
                    p.append(f'<polyline points="{pts}" fill="none" stroke="{s.color}" stroke-width="2"'
                             f' stroke-linejoin="round"{dash}/>')
        self._static = "".join(p)

    @staticmethod
    def _segments(y: np.ndarray) -> list[list[int]]:
        segs, cur = [], []
        for i, v in enumerate(y):
            if math.isfinite(v):
                cur.append(i)
            elif cur:
                segs.append(cur)
                cur = []
        if cur:
            segs.append(cur)
        return segs

    def svg(self, index: int | None = None) -> str:
        """The chart with the marker at frame `index` (None: no marker, legend without values)."""
        parts = [self._static]
        lx = 4.0
        if index is not None and len(self.x):
            index = int(np.clip(index, 0, len(self.x) - 1))
            xx = self._sx(self.x[index])
            parts.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{self.top}" y2="{self.height - self.bottom}" '
                         f'stroke="{RED}" stroke-width="1.5"/>')
            for s in self.series:
                v = s.y[index]
                if math.isfinite(v) and self._y0 <= v <= self._y1:
                    parts.append(f'<circle cx="{xx:.1f}" cy="{self._sy(v):.1f}" r="4.5" fill="#fff" '
                                 f'stroke="{s.color}" stroke-width="2.5"/>')
        texts = [s.label if index is None else f"{s.label}: {(s.shown or fmt)(s.y[index])}" for s in self.series]
        # each entry: a swatch and a gap (22 px), then its text at ~5.6 px a character, squeezed to fit the width
        room_for_text = self.width - 8 - 22 * len(texts)
        squeeze = min(1.0, room_for_text / max(1.0, sum(5.6 * len(t) for t in texts)))
        for s, text in zip(self.series, texts):
            room = 5.6 * len(text) * squeeze
            parts.append(f'<rect x="{lx:.1f}" y="28" width="10" height="4" fill="{s.color}"/>'
                         + fitted_text(lx + 13, 34, text, 10.5, room if squeeze < 1 else math.inf, 'fill="#374151"'))
            lx += 22 + room
        parts.append("</svg>")
        return "".join(parts)


def probability_bars(probs: np.ndarray, class_names: Sequence[str], *, k: int = 5, source: int | None = None,
                     target: int | None = None, title: str = "Prediction", width: int = 300) -> str:
    """Horizontal bars of the top-`k` class probabilities (source and target always shown).

    Blue: the class predicted for the start image; orange: the target class; grey: others.
    """
    probs = np.asarray(probs, dtype=np.float64)
    order = [int(i) for i in np.argsort(-probs, kind="stable")[:k]]
    for c in (target, source):
        if c is not None and c not in order:
            order.append(int(c))
    row, top = 21, 24
    height = top + row * len(order) + 4
    label_w, value_w = 92, 44
    bar_w = width - label_w - value_w - 10
    p = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{esc(title)}" '
         f'style="{FONT};max-width:{int(width * 1.6)}px;background:#fff">',
         fitted_text(4, 15, title, 12.5, width - 8, 'font-weight="600" fill="#111827"')]
    for r, c in enumerate(order):
        y = top + r * row
        color = ORANGE if c == target else BLUE if c == source else "#9ca3af"
        name = class_names[c] if c < len(class_names) else str(c)
        name = name if len(name) <= 14 else name[:13] + "…"
        weight = ' font-weight="600"' if c in (source, target) else ""
        w = max(0.0, min(1.0, float(probs[c]))) * bar_w
        p.append(f'<text x="{label_w - 6}" y="{y + 14}" font-size="12" text-anchor="end" fill="#111827"{weight}>'
                 f'{esc(name)}</text><rect x="{label_w}" y="{y + 3}" width="{bar_w}" height="15" rx="3" '
                 f'fill="#f3f4f6"/><rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="15" rx="3" '
                 f'fill="{color}"/><text x="{label_w + bar_w + 6}" y="{y + 14}" font-size="11" fill="#374151">'
                 f'{probs[c] * 100:.1f}%</text>')
    p.append("</svg>")
    return "".join(p)


# ---------------------------------------------------------------- images

def display_scale(image_size: int, target: int = DISPLAY_SIZE) -> int:
    """Integer nearest-neighbour factor that brings `image_size` to about `target` pixels (>= 1)."""
    return max(1, round(target / max(1, image_size)))


def difference_frames(images: np.ndarray) -> tuple[np.ndarray, float]:
    """x_t - x_0 for every frame as uint8 colour images, grey = unchanged.

    One scale for the whole trajectory (the largest |x_t - x_0| of any pixel), so the map grows as
    the path moves away from x_0. Returns ((F, H, W, 3) uint8, scale).
    """
    images = np.asarray(images, dtype=np.float32)
    delta = images - images[:1]
    scale = float(np.abs(delta).max()) or 1.0
    out = np.clip(0.5 + 0.5 * delta / scale, 0.0, 1.0)
    return (out.transpose(0, 2, 3, 1) * 255 + 0.5).astype(np.uint8), scale


def labelled_grid(frames: np.ndarray, labels: Sequence[str], nrow: int, scale: int = 1, pad: int = 2,
                  band: int = 16) -> np.ndarray:
    """Tile (N, H, W, 3) uint8 frames `nrow` per row, each with its label written in a white band below it."""
    n, h, w, _ = frames.shape
    h, w = h * scale, w * scale
    rows = math.ceil(n / max(1, nrow))
    canvas = Image.new("RGB", (nrow * (w + pad) + pad, rows * (h + band + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(9, min(12, band - 4)))
    for i in range(n):
        r, c = divmod(i, nrow)
        x, y = pad + c * (w + pad), pad + r * (h + band + pad)
        tile = Image.fromarray(frames[i])
        canvas.paste(tile.resize((w, h), Image.NEAREST) if scale > 1 else tile, (x, y))
        text = labels[i]
        while len(text) > 3 and draw.textlength(text, font=font) > w:  # long class names: cut, keep the p(…)
            head, _, tail = text.rpartition(" ")
            text = head[:-2] + "… " + tail if len(head) > 2 else text[:-1]
        draw.text((x + w / 2, y + h + band / 2), text, fill=(31, 41, 55), font=font, anchor="mm")
    return np.asarray(canvas)


def png_data_uri(rgb: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ---------------------------------------------------------------- landscape

class LandscapeSVG:
    """The energy on the plane through x_0 with the projected PGD path; `svg(i)` rings frame i.

    Takes an `explain.landscape.Landscape`. The heatmap is one small embedded PNG (the browser
    smooths it); the path, start, end and the ring are SVG elements on top.
    """

    def __init__(self, landscape, width: int = 440):
        L = landscape
        left, right, top = 52, 78, 46
        side = width - left - right
        height = top + side + 58
        self.width, self.height = width, height
        self.left, self.top, self.side = left, top, side
        a0, a1 = float(L.alphas[0]), float(L.alphas[-1])
        b0, b1 = float(L.betas[0]), float(L.betas[-1])
        da = (L.alphas[1] - L.alphas[0]) / 2 if len(L.alphas) > 1 else 0.5
        db = (L.betas[1] - L.betas[0]) / 2 if len(L.betas) > 1 else 0.5
        a0, a1, b0, b1 = a0 - da, a1 + da, b0 - db, b1 + db
        self._sx = lambda v: left + (v - a0) / (a1 - a0) * side  # noqa: E731
        self._sy = lambda v: top + (1 - (v - b0) / (b1 - b0)) * side  # noqa: E731
        values = np.asarray(L.values, dtype=np.float64)
        finite = values[np.isfinite(values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        norm = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
        cmap = colormaps[ENERGY_CMAP]
        rgb = (cmap(np.nan_to_num(norm, nan=0.0))[..., :3] * 255 + 0.5).astype(np.uint8)[::-1]  # row 0 = top
        bar = (cmap(np.linspace(1, 0, 64))[:, None, :3] * 255 + 0.5).astype(np.uint8)
        self.path = np.asarray(L.path_xy, dtype=np.float64)
        self.steps = np.asarray(L.path_steps)
        names = L.class_names
        title = f"{L.energy_label} on a plane through the start image"
        p = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{esc(title)}" '
             f'style="{FONT};max-width:{int(width * 1.5)}px;background:#fff">',
             f'<text x="{left}" y="17" font-size="13" font-weight="600" fill="#111827">{esc(title)}</text>',
             f'<text x="{left}" y="34" font-size="10.5" fill="{GREY}">dark = low energy = typical; '
             f'second direction: {esc(L.v_label)}</text>',
             f'<image href="{png_data_uri(rgb)}" x="{left}" y="{top}" width="{side}" height="{side}" '
             f'preserveAspectRatio="none"/>',
             f'<rect x="{left}" y="{top}" width="{side}" height="{side}" fill="none" stroke="#9ca3af"/>']
        for t in nice_ticks(a0, a1, 5):
            xx = self._sx(t)
            p.append(f'<text x="{xx:.1f}" y="{top + side + 14}" font-size="10" text-anchor="middle" '
                     f'fill="{GREY}">{fmt(t, 2)}</text>')
        for t in nice_ticks(b0, b1, 5):
            yy = self._sy(t)
            p.append(f'<text x="{left - 5}" y="{yy + 3.5:.1f}" font-size="10" text-anchor="end" '
                     f'fill="{GREY}">{fmt(t, 2)}</text>')
        u_label = getattr(L, "u_label", "toward the counterfactual")   # the gradient where the path stays at x_0
        p.append(fitted_text(left + side / 2, top + side + 28, f"{u_label} (L2 distance)", 11, side,
                             'text-anchor="middle" fill="#374151"'))
        p.append(f'<text transform="translate(13,{top + side / 2}) rotate(-90)" font-size="11" '
                 f'text-anchor="middle" fill="#374151">second direction (L2)</text>')
        cx = left + side + 16
        p.append(f'<image href="{png_data_uri(bar)}" x="{cx}" y="{top}" width="14" height="{side}" '
                 f'preserveAspectRatio="none"/><rect x="{cx}" y="{top}" width="14" height="{side}" fill="none" '
                 f'stroke="#9ca3af"/><text x="{cx + 18}" y="{top + 9}" font-size="10" fill="{GREY}">{fmt(hi)}</text>'
                 f'<text x="{cx + 18}" y="{top + side}" font-size="10" fill="{GREY}">{fmt(lo)}</text>'
                 f'<text transform="translate({cx + 30},{top + side / 2}) rotate(90)" font-size="10" '
                 f'text-anchor="middle" fill="{GREY}">{esc(L.energy_label)}</text>')
        pts = " ".join(f"{self._sx(a):.1f},{self._sy(b):.1f}" for a, b in self.path)
        p.append(f'<polyline points="{pts}" fill="none" stroke="#fff" stroke-width="2" stroke-linejoin="round"/>')
        sx, sy = self._sx(self.path[0, 0]), self._sy(self.path[0, 1])
        ex, ey = self._sx(self.path[-1, 0]), self._sy(self.path[-1, 1])
        p.append(f'<circle cx="{sx:.1f}" cy="{sy:.1f}" r="6" fill="{GREEN}" stroke="#000"><title>start x_0 '
                 f'({esc(names[L.source])})</title></circle>')
        p.append(f'<path d="{_star(ex, ey, 9)}" fill="{ORANGE}" stroke="#000"><title>end x_T (toward '
                 f'{esc(names[L.target])})</title></path>')
        ly = top + side + 46
        # the legend's three places (start, end, the step marker of `svg`): long class names are squeezed into
        # theirs (the markers' tooltips hold them whole), so they never run into the next one
        p.append(f'<circle cx="{left + 4}" cy="{ly - 3}" r="4" fill="{GREEN}" stroke="#000"/>'
                 + fitted_text(left + 11, ly, f"start ({names[L.source]})", 10, 92, 'fill="#374151"')
                 + f'<path d="{_star(left + 112, ly - 3, 6)}" fill="{ORANGE}" stroke="#000"/>'
                 + fitted_text(left + 121, ly, f"end (toward {names[L.target]})", 10, side - 190, 'fill="#374151"'))
        self._static = "".join(p)

    def svg(self, index: int | None = None) -> str:
        parts = [self._static]
        if index is not None and len(self.path):
            i = int(np.clip(index, 0, len(self.path) - 1))
            x, y = self._sx(self.path[i, 0]), self._sy(self.path[i, 1])
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="8" fill="none" stroke="{RED}" stroke-width="3"/>'
                         f'<circle cx="{self.left + self.side - 60}" cy="{self.top + self.side + 43}" r="4.5" '
                         f'fill="none" stroke="{RED}" stroke-width="2"/><text x="{self.left + self.side}" '
                         f'y="{self.top + self.side + 46}" font-size="10" text-anchor="end" fill="{RED}">'
                         f'step {int(self.steps[i])}</text>')
        parts.append("</svg>")
        return "".join(parts)


def _star(cx: float, cy: float, r: float) -> str:
    pts = []
    for k in range(10):
        rad = r if k % 2 == 0 else r * 0.45
        a = math.pi / 2 + k * math.pi / 5
        pts.append(f"{cx + rad * math.cos(a):.1f},{cy - rad * math.sin(a):.1f}")
    return "M" + " L".join(pts) + " Z"
