"""Tab 1's tools in a real browser (Debian chromium through Playwright) on the bundled models: the explanation
card downloaded and replayed bit for bit, alternatives side by side, and the targets ranked by the radius they need.

Screenshots land in tests/artifacts/screenshots/ (gitignored).
"""

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from conftest import uploaded
from PIL import Image

import app
from benchmarks.app_harness import (
    browser_expect,
    browser_page,
    bundled_model,
    pick_example,
    run_counterfactual,
    serve,
    settings,
    shown_pixels,
    type_into,
    write_image,
    write_model,
)
from explain import alternatives
from explain import counterfactual as counterfactual_path
from explain.card import _unpack, read_card, replay
from webapp.explainer import Explainer
from webapp.tabs import all_targets, card_export, compare, counterfactual, region
from webapp.tabs import alternatives as alternatives_tab
from webapp.views import CounterfactualView

expect = browser_expect()
if bundled_model() is None:
    pytest.skip("assets/models holds no bundled model", allow_module_level=True)

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "tests" / "artifacts" / "screenshots"
STEPS = 4


@pytest.fixture(scope="module")
def served():
    demo = app.build_demo("default")
    with serve(demo) as url:
        yield demo, url


def _download(page, files, name: str, to: Path) -> Path:
    with page.expect_download() as download:
        files.get_by_role("row").filter(has_text=Path(name).suffix).get_by_role("link").click()
    download.value.save_as(to / name)
    return to / name


def test_the_card_downloads_and_replays_bit_for_bit(served, tmp_path):
    demo, url = served
    ex = demo.explainer
    example = ex.examples.paths[ex.examples.strip()[0]]
    with browser_page(url) as page:
        pick_example(page, 0)
        settings(page, steps=STEPS)
        expect(page.locator("#cf-card")).to_be_disabled()                    # nothing to export before a run
        run_counterfactual(page)
        expect(page.locator("#cf-card")).to_be_enabled(timeout=30_000)
        page.click("#cf-card")
        files = page.locator("#cf-card-files")
        expect(files.get_by_role("row").filter(has_text=".json")).to_be_visible(timeout=60_000)
        expect(files).to_contain_text("python -m explain replay card.json")
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.locator("#cf-card").scroll_into_view_if_needed()
        page.screenshot(path=SHOTS / "counterfactual-card.png", full_page=True)
        card_json = _download(page, files, "card.json", tmp_path)
        card_png = _download(page, files, "card.png", tmp_path)
    card = read_card(card_json)
    assert card["model"]["source"] == "default" and card["model"]["weights_sha256"]
    assert card["image"]["sha256"] == hashlib.sha256(example.read_bytes()).hexdigest()
    assert card["params"]["steps"] == STEPS and card["target"] == ex.default.class_names.index(card["target_name"])
    text = card_json.read_text()
    assert str(Path.cwd()) not in text and "/tmp" not in text                 # no server path in the card
    with Image.open(card_png) as im:                                          # x_0 beside x_T
        assert im.format == "PNG" and 1.8 < im.size[0] / im.size[1] < 2.2 and im.size[1] > ex.default.image_size
    again = replay(card_json)
    assert again.identical and again.same_setting and again.max_abs_diff == 0.0
    assert json.loads(text)["frames_sha256"] == card["frames_sha256"]
    cli = subprocess.run([sys.executable, "-m", "explain", "replay", str(card_json)], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)                              # what a reader of the card runs
    assert cli.returncode == 0 and "reproduced bit for bit" in cli.stdout, cli.stdout + cli.stderr


def test_a_grid_path_is_run_alone_for_its_card(served, tmp_path):
    """A path opened from the all-targets grid ran in a batch: its card is made from the same path run alone,
    so that replay (which runs it alone) reproduces it bit for bit."""
    demo, _ = served
    ex = demo.explainer
    state = ex.new_session()
    with pytest.raises(gr.Error, match="No counterfactual to show yet"):
        card_export.export_card(ex, None, state)
    image = uploaded(ex.examples.paths[ex.examples.strip()[1]])
    _, _, _ = all_targets.run(ex, image, "L2", "3", STEPS, 0.1, state)
    grid = ex.get(state, "all")
    counterfactual.show(ex, state, CounterfactualView.build(grid.trajectories[3], grid.model_key))
    shown = card_export.export_card(ex, image, state)
    card_json = next(Path(f) for f in shown["value"] if f.endswith(".json"))
    assert read_card(card_json)["target"] == 3
    assert replay(card_json).identical


