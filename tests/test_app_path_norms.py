"""Distances in the path's own norm: the app's distance chart, its step caption and its retry advice measure an L1
path in L1 (they measured it in Linf, at most 1, against ε = 12: "below the allowed ε" on every L1 path)."""

import numpy as np
import pytest
import torch

import explain
from dat_core import build_model
from webapp.retry import retry_for
from webapp.views import CounterfactualView, radius_needed


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("wrn-10-1").eval()


@pytest.mark.parametrize("norm, order", [("L1", 1), ("L2", 2), ("Linf", np.inf)])
def test_a_path_is_measured_in_its_own_norm(model, norm, order):
    torch.manual_seed(1)
    tr = explain.counterfactual(model, torch.rand(3, 32, 32), 3, norm=norm, eps="inf", steps=3)
    delta = (tr.images - tr.images[:1]).reshape(len(tr.images), -1)
    expected = np.linalg.norm(delta, ord=order, axis=1)
    np.testing.assert_allclose(tr.distance, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tr.l1, np.abs(delta).sum(1), rtol=1e-4)
    chart = CounterfactualView.build(tr, "m").charts["distance"]
    np.testing.assert_allclose(chart.series[0].y, expected, rtol=1e-4, atol=1e-5)
    assert chart.series[0].label.endswith({"L1": "₁", "L2": "₂", "Linf": "∞"}[norm])


def test_an_l1_path_that_used_its_budget_is_told_so(model):
    torch.manual_seed(2)
    tr = explain.counterfactual(model, torch.rand(3, 32, 32), 3, norm="L1", eps=0.5, step_size=1.0, steps=4)
    assert tr.flip_step is None and np.abs(tr.images[-1] - tr.images[0]).sum() == pytest.approx(0.5, rel=1e-3)
    retry = retry_for(tr)
    assert "used its whole budget" in retry.why and retry.eps == 1.0
    assert "below the allowed" not in retry.why
    assert radius_needed(tr) is None


@pytest.mark.parametrize("norm, order", [("L1", 1), ("L2", 2), ("Linf", np.inf)])
def test_a_running_path_says_its_distance_in_its_own_norm(norm, order):
    from webapp.explainer import Running
    from webapp.views import RunningView

    rng = np.random.default_rng(0)
    start = rng.random((3, 8, 8)).astype(np.float32)
    now = np.clip(start + rng.normal(0, 0.05, start.shape), 0, 1).astype(np.float32)
    view = RunningView(Running(3, 10, now, np.full(4, 0.25), 0), start, list("abcd"), 2, norm)
    expected = np.linalg.norm((now - start).ravel(), ord=order)
    shown = f"{view_fmt(expected * 255)}/255" if norm == "Linf" else view_fmt(expected)
    assert f"distance {shown}" in view.caption()


def view_fmt(v: float) -> str:
    from webapp.charts import fmt
    return fmt(v)


def test_a_linf_distance_is_said_in_the_units_of_its_budget(model):
    """A Linf caption read "distance 0.00784" beside "ε = 2/255"; the retry and the all-targets table the same."""
    from dataclasses import replace

    from webapp.views import AllTargetsView

    torch.manual_seed(3)
    image = torch.rand(3, 32, 32) * 0.5 + 0.25          # inside [0,1] after any 2 steps of 1/255
    target = (int(model(image[None]).argmax()) + 1) % 10
    tr = explain.counterfactual(model, image, target, norm="Linf", eps="2/255", step_size="1/255", steps=2)
    last = len(tr.steps) - 1
    view = CounterfactualView.build(tr, "m")
    assert "distance 2/255" in view.caption(last) and "ε = 2/255" in view.summary()
    assert "‖x_t − x_0‖∞: 2/255" in view.chart("distance", last)                  # the chart's value at the marker
    short = replace(tr, flip_step=None, params={**tr.params, "eps": "inf"})
    assert "the change is 2/255" in retry_for(short).why
    flipped = replace(tr, flip_step=int(tr.steps[last]))
    assert "| 2/255 |" in AllTargetsView([flipped], "m", 1).table()
