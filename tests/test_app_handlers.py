"""The app's handlers as plain functions (no server, no browser), on a tiny checkpoint written here."""

import io
import json
import math
import os
import struct
import zlib
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from conftest import uploaded
from PIL import Image

import app
import explain
from dat_core import build_model, save_model
from dat_core.models.config import model_cost
from explain.params import parse_eps
from webapp.explainer import Explainer
from webapp.inputs import ATTR_FRAMES
from webapp.state import TrajectoryCache
from webapp.tabs import all_targets, attributions, compare, counterfactual, generate, landscape, scrubber, try_again
from webapp.tabs import model as model_tab

STEPS = 3


def _model_dir(path, seed, quantiles=None):
    torch.manual_seed(seed)
    model = build_model("wrn-10-1")
    if quantiles:
        model.config["energy_quantiles"] = quantiles
    return save_model(model, path)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    robust = _model_dir(root / "robust", 0, {"0.01": -4.0, "0.5": -2.3, "0.99": -1.0})
    standard = _model_dir(root / "standard", 1)
    rng = np.random.default_rng(0)
    photo = root / "photo.png"
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(photo)
    return {"root": root, "robust": robust, "standard": standard, "photo": uploaded(photo)}


@pytest.fixture(scope="module")
def ex(dirs):
    return Explainer(str(dirs["robust"]), standard_model=str(dirs["standard"]))


def named(result):
    """A handler's result by the names of the components it fills (the fields of its NamedTuple)."""
    return result._asdict()


def run_cf(ex, state, dirs, target="cat", steps=STEPS, eps="3"):
    return named(counterfactual.run(ex, dirs["photo"], target, "L2", eps, steps, 0.1, state))


# ------------------------------------------------------------------ counterfactual and scrubbing

@pytest.mark.parametrize("autocast", ["off", "on"])
def test_autocast_setting_reaches_the_pgd_path(dirs, autocast):
    """`--autocast off` gives exactly the fp32 path of `explain.counterfactual`; `on` exactly the bf16 one."""
    one = Explainer(str(dirs["robust"]), standard_model=None, autocast=autocast)
    state = one.new_session()
    counterfactual.run(one, dirs["photo"], "cat", "L2", "3", STEPS, 0.1, state)
    shown = one.cache.get(f"{state['id']}/cf").trajectory
    x = explain.to_model_input(dirs["photo"], 32)
    direct = {flag: explain.counterfactual(one.default.model, x, "cat", eps=3.0, steps=STEPS, step_size=0.1,
                                           autocast=flag) for flag in (False, True)}
    assert not np.array_equal(direct[False].images, direct[True].images)
    assert np.array_equal(shown.images, direct[autocast == "on"].images)


def test_bad_autocast_setting_is_refused_at_start(dirs):
    with pytest.raises(ValueError, match="autocast"):
        Explainer(str(dirs["robust"]), standard_model=None, autocast="fast")


def test_preview_shows_the_model_input_prediction_and_typicality(ex, dirs):
    out = named(counterfactual.preview(ex, dirs["photo"], ex.new_session()))
    assert out["cf_input"].shape == (256, 256, 3) and out["cf_input"].dtype == np.uint8  # 32 px, 8x nearest
    assert np.array_equal(out["cf_input"][::8, ::8], out["cf_input"][7::8, 7::8])      # crisp, not blurred
    assert "<svg" in out["cf_prediction"] and "%" in out["cf_prediction"]
    assert "E(x) =" in out["cf_energy"] and "held-out" in out["cf_energy"]
    assert out["cf_target"]["value"] in ex.default.class_names


def test_scrub_indexes_cached_frames_without_the_model(ex, dirs, monkeypatch):
    state = ex.new_session()
    out = run_cf(ex, state, dirs)
    assert out["cf_step"]["maximum"] == STEPS and out["cf_step"]["value"] == STEPS
    assert out["cf_gif"]["value"] is None and not out["cf_gif"]["interactive"]  # written after the result shows
    gif, js = named(counterfactual.export(ex, state)).values()
    assert gif["interactive"] and js["interactive"]
    with Image.open(gif["value"]) as im:
        assert im.n_frames == STEPS + 1
    assert json.loads(Path(js["value"]).read_text())["target_name"] == "cat"

    class Boom(torch.nn.Module):
        def forward(self, x):
            raise AssertionError("a slider move must not run the model")
    monkeypatch.setattr(ex.default, "model", Boom())
    first = named(counterfactual.scrub(ex, state, 0))
    last = named(counterfactual.scrub(ex, state, STEPS))
    assert not np.array_equal(first["cf_frame"], last["cf_frame"])
    assert np.all(first["cf_diff"] == 128)                       # x_0 - x_0: all grey
    assert not np.all(last["cf_diff"] == 128)
    for key in ("cf_probs", "cf_energy_plot", "cf_prob_plot", "cf_distance_plot", "cf_caption"):
        assert first[key] != last[key]                            # markers and values move with t
    assert first["land_step"]["value"] == 0
    # out-of-range positions clamp to the path instead of failing
    assert np.array_equal(named(counterfactual.scrub(ex, state, 999))["cf_frame"], last["cf_frame"])