def test_alternatives_show_side_by_side_with_their_diversity(served):
    demo, url = served
    ex = demo.explainer
    loaded = ex.default
    with browser_page(url) as page:
        pick_example(page, 2)
        settings(page, steps=STEPS)
        target = page.locator("#cf-target input").input_value()
        page.locator("#cf-alternatives").get_by_text("Alternatives: other paths").click()
        type_into(page, "#alt-n input[type=number]", 4)   # kept even if a late page event resets it
        type_into(page, "#alt-seed input", 7)
        page.click("#alt-run")
        expect(page.locator("#alt-info")).to_contain_text("Diversity", timeout=60_000)
        expect(page.locator("#alt-gallery .thumbnail-item")).to_have_count(10)   # x_0 + 4 ends, x_0's none + 4 changes
        shown = float(re.search(r"Diversity (\d+\.\d+)", page.locator("#alt-info").inner_text()).group(1))
        page.locator("#alt-gallery").scroll_into_view_if_needed()
        page.screenshot(path=SHOTS / "counterfactual-alternatives.png", full_page=True)
    image = ex.examples.paths[ex.examples.strip()[2]]
    again = alternatives(loaded.model, str(image), target, 4, seed=7, steps=STEPS, eps=3.0, step_size=0.1,
                         autocast=ex.uses_bf16(loaded))
    assert shown == pytest.approx(again.diversity, abs=0.006) and again.diversity > 0.05


def test_alternatives_are_bounded_and_need_a_finite_radius(served):
    demo, _ = served
    ex, state = demo.explainer, demo.explainer.new_session()
    image = uploaded(ex.examples.paths[ex.examples.strip()[0]])
    with pytest.raises(gr.Error, match="number of paths must be a whole number from 2 to 4"):
        alternatives_tab.run(ex, image, "cat", "L2", "3", STEPS, 0.1, 5, 0, state)
    with pytest.raises(gr.Error, match="seed must be a whole number"):
        alternatives_tab.run(ex, image, "cat", "L2", "3", STEPS, 0.1, 2, -1, state)
    for eps in ("∞", "0"):    # in the app's words: it said "eps-ball: eps must be finite and > 0"
        with pytest.raises(gr.Error, match="set a finite ε > 0 in the settings"):
            alternatives_tab.run(ex, image, "cat", "L2", eps, STEPS, 0.1, 2, 0, state)


def test_alternatives_of_another_image_or_model_are_dropped(served):
    """After another image or model, the alternatives of the previous one stayed, with their diversity line and
    no word that they were of the previous image. They are dropped, and said so once."""
    demo, _ = served
    ex, state = demo.explainer, demo.explainer.new_session()
    image = uploaded(ex.examples.paths[ex.examples.strip()[0]])
    shown = alternatives_tab.run(ex, image, "cat", "L2", "3", STEPS, 0.1, 2, 0, state)
    assert len(shown.alt_gallery["value"]) == 6 and "Diversity" in shown.alt_info
    dropped = alternatives_tab.forget(ex, state)
    assert dropped.alt_gallery["value"] == [] and "previous image or model" in dropped.alt_info
    again = alternatives_tab.forget(ex, state)                       # nothing shown: nothing to say
    assert all(v == gr.skip() for v in again)


