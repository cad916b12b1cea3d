"""The first-impression features as plain handlers (no server, no browser): retry after a path that fell short,
Cancel through the PGD hook, labelled samples, example picking, shareable links, the model kept per browser."""

import math
import threading
from types import SimpleNamespace
from urllib.parse import parse_qs

import gradio as gr
import numpy as np
import pytest
import torch
from conftest import uploaded
from PIL import Image

from dat_core import build_model, save_model
from webapp import links, opening, sources
from webapp.explainer import Cancelled, Explainer
from webapp.inputs import model_input, pgd_params
from webapp.retry import retry_for
from webapp.tabs import all_targets, counterfactual, generate, share, try_again
from webapp.tabs import model as model_tab
from webapp.views import AllTargetsView, CounterfactualView


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ux")
    torch.manual_seed(0)
    robust = save_model(build_model("wrn-10-1"), root / "robust")
    torch.manual_seed(1)
    other = save_model(build_model("wrn-10-1"), root / "other")
    photo = root / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(photo)
    return {"robust": robust, "other": other, "photo": uploaded(photo), "root": root}


@pytest.fixture(scope="module")
def ex(dirs):
    return Explainer(str(dirs["robust"]), standard_model=None, allow_local_models=True)


def named(result):
    return result._asdict()


# ------------------------------------------------------------------ 6. retry

def test_a_path_that_used_its_budget_is_retried_with_a_larger_eps(ex, dirs):
    state = ex.new_session()
    out = named(counterfactual.run(ex, dirs["photo"], "cat", "L2", "0.01", 2, 0.1, state))
    traj = ex.get(state, "cf").trajectory
    assert traj.flip_step is None
    assert out["cf_retry"]["visible"] and "ε = 0.02" in out["cf_retry"]["value"]
    assert "Why:" in out["cf_summary"] and "whole budget" in out["cf_summary"]
    again = named(counterfactual.retry(ex, dirs["photo"], "cat", "L2", "0.01", 2, 0.1, state))
    assert again["cf_eps"]["value"] == "0.02" and again["cf_steps"] == 2
    assert ex.get(state, "cf").trajectory.params["eps"] == pytest.approx(0.02)


def test_a_path_that_ran_out_of_steps_gets_more_steps():
    tr = _short(10, 0.1)
    retry = retry_for(tr, max_steps=500)
    assert (retry.eps, retry.steps, retry.step_size) == (3.0, 60, 0.1) and "ran out of steps" in retry.why
    assert "10 steps of 0.1" in retry.why                                   # 60 steps walk 2 eps
    tr.params["steps"], tr.distance = 500, np.array([0.0, 0.6])            # stuck short of eps at the cap
    assert retry_for(tr, max_steps=500).step_size == pytest.approx(0.2)    # at the step cap: larger steps
    tr.distance = np.array([0.0, 3.0])
    retry = retry_for(tr, max_steps=500)
    assert retry.eps == 6.0 and "whole budget" in retry.why
    tr.flip_step = 4
    assert retry_for(tr) is None                                            # reached: nothing to retry
    linf = _short(500, 1 / 255, eps=16 / 255, norm="Linf")                 # Linf steps as written: k/255
    linf.linf = linf.distance = np.array([0.0, 4 / 255])                    # short of ε at the step cap
    assert "500 steps of 1/255" in retry_for(linf, max_steps=500).why      # (it said "of 0.00392")
    assert "step size 2/255" in try_again.button(SimpleNamespace(trajectory=linf))["value"]


def _short(steps: int, step_size: float, eps: float = 3.0, **params) -> SimpleNamespace:
    """A path that did not reach class 3 and walked its whole length steps x step_size."""
    walked = np.array([0.0, min(steps * step_size, eps)])
    return SimpleNamespace(flip_step=None, source=0, target=3, l2=walked, linf=walked, distance=walked,
                           class_names=list("abcd"),
                           params={"norm": "L2", "eps": eps, "steps": steps, "step_size": step_size, **params},
                           probs=np.array([[0.7, 0.1, 0.1, 0.1]] * 2), confidence=np.array([0.1, 0.1]),
                           frames=np.zeros((2, 32, 32, 3)))


