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
    assert f"distance {view_fmt(expected)}" in view.caption()


def view_fmt(v: float) -> str:
    from webapp.charts import fmt
    return fmt(v)


def test_a_linf_retry_never_offers_a_budget_above_1(model):
    """Doubling a Linf ε of 0.6 offered 1.2, which the request check then refused; 1 already covers [0,1]."""
    torch.manual_seed(3)
    tr = explain.counterfactual(model, torch.rand(3, 32, 32), 3, norm="Linf", eps=0.6, step_size=0.6, steps=2)
    if tr.flip_step is None:
        retry = retry_for(tr)
        assert retry.eps <= 1 and retry.step_size <= 1
    from types import SimpleNamespace
    stuck = SimpleNamespace(flip_step=None, source=0, target=3, distance=np.array([0.0, 0.6]), class_names=list("abcd"),
                            params={"norm": "Linf", "eps": 0.6, "steps": 2, "step_size": 0.6},
                            probs=np.array([[0.7, 0.1, 0.1, 0.1]] * 2), confidence=np.array([0.1, 0.1]),
                            frames=np.zeros((2, 32, 32, 3)))
    retry = retry_for(stuck)
    assert retry.eps == 1.0 and retry.step_size <= 1
    explain.params.validate_params("Linf", retry.eps, retry.step_size, retry.steps)
    stuck.params, stuck.distance = {"norm": "Linf", "eps": 1.0, "steps": 100, "step_size": 0.01}, np.array([0, .97])
    retry = retry_for(stuck, max_steps=500)             # ε = 1 bounds nothing: more steps are the fix
    assert retry.changes(stuck.params) and retry.eps == 1.0 and retry.steps > 100