def test_all_targets_ranks_the_targets_by_the_radius_they_need(served):
    demo, url = served
    names = demo.explainer.default.class_names
    with browser_page(url) as page:
        pick_example(page, 3)
        settings(page, steps=8, eps="inf", step_size=0.2)
        page.get_by_role("tab", name="All targets", exact=True).click()
        page.click("#all-run")
        expect(page.locator("#all-table td").first).to_be_visible(timeout=60_000)
        cells = [[c.inner_text().strip() for c in r.locator("td").all()]
                 for r in page.locator("#all-table tbody tr").all()]
        text = page.locator("#all-table").inner_text()
        page.screenshot(path=SHOTS / "all-targets-ranked.png", full_page=True)
    assert [c[0] for c in cells] == names                                    # still in class order
    ranked = sorted((int(c[4]), c) for c in cells if c[4] != "—")
    assert [r for r, _ in ranked] == list(range(1, len(names)))             # every other class has a rank
    flipped = [float(c[3]) for _, c in ranked if c[3] != "—"]
    assert flipped == sorted(flipped) and len(flipped) >= 1                 # reached ones first, by their radius
    assert all(c[3] == "—" for _, c in ranked[len(flipped):])
    easiest = re.search(r"Easiest to hardest: (.*)\.", text).group(1).split(", ")
    assert easiest == [c[0] for _, c in ranked]


def test_compare_shows_the_standard_model_guided_by_dat(served):
    demo, url = served
    ex = demo.explainer
    if ex.standard is None:
        pytest.skip("no bundled standard model")
    with browser_page(url) as page:
        pick_example(page, 4)
        settings(page, steps=STEPS)
        target = page.locator("#cf-target input").input_value()
        page.get_by_role("tab", name="Robust vs standard", exact=True).click()
        type_into(page, "#cmp-cone input[type=number]", 40)
        page.click("#cmp-run")
        expect(page.locator("#cmp-summary")).to_contain_text("Standard, guided by DAT", timeout=60_000)
        expect(page.locator("#cmp-summary")).to_contain_text("within 40° of the DAT model's")
        expect(page.locator("#cmp-guided-frame img")).to_be_visible()
        guided, standard = shown_pixels(page, "#cmp-guided-frame"), shown_pixels(page, "#cmp-standard-frame")
        page.screenshot(path=SHOTS / "compare-guided.png", full_page=True)
    image = uploaded(ex.examples.paths[ex.examples.strip()[4]])
    std, dat = ex.standard, ex.default
    path = counterfactual_path(std.model, image, target, steps=STEPS, eps=3.0, step_size=0.1, guide=dat.model,
                               cone_angle=40.0, autocast=ex.uses_bf16(std))
    scale = guided.shape[0] // std.image_size
    assert np.array_equal(guided[::scale, ::scale], path.frames[-1])          # the guided path's x_T, as computed
    assert not np.array_equal(guided, standard)                               # and not the unguided one


def test_a_comparison_shows_its_progress_and_can_be_cancelled(served):
    """Compare drew its progress bar in an empty, 0 px high summary (the page looked idle for half a minute)
    and had no Cancel, while a second run was refused with "...or cancel it"."""
    demo, url = served
    if demo.explainer.standard is None:
        pytest.skip("no bundled standard model")
    with browser_page(url) as page:
        pick_example(page, 4)
        settings(page, steps=500, step_size=0.01, eps=3)
        page.get_by_role("tab", name="Robust vs standard", exact=True).click()
        expect(page.locator("#cmp-summary")).to_contain_text("Press Compare")
        page.click("#cmp-run")
        expect(page.locator("#cmp-summary .progress-text, #cmp-summary .eta-bar").first).to_be_visible(
            timeout=30_000)
        assert page.locator("#cmp-summary").bounding_box()["height"] > 20
        page.click("#cmp-cancel")
        expect(page.locator("#cmp-run")).to_be_visible()
        expect(page.locator(".toast-body").filter(has_text="Cancelled")).to_have_count(1)
        assert page.locator(".toast-body.error").count() == 0


def test_the_cone_angle_is_checked_on_the_server(served):
    demo, _ = served
    ex = demo.explainer
    if ex.standard is None:
        pytest.skip("no bundled standard model")
    image = uploaded(ex.examples.paths[ex.examples.strip()[0]])
    for bad in (181, -1, "nan", "wide", True):
        with pytest.raises(gr.Error, match="cone angle must be a number of degrees from 0 to 180"):
            compare.run(ex, image, "cat", "L2", "3", STEPS, 0.1, ex.new_session(), bad)


