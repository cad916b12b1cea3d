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
