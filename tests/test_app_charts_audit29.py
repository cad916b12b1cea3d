"""Audit 29: a Linf distance chart's y ticks in the units of its value and its ε line (k/255); the Generate tab's
animation written from grids drawn one at a time (every labelled grid at once: ~400 MB for 100 samples × 118 steps)."""

import re
import tracemalloc
import types
from fractions import Fraction

import numpy as np
import pytest
import torch

import explain
from dat_core import build_model
from explain.export import save_gif
from webapp.views import CounterfactualView, SamplingView

TICK = re.compile(r'stroke="#eef0f3"/><text x="[\d.]+" y="([\d.]+)" font-size="10" text-anchor="end"[^>]*>([^<]+)<')
EPS_LINE = re.compile(r'y1="([\d.]+)" y2="[\d.]+" stroke="#6b7280" stroke-dasharray="2 3"/><text[^>]*>ε = ([^<]+)<')


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("wrn-10-1").eval()


def _path(model, norm, eps, step):
    torch.manual_seed(3)
    image = torch.rand(3, 32, 32) * 0.5 + 0.25
    target = (int(model(image[None]).argmax()) + 1) % 10
    return explain.counterfactual(model, image, target, norm=norm, eps=eps, step_size=step, steps=6)


def test_a_linf_distance_chart_ticks_in_k_over_255(model):
    """Its ticks read 0.002 … 0.016 beside a value "2/255" and a line "ε = 4/255": now 1/255, 2/255, … at round k,
    each drawn where k/255 lies, so the ε line sits on its tick; the data stay in [0,1] pixel units."""
    tr = _path(model, "Linf", "4/255", "1/255")
    chart = CounterfactualView.build(tr, "m").charts["distance"]
    np.testing.assert_allclose(chart.series[0].y, tr.distance)
    svg = chart.svg(len(tr.steps) - 1)
    ticks = TICK.findall(svg)
    assert len(ticks) >= 3, ticks
    for y, label in ticks:
        assert label == "0" or re.fullmatch(r"\d+/255", label), ticks            # whole k, in the value's units
        k = 0 if label == "0" else int(label.split("/")[0])
        assert float(y) - 3.5 == pytest.approx(chart._sy(k / 255), abs=0.06), (label, y)
    (line_y, eps), = EPS_LINE.findall(svg)
    assert eps == "4/255" and any(label == "4/255" and float(y) - 3.5 == pytest.approx(float(line_y), abs=0.06)
                                  for y, label in ticks), (ticks, line_y)


@pytest.mark.parametrize("norm, eps, step", [("L2", 1.0, 0.2), ("L1", 12.0, 2.0)])
def test_l2_and_l1_distance_charts_keep_plain_ticks(model, norm, eps, step):
    chart = CounterfactualView.build(_path(model, norm, eps, step), "m").charts["distance"]
    ticks = [label for _, label in TICK.findall(chart.svg(0))]
    assert ticks and not any("/" in t for t in ticks)
    assert all(Fraction(t.replace("−", "-")) == Fraction(t.replace("−", "-")).limit_denominator(100) for t in ticks)


def _samples(n_classes=5, per=5, frames=30, size=32):
    rng = np.random.default_rng(0)
    n = n_classes * per
    return types.SimpleNamespace(targets=np.repeat(np.arange(n_classes), per), n_per_class=per,
                                 trajectory=rng.integers(0, 256, (frames, n, size, size, 3), dtype=np.uint8),
                                 trajectory_confidences=rng.random((frames, n)), steps=np.arange(frames),
                                 class_names=[f"class {i}" for i in range(n_classes)])


def test_the_sampling_animation_is_written_from_one_grid_at_a_time(tmp_path):
    """generate.samples writes `save_gif(view.grids(), …)`: the grids were stacked first (and the palette frames
    listed beside them), twice every RGB grid at once. Now each is drawn as the writer reaches it: only the GIF
    writer's palette frames (a byte a pixel, a third of the RGB) are held."""
    view = SamplingView.build(_samples())
    rgb = view.grid(0).nbytes * len(view)
    tracemalloc.start()
    try:
        save_gif(view.grids(), tmp_path / "lazy.gif", scale=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.6 * rgb, (peak, rgb)
    stacked = save_gif(np.stack([view.grid(i) for i in range(len(view))]), tmp_path / "stacked.gif", scale=1)
    assert (tmp_path / "lazy.gif").read_bytes() == stacked.read_bytes()          # the same file


def test_save_gif_still_takes_arrays_and_trajectories_and_refuses_bad_frames(tmp_path):
    frames = np.random.default_rng(1).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    one = save_gif(frames, tmp_path / "a.gif", scale=2).read_bytes()
    assert save_gif(list(frames), tmp_path / "b.gif", scale=2).read_bytes() == one
    assert save_gif(frames[:1], tmp_path / "c.gif", scale=1).exists()
    for bad in ([], [frames[0], frames[1, :4]], [frames[0].astype(np.float32)]):
        with pytest.raises(ValueError):
            save_gif(bad, tmp_path / "d.gif", scale=1)