def test_a_retry_fixes_what_stopped_the_path():
    """Try again offered retries that could not work: 1 step -> "2 steps" (a path 0.2 long inside ε = 3), steps
    of 1e-12 -> "20 steps" (still nothing moves), a painted region that did not move p(target) -> more steps,
    again and again. The suggestion now covers the distance to ε, takes the default step size where the steps
    were too small to get anywhere, and a region that changes nothing gets a reason but no retry."""
    one = retry_for(_short(1, 0.1), max_steps=500)
    assert (one.steps, one.step_size) == (60, 0.1) and "1 step of 0.1" in one.why     # 2 eps / step size
    tiny = retry_for(_short(100, 1e-12), max_steps=500)
    assert tiny.step_size == 0.1 and tiny.steps == 100                              # 100 x 0.1 covers 2 eps
    unbounded = retry_for(_short(20, 1e-12, eps=math.inf), max_steps=500)
    assert unbounded.step_size == 0.1 and unbounded.steps == 20
    region = retry_for(_short(500, 0.1, eps=math.inf, mask_fraction=0.1), max_steps=500)
    assert (region.eps, region.steps, region.step_size) == (math.inf, 500, 0.1) and "painted region" in region.why
    tr = _short(500, 0.1, eps=math.inf, mask_fraction=0.1)
    view = SimpleNamespace(trajectory=tr)
    assert try_again.button(view)["visible"] is False                              # nothing to change: no button


def test_without_an_image_the_stored_path_is_named_the_previous_images(ex, dirs):
    """A failed upload (or the image box's clear) after a choice left "Below: the path of the previous image;
    press Run for this one." with no image to run. The path stays, named as the previous image's."""
    state = ex.new_session()
    counterfactual.run(ex, dirs["photo"], "cat", "L2", "0.01", 2, 0.1, state)
    for handler in (counterfactual.failed_upload, counterfactual.cleared):
        out = named(handler(ex, state))
        assert out["cf_summary"].startswith("_Below: the path of the previous image; choose an image")
        assert "press **Run** for this one" not in out["cf_summary"] and out["cf_retry"]["visible"] is False
        assert out["cf_input"] is None
    assert named(counterfactual.cleared(ex, ex.new_session()))["cf_summary"] == gr.skip()   # no path: no note


def test_a_path_that_reached_its_target_offers_no_retry(ex, dirs):
    state = ex.new_session()
    out = named(counterfactual.run(ex, dirs["photo"], "cat", "L2", "inf", 30, 2.0, state))
    if ex.get(state, "cf").trajectory.flip_step is None:
        pytest.skip("this random model did not flip")
    assert out["cf_retry"]["visible"] is False
    with pytest.raises(gr.Error, match="nothing to retry"):
        counterfactual.retry(ex, dirs["photo"], "cat", "L2", "inf", 30, 2.0, state)


# ------------------------------------------------------------------ 8. all targets

def test_all_targets_table_follows_the_grid_and_names_the_start_class(ex, dirs):
    state = ex.new_session()
    _, gallery, table = all_targets.run(ex, dirs["photo"], "L2", "3", 2, 0.1, state)
    names = ex.default.class_names
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    short = [c.split(" · ")[0] for _, c in gallery if c.endswith("not reached")]
    assert not short or f"**Not reached:** {', '.join(short)}" in table
    assert rows[1:] == names and [c.split(" · ")[0] for _, c in gallery] == names
    view = ex.get(state, "all")
    source = view.trajectories[0].source
    assert "start class" in gallery[source][1] and "flips at step 0" not in table
    assert all(len(caption) <= 32 for _, caption in gallery)
    assert AllTargetsView.outcome(view.trajectories[source]) == "start class"


# ------------------------------------------------------------------ 11. cancel

def test_cancel_stops_pgd_early_and_nothing_is_kept(ex, dirs):
    """A Cancel pressed while PGD runs ends it at the next step (the on_step hook answers STOP); the cut path is
    neither shown nor memoized, and the next request is served."""
    state = ex.new_session()
    steps_seen = []

    def progress(value, desc=None, unit=None):
        steps_seen.append(value[0])
        if value[0] == 5:
            assert ex.cancel(state)                 # the button, pressed from another request meanwhile
    with pytest.raises(Cancelled, match="step 5 of 400"):
        counterfactual.run(ex, dirs["photo"], "dog", "L2", "inf", 400, 0.05, state, progress=progress)
    assert steps_seen == [1, 2, 3, 4, 5]
    assert ex.get(state, "cf") is None and not ex.cancel(state)            # no run in flight any more
    out = named(counterfactual.run(ex, dirs["photo"], "dog", "L2", "inf", 3, 0.05, state))
    assert out["cf_step"]["maximum"] == 3                                  # a fresh, complete path