def test_computing_leaves_the_model_untouched(ex, dirs):
    model = ex.default.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = ex.new_session()
    run_cf(ex, state, dirs, target="frog", steps=2)
    all_targets.run(ex, dirs["photo"], "L2", "2", 1, 0.1, state)
    generate.run(ex, "cat", "Random noise", None, 0, 1, 1, 0.2, state)
    assert not model.training
    assert all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics included


def test_frames_are_the_pgd_frames(ex, dirs):
    state = ex.new_session()
    run_cf(ex, state, dirs, steps=2)
    view = ex.cache.get(f"{state['id']}/cf")
    traj = view.trajectory
    for t in range(len(traj)):
        frame = named(counterfactual.scrub(ex, state, t))["cf_frame"]
        assert np.array_equal(frame[::8, ::8], traj.frames[t])


def test_landscape_marker_follows_the_slider(ex, dirs):
    state = ex.new_session()
    run_cf(ex, state, dirs, steps=2)
    land_map, land_path, slider, info = landscape.run(ex, state, 1, "E(x) — how typical the image is", 5)
    assert "<svg" in land_map and "<svg" in land_path and slider["maximum"] == 2 and "Horizontal axis" in info
    a = named(landscape.scrub(ex, state, 0))
    b = named(landscape.scrub(ex, state, 2))
    assert a["land_map"] != b["land_map"] and a["land_path"] != b["land_path"]
    assert b["cf_step"]["value"] == 2
    with pytest.raises(gr.Error, match="odd"):
        landscape.run(ex, state, 1, "E(x)", 6)
    # a new path empties the landscape tab: the old path's map and chart stayed there under "Press Compute"
    fresh = run_cf(ex, state, dirs, steps=3)
    empty_map, empty_path = scrubber.empty_landscape()
    assert (fresh["land_map"], fresh["land_path"]) == (empty_map, empty_path) and "Energy on the plane" in empty_map
    assert named(counterfactual.scrub(ex, state, 1))["land_map"] == empty_map


def test_play_advances_and_stops_at_the_end(ex, dirs):
    state = ex.new_session()
    run_cf(ex, state, dirs, steps=2)
    start = counterfactual.play_start(ex, state, 2)               # at the end: restart from 0
    assert start[0]["value"] == 0
    middle = counterfactual.play_tick(ex, state, 0)
    assert middle[0]["value"] == 1 and not isinstance(middle[-1], gr.Timer)  # never re-arms a stopped timer
    tick = counterfactual.play_tick(ex, state, 1)
    assert tick[0]["value"] == 2 and tick[-1].active is False


def test_progress_counts_pgd_steps_through_the_on_step_hook(ex, dirs, monkeypatch):
    """One report per PGD step (dat_core.pgd's on_step), counted across all batches of the all-targets run."""
    class Recorder:
        def __init__(self):
            self.calls = []

        def __call__(self, progress, desc=None, unit=None):
            self.calls.append((progress, desc, unit))

    single = Recorder()
    counterfactual.run(ex, dirs["photo"], "horse", "L2", "2.5", 4, 0.1, ex.new_session(), progress=single)
    assert single.calls == [((t, 4), "Running PGD", "steps") for t in range(1, 5)]
    monkeypatch.setattr(all_targets, "BATCH", 4)                 # 10 classes: batches of 4, 4 and 2 paths
    batched = Recorder()
    all_targets.run(ex, dirs["photo"], "L2", "2.5", 2, 0.1, ex.new_session(), progress=batched)
    assert [c[0] for c in batched.calls] == [(t, 6) for t in range(1, 7)]
    assert {c[1:] for c in batched.calls} == {("PGD toward 10 classes", "steps")}


# ------------------------------------------------------------------ sessions and the cache