def _paint(page, stroke: list[tuple[float, float]]) -> None:
    """Drag the region brush along `stroke` (fractions of the editor canvas)."""
    page.locator("#cf-region button[aria-label=Brush]").click()
    box = page.locator("#cf-region canvas").last.bounding_box()
    at = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in stroke]
    page.mouse.move(*at[0])
    page.mouse.down()
    for x, y in at[1:]:
        page.mouse.move(x, y, steps=4)
    page.mouse.up()


def test_a_painted_region_keeps_every_other_pixel_bit_identical(served, tmp_path):
    demo, url = served
    with browser_page(url) as page:
        pick_example(page, 0)
        settings(page, steps=STEPS, eps="inf", step_size=0.5)
        page.locator("#cf-region-panel").get_by_text("Region: paint").click()
        page.click("#cf-region-use")                                          # nothing painted yet
        expect(page.locator(".toast-body")).to_contain_text("Nothing is painted")
        page.locator(".toast-close").first.click()                    # no stale error in the screenshot below
        expect(page.locator(".toast-body")).to_have_count(0)
        _paint(page, [(0.5, 0.3), (0.55, 0.45), (0.6, 0.6), (0.5, 0.7)])
        page.click("#cf-region-use")
        expect(page.locator("#cf-region-info")).to_contain_text("Region set")
        run_counterfactual(page)
        expect(page.locator("#cf-summary")).to_contain_text("only the painted region")
        start, end = shown_pixels(page, "#cf-input"), shown_pixels(page, "#cf-frame")
        page.locator("#cf-region-panel").scroll_into_view_if_needed()
        page.screenshot(path=SHOTS / "counterfactual-region.png", full_page=True)
        page.click("#cf-card")
        files = page.locator("#cf-card-files")
        expect(files.get_by_role("row").filter(has_text=".json")).to_be_visible(timeout=60_000)
        card_json = _download(page, files, "card.json", tmp_path)
        page.click("#cf-region-clear")                    # Whole image: the strokes go too, not only the region
        expect(page.locator("#cf-region-info")).to_contain_text("No region")
        page.click("#cf-region-use")                      # (they stayed: Use this region brought it back)
        expect(page.locator(".toast-body")).to_contain_text("Nothing is painted")
        pick_example(page, 1)                                                 # a new image: the region is gone
        expect(page.locator("#cf-region-info")).to_contain_text("No region")
    card = read_card(card_json)
    mask = _unpack(card["mask"])[0, 0]
    assert 0 < mask.mean() < 0.5 and card["params"]["mask_fraction"] == pytest.approx(mask.mean(), abs=1e-6)
    scale = start.shape[0] // mask.shape[0]
    changed = (start != end).any(axis=2)[::scale, ::scale]
    assert changed.any() and not (changed & ~mask).any()                     # what the page shows moved inside only
    again = replay(card_json)
    assert again.identical                                                    # the masked path replays bit for bit
    frames = again.trajectory.images
    assert np.array_equal(frames[:, :, ~mask], np.broadcast_to(frames[:1, :, ~mask], frames[:, :, ~mask].shape))
    assert not np.array_equal(frames[-1][:, mask], frames[0][:, mask])