def test_cancel_puts_the_stored_path_back_where_the_run_streamed_its_frames(ex, dirs):
    """A run streams its frames into tab 1's frame, difference, bars and caption; Cancel left the cancelled run's
    last frame and "Running: step t of T" beside the stored path's slider, summary and charts."""
    state = ex.new_session()
    old = named(counterfactual.run(ex, dirs["photo"], "dog", "L2", "3", 4, 0.1, state))
    live = counterfactual.run_live(ex, dirs["photo"], "cat", "L2", "inf", 400, 0.05, state)
    streamed = named(next(live))
    assert "Running" in streamed["cf_caption"]
    stopped = named(counterfactual.cancel(ex, state, 2))
    live.close()
    assert stopped["cf_run"]["visible"] is True and stopped["cf_cancel"]["visible"] is False
    at_2 = named(counterfactual.scrub(ex, state, 2))
    assert stopped["cf_caption"] == at_2["cf_caption"] and "Running" not in stopped["cf_caption"]
    assert np.array_equal(stopped["cf_frame"], at_2["cf_frame"]) and stopped["cf_probs"] == at_2["cf_probs"]
    assert old["cf_step"]["maximum"] == 4
    nothing = named(counterfactual.cancel(ex, ex.new_session(), 0))        # no stored path: the empty view
    assert nothing["cf_frame"] is None and nothing["cf_caption"] == ""
    assert "Probabilities at step t" in nothing["cf_probs"] and "Probabilities at step t" not in at_2["cf_probs"]


def test_cancel_from_another_thread_stops_all_targets_and_generate(ex, dirs):
    for start in (lambda s: all_targets.run(ex, dirs["photo"], "L2", "inf", 400, 0.05, s),
                  lambda s: generate.run(ex, "every class", "Random noise", None, 0, 1, 400, 0.05, s)):
        state = ex.new_session()
        errors = []

        def work():
            try:
                start(state)
            except Cancelled as e:
                errors.append(e)
        thread = threading.Thread(target=work)
        thread.start()
        while not ex.cancel(state) and thread.is_alive():
            thread.join(0.01)
        thread.join(60)
        assert errors and "of 400" in errors[0].message


# ------------------------------------------------------------------ 10. generate

def test_generated_samples_are_labelled_with_class_and_probability(ex):
    state = ex.new_session()
    out = named(generate.run(ex, "every class", "Random noise", None, 0, 1, 1, 0.2, state))
    view = ex.get(state, "gen")
    plain = view.grid(len(view) - 1, labels=False)
    assert out["gen_grid"].shape[0] > plain.shape[0]                        # a caption band under each row
    assert not np.array_equal(view.grid(0), view.grid(len(view) - 1))       # labels follow p(class) per step


# ------------------------------------------------------------------ 5, 12. examples and links

def test_examples_are_picked_by_index_and_labelled(ex):
    if not len(ex.examples):
        pytest.skip("no example images")
    strip = ex.examples.strip()
    assert all("/" not in n for n in strip) and len({links.caption(n) for n in strip}) == len(strip)
    out = named(counterfactual.pick_example(ex, ex.new_session(), SimpleNamespace(index=1)))
    assert str(out["cf_image"]).endswith((strip[1] + ".jpg", strip[1] + ".png"))
    assert "What the model predicts" in out["cf_prediction"]
    with pytest.raises(gr.Error, match="No such example"):
        counterfactual.pick_example(ex, ex.new_session(), SimpleNamespace(index=999))


def test_a_link_names_the_example_target_and_settings(ex, dirs, tmp_path):
    if not len(ex.examples):
        pytest.skip("no example images")
    name = ex.examples.names[0]
    copy = tmp_path / "copy.jpg"                          # the page holds a copy of the example, not its path
    copy.write_bytes(ex.examples.paths[name].read_bytes())
    state = ex.new_session()
    query = share.share(ex, {"path": uploaded(copy)}, "dog", "Linf", "8/255", 7, 0.004, state)["value"]
    fields = {k: v[0] for k, v in parse_qs(query[1:]).items()}
    assert fields == {"example": name, "target": "dog", "norm": "Linf", "eps": "8/255", "steps": "7",
                      "step_size": "0.004"}
    upload = share.share(ex, dirs["photo"], "dog", "L2", "3", 7, 0.1, state)["value"]
    assert not upload.startswith("?") and "uploaded image" in upload