def test_sessions_never_see_each_other(ex, dirs):
    a, b = ex.new_session(), ex.new_session()
    assert a["id"] != b["id"] and len(a["id"]) == 32
    run_cf(ex, a, dirs, target="cat", steps=2)
    assert "run it first" in named(counterfactual.scrub(ex, b, 0))["cf_caption"]   # b has not run anything
    run_cf(ex, b, dirs, target="dog", steps=2)
    cap_a = named(counterfactual.scrub(ex, a, 2))["cf_caption"]
    cap_b = named(counterfactual.scrub(ex, b, 2))["cf_caption"]
    assert "p(cat)" in cap_a and "p(dog)" in cap_b
    guessed = named(counterfactual.scrub(ex, {"id": "0" * 32}, 0))   # a guessed id finds nothing
    assert "run it first" in guessed["cf_caption"] and guessed["cf_frame"] == gr.skip()


def test_cache_is_a_byte_bounded_lru():
    cache = TrajectoryCache(max_bytes=1000)
    for k in "abc":
        cache.put(k, np.zeros(400, dtype=np.uint8))
    assert cache.get("a") is None and cache.total_bytes <= 1000   # oldest evicted
    cache.get("b")                                                # b is now the most recent
    cache.put("d", np.zeros(400, dtype=np.uint8))
    assert cache.get("b") is not None and cache.get("c") is None
    with pytest.raises(ValueError, match="MB"):
        cache.put("huge", np.zeros(2000, dtype=np.uint8))


def test_app_cache_evicts_old_sessions(dirs):
    small = Explainer(str(dirs["robust"]), standard_model=None, cache_bytes=300_000)
    states = [small.new_session() for _ in range(6)]
    for i, s in enumerate(states):
        run_cf(small, s, dirs, steps=1 + i % 2, target=str(i))
    assert small.cache.total_bytes <= 300_000
    with pytest.raises(gr.Error, match=r"need about 0.84 MB; one request may keep 0.14 MB"):   # not "0 MB"
        run_cf(small, small.new_session(), dirs, steps=40)
    # sliders are unqueued events, which show no toast: a move on a dropped result raised an error nobody saw
    for scrub, caption, what in ((counterfactual.scrub, "cf_caption", "counterfactual"),
                                 (landscape.scrub, "cf_caption", "counterfactual"),
                                 (compare.scrub, "cmp_caption", "comparison"),
                                 (generate.scrub, "gen_caption", "sampling run")):
        shown = named(scrub(small, states[0], 0))
        assert f"No {what} to show yet (or it was dropped from memory)" in shown[caption]
        assert all(v == gr.skip() for k, v in shown.items() if k != caption)   # the rest stays
    counterfactual.scrub(small, states[-1], 0)


# ------------------------------------------------------------------ validation

