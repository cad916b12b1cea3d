"""The app at ImageNet scale: a 1000-class, 256-px checkpoint in the ConvNeXt-L-ConvStem key layout (reduced widths,
random weights, raw [0,1] inputs, the ImageNet names), released as a `module.`-prefixed state dict and imported the
way `python -m train import` does. The handlers as plain functions, then one browser test: type-to-filter target,
frames streamed while PGD runs, Cancel.
"""

import math
import time

import gradio as gr
import numpy as np
import pytest
import torch
from conftest import uploaded

from benchmarks.app_harness import (
    CHROMIUM,
    browser_page,
    first_streamed_frame,
    reduced_imagenet_arch,
    serve,
    settings,
    upload,
    write_image,
    write_model,
)
from dat_core import build_model
from dat_core.models.class_names import dataset_class_names
from dat_core.official import import_official
from explain.landscape import plan_landscape
from explain.params import default_params, eps_suggestions, exact_text
from webapp import explainer as explainer_module
from webapp.demo import build_demo
from webapp.describe import NO_REFERENCE, describe_model
from webapp.explainer import Explainer
from webapp.tabs import counterfactual, landscape
from webapp.tabs import model as model_tab

STEPS = 4
LONG = 150  # a long run; its 151 frames of 256 px (~200 MB) stay within the result cache's 512 MB


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The imported folder (the reduced layout stays registered while this module's tests run) and a photo."""
    root = tmp_path_factory.mktemp("imagenet")
    with reduced_imagenet_arch() as arch:
        torch.manual_seed(0)
        released = build_model(arch, num_classes=1000).state_dict()
        torch.save({f"module.{k}": v for k, v in released.items()}, root / "released.pth")
        import_official(root / "released.pth", arch, 1000, out_dir=root / "imported", image_size=256,
                        class_names=dataset_class_names("imagenet"))
        yield {"imported": root / "imported", "photo": uploaded(write_image(root / "photo.png")), "root": root}


@pytest.fixture(scope="module")
def ex(world):
    return Explainer(str(world["imported"]), standard_model=None, allow_local_models=True)


@pytest.fixture
def slow(ex):
    """Every forward of the model takes >= 50 ms more and is counted (a long run, and a way to see it stop)."""
    calls = []

    def hook(*_):
        calls.append(time.monotonic())
        time.sleep(0.05)
    handle = ex.default.model.register_forward_hook(hook)
    yield calls
    handle.remove()


def named(result):
    return result._asdict()


def is_skip(value) -> bool:
    return isinstance(value, dict) and value.get("__type__") == "update" and len(value) == 1


# ------------------------------------------------------------------ defaults, preview, model tab

def test_defaults_are_the_papers_imagenet_budgets_at_224_and_256(ex):
    for size in (224, 256):
        assert default_params(size) == {"norm": "L2", "eps": 18.0, "step_size": 2.0, "steps": 20,
                                        "objective": "target_logit"}
        assert default_params(size, "Linf")["eps"] == pytest.approx(16 / 255)
        assert 18.0 in eps_suggestions("L2", size)
    assert default_params(32) == {**default_params(224), "eps": 5.0, "step_size": 0.1, "steps": 100}  # CIFAR kept
    assert default_params(64)["eps"] == pytest.approx(10.0)           # small resolutions still scale from 32 px
    # written as a person would type them, so the settings boxes show 0.15 and 0.3, not 0.30000000000000004
    assert [exact_text(default_params(s)["step_size"], "L2") for s in (48, 96, 112)] == ["0.15", "0.3", "0.35"]
    state = ex.new_session()
    l2, linf = counterfactual.norm_defaults(ex, "L2", state), counterfactual.norm_defaults(ex, "Linf", state)
    assert (l2.cf_eps["value"], l2.cf_step_size) == ("18", "2")
    assert "18" in l2.cf_eps["choices"] and "∞" in l2.cf_eps["choices"]
    assert (linf.cf_eps["value"], linf.cf_step_size) == ("16/255", "2/255")   # not 0.00784313725490196


def test_preview_shows_top5_at_model_resolution_and_no_reference_note(ex, world):
    out = named(counterfactual.preview(ex, world["photo"], ex.new_session()))
    assert out["cf_input"].shape == (256, 256, 3)                    # the model's 256 px, not upscaled
    names = ex.default.class_names
    assert len(names) == 1000 and out["cf_target"]["value"] in names
    assert out["cf_prediction"].count("%</text>") == 5               # the top five of 1000 classes
    assert NO_REFERENCE in out["cf_energy"] and NO_REFERENCE in describe_model(ex.default)


def test_model_tab_and_model_dir_accept_the_imported_folder(world, tmp_path):
    cifar = Explainer(str(write_model(tmp_path / "cifar")), standard_model=None, allow_local_models=True)
    state = cifar.new_session()
    out = model_tab.load(cifar, model_tab.LOCAL, str(world["imported"]), "", "", world["photo"], state)
    assert len(out.cf_target["choices"]) == 1000 and "goldfish" in out.cf_target["choices"]
    assert "1000 classes" in out.banner and "256×256 px" in out.banner
    assert out.cf_input.shape == (256, 256, 3) and NO_REFERENCE in out.cf_energy
    shown = named(counterfactual.run(cifar, world["photo"], "goldfish", "L2", "18", 2, 2.0, out.state))
    assert shown["cf_frame"].shape == (256, 256, 3) and "goldfish" in shown["cf_summary"]


# ------------------------------------------------------------------ streamed frames and Cancel

def test_run_live_streams_the_iterate_then_shows_the_path(ex, world, slow, monkeypatch):
    monkeypatch.setattr(explainer_module, "STREAM_EVERY_S", 0.0)      # every step, to check each one
    state = ex.new_session()
    outs = [named(o) for o in counterfactual.run_live(ex, world["photo"], "goldfish", "L2", "18", STEPS, 2.0,
                                                      state)]
    streamed, final = outs[:-1], outs[-1]
    assert len(streamed) >= 2 and all(is_skip(o["cf_summary"]) and is_skip(o["cf_step"]) for o in streamed)
    steps = [int(o["cf_caption"].split("step ")[1].split(" of")[0]) for o in streamed]
    assert steps == sorted(set(steps)) and 1 <= steps[0] < steps[-1] <= STEPS
    assert all(f"of {STEPS}" in o["cf_caption"] for o in streamed)
    view = ex.get(state, "cf")
    assert final["cf_step"]["maximum"] == STEPS and "goldfish" in final["cf_summary"]
    for o, t in zip(streamed, steps):                                 # each streamed frame is that PGD step's x_t
        assert o["cf_frame"].shape == (256, 256, 3) and np.array_equal(o["cf_frame"], view.frame(t))
        assert "goldfish" in o["cf_probs"] and o["cf_probs"].count("%</text>") >= 5
    again = list(counterfactual.run_live(ex, world["photo"], "goldfish", "L2", "18", STEPS, 2.0, state))
    assert len(again) == 1                                            # memoized: the path at once, nothing to stream


def test_closing_the_stream_stops_pgd_and_keeps_nothing(ex, world, slow):
    state = ex.new_session()
    run = counterfactual.run_live(ex, world["photo"], "tench", "L2", "inf", LONG, 2.0, state)
    first = named(next(run))
    assert "Running: step" in first["cf_caption"] and f"of {LONG}" in first["cf_caption"]
    run.close()                                                      # what Gradio does when Cancel cancels the event
    stopped = len(slow)
    time.sleep(0.3)
    assert len(slow) == stopped < 40                                 # PGD ended with the stream, early
    assert ex.get(state, "cf") is None and not ex.cancel(state)


def test_cancel_ends_a_streamed_run_with_one_message(ex, world, slow):
    state = ex.new_session()
    run = counterfactual.run_live(ex, world["photo"], "tench", "L2", "inf", LONG, 2.0, state)
    next(run)
    assert ex.cancel(state)                                          # the Cancel button's handler
    with pytest.raises(gr.Error, match="Cancelled at step"):
        for _ in run:
            pass
    assert ex.get(state, "cf") is None


def test_a_streamed_run_reports_bad_requests_as_readable_errors(ex, world):
    for target, steps, message in (("unicorn", STEPS, "(?i)unknown class 'unicorn'"),  # checked while iterated
                                   ("goldfish", 400, "need about .* Ask for fewer steps")):  # 401 frames of 256 px
        with pytest.raises(gr.Error, match=message) as raised:
            next(counterfactual.run_live(ex, world["photo"], target, "L2", "18", steps, 2.0, ex.new_session()))
        assert len(raised.value.message) < 300                      # 12 of the 1000 names, not a wall of text


# ------------------------------------------------------------------ landscape sized to the server

def test_landscape_plan_fits_the_time_and_memory_budget():
    plan = plan_landscape(21, 7, seconds_per_image=1.0, activation_bytes=428 * 2**20, budget_s=60)
    assert (plan.grid, plan.batch_size, plan.reduced) == (7, 2, True)   # 7² + 7 = 56 s; 9² + 7 = 88 s
    small = plan_landscape(21, 61, 1e-3, 2 * 2**20)
    assert (small.grid, small.batch_size, small.reduced) == (21, 64, False)
    assert plan_landscape(41, 0, 100.0, 1).grid == 5                    # never below the smallest grid


def test_landscape_tab_shrinks_the_grid_and_says_why(ex, world, monkeypatch):
    state = ex.new_session()
    counterfactual.run(ex, world["photo"], "goldfish", "L2", "18", STEPS, 2.0, state)
    monkeypatch.setattr(landscape, "seconds_per_image", lambda *a, **k: 1.0)  # a slow server: 1 s an image
    out = landscape.run(ex, state, STEPS, landscape.ENERGIES[0], 21)
    land = ex.get(state, "cf").landscape.landscape
    assert land.values.shape == (7, 7)                               # (7² + 5 path frames) s <= 60 s
    assert "7×7 points, not 21×21" in out.land_info


# ------------------------------------------------------------------ the browser

@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install -y chromium)")
def test_browser_filters_1000_targets_streams_frames_and_cancels(world, tmp_path):
    expect = pytest.importorskip("playwright.sync_api").expect
    demo = build_demo(str(world["imported"]), standard_model=None)
    model = demo.explainer.default.model
    calls = []

    def slow(*_):
        calls.append(1)
        time.sleep(0.05)
    hook = model.register_forward_hook(slow)
    try:
        with serve(demo) as url, browser_page(url) as page:
            upload(page, world["photo"])
            expect(page.locator("#cf-input img")).to_have_js_property("naturalWidth", 256)
            box = page.locator("#cf-target input")
            box.click()                                              # selects the runner-up it holds: typing replaces
            box.press_sequentially("gold", delay=30)                 # and filters the 1000 names as it goes
            options = page.get_by_role("option")
            expect(options).to_have_count(3)
            assert sorted(o.strip(" ✓").lower() for o in options.all_inner_texts()) == [
                "golden retriever", "goldfinch", "goldfish"]
            options.filter(has_text="goldfish").first.click()
            expect(box).to_have_value("goldfish")
            settings(page, steps=LONG, eps="inf")
            first_streamed_frame(page, timeout_s=60)                  # a frame while PGD still runs
            expect(page.locator("#cf-caption")).to_contain_text("Running: step")
            expect(page.locator("#cf-caption")).to_contain_text(f"of {LONG}")
            page.wait_for_timeout(800)
            later = page.locator("#cf-caption").inner_text()
            page.screenshot(path=tmp_path / "streaming.png", full_page=True)
            page.click("#cf-cancel")
            expect(page.locator("#cf-run")).to_be_visible()
            page.wait_for_timeout(1000)
            stopped = len(calls)
            page.wait_for_timeout(1000)
            assert len(calls) == stopped < LONG, later                 # PGD stopped with Cancel
            assert "Running: step" in later
            settings(page, steps=2)
            page.click("#cf-run")
            expect(page.locator("#cf-caption")).to_contain_text("Step 2 of 2", timeout=60_000)
            expect(page.locator("#cf-summary")).to_contain_text("goldfish")
    finally:
        hook.remove()


@pytest.mark.parametrize("size", [32, 64, 224])
@pytest.mark.parametrize("norm", ["L2", "L1"])
def test_eps_suggestions_read_as_typed_and_hold_the_default(size, norm):
    """Fractions of eps 5 were offered as 0.8333 and 1.6667: every suggestion now has at most two decimals."""
    offered = eps_suggestions(norm, size)
    assert default_params(size, norm)["eps"] in offered and offered == sorted(offered) and offered[-1] == math.inf
    assert all(v == round(v, 2) for v in offered[:-1]) and len(set(offered)) == len(offered)