@pytest.mark.parametrize("norm, eps, step_size", [("Linf", "16/255", "1/255"), ("L2", "1/3", "0.123456789"),
                                                   ("L2", "5", 0.1)])
def test_a_link_opens_exactly_the_run_it_names(ex, norm, eps, step_size):
    """A link wrote the step size with 6 digits (1/255 came back as 0.00392157, 1/3 as 0.333333): the run it
    opened was not the run it came from. Now link and settings boxes hold each number exactly, in the form typed
    where it reads back the same (16/255 and 1/255 for Linf)."""
    if not len(ex.examples):
        pytest.skip("no example images")
    example = {"path": uploaded(ex.examples.paths[ex.examples.names[0]])}
    asked = pgd_params(norm, eps, 7, step_size)
    query = share.share(ex, example, "dog", norm, eps, 7, step_size, ex.new_session())["value"]
    out = named(opening.open_page(ex, None, _request(query)))
    assert out["cf_autorun"] is True
    opened = pgd_params(out["cf_norm"], out["cf_eps"]["value"], out["cf_steps"], out["cf_step_size"])
    assert opened == asked                                    # the same floats, bit for bit
    if norm == "Linf":
        assert (out["cf_eps"]["value"], out["cf_step_size"]) == ("16/255", "1/255")
    else:
        assert str(step_size) in query


def test_a_link_says_what_it_cannot_carry(ex, dirs, tmp_path):
    """On a folder model, or with a painted region, the link silently opened something else (the app's model, the
    whole image) while labelled "Link to this run (copied)". Its label now says what the link leaves out."""
    if not len(ex.examples):
        pytest.skip("no example images")
    example = {"path": uploaded(ex.examples.paths[ex.examples.names[0]])}
    state = ex.new_session()
    plain = share.share(ex, example, "dog", "L2", "3", 7, 0.1, state)
    assert plain["label"] == "Link to this run (copied)"
    out = named(model_tab.load(ex, model_tab.LOCAL, str(dirs["other"]), "", "", None, state))
    state = out["state"]
    folder = share.share(ex, example, "dog", "L2", "3", 7, 0.1, state)
    assert "opens on this app's own model" in folder["label"] and "model=" not in folder["value"]
    ex.put(state, "region", np.ones((32, 32), dtype=bool))   # as region.use keeps one, and records it
    state["region"] = True
    painted = share.share(ex, example, "dog", "L2", "3", 7, 0.1, state)
    assert "painted region" in painted["label"] and "opens on this app's own model" in painted["label"]


def _request(query: str):
    return SimpleNamespace(query_params={k: v[0] for k, v in parse_qs(query.lstrip("?")).items()})


def test_opening_a_link_shows_its_run_and_starts_it(ex):
    if not len(ex.examples):
        pytest.skip("no example images")
    name = ex.examples.names[0]
    out = named(opening.open_page(ex, None, _request(f"?example={name}&target=horse&norm=L2&eps=2&steps=9"
                                                     "&step_size=0.2")))
    assert out["cf_autorun"] is True and out["cf_image"] == str(ex.examples.paths[name])
    assert out["cf_target"]["value"] == "horse" and out["cf_steps"] == 9 and out["cf_eps"]["value"] == "2"
    assert out["cf_input"].shape == (256, 256, 3)


@pytest.mark.parametrize("norm, eps, shown", [("L1", "24", "L1"), ("linf", "2/255", "Linf")])
def test_a_link_may_name_every_norm_the_engine_has_in_any_case(ex, norm, eps, shown):
    """Every norm of the engine (L1 too); `norm=l2` or linf in a hand-written link was "settings are not valid",
    where the norm box and the API take it."""
    if not len(ex.examples):
        pytest.skip("no example images")
    name = ex.examples.names[0]
    out = named(opening.open_page(ex, None, _request(f"?example={name}&target=horse&norm={norm}&eps={eps}&steps=9")))
    assert out["cf_autorun"] is True and out["cf_norm"] == shown and out["cf_eps"]["value"] == eps


