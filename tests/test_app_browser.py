"""The launched app in a real browser (Debian chromium through Playwright, 1280x800): upload an image, pick a
target, run, move the step slider, and check that the shown frame and the chart marker follow it.

Screenshots land in tests/artifacts/screenshots/ (gitignored). `DAT_SCREENSHOT_MODEL=default` runs on the bundled
model and the first example image instead of a tiny random checkpoint (for README screenshots).
"""

import io
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import app
from benchmarks.app_harness import (
    MARKER,
    VIEWPORT,
    browser_expect,
    browser_page,
    bundled_model,
    frame_src,
    marker_x,
    model_hooked,
    move_slider,
    open_tab,
    pick_example,
    pick_target,
    run_counterfactual,
    serve,
    settings,
    shown_pixels,
    slider_value,
    toasts,
    type_into,
    upload,
    write_image,
    write_model,
)
from explain import default_params, to_model_input
from webapp.tabs.counterfactual import EXAMPLES_DIR

expect = browser_expect()

pytestmark = pytest.mark.browser
SHOTS = Path(__file__).resolve().parent / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    if os.environ.get("DAT_SCREENSHOT_MODEL") == "default":
        model = bundled_model()
        if model is None:
            pytest.fail("DAT_SCREENSHOT_MODEL=default, but assets/models holds no bundled model")
        examples = sorted(p for p in EXAMPLES_DIR.glob("*") if p.suffix.lower() in (".png", ".jpg"))
        image = examples[0] if examples else write_image(root / "photo.png")
    else:
        model, image = str(write_model(root / "model")), write_image(root / "photo.png")
    demo = app.build_demo(model, standard_model=None)
    with serve(demo) as url:
        yield demo, url, image


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random checkpoint served (fast to run), a second one to switch to, a photo, a bad file and a TIFF."""
    root = tmp_path_factory.mktemp("tiny")
    files = {"other": write_model(root / "other-model", seed=1), "photo": write_image(root / "photo.png")}
    (root / "notes.png").write_bytes(b"this is not an image")
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(root / "scan.tiff")
    files.update(bad=root / "notes.png", tiff=root / "scan.tiff")
    demo = app.build_demo(str(write_model(root / "model")), standard_model=None, allow_local_models=True)
    with serve(demo) as url:
        yield demo, url, files


def test_run_then_slider_moves_the_frame_and_the_marker(served):
    demo, url, image = served
    loaded = demo.explainer.default
    names = loaded.class_names
    with torch.no_grad():
        predicted = int(loaded.model(to_model_input(str(image), loaded.image_size)).argmax())
    SHOTS.mkdir(parents=True, exist_ok=True)
    with browser_page(url) as page:
        upload(page, image)
        expect(page.locator("#cf-prediction")).to_contain_text("What the model predicts")
        suggested = page.locator("#cf-target input").input_value()  # the runner-up class
        target = next(n for n in reversed(names) if n not in (suggested, names[predicted]))
        pick_target(page, target)
        run_counterfactual(page)
        last = slider_value(page)
        assert last == default_params(loaded.image_size)["steps"]  # the slider ends at x_T
        expect(page.locator("#cf-summary")).to_contain_text(f"Started as {names[predicted]}")
        expect(page.locator("#cf-summary")).to_contain_text(target)
        expect(page.locator("#cf-caption")).to_contain_text(f"Step {last} of {last}")
        frame, marker = frame_src(page), marker_x(page)
        assert frame and marker is not None
        end_pixels = shown_pixels(page, "#cf-frame")
        # the downloads are written after the result is shown (a chained event) and then enabled
        expect(page.locator("#cf-gif")).to_be_enabled(timeout=30_000)
        with page.expect_download() as download:
            page.click("#cf-gif")
        with Image.open(download.value.path()) as gif:
            assert gif.format == "GIF" and gif.n_frames == last + 1
        page.screenshot(path=SHOTS / "counterfactual-run.png", full_page=True)

        move_slider(page, "Home")
        assert slider_value(page) == 0
        expect(page.locator(MARKER)).not_to_have_attribute("x1", marker)
        expect(page.locator("#cf-caption")).to_contain_text(f"Step 0 of {last}")
        assert frame_src(page) != frame
        start_pixels = shown_pixels(page, "#cf-frame")
        assert not np.array_equal(start_pixels, end_pixels)  # a different picture, not just a URL
        assert np.array_equal(start_pixels, shown_pixels(page, "#cf-input"))  # step 0 is the model input x_0
        page.screenshot(path=SHOTS / "counterfactual-step0.png", full_page=True)
        if os.environ.get("DAT_SCREENSHOT_MODEL") == "default":   # the bundled DAT model gets past p = 0.9
            while "first frame at p ≥ 0.9" not in page.locator("#cf-caption").inner_text():
                assert slider_value(page) < last, "no frame was marked as the first at p >= 0.9"
                move_slider(page, "ArrowRight")
            page.screenshot(path=SHOTS / "counterfactual-compared.png", full_page=True)



# ------------------------------------------------------------------ first impression, bad input, long runs

def visible_box(page, selector: str) -> dict:
    box = page.locator(selector).bounding_box()
    assert box is not None, selector
    return box


def test_the_examples_are_labelled_and_above_the_fold(tiny):
    demo, url, _ = tiny
    with browser_page(url) as page:
        strip = page.locator("#cf-examples")
        expect(strip).to_be_visible()
        box = visible_box(page, "#cf-examples")
        assert box["y"] + box["height"] <= VIEWPORT["height"]            # whole strip on the first screen
        captions = [c.inner_text().strip() for c in page.locator("#cf-examples .caption-label").all()]
        names = demo.explainer.default.class_names
        assert len(captions) >= 5 and set(captions) <= set(names)         # each example says its class
        for item in page.locator("#cf-examples .thumbnail-item").all():
            b = item.bounding_box()
            assert b["y"] + b["height"] <= VIEWPORT["height"] and b["x"] + b["width"] <= VIEWPORT["width"] + 1
        pick_example(page, 2)
        expect(page.locator("#cf-prediction")).to_contain_text("What the model predicts")


def _overlap(a: dict, b: dict) -> bool:
    return (a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"] and a["y"] < b["y"] + b["height"]
            and b["y"] < a["y"] + a["height"])


def test_on_a_phone_each_chart_takes_the_screen_width(tiny):
    """At 390 px the three charts of tab 1 stayed side by side, ~100 px each, their numbers unreadable (gr.HTML
    takes no min_width), the step slider was squeezed beside Play, and the region editor's label ran under its
    toolbar; the model table split its words ("Archite|cture"). A row of charts now wraps, one chart a line, Play
    goes under the slider, the editor is named by its panel alone, and table cells break between words."""
    _, url, _ = tiny
    with browser_page(url) as page:
        page.set_viewport_size({"width": 390, "height": 844})
        for chart in ("#cf-energy-plot", "#cf-prob-plot", "#cf-distance-plot"):
            box = visible_box(page, chart)
            assert box["width"] >= 240 and box["x"] + box["width"] <= 390 + 1, (chart, box)
        assert visible_box(page, "#cf-step")["width"] >= 280                # Play goes under the slider
        tops = [visible_box(page, c)["y"] for c in ("#cf-energy-plot", "#cf-prob-plot", "#cf-distance-plot")]
        assert tops == sorted(tops) and len(set(tops)) == 3                  # one under another
        page.get_by_text("Region: paint where it may change").click()       # its label ran under the toolbar
        expect(page.locator("#cf-region button").first).to_be_visible()
        labels = [b for b in (lb.bounding_box() for lb in page.locator('#cf-region [data-testid="block-label"]').all())
                  if b]
        buttons = [b for b in (bt.bounding_box() for bt in page.locator("#cf-region button").all()) if b]
        assert buttons and not any(_overlap(a, b) for a in labels for b in buttons)
        page.set_viewport_size(VIEWPORT)                                     # a laptop keeps them in one row
        assert len({round(visible_box(page, c)["y"]) for c in ("#cf-energy-plot", "#cf-prob-plot")}) == 1
        open_tab(page, "Energy landscape")                                   # the landscape's two as well
        page.set_viewport_size({"width": 390, "height": 844})
        for chart in ("#land-map", "#land-path"):
            assert visible_box(page, chart)["width"] >= 240, chart
        page.set_viewport_size(VIEWPORT)
        open_tab(page, "Model")                                              # "Archite|cture", "Validati|on"
        page.set_viewport_size({"width": 390, "height": 844})
        broken = page.evaluate("""() => [...document.querySelectorAll('#model-info td, #model-info th')]
          .flatMap(cell => {
            const text = cell.firstChild && cell.firstChild.nodeType === 3 ? cell.firstChild : null;
            if (!text) return [];
            return [...text.data.matchAll(/[A-Za-z]{4,}/g)].filter(m => {
              const r = document.createRange(); r.setStart(text, m.index); r.setEnd(text, m.index + m[0].length);
              return new Set([...r.getClientRects()].map(b => Math.round(b.top))).size > 1; }).map(m => m[0]); })""")
        assert broken == [], f"words split across lines: {broken}"


def test_enter_keeps_the_radius_typed(tiny):
    """Typing 1 in the ε box and pressing Enter ran ε = 1.5, and 0 ran 0.8: the dropdown took the first
    suggestion holding the text. A value typed in full is kept."""
    _, url, files = tiny
    with browser_page(url) as page:
        upload(page, files["photo"])
        settings(page, steps=2, eps="1")                                    # typed, then Enter
        expect(page.locator("#cf-eps input")).to_have_value("1")
        run_counterfactual(page)
        expect(page.locator("#cf-summary")).to_contain_text("ε = 1,")


def test_enter_keeps_a_class_named_in_full(tmp_path):
    """Typing "tiger" and Enter in the target box ran "tiger shark", the first class holding the text (ImageNet
    lists tiger shark, 3, before tiger, 292), in tab 1 and in Generate. A class named in full (in any case) is
    picked; part of a name still completes to the first class holding it."""
    from dat_core import build_model, save_model

    names = ["tiger shark", "tiger", "tiger cat", "cat", "dog", "ship", "truck", "frog", "horse", "deer"]
    torch.manual_seed(0)
    model = save_model(build_model("wrn-10-1", num_classes=10, class_names=names), tmp_path / "model")
    demo = app.build_demo(str(model), standard_model=None)
    with serve(demo) as url, browser_page(url) as page:
        upload(page, write_image(tmp_path / "photo.png"))
        settings(page, steps=1)
        box = page.locator("#cf-target input")
        for typed, kept in (("tiger", "tiger"), ("Tiger cat", "tiger cat"), ("shar", "tiger shark"),
                            ("tiger", "tiger")):
            box.click(), box.fill(typed), box.press("Enter")
            page.wait_for_timeout(600)            # the box shows the typed text at first, whatever it then takes
            expect(box).to_have_value(kept)
        box.click(), box.fill("tiger"), box.press("Enter")
        run_counterfactual(page)
        expect(page.locator("#cf-summary")).to_contain_text(re.compile(r"(flips to|reach) tiger (at|\()"))
        open_tab(page, "Generate")                   # a picker without typed values: Enter picks the class named
        box = page.locator("#gen-target input")
        box.click(), box.fill("tiger"), box.press("Enter")
        type_into(page, "#gen-steps input", 1)
        page.click("#gen-run")
        expect(page.locator("#gen-gif")).to_be_enabled(timeout=60_000)
        view = demo.explainer.cache.get(next(k for k in demo.explainer.cache._items if k.endswith("/gen")))
        assert [int(t) for t in view.samples.targets] == [names.index("tiger")]


def test_a_failed_upload_clears_the_preview_and_says_so_once(tiny):
    _, url, files = tiny
    with browser_page(url) as page:
        upload(page, files["photo"])
        expect(page.locator("#cf-prediction")).to_contain_text("What the model predicts")
        page.set_input_files("#cf-image input[type=file]", str(files["bad"]))
        expect(page.locator(".toast-body")).to_contain_text("notes.png")
        page.wait_for_timeout(1000)                                         # a second toast would be here by now
        assert sum(t.count("Cannot read") for t in toasts(page)) == 1, toasts(page)
        expect(page.locator("#cf-input img")).to_have_count(0)             # the old image's view is gone,
        expect(page.locator("#cf-prediction")).not_to_contain_text("What the model predicts")  # and its prediction
        expect(page.locator("#cf-image img")).to_have_count(0)             # the bad file is not kept
        errors = page.evaluate("() => [...document.querySelectorAll('[id^=cf-] .error')].map(e => e.textContent)")
        assert errors == []                                                 # no red "Error" badges on outputs
        page.locator(".toast-body .toast-close, .toast-body button").first.click()
        page.click("#cf-run")
        expect(page.locator(".toast-body")).to_contain_text("Upload an image first")
        assert not any("notes.png" in t for t in toasts(page))
        page.wait_for_timeout(500)
        assert page.evaluate("() => document.querySelectorAll('[id^=cf-] .error').length") == 0


def test_progress_shows_in_one_place_and_cancel_stops_pgd(tiny):
    demo, url, files = tiny
    model = demo.explainer.default.model
    calls = []

    def slow_and_counted(*_):                  # a long run: 500 steps of >= 10 ms, each forward counted
        calls.append(1)
        time.sleep(0.01)
    hook = model.register_forward_hook(slow_and_counted)
    try:
        with browser_page(url) as page:
            upload(page, files["photo"])
            settings(page, steps=500, step_size=0.01, eps="inf")
            page.click("#cf-run")
            # the progress is the streamed caption ("Running: step t of T" under the frame it shows)
            expect(page.locator("#cf-caption")).to_contain_text("Running: step", timeout=20_000)
            expect(page.locator("#cf-caption")).to_contain_text("of 500")
            shown = page.evaluate("""() => [...document.querySelectorAll('.progress-text, .meta-text, .eta-bar')]
                .filter(e => e.offsetParent !== null).map(e => (e.closest('[id]') || {}).id)""")
            assert set(shown) <= {"cf-summary"}, shown                      # no progress over every output
            expect(page.locator("#cf-run")).to_be_hidden()
            page.click("#cf-cancel")
            expect(page.locator("#cf-run")).to_be_visible()
            expect(page.locator("#cf-cancel")).to_be_hidden()
            page.wait_for_timeout(1500)
            assert page.locator(".toast-body.error").count() == 0, toasts(page)   # one's own Cancel is no error
            stopped_at = len(calls)
            page.wait_for_timeout(1000)
            assert len(calls) == stopped_at < 400                           # PGD itself stopped, early
            settings(page, steps=2, step_size=0.1, eps=3)
            run_counterfactual(page)                                        # and the app keeps serving
            expect(page.locator("#cf-caption")).to_contain_text("Step 2 of 2")
    finally:
        hook.remove()


def start_and_wait(page, run: str, calls: list) -> int:
    """Press `run` and return once PGD is running (5 forwards seen); the forward count before it."""
    before = len(calls)
    page.click(run)
    deadline = time.monotonic() + 20
    while len(calls) < before + 5 and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    return before


def test_every_cancel_says_so_once(tiny):
    """Whether a Cancel showed its toast depended on a race: Gradio's cancel of the event against the handler's
    own stop, and the toast came from the handler. All targets and Generate often said nothing. Each Cancel of a
    run in flight now says "Cancelled" exactly once, as information."""
    demo, url, files = tiny
    with model_hooked(demo) as calls, browser_page(url) as page:
        upload(page, files["photo"])
        settings(page, steps=500, step_size=0.01, eps="inf")

        def cancelled_once(run: str, cancel: str) -> None:
            for close in page.locator(".toast-body .toast-close").all():
                close.click()
            start_and_wait(page, run, calls)
            page.click(cancel)
            expect(page.locator(run)).to_be_visible()
            expect(page.locator(".toast-body").filter(has_text="Cancelled")).to_have_count(1)
            page.wait_for_timeout(1500)                                     # a second one would be here by now
            said = toasts(page)
            assert sum("Cancelled" in t for t in said) == 1, (run, said)
            assert page.locator(".toast-body.error").count() == 0, (run, said)

        cancelled_once("#cf-run", "#cf-cancel")
        settings(page, steps=500, step_size=0.01, eps=3)                   # alternatives need a finite ε
        page.locator("#cf-alternatives").get_by_text("Alternatives: other paths").click()
        cancelled_once("#alt-run", "#alt-cancel")
        open_tab(page, "All targets")
        cancelled_once("#all-run", "#all-cancel")
        open_tab(page, "Generate")
        type_into(page, "#gen-steps input", 500)
        cancelled_once("#gen-run", "#gen-cancel")
        open_tab(page, "Counterfactual")                                   # attributions explain a finished path
        settings(page, steps=3, step_size=0.1, eps=3)
        run_counterfactual(page)
        open_tab(page, "Attributions")                                     # Captum has no PGD hook: its forwards stop
        with model_hooked(demo, 0.3):                                      # its few batched forwards outlast a click
            cancelled_once("#attr-run", "#attr-cancel")
        expect(page.locator("#attr-cancel")).to_be_hidden()


def test_a_running_path_holds_the_old_paths_controls(tiny):
    """While a new path streamed, the old path's slider, Play, downloads and card stayed usable: a scrub showed
    the old path between the new frames, and a download saved the old path beside the new one on screen. They
    are off while PGD runs, back on for the old path after a Cancel, and on for the new path once it is done."""
    demo, url, files = tiny
    controls = ["#cf-step input[type=range]", "#cf-play", "#cf-gif", "#cf-json", "#cf-card"]
    with model_hooked(demo) as calls, browser_page(url) as page:
        upload(page, files["photo"])
        settings(page, steps=3, step_size=0.1, eps=3)
        run_counterfactual(page)
        for c in controls:
            expect(page.locator(c)).to_be_enabled(timeout=30_000)
        settings(page, steps=500, step_size=0.01, eps="inf")
        start_and_wait(page, "#cf-run", calls)
        expect(page.locator("#cf-caption")).to_contain_text("Running: step", timeout=20_000)
        for c in controls:
            expect(page.locator(c)).to_be_disabled()
        page.click("#cf-cancel")
        expect(page.locator("#cf-run")).to_be_visible()
        for c in controls:                                                  # the old path is still the one shown
            expect(page.locator(c)).to_be_enabled()
        assert slider_value(page) == 3
        settings(page, steps=4, step_size=0.1, eps=3)
        run_counterfactual(page)
        for c in controls:
            expect(page.locator(c)).to_be_enabled(timeout=30_000)
        assert slider_value(page) == 4


def test_a_page_that_leaves_stops_its_computation(tiny):
    """A reload (or a closed tab) mid-run left All targets, Compare and Generate computing for a page nobody
    had any more: reloading and starting again held every worker (only tab 1's streamed run stopped). The
    page's unload now stops its run at the next PGD step."""
    demo, url, files = tiny
    with model_hooked(demo) as calls, browser_page(url) as page:
        upload(page, files["photo"])
        settings(page, steps=500, step_size=0.01, eps=3)
        for tab, run in (("All targets", "#all-run"), ("Generate", "#gen-run")):
            open_tab(page, tab)
            if tab == "Generate":
                type_into(page, "#gen-steps input", 500)
            before = start_and_wait(page, run, calls)
            page.reload()
            page.wait_for_timeout(3000)                                     # unload, then the next PGD step
            stopped_at = len(calls)
            page.wait_for_timeout(1500)
            assert len(calls) == stopped_at < before + 400, tab             # no PGD for the page that left


def _words_broken_across_lines(page, selector: str) -> list[str]:
    """Words inside `selector`'s cells that the browser wrapped in the middle (more than one line box)."""
    return page.evaluate("""(sel) => {
        const broken = [];
        for (const cell of document.querySelectorAll(sel)) {
            const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
            for (let node = walker.nextNode(); node; node = walker.nextNode()) {
                const re = /\\S+/g; let m;
                while ((m = re.exec(node.textContent))) {
                    const r = document.createRange(); r.setStart(node, m.index); r.setEnd(node, m.index + m[0].length);
                    const tops = new Set([...r.getClientRects()].map(x => Math.round(x.top)));
                    if (tops.size > 1) broken.push(m[0]);
                } } }
        return broken; }""", selector)


def test_all_targets_reads_whole_words_in_one_order(tiny):
    demo, url, files = tiny
    names = demo.explainer.default.class_names
    with browser_page(url) as page:
        upload(page, files["photo"])
        settings(page, steps=2)
        open_tab(page, "All targets")
        page.click("#all-run")
        expect(page.locator("#all-table td").first).to_be_visible(timeout=60_000)
        assert _words_broken_across_lines(page, "#all-table td, #all-table th") == []
        rows = [r.locator("td").first.inner_text().strip() for r in page.locator("#all-table tbody tr").all()]
        assert rows == names                                                 # the table in the grid's (class) order
        captions = page.locator("#all-grid .caption-label")
        assert [c.inner_text().split(" · ")[0] for c in captions.all()] == names
        clipped = page.evaluate("""() => [...document.querySelectorAll('#all-grid .caption-label')]
            .filter(c => c.scrollWidth > c.clientWidth + 1).map(c => c.textContent)""")
        assert clipped == []                                                 # captions shown whole
        table = page.locator("#all-table").inner_text()
        assert "flips at step 0" not in table and "start class" in table
        open_tab(page, "Counterfactual")                                     # another image: the grid is gone
        pick_example(page, 3)
        open_tab(page, "All targets")
        expect(page.locator("#all-table")).to_contain_text("for this image")
        expect(page.locator("#all-grid .caption-label")).to_have_count(0)


def test_a_path_that_falls_short_offers_a_retry_and_says_why(tiny):
    _, url, files = tiny
    with browser_page(url) as page:
        upload(page, files["photo"])
        settings(page, eps="0.01", steps=2, step_size=0.1)
        run_counterfactual(page)
        expect(page.locator("#cf-summary")).to_contain_text("Why:")
        retry = page.locator("#cf-retry")
        expect(retry).to_be_visible()
        expect(retry).to_contain_text("ε = 0.02")
        target = page.locator("#cf-target input").input_value()
        pick_target(page, next(n for n in ("dog", "cat") if n != target))   # not the path's target: no retry
        expect(retry).to_be_hidden()
        pick_target(page, target)
        expect(retry).to_be_visible()
        old = page.locator("#cf-caption").inner_text()
        retry.click()
        expect(page.locator("#cf-eps input")).to_have_value("0.02")        # the settings it ran with
        expect(page.locator("#cf-caption")).not_to_have_text(old)
        expect(page.locator("#cf-summary")).to_contain_text("ε = 0.02")


def test_the_help_panel_and_tooltips_explain_the_jargon(tiny):
    _, url, _ = tiny
    with browser_page(url) as page:
        page.locator("#help").get_by_text("What am I looking at?").click()
        helptext = page.locator("#help")
        for term in ("PGD step t", "x_t − x_0", "ε", "L2 / Linf", "E(x)", "E(x, y)", "What the model sees"):
            expect(helptext).to_contain_text(term)
        for selector in ("#cf-diff", "#cf-input", "#cf-energy-plot", "#cf-distance-plot"):
            title = page.locator(selector).get_attribute("title") or ""
            assert len(title) > 20 and "grad" not in title.lower(), (selector, title)
        settings(page)
        expect(page.locator("#cf-eps")).to_contain_text("How much the image may change")


def _button_look(page, selector: str) -> dict:
    return page.evaluate("""(sel) => { const b = document.querySelector(sel); const s = getComputedStyle(b);
        return {opacity: parseFloat(s.opacity), border: s.borderTopColor, background: s.backgroundColor,
                color: s.color, disabled: b.disabled}; }""", selector)


def test_generate_labels_each_sample_and_downloads_look_enabled(tiny):
    demo, url, _ = tiny
    with browser_page(url) as page:
        open_tab(page, "Generate")
        before = _button_look(page, "#gen-gif")
        type_into(page, "#gen-steps input", 2)
        page.click("#gen-run")
        expect(page.locator("#gen-gif")).to_be_enabled(timeout=60_000)
        expect(page.locator("#gen-gif")).to_have_css("opacity", "1")        # after any transition
        after = _button_look(page, "#gen-gif")
        assert before["disabled"] and not after["disabled"]
        assert before["opacity"] <= 0.5 and after["opacity"] == 1.0        # disabled looks disabled
        assert after["border"] != before["border"] and after["color"] != before["color"]
        shown = np.asarray(Image.open(io.BytesIO(page.request.get(
            page.locator("#gen-grid img").get_attribute("src")).body())).convert("RGB"))
        view = demo.explainer.cache.get(next(k for k in demo.explainer.cache._items if k.endswith("/gen")))
        assert shown.shape[0] > view.grid(len(view) - 1, labels=False).shape[0]  # a caption band under each row


def test_starting_from_my_image_hides_what_only_a_seed_kind_uses(tiny):
    """An image is one fixed start: the random seed did nothing and a second sample per class repeated the first."""
    _, url, files = tiny
    with browser_page(url) as page:
        open_tab(page, "Generate")
        for field in ("#gen-seed", "#gen-n"):
            expect(page.locator(field)).to_be_visible()
        page.get_by_label("My image").check()
        expect(page.locator("#gen-seed-image")).to_be_visible()
        for field in ("#gen-seed", "#gen-n"):
            expect(page.locator(field)).to_be_hidden()
        page.screenshot(path=SHOTS / "generate-my-image.png", full_page=True)
        page.get_by_label("Random noise").check()
        expect(page.locator("#gen-n")).to_be_visible()
        expect(page.locator("#gen-seed-image")).to_be_hidden()


def test_play_is_one_toggle(tiny):
    _, url, files = tiny
    with browser_page(url) as page:
        upload(page, files["photo"])
        settings(page, steps=40)
        run_counterfactual(page)
        assert page.locator("#cf-pause").count() == 0
        play = page.locator("#cf-play")
        expect(play).to_contain_text("Play")
        play.click()
        expect(play).to_contain_text("Stop")
        page.wait_for_timeout(600)
        play.click()
        expect(play).to_contain_text("Play")
        page.wait_for_timeout(300)                                          # a tick already in flight lands
        stopped = slider_value(page)
        page.wait_for_timeout(800)
        assert slider_value(page) == stopped and 0 < stopped < 40


def test_a_tiff_upload_is_shown(tiny):
    _, url, files = tiny
    with browser_page(url) as page:
        page.set_input_files("#cf-image input[type=file]", str(files["tiff"]))
        expect(page.locator("#cf-prediction")).to_contain_text("What the model predicts")
        page.wait_for_function("""() => { const i = document.querySelector('#cf-image img');
            return i && i.complete && i.naturalWidth > 0 && !i.src.toLowerCase().endsWith('.tiff'); }""")


def test_the_chosen_model_survives_a_reload(tiny):
    _, url, files = tiny
    with browser_page(url) as page:
        open_tab(page, "Model")
        page.get_by_label("Local folder").check()
        page.locator("#model-path textarea, #model-path input").first.fill(str(files["other"]))
        page.click("#model-load")
        expect(page.locator("#model-banner")).to_contain_text("other-model")
        page.reload()
        page.wait_for_selector("#cf-run")
        expect(page.locator("#model-banner")).to_contain_text("other-model", timeout=20_000)
        assert str(files["other"]) not in page.locator("#model-banner").inner_text()


def test_copy_link_opens_the_same_run(tiny):
    demo, url, files = tiny
    names = demo.explainer.default.class_names
    with browser_page(url) as page:
        upload(page, files["photo"])
        page.click("#cf-share")
        expect(page.locator("#cf-link textarea")).to_have_value(re.compile("uploaded image stays on this server"))
        pick_example(page, 3)
        expect(page.locator("#cf-link")).to_be_hidden()          # it was of the upload: it went with it
        pick_target(page, names[7])
        settings(page, steps=3)
        page.get_by_test_id("Linf-radio-label").click()          # Linf budgets read as written, k/255
        expect(page.locator("#cf-step-size input")).to_have_value("1/255")   # (it showed 0.00392156862745098)
        expect(page.locator("#cf-eps input")).to_have_value("16/255")
        page.click("#cf-share")
        link = page.locator("#cf-link textarea")
        expect(link).to_have_value(re.compile(r"^http://.*\?example=.*target="))
        shared = link.input_value()
        pick_target(page, names[5])
        expect(page.locator("#cf-link")).to_be_hidden()          # the link named target 7: it goes
    assert f"target={names[7]}" in shared and "&steps=3&" in shared and "step_size=1%2F255" in shared
    with browser_page(shared) as page:                                       # a colleague opens it
        expect(page.locator("#cf-caption")).to_contain_text("Step 3 of 3", timeout=60_000)
        expect(page.locator("#cf-summary")).to_contain_text("3 steps of 1/255")
        expect(page.locator("#cf-target input")).to_have_value(names[7])
        expect(page.locator("#cf-summary")).to_contain_text(names[7])
        expect(page.locator("#cf-input img")).to_have_count(1)


def test_a_failed_run_gives_its_run_button_back(tiny):
    """A computation that failed on a bad request left its Cancel button up and its Run button gone until the page
    was reloaded (Gradio 6 runs no `.then` after a failure): every cancellable run is checked."""
    _, url, _ = tiny
    with browser_page(url) as page:
        def fails_and_recovers(run: str, cancel: str, message: str) -> None:
            page.click(run)
            expect(page.locator(".toast-body").last).to_contain_text(message)
            expect(page.locator(run)).to_be_visible()
            expect(page.locator(cancel)).to_be_hidden()
            for close in page.locator(".toast-body .toast-close").all():
                close.click()

        fails_and_recovers("#cf-run", "#cf-cancel", "Upload an image first")
        page.locator("#cf-alternatives").get_by_text("Alternatives: other paths").click()
        fails_and_recovers("#alt-run", "#alt-cancel", "Upload an image first")
        open_tab(page, "All targets")
        fails_and_recovers("#all-run", "#all-cancel", "Upload an image first")
        open_tab(page, "Generate")
        page.locator("#gen-seed-kind").get_by_text("My image").click()
        fails_and_recovers("#gen-run", "#gen-cancel", "Upload the image to start from")


def test_what_a_visitor_types_comes_back_as_text_and_every_refusal_is_shown(tiny):
    """A toast renders HTML: a target typed as "<b>zebra</b>" came back bold, an <img> as an image.
    Copy link with a bad request answered nothing at all: an unqueued event shows no toast."""
    _, url, _ = tiny
    with browser_page(url) as page:
        pick_example(page, 0)
        type_into(page, "#cf-target input", "<b>zebra<img src=x>", check=False)
        page.click("#cf-run")
        toast = page.locator(".toast-body").last
        expect(toast).to_contain_text("Unknown class '<b>zebra<img src=x>'")
        assert page.locator(".toast-body b, .toast-body img").count() == 0
        expect(page.locator("#cf-run")).to_be_visible()
        for close in page.locator(".toast-body .toast-close").all():
            close.click()
        expect(page.locator(".toast-body")).to_have_count(0)
        page.click("#cf-share")
        expect(page.locator(".toast-body").last).to_contain_text("Unknown class '<b>zebra<img src=x>'")
        expect(page.locator("#cf-link")).to_be_hidden()