def test_a_painted_region_is_checked_on_the_server(served, tmp_path):
    demo, _ = served
    ex, state = demo.explainer, demo.explainer.new_session()

    def png(name: str, w: int, h: int, painted: bool) -> dict:
        rgba = np.zeros((h, w, 4), dtype=np.uint8)
        if painted:
            rgba[h // 4: h // 2, w // 4: w // 2] = 255
        Image.fromarray(rgba).save(tmp_path / name)
        return {"path": uploaded(tmp_path / name)}

    background = png("bg.png", 192, 192, True)
    thin = np.zeros((192, 192, 4), dtype=np.uint8)
    thin[50, 10:150] = 255                                                    # one display row: a sixth of a pixel
    Image.fromarray(thin).save(tmp_path / "thin.png")
    cases = {"nothing is painted": [png("empty.png", 192, 192, False)],
             "it must cover the image": [png("small.png", 96, 96, True)],
             "paint the region on one layer": [png("one.png", 192, 192, True), png("two.png", 192, 192, True)],
             "nothing is painted: paint": [],
             "too thin to cover a whole pixel": [{"path": uploaded(tmp_path / "thin.png")}]}
    for message, layers in cases.items():
        with pytest.raises(gr.Error, match=f"(?i){message}"):
            region.use(ex, {"background": background, "layers": layers}, state)
    with pytest.raises(gr.Error, match="(?i)pick an example or upload an image first"):
        region.use(ex, {"background": None, "layers": [png("a.png", 192, 192, True)]}, state)
    with pytest.raises(gr.Error, match="(?i)could not be read"):
        region.use(ex, "/etc/passwd", state)
    assert region.for_model(ex, state, ex.default) is None                   # nothing was kept
    shown = region.use(ex, {"background": background, "layers": [png("ok.png", 192, 192, True)]}, state)
    assert "6%" in shown.cf_region_info and region.for_model(ex, state, ex.default).mean() == pytest.approx(1 / 16)
    message = str(shown)
    assert str(tmp_path) not in message


def test_alternatives_stop_at_the_next_step_when_cancelled(served):
    demo, _ = served
    ex, state = demo.explainer, demo.explainer.new_session()
    image = uploaded(ex.examples.paths[ex.examples.strip()[0]])
    model = ex.default.model

    def press_cancel(*_) -> None:                                             # Cancel pressed during the first step
        ex.cancel(state)
    hook = model.register_forward_hook(press_cancel)
    try:
        with pytest.raises(gr.Error, match="Cancelled at step 1 of 200"):
            alternatives_tab.run(ex, image, "cat", "L2", "3", 200, 0.1, 3, 0, state)
    finally:
        hook.remove()


def test_a_card_names_a_folder_model_without_its_server_path(tmp_path, monkeypatch):
    """A checkpoint folder is named by its folder name (a bundled one as assets/models/NAME, which replays from the
    project's root); its weights' sha256 pins it either way."""
    monkeypatch.chdir(ROOT)
    image = write_image(tmp_path / "photo.png")
    for source, named in ((write_model(tmp_path / "secret" / "my-model"), "my-model"),
                          (ROOT / "assets" / "models" / "standard-cifar10-wrn16-2",
                           "assets/models/standard-cifar10-wrn16-2")):
        if not source.is_dir():
            continue
        ex = Explainer(str(source), standard_model=None)
        state = ex.new_session()
        counterfactual.run(ex, uploaded(image), "cat", "L2", "3", 2, 0.1, state)
        shown = card_export.export_card(ex, uploaded(image), state)
        card_json = next(Path(f) for f in shown["value"] if f.endswith(".json"))
        card = read_card(card_json)
        assert card["model"]["source"] == named and card["model"]["kind"] == "local"
        assert str(tmp_path) not in card_json.read_text() and "secret" not in card_json.read_text()
        assert card["image"]["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
        if named.startswith("assets/"):
            assert replay(card_json).identical


def _example_and_region(ex, tmp_path):
    """The first example, uploaded, and an editor payload painting 17 % of it."""
    layer = np.zeros((192, 192, 4), dtype=np.uint8)
    layer[48:144, 96:160] = 255
    Image.fromarray(layer).save(tmp_path / "layer.png")
    Image.fromarray(layer).save(tmp_path / "bg.png")
    return uploaded(ex.examples.paths[ex.examples.strip()[0]]), {
        "background": {"path": uploaded(tmp_path / "bg.png")}, "layers": [{"path": uploaded(tmp_path / "layer.png")}]}


def test_alternatives_stay_inside_the_painted_region(served, tmp_path):
    demo, _ = served
    ex, state = demo.explainer, demo.explainer.new_session()
    image, painted = _example_and_region(ex, tmp_path)
    region.use(ex, painted, state)
    shown = alternatives_tab.run(ex, image, "cat", "L2", "3", STEPS, 0.1, 3, 0, state)
    assert "Only the painted region (17% of the pixels)" in shown.alt_info
    mask = region.for_model(ex, state, ex.default).bool().numpy()
    cells = [cell for cell, _ in shown.alt_gallery["value"]]
    scale = cells[0].shape[0] // mask.shape[0]
    shown_mask = mask.repeat(scale, 0).repeat(scale, 1)
    for end in cells[1:4]:                                                    # what the page shows: x_0 outside
        assert np.array_equal(end[~shown_mask], cells[0][~shown_mask])
        assert not np.array_equal(end[shown_mask], cells[0][shown_mask])
    alts = alternatives(ex.default.model, image, "cat", 3, steps=STEPS, eps=3.0, step_size=0.1,
                        autocast=ex.uses_bf16(ex.default), mask=mask.astype(np.float32))
    outside = alts.images[:, :, ~mask]
    assert np.array_equal(outside, np.broadcast_to(alts.image[:, ~mask], outside.shape))   # starts and steps
    assert not np.array_equal(alts.images[:, :, mask], np.broadcast_to(alts.image[:, mask], (3, 3, mask.sum())))


def test_a_painted_layer_larger_than_the_editor_is_refused_from_its_header(served, tmp_path):
    """The sides were checked after decoding both images (a 6300 px forged layer cost ~0.3 GB first). A PNG header
    that claims 3000 x 3000 px with no pixel data behind it is refused by its size, not as a truncated file."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header_only = tmp_path / "huge.png"
    header_only.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 3000, 3000, 8, 6, 0, 0, 0))
                            + chunk(b"IEND", b""))
    demo, _ = served
    ex, state = demo.explainer, demo.explainer.new_session()
    small = tmp_path / "small.png"
    Image.new("RGBA", (192, 192)).save(small)
    for background, layer in ((header_only, small), (small, header_only)):
        with pytest.raises(gr.Error, match=r"3000x3000 px; at most 2048 px a side"):
            region.use(ex, {"background": {"path": uploaded(background)}, "layers": [{"path": uploaded(layer)}]},
                       state)


def test_a_region_dropped_from_memory_is_said_not_silently_ignored(served, tmp_path):
    """The painted region lives in the shared result cache: other visitors' paths evicted it, and the next Run
    changed the whole image while the page still said "Region set"."""
    demo, _ = served
    ex, state = demo.explainer, demo.explainer.new_session()
    image, painted = _example_and_region(ex, tmp_path)
    state = region.use(ex, painted, state).state
    assert region.for_model(ex, state, ex.default) is not None
    ex.cache.discard(f"{state['id']}/{region.SLOT}")   # as the LRU does when other sessions fill it
    with pytest.raises(gr.Error, match="paint it again"):
        alternatives_tab.run(ex, image, "cat", "L2", "3", STEPS, 0.1, 3, 0, state)
    state = region.clear(ex, state).state   # Whole image: runs on the whole image again, without a word
    assert region.for_model(ex, state, ex.default) is None


class _RoundsOtherwise(torch.nn.Module):
    """Stands in for the compiled model (compiling takes minutes here): the function up to float rounding, as a
    fused graph rounds otherwise."""

    def __init__(self, eager):
        super().__init__()
        self.eager, self.ready, self.lazy = eager, True, False

    def forward(self, x):
        return self.eager(x * (1 + 2 ** -20))


def test_a_card_of_a_compiled_app_replays_bit_for_bit(tmp_path, monkeypatch):
    """The card's frames came from the compiled model requests run (once compiling finished), but the card names
    the eager model, which replay runs: it said "bit for bit" and replay found 1.2e-07."""
    monkeypatch.chdir(ROOT)
    image = write_image(tmp_path / "photo.png")
    ex = Explainer("default", standard_model=None)
    loaded = ex.default
    loaded.fast._dispatch = _RoundsOtherwise(loaded.fast.eager)
    assert loaded.model is loaded.fast._dispatch
    state = ex.new_session()
    counterfactual.run(ex, uploaded(image), "cat", "L2", "3", 6, 0.1, state)
    served = ex.get(state, "cf").trajectory
    eager = counterfactual_path(loaded.fast.eager, torch.from_numpy(served.images[0].copy()), served.target,
                                eps=3.0, step_size=0.1, steps=6, autocast=ex.uses_bf16(loaded))
    assert not np.array_equal(served.images, eager.images)   # the stand-in does change the path
    card_json = next(Path(f) for f in card_export.export_card(ex, uploaded(image), state)["value"]
                     if f.endswith(".json"))
    again = replay(card_json)
    assert again.identical and again.max_abs_diff == 0.0