@pytest.mark.parametrize("query, note", [
    ("?example=../../etc/passwd&target=cat", "not one of this app's examples"),
    ("?example={name}&target=-1", "not a class"),
    ("?example={name}&target=cat&steps=100000", "settings are not valid"),
    ("?example={name}&target=cat&norm=L7", "settings are not valid"),
    ("?example={name}&target=cat&model=hf:..%2F..", "model it names could not be loaded"),
    ("?example={name}&target=cat&model=/etc", "model it names could not be loaded"),
])
def test_a_bad_link_opens_what_it_can_and_runs_nothing(ex, query, note):
    if not len(ex.examples):
        pytest.skip("no example images")
    out = named(opening.open_page(ex, None, _request(query.format(name=ex.examples.names[0]))))
    assert out["cf_autorun"] is False and note in out["cf_summary"]
    assert "/etc" not in out["cf_summary"] and "passwd" not in out["cf_summary"]
    assert out["state"]["key"] == ex.default.key


def test_a_link_names_a_bundled_or_hub_model_never_a_server_folder(ex, dirs):
    local = ex.models.load(sources.local_source(str(dirs["other"]), True))
    assert sources.link_fields(ex.models.source(local.key), False) == {}
    hub = sources.hub_source("owner/name", "abc123")
    assert sources.link_fields(hub, False) == {"model": "hf:owner/name", "revision": "abc123"}
    assert sources.link_source("hf:owner/name", "abc123") == hub
    bundled = sources.bundled_models()
    if bundled:
        first = next(iter(bundled))
        assert sources.link_source(first).kind in ("bundled", "local")
    with pytest.raises(ValueError):
        sources.link_source("../../etc")


# ------------------------------------------------------------------ 11. the model kept per browser

def test_the_browser_remembers_the_model_and_a_reload_restores_it(ex, dirs):
    out = named(model_tab.load(ex, model_tab.LOCAL, str(dirs["other"]), "", "", None, ex.new_session()))
    saved = out["saved_model"]
    assert saved == {"kind": model_tab.LOCAL, "path": str(dirs["other"])}
    page = named(opening.open_page(ex, saved, _request("")))
    assert page["state"]["key"] == out["state"]["key"] and "folder other" in page["banner"]
    assert page["model_kind"] == model_tab.LOCAL


@pytest.mark.parametrize("saved", [
    {"kind": "Local folder", "path": "/etc"}, {"kind": "Hugging Face Hub", "repo": "../../etc"},
    {"kind": "Bundled model", "bundled": "../../etc"}, {"kind": "nonsense"}, "not a dict", {"kind": 3},
])
def test_a_forged_remembered_model_is_ignored(ex, saved):
    page = named(opening.open_page(ex, saved, _request("")))
    assert page["state"]["key"] == ex.default.key and page["banner"] is not None


def test_a_remembered_server_folder_is_refused_where_folders_are_off(dirs):
    closed = Explainer(str(dirs["robust"]), standard_model=None, allow_local_models=False)
    page = named(opening.open_page(closed, {"kind": "Local folder", "path": str(dirs["other"])}, _request("")))
    assert page["state"]["key"] == closed.default.key


def test_views_of_the_start_class_say_so(ex, dirs):
    state = ex.new_session()
    loaded = ex.default
    x = model_input(dirs["photo"], loaded)
    with torch.no_grad():
        source = int(loaded.model(x).argmax())
    counterfactual.run(ex, dirs["photo"], str(source), "L2", "1", 1, 0.1, state)
    view: CounterfactualView = ex.get(state, "cf")
    assert "already is the target" in view.summary()
    # the caption and the charts said "flipped to the target" and "flips at t=0" for a path that never left it
    assert all("flipped" not in view.caption(i) for i in range(len(view)))
    assert all("flips at" not in view.chart(name, 0) for name in ("energy", "confidence", "distance"))


def test_a_path_that_reaches_the_target_and_loses_it_says_so():
    """A non-robust model's path can flip to the target and flip back (seen in Robust vs standard): the last
    frames, the summary and the all-targets table must not claim a flip while the model sees another class."""
    probs = np.array([[0.7, 0.1, 0.1, 0.1], [0.2, 0.1, 0.1, 0.6], [0.6, 0.1, 0.1, 0.2]])
    tr = SimpleNamespace(flip_step=1, source=0, target=3, steps=np.array([0, 1, 2]), probs=probs,
                         confidence=probs[:, 3], l2=np.array([0.0, 0.1, 0.2]), linf=np.zeros(3),
                         distance=np.array([0.0, 0.1, 0.2]),
                         images=np.zeros((3, 2, 2, 3)),
                         class_names=list("abcd"), params={"norm": "L2", "eps": 3.0, "steps": 2, "step_size": 0.1})
    view = CounterfactualView(trajectory=tr, model_key="", frames=None, diffs=None, diff_scale=1.0, scale=1,
                              charts={})
    assert "flipped" not in view.caption(0)
    assert "**flipped to the target**" in view.caption(1)
    assert "flipped to the target" not in view.caption(2) and "reached the target at step 1, **lost it since**" in \
        view.caption(2)
    assert "flips to **d** at step **1**, but ends as **a**" in view.summary()
    table = AllTargetsView(trajectories=[tr], model_key="", scale=1)
    assert "flips at step 1, ends as a" in table.table()
    tr.probs = probs[:2]
    tr.confidence = probs[:2, 3]
    assert "ends as" not in view.summary()
    assert "| flips at step 1 |" in table.table()


