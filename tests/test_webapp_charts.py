"""SVG charts of webapp.charts: label layout."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from webapp.charts import LandscapeSVG, LineChart, Series


def _label_span(svg: str, startswith: str) -> tuple[float, float]:
    """Horizontal extent of a <text> label, generously (10 px sans-serif: digits are 5.6 px wide, we allow 6)."""
    for el in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}text"):
        if (el.text or "").startswith(startswith):
            x, width = float(el.get("x")), 6.0 * len(el.text)
            return (x - width, x) if el.get("text-anchor") == "end" else (x, x + width)
    raise AssertionError(f"no label {startswith!r} in the chart")


@pytest.mark.parametrize("flip", [3, 30, 55, 60])
def test_flip_and_reference_line_labels_never_overlap(flip):
    steps = np.arange(61)
    chart = LineChart(steps, [Series("L2", np.minimum(steps / 10, 3.0), "#7c3aed")], title="Distance",
                      flip=flip, hlines=[(3.0, "ε = 3")])
    svg = chart.svg(60).replace('<svg ', '<svg xmlns="http://www.w3.org/2000/svg" ', 1)
    (a0, a1), (b0, b1) = _label_span(svg, "flips at"), _label_span(svg, "ε = 3")
    assert a1 <= b0 or b1 <= a0, f"flip label {a0:.0f}..{a1:.0f} overlaps the eps label {b0:.0f}..{b1:.0f}"
    assert 0 <= min(a0, b0) and max(a1, b1) <= chart.width  # both inside the chart


def _label_box(svg: str, startswith: str) -> tuple[float, float, float, float]:
    """x0, x1, y0, y1 of a 10 px <text> label: its span, and from a cap height above its baseline to 2 px below."""
    for el in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}text"):
        if (el.text or "").startswith(startswith):
            y = float(el.get("y"))
            return (*_label_span(svg, startswith), y - 9, y + 2)
    raise AssertionError(f"no label {startswith!r} in the chart")


@pytest.mark.parametrize("flip", [2, 5, 6, 9])
@pytest.mark.parametrize("line, label", [(16 / 255, "ε = 16/255"), (0.9, "p = 0.9")])
def test_the_flip_label_stays_clear_of_a_reference_line_and_its_label(flip, line, label):
    """At a flip in the middle the label "flips at t=5" ran into "ε = 16/255" (Linf) and "p = 0.9", and at any
    flip its text crossed the dotted reference line near the top of the plot."""
    steps = np.arange(11)
    y = np.minimum(steps / 10, 1.0) * line
    chart = LineChart(steps, [Series("y", y, "#7c3aed")], title="Chart", flip=flip, hlines=[(line, label)])
    svg = chart.svg(10).replace('<svg ', '<svg xmlns="http://www.w3.org/2000/svg" ', 1)
    fx0, fx1, fy0, fy1 = _label_box(svg, "flips at")
    lx0, lx1, ly0, ly1 = _label_box(svg, label)
    assert fx1 <= lx0 or lx1 <= fx0 or fy1 <= ly0 or ly1 <= fy0, "the two labels overlap"
    line_y = next(float(el.get("y1")) for el in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}line")
                  if el.get("stroke-dasharray") == "2 3")
    assert not fy0 <= line_y <= fy1, "the flip label crosses the reference line"
    assert chart.top <= fy0 and fy1 <= chart.height - chart.bottom     # inside the plot


def test_long_titles_and_legends_are_fitted_inside_the_chart():
    """The compare tab's "Probability of the target class p(automobile)" and its three-entry legend ran past the
    chart's right edge and were cut off."""
    import re

    x = [0, 1, 2]
    series = [Series(f"{name}: p(automobile)", [0.1, 0.5, 0.9], "#000") for name in ("robust", "standard", "guided")]
    chart = LineChart(x, series, title="Probability of the target class p(automobile)", width=300)
    svg = chart.svg(1)
    fitted = [float(v) for v in re.findall(r'textLength="([\d.]+)"', svg)]
    assert fitted and max(fitted) <= 292
    ends = [float(a) + float(b) for a, b in re.findall(r'<text x="([\d.]+)" y="34" font-size="10.5" '
                                                      r'textLength="([\d.]+)"', svg)]
    assert len(ends) == 3 and max(ends) <= 300
    short = LineChart(x, [Series("energy", [1.0, 2.0, 3.0], "#000")], title="Energy", width=300).svg(1)
    assert "textLength" not in short


def test_the_landscape_legend_keeps_long_class_names_apart():
    """"end (toward automobile)" ran into the step marker, and a long start class into the end's star."""
    import re
    from types import SimpleNamespace

    n = 5
    grid = np.linspace(-1, 1, n)
    landscape = SimpleNamespace(alphas=grid, betas=grid, values=np.random.default_rng(0).normal(size=(n, n)),
                                path_xy=np.array([[0.0, 0.0], [0.5, 0.1]]), path_steps=np.array([0, 1]),
                                energy_label="E(x)", v_label="a random direction", source=0, target=1,
                                class_names=["tiger shark, Galeocerdo cuvieri", "automobile"])
    svg = LandscapeSVG(landscape).svg(1)
    legend = {m.group(3): (float(m.group(1)), float(m.group(2))) for m in re.finditer(
        r'<text x="([\d.]+)" y="\d+" font-size="10" textLength="(\d+)" [^>]*>([^<]+)</text>', svg)}
    start, end = legend["start (tiger shark, Galeocerdo cuvieri)"], legend["end (toward automobile)"]
    star_x = 52 + 112 - 6                                    # the end's star, 6 px wide each side
    marker_x = float(re.search(r'<circle cx="([\d.]+)" cy="\d+" r="4.5"', svg).group(1)) - 4.5
    assert start[0] + start[1] <= star_x and end[0] + end[1] <= marker_x


def test_long_tick_labels_leave_room_for_the_axis_title():
    """A Linf distance chart's ticks ("0.0075") ran into the rotated "Linf distance" title at the left edge."""
    import re

    from webapp.charts import TICK_CHAR_PX, LineChart, Series

    chart = LineChart([0, 1, 2], [Series("d", [0.0, 0.0078, 0.0078], "#000")], title="t", ylabel="Linf distance")
    svg = chart.svg(1)
    ticks = re.findall(r'<text x="([\d.]+)" y="[\d.]+" font-size="10" text-anchor="end"[^>]*>([^<]+)</text>', svg)
    assert ticks and max(len(t) for _, t in ticks) >= 6
    title_right = 11 + 10.5 / 2 + 2                                   # the rotated title's extent, plus a gap
    assert all(float(x) - TICK_CHAR_PX * len(t) >= title_right for x, t in ticks), ticks
