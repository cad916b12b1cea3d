"""The launched app in a real browser (Debian chromium through Playwright, 1280x800): upload an image, pick a
target, run, move the step slider, and check that the shown frame and the chart marker follow it.

Screenshots land in tests/artifacts/screenshots/ (gitignored). `DAT_SCREENSHOT_MODEL=default` runs on the bundled
model and the first example image instead of a tiny random checkpoint (for README screenshots).
"""

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import app
from benchmarks.app_harness import (
    CHROMIUM,
    MARKER,
    browser_page,
    bundled_model,
    frame_src,
    marker_x,
    move_slider,
    pick_target,
    run_counterfactual,
    serve,
    slider_value,
    upload,
    write_image,
    write_model,
)
from explain import default_params, to_model_input
from webapp.tabs.counterfactual import EXAMPLES_DIR

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)", allow_module_level=True)
expect = pytest.importorskip("playwright.sync_api", reason="Playwright is missing (pip install -r "
                             "requirements-dev.txt)").expect

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


def shown_pixels(page, selector: str) -> np.ndarray:
    """The decoded image an <img> shows, fetched from the app like the browser did."""
    src = page.locator(f"{selector} img").get_attribute("src")
    return np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB"))


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