def test_the_first_frame_at_the_compared_confidence_is_marked():
    """Counterfactuals are compared at p(target) >= 0.9 (the paper's ~0.89; `benchmark --stop-at 0.9`), while the
    app's paths run on past it: the confidence chart draws that level and the caption names its first frame."""
    probs = np.array([[0.7, 0.1, 0.1, 0.1], [0.2, 0.1, 0.1, 0.6], [0.02, 0.02, 0.01, 0.95], [0.0, 0.0, 0.01, 0.99]])
    tr = SimpleNamespace(flip_step=1, source=0, target=3, steps=np.array([0, 5, 10, 15]), probs=probs,
                         confidence=probs[:, 3], l2=np.array([0.0, 0.1, 0.2, 0.3]), linf=np.zeros(4),
                         distance=np.array([0.0, 0.1, 0.2, 0.3]),
                         images=np.zeros((4, 2, 2, 3)), energy=np.zeros(4), energy_target=np.zeros(4),
                         frames=np.zeros((4, 2, 2, 3), np.uint8),
                         class_names=list("abcd"), params={"norm": "L2", "eps": 3.0, "steps": 15, "step_size": 0.1})
    view = CounterfactualView.build(tr, "")
    marked = [i for i in range(4) if "first frame at p ≥ 0.9" in view.caption(i)]
    assert marked == [2]
    chart = view.chart("confidence", 0)
    assert ">p = 0.9</text>" in chart and ">p = 0.9</text>" not in view.chart("energy", 0)
    tr.confidence = tr.probs[:, 3] * 0.5                    # never gets there: nothing marked
    assert not any("first frame at p" in CounterfactualView.build(tr, "").caption(i) for i in range(4))


def test_a_cancel_is_said_as_information_not_as_an_error(ex, capsys):
    """A visitor's own Cancel came up as a red "Error" toast (Gradio 6 shows no custom title on errors): the
    Cancel button says it as an Info toast, once, only when a run was in flight; the cancelled run's own error
    toast is hidden, and the run still ends as failed."""
    from webapp.wiring import CANCELLED, bind, stop

    def cancelled(ex, state):
        raise Cancelled(3, 10)

    def refused(ex, state):
        raise gr.Error("Unknown class 'x'")
    with pytest.raises(Cancelled) as stopped:
        bind(cancelled, ex)(ex.new_session())
    assert stopped.value.visible is False and "Cancelled" not in capsys.readouterr().out
    state = ex.new_session()
    stop(ex, state)
    assert CANCELLED not in capsys.readouterr().out                 # nothing in flight: nothing to say
    with ex.cancellable(state) as event:
        stop(ex, state)
        assert event.is_set() and CANCELLED in capsys.readouterr().out   # gr.Info, printed outside a request
    with pytest.raises(gr.Error) as failed:
        bind(refused, ex)(ex.new_session())
    assert failed.value.visible is True


def test_one_class_of_many_samples_is_a_square_not_a_strip():
    """Generate with one class and 12 samples laid them out 1 x 12 (1178 x 116 px, unreadable once scaled to
    the page); several classes keep one row per class."""
    from webapp.views import SamplingView

    def samples(classes: int, per_class: int) -> SimpleNamespace:
        n = classes * per_class
        return SimpleNamespace(targets=np.repeat(np.arange(classes), per_class), n_per_class=per_class,
                               trajectory_confidences=np.zeros((2, n)), steps=np.arange(2),
                               trajectory=np.zeros((2, n, 32, 32, 3), np.uint8), class_names=list("abcdefghij"))
    one = SamplingView.build(samples(1, 12))
    h, w, _ = one.grid(1).shape
    assert one.nrow == 4 and w < 2 * h
    assert SamplingView.build(samples(3, 4)).nrow == 4                     # a row per class