def _png_bytes(image):
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _bomb_header(width, height):
    """A PNG that claims width x height pixels (PIL reads the header only, so nothing big is allocated)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("kind, message", [
    ("text", "(?i)cannot read"), ("corrupt", "(?i)corrupt|truncated|cannot read"), ("empty", "(?i)cannot read"),
    ("big", "refused"), ("bomb", r"refused \(downscale it first\)"),
])
def test_bad_images_are_clear_errors(ex, dirs, tmp_path, kind, message):
    path = tmp_path / f"{kind}.png"
    good = _png_bytes(Image.new("RGB", (64, 64), (10, 200, 30)))
    data = {"text": b"this is not an image", "corrupt": good[:len(good) // 2], "big": _bomb_header(7000, 7000),
            "bomb": _bomb_header(20000, 20000),
            "empty": b""}[kind]
    path.write_bytes(data)
    path = uploaded(path)
    with pytest.raises(gr.Error, match=message) as info:
        counterfactual.preview(ex, path, ex.new_session())
    assert os.path.dirname(path) not in str(info.value)          # the file's name, not the server's path
    with pytest.raises(gr.Error, match=message):
        counterfactual.run(ex, path, "cat", "L2", "3", STEPS, 0.1, ex.new_session())


def test_missing_image_is_a_clear_error(ex):
    with pytest.raises(gr.Error, match="Upload an image"):
        counterfactual.run(ex, None, "cat", "L2", "3", STEPS, 0.1, ex.new_session())


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "I;16", "1", "CMYK"])
def test_other_image_modes_are_accepted(ex, tmp_path, mode):
    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (20, 30), dtype=np.uint16))
        assert image.mode.startswith("I;16")
    elif mode == "P":
        image = rgb.quantize(16)
    else:
        image = rgb.convert(mode)
    path = tmp_path / ("x.tiff" if mode == "CMYK" else "x.png")
    image.save(path)
    out = named(counterfactual.preview(ex, uploaded(path), ex.new_session()))
    assert out["cf_input"].shape == (256, 256, 3)


@pytest.mark.parametrize("eps, steps, step_size, message", [
    ("-1", STEPS, 0.1, "ε must be"), ("nan", STEPS, 0.1, "ε must be"), (float("nan"), STEPS, 0.1, "ε must be"),
    ("three", STEPS, 0.1, "ε must be"), ("3", 0, 0.1, "Steps must"), ("3", 10000, 0.1, "Steps must"),
    ("3", 2.5, 0.1, "Steps must"), ("3", float("nan"), 0.1, "Steps must"), ("3", None, 0.1, "Steps must"),
    ("3", STEPS, 0, "Step size must be a finite"), ("3", STEPS, -0.1, "Step size"),
    ("3", STEPS, float("inf"), "Step size must be a finite"), ("3", STEPS, "abc", "Step size"),
])
def test_bad_numbers_are_clear_errors(ex, dirs, eps, steps, step_size, message):
    with pytest.raises(gr.Error, match=message):
        counterfactual.run(ex, dirs["photo"], "cat", "L2", eps, steps, step_size, ex.new_session())


def test_eps_accepts_infinity_and_fractions():
    assert parse_eps("∞") == math.inf and parse_eps("inf") == math.inf and parse_eps(" Infinity ") == math.inf
    assert parse_eps("8/255") == pytest.approx(8 / 255) and parse_eps(0) == 0.0 and parse_eps("1.5") == 1.5


def test_unknown_class_and_method_are_clear_errors(ex, dirs):
    state = ex.new_session()
    with pytest.raises(gr.Error, match="Unknown class"):
        counterfactual.run(ex, dirs["photo"], "zebra", "L2", "3", STEPS, 0.1, state)
    with pytest.raises(gr.Error, match="(?i)out of range"):
        counterfactual.run(ex, dirs["photo"], "42", "L2", "3", STEPS, 0.1, state)
    with pytest.raises(gr.Error, match="(?i)norm"):
        counterfactual.run(ex, dirs["photo"], "cat", "L3", "3", STEPS, 0.1, state)
    run_cf(ex, state, dirs, steps=1)
    with pytest.raises(gr.Error, match="(?i)unknown attribution method"):
        attributions.run(ex, state, ["saliency", "magic"], ATTR_FRAMES[0], 0)


@pytest.mark.parametrize("kind, path, repo, revision, message", [
    ("Hugging Face Hub", "", "not a repo id!!", "", "^.That is not a valid Hub repo id"),   # no word of folders
    ("Hugging Face Hub", "", "owner/na..me", "", "not allowed"),
    ("Hugging Face Hub", "", "owner/name", "bad revision!", "revision"),
    ("Hugging Face Hub", "", "", "", "Enter a Hub repo id"),
    ("Local folder", "/no/such/checkpoint", "", "", "does not exist"),
    ("Local folder", "", "", "", "Enter the path"),
])
def test_bad_model_sources_are_clear_errors_and_the_model_stays(ex, kind, path, repo, revision, message):
    state = ex.new_session()
    before = dict(state)
    with pytest.raises(gr.Error, match=message):
        model_tab.load(ex, kind, path, repo, revision, None, state)
    assert state == before and ex.session_model(state) is ex.default


def test_a_folder_without_a_checkpoint_is_a_clear_error(ex, tmp_path):
    # it read "Checkpoint directory the folder you entered is missing ..." once the path was taken out
    with pytest.raises(gr.Error, match="The folder you entered is missing config.json and model.safetensors: a "
                                       "checkpoint directory needs config.json"):
        model_tab.load(ex, "Local folder", str(tmp_path), "", "", None, ex.new_session())


@pytest.mark.parametrize("value", [None, "", "  "])
def test_an_empty_box_is_named_as_empty(ex, dirs, value):
    """An empty Steps box said "got None" (and a blank ε "got ''")."""
    state = ex.new_session()
    with pytest.raises(gr.Error, match="Steps must be a whole number from 1 to 500; got nothing'"):
        counterfactual.run(ex, dirs["photo"], "cat", "L2", "3", value, 0.1, state)
    with pytest.raises(gr.Error, match="; got nothing'"):
        counterfactual.run(ex, dirs["photo"], "cat", "L2", value, 3, 0.1, state)
    run_cf(ex, state, dirs, steps=1)
    with pytest.raises(gr.Error, match="Choose at least one attribution method"):    # not "unknown method(s)"
        attributions.run(ex, state, [], ATTR_FRAMES[2], 0)


def test_switching_the_model_is_per_session(ex, dirs):
    a, b = ex.new_session(), ex.new_session()
    out = named(model_tab.load(ex, "Local folder", str(dirs["standard"]), "", "", dirs["photo"], a))
    assert out["state"]["source"] == str(dirs["standard"].resolve()) and "standard" in out["banner"]
    assert "About this model" in out["model_info"] and out["cf_input"].shape == (256, 256, 3)
    assert ex.session_model(out["state"]).directory == dirs["standard"].resolve()
    assert ex.session_model(b) is ex.default


# ------------------------------------------------------------------ the other tabs

def test_all_targets_grid_opens_a_path_in_the_scrubber(ex, dirs):
    state = ex.new_session()
    _, gallery, table = all_targets.run(ex, dirs["photo"], "L2", "3", 2, 0.1, state)
    names = ex.default.class_names
    assert len(gallery) == len(names) and "*outcome* says at which PGD step" in table
    assert all(img.shape == (256, 256, 3) for img, _ in gallery)

    class Select:
        index = 4
    out = all_targets.open_target(ex, state, Select())
    shown = named(out)
    assert shown["cf_target"]["value"] == names[4] and shown["cf_step"]["maximum"] == 2
    # the settings boxes show the opened path's own (they kept whatever was typed since, so Run ran another path)
    boxes = (shown["cf_norm"], shown["cf_eps"]["value"], shown["cf_steps"], shown["cf_step_size"])
    assert boxes == ("L2", "3", 2, "0.1")
    assert f"p({names[4]})" in named(counterfactual.scrub(ex, state, 1))["cf_caption"]


def test_compare_scrubs_both_models_with_one_slider(ex, dirs):
    state = ex.new_session()
    out = compare.run(ex, dirs["photo"], "dog", "L2", "3", 2, 0.1, state)
    assert out[1]["maximum"] == 2 and "Standard" in out[-1]
    a = named(compare.scrub(ex, state, 0))
    b = named(compare.scrub(ex, state, 2))
    assert np.array_equal(a["cmp_robust_frame"], a["cmp_standard_frame"])      # both start at x_0
    assert not np.array_equal(b["cmp_robust_frame"], b["cmp_standard_frame"])  # different models, different paths
    assert a["cmp_prob_plot"] != b["cmp_prob_plot"]


def test_compare_refuses_the_standard_model_against_itself(ex, dirs):
    """With the standard model loaded as the session's model, Compare ran it three times under the titles
    "Robust (DAT)", "Standard" and "Guided by DAT"."""
    switched = named(model_tab.load(ex, "Local folder", str(dirs["standard"]), "", "", dirs["photo"],
                                    ex.new_session()))
    with pytest.raises(gr.Error, match="is the standard model itself"):
        compare.run(ex, dirs["photo"], "dog", "L2", "3", 2, 0.1, switched["state"])


def test_compare_without_a_standard_model_says_so(dirs):
    alone = Explainer(str(dirs["robust"]), standard_model=None)
    with pytest.raises(gr.Error, match="standard"):
        compare.run(alone, dirs["photo"], "dog", "L2", "3", 2, 0.1, alone.new_session())


def test_generate_from_noise_and_from_an_image(ex, dirs):
    state = ex.new_session()
    out = named(generate.run(ex, "cat", "Random noise", None, 0, 2, 2, 0.2, state))
    assert out["gen_step"]["maximum"] == 2 and out["gen_gif"]["value"].endswith(".gif")
    first, last = generate.scrub(ex, state, 0), generate.scrub(ex, state, 2)
    assert not np.array_equal(first[0], last[0]) and first[1] != last[1]
    again = named(generate.run(ex, "cat", "Random noise", None, 0, 2, 2, 0.2, ex.new_session()))
    assert np.array_equal(again["gen_grid"], out["gen_grid"])                   # seeded: reproducible
    seeded = named(generate.run(ex, "every class", "My image", dirs["photo"], 0, 1, 1, 0.2, state))
    assert "10 classes" in seeded["gen_caption"]
    # the hidden seed and samples-per-class fields do not apply to an image (one start): one sample per class
    hidden = named(generate.run(ex, "every class", "My image", dirs["photo"], 5, 20, 1, 0.2, state))
    assert np.array_equal(hidden["gen_grid"], seeded["gen_grid"])
    assert [u["visible"] for u in generate.seed_fields("My image")] == [True, False, False]
    assert [u["visible"] for u in generate.seed_fields("Random noise")] == [False, True, True]
    with pytest.raises(gr.Error, match="Upload the image to start from"):   # not "(or click an example)"
        generate.run(ex, "cat", "My image", None, 0, 1, 1, 0.2, state)
    with pytest.raises(gr.Error, match="Random seed"):
        generate.run(ex, "cat", "Random noise", None, -1, 1, 1, 0.2, state)
    # every sample's frames are kept: 10 classes x 10 samples x 500 steps was budgeted as one path (1.1 GB)
    with pytest.raises(gr.Error, match="100 paths of 500 steps .* one request may keep 256 MB of results. Ask for "
                                       "fewer steps, samples per class or classes"):
        generate.run(ex, "every class", "Random noise", None, 0, 10, 500, 0.2, state)


def test_attributions_render_a_figure(ex, dirs):
    import matplotlib
    state = ex.new_session()
    run_cf(ex, state, dirs, steps=1)
    figure, info = attributions.run(ex, state, ["saliency"], ATTR_FRAMES[2], 0)
    assert figure.ndim == 3 and figure.shape[2] == 3 and "step 1" in info
    pyplot = matplotlib.pyplot if hasattr(matplotlib, "pyplot") else None
    assert pyplot is None or not pyplot.get_fignums()           # figures are closed


# ------------------------------------------------------------------ command line

def test_main_without_a_bundled_model_prints_one_line_and_exits_2(monkeypatch, capsys):
    def no_model():
        raise FileNotFoundError("nothing bundled")
    monkeypatch.setattr(app, "default_model_dir", no_model)
    assert app.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no bundled model yet" in err and "--model" in err


def test_main_with_a_missing_model_dir_exits_2(capsys):
    assert app.main(["--model", "/no/such/dir"]) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------ the layout others build on

def test_demo_has_stable_element_ids_and_uses_example_images(dirs, tmp_path, monkeypatch):
    examples = tmp_path / "examples"
    examples.mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(examples / "red.png")
    monkeypatch.setattr(counterfactual, "EXAMPLES_DIR", examples)
    demo = app.build_demo(str(dirs["robust"]), standard_model=None)
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"cf-image", "cf-target", "cf-run", "cf-step", "cf-frame", "cf-diff", "cf-probs", "cf-prob-plot",
            "cf-energy-plot", "cf-distance-plot", "all-grid", "land-map", "land-path", "land-step", "attr-figure",
            "cmp-step", "gen-step", "gen-grid", "model-load"} <= ids
    strip = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "cf-examples")
    assert [item["caption"] for item in strip.value] == ["red"]                  # the examples, labelled
    assert demo.explainer.standard is None


@pytest.mark.parametrize("methods", [-1, 2.5, True, {"saliency": 1}])
def test_attribution_methods_of_another_type_are_a_clear_error(ex, dirs, methods):
    """A number or a mapping sent to /attribute's methods ended in a TypeError traceback ("not iterable")."""
    from webapp import api

    with pytest.raises(gr.Error, match="(?i)methods: give comma-separated names or a list"):
        api.attribute(ex, dirs["photo"], "dog", methods, "3", 1, 0.1, progress=None)


def test_a_linf_radius_is_said_as_it_was_typed(ex, dirs):
    """The summary and the distance chart said "ε = 0.0627" for a radius typed and shown in its box as 16/255."""
    out = named(counterfactual.run(ex, dirs["photo"], "cat", "Linf", "16/255", 2, 0.004, ex.new_session()))
    assert "ε = 16/255" in out["cf_summary"] and "ε = 16/255" in out["cf_distance_plot"]
    assert "0.0627" not in out["cf_summary"] + out["cf_distance_plot"]



def test_the_shown_path_is_noted_as_old_after_a_new_image_or_model(ex, dirs, tmp_path):
    """After another image (or model) was chosen, tab 1 kept showing the earlier path and its summary with nothing
    saying they were not of the image and model now shown."""
    state = ex.new_session()
    assert named(counterfactual.preview(ex, dirs["photo"], state))["cf_summary"] == gr.skip()   # no path yet
    ran = run_cf(ex, state, dirs, steps=2)
    same = named(counterfactual.preview(ex, dirs["photo"], state))["cf_summary"]
    assert same == ran["cf_summary"]                                        # the path is of this image
    other_image = tmp_path / "other.png"
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(other_image)
    other = named(counterfactual.preview(ex, uploaded(other_image), state))["cf_summary"]
    assert other.startswith("_Below: the path of the previous image;") and other.endswith(ran["cf_summary"])
    switched = named(model_tab.load(ex, "Local folder", str(dirs["standard"]), "", "", dirs["photo"], state))
    assert switched["cf_summary"].startswith("_Below: the path of the previous model;")


def test_try_again_reruns_only_the_path_shown(ex, dirs, tmp_path):
    """Try again stayed on after another image or model was chosen, and ran the old path's larger ε on the new
    image, model or target: a path nobody asked for. It now hides with the old path's note and refuses any
    request that is not for the path shown (a forged click, a changed target)."""
    state = ex.new_session()
    ran = run_cf(ex, state, dirs, steps=2, eps="0.02")
    assert ran["cf_retry"]["visible"] is True                                    # fell short: retry offered
    assert named(counterfactual.preview(ex, dirs["photo"], state))["cf_retry"] == ran["cf_retry"]   # same image
    other_image = tmp_path / "other.png"
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(other_image)
    assert named(counterfactual.preview(ex, uploaded(other_image), state))["cf_retry"]["visible"] is False
    assert named(counterfactual.preview(ex, dirs["photo"], state))["cf_retry"] == ran["cf_retry"]   # back again
    request = ("L2", "0.02", 2, 0.1, state)
    with pytest.raises(gr.Error, match="Try again reruns the path shown, which is of another image: press Run"):
        counterfactual.retry(ex, uploaded(other_image), "cat", *request)
    with pytest.raises(gr.Error, match="of another target"):
        counterfactual.retry(ex, dirs["photo"], "dog", *request)
    switched = named(model_tab.load(ex, "Local folder", str(dirs["standard"]), "", "", dirs["photo"], state))
    assert switched["cf_retry"]["visible"] is False
    with pytest.raises(gr.Error, match="of another model"):
        counterfactual.retry(ex, dirs["photo"], "cat", *request[:-1], switched["state"])
    again = named(counterfactual.retry(ex, dirs["photo"], "cat", *request))   # the path shown: it reruns
    assert ex.get(state, "cf").trajectory.params["eps"] > 0.02 and again["cf_eps"]["value"] != "0.02"


def test_try_again_puts_the_paths_own_norm_in_the_settings(ex, dirs):
    """Try again reruns the path shown with its own norm, but set only ε, steps and step size in the boxes: after
    the norm box was switched to Linf, the boxes read Linf beside the L2 radius the retry ran with."""
    state = ex.new_session()
    assert run_cf(ex, state, dirs, steps=2, eps="0.02")["cf_retry"]["visible"] is True
    again = named(counterfactual.retry(ex, dirs["photo"], "cat", "Linf", "8/255", 2, 0.1, state))
    assert ex.get(state, "cf").trajectory.params["norm"] == "L2" and again["cf_norm"] == "L2"


def test_try_again_follows_the_target_box(ex, dirs):
    """Try again stayed offered after the target box moved to another class, where it can only be refused."""
    state = ex.new_session()
    ran = run_cf(ex, state, dirs, steps=2, eps="0.02")
    assert try_again.on_target(ex, state, dirs["photo"], "dog")["visible"] is False
    assert try_again.on_target(ex, state, dirs["photo"], "cat") == ran["cf_retry"]
    assert try_again.on_target(ex, ex.new_session(), dirs["photo"], "cat") == gr.skip()   # no path


def test_the_landscape_slider_offers_what_the_server_takes(ex, dirs):
    """Typing 20.5 in "Grid points per side" said "from 5 to 65" beside a slider of 9 to 41."""
    with gr.Blocks():
        ui = landscape.layout()
    assert (ui.land_grid.minimum, ui.land_grid.maximum) == landscape.GRID_SIDE
    state = ex.new_session()
    run_cf(ex, state, dirs, steps=2)
    with pytest.raises(gr.Error, match=f"from {landscape.GRID_SIDE[0]} to {landscape.GRID_SIDE[1]}"):
        landscape.run(ex, state, 1, "E(x)", 20.5)


def test_other_tabs_forget_their_results_when_the_image_or_model_changes(ex, dirs):
    """After another image or model, All targets and Robust vs standard kept their old grid and comparison as if
    current (a grid cell then opened the old image's path in tab 1, its target maybe no class of the new model),
    and Generate kept the old model's samples."""
    state = ex.new_session()
    all_targets.run(ex, dirs["photo"], "L2", "3", 2, 0.1, state)
    compare.run(ex, dirs["photo"], "dog", "L2", "3", 2, 0.1, state)
    generate.run(ex, "cat", "Random noise", None, 0, 2, 2, 0.2, state)
    grid = named(all_targets.forget(ex, state))
    assert grid["all_grid"] == [] and "this image" in grid["all_table"] and ex.get(state, "all") is None
    cmp = named(compare.forget(ex, state))
    assert cmp["cmp_robust_frame"] is None and cmp["cmp_summary"] == compare.PRESS and ex.get(state, "cmp") is None
    assert cmp["cmp_step"]["interactive"] is False
    gen = named(generate.forget(ex, state))
    assert gen["gen_grid"] is None and ex.get(state, "gen") is None
    assert all(v == gr.skip() for v in named(all_targets.forget(ex, state)).values())   # nothing left to forget


def test_try_again_refuses_a_path_of_another_region(ex, dirs):
    """Try again checked image, model and target, not the painted region: a path run on the whole image was retried
    inside a region painted since (and a region's path on the whole image once it was cleared)."""
    from webapp.tabs import region

    state = ex.new_session()
    assert run_cf(ex, state, dirs, steps=2, eps="0.02")["cf_retry"]["visible"] is True
    ex.put(state, region.SLOT, np.ones((32, 32), dtype=bool))   # as region.use keeps a region, and records it
    state[region.SLOT] = True
    with pytest.raises(gr.Error, match="of another painted region"):
        counterfactual.retry(ex, dirs["photo"], "cat", "L2", "0.02", 2, 0.1, state)
    assert try_again.on_target(ex, state, dirs["photo"], "cat")["visible"] is False


def test_a_batch_of_paths_is_bounded_by_its_activation_memory(ex, dirs, monkeypatch):
    """Only the frames were budgeted: 100 samples of an ImageNet ConvNeXt-L (0.43 GiB of activations each) would have
    asked for 43 GiB at once and taken the server down. A request's batch is bounded by the activations it needs
    (here with the bound lowered to three paths of the test model; one path always fits; the every-class tab, which
    has no count a visitor could lower, runs that many a batch)."""
    from webapp import state as st

    loaded = ex.session_model(ex.new_session())
    each = st.activation_bytes(loaded.config)
    assert each == model_cost(loaded.config)[1] > 0
    assert st.activation_bytes({"arch": "convnext-large-convstem", "num_classes": 1000}) * 100 > 40 * 2**30
    monkeypatch.setattr(st, "REQUEST_ACTIVATION_BYTES", 3 * each)
    with pytest.raises(gr.Error, match=r"4 paths of this model at once need about .* of activations; one request may "
                                       r"hold .* \(at most 3 paths of it\)\. Ask for fewer samples"):
        generate.run(ex, "cat", "Random noise", None, 0, 4, 1, 0.2, ex.new_session())
    batches = []
    real = all_targets.explain.counterfactuals
    monkeypatch.setattr(all_targets.explain, "counterfactuals",
                        lambda *a, **k: batches.append(k["max_batch"]) or real(*a, **k))
    grid = named(all_targets.run(ex, dirs["photo"], "L2", "3", 1, "0.5", ex.new_session()))   # every class: the
    assert batches == [3] and len(grid["all_grid"]) == 10   # tab has no count to lower, so it runs 3 paths a batch
    assert named(generate.run(ex, "cat", "Random noise", None, 0, 3, 1, 0.2, ex.new_session()))["gen_grid"] is not None
    state = ex.new_session()
    assert run_cf(ex, state, dirs, steps=1) is not None   # one path: never refused by this bound


@pytest.mark.parametrize("method", ["integrated_gradients", "occlusion"])
def test_the_attributions_tab_keeps_the_requests_activation_budget(ex, dirs, monkeypatch, method):
    """The tab ran Captum on 32 images at once whatever the model, as /attribute did: 13 GiB of activations on an
    ImageNet ConvNeXt-L, where a request may hold 2 GiB. Here the budget is two images of this model."""
    from webapp import state as st

    state = ex.new_session()
    run_cf(ex, state, dirs, steps=1)
    loaded = ex.session_model(state)
    monkeypatch.setattr(st, "REQUEST_ACTIVATION_BYTES", 2 * st.activation_bytes(loaded.config))
    batches: list[int] = []
    hook = loaded.model.register_forward_hook(lambda module, args, out: batches.append(args[0].shape[0]))
    try:
        attributions.run(ex, state, [method], ATTR_FRAMES[2], 0)
    finally:
        hook.remove()
    assert batches and max(batches) <= 2, max(batches)
