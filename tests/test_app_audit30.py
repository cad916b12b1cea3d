"""Audit of the web app as a public Space (session 30): work a request does outside the model queue, long runs that
kept going for a visitor who cancelled or left, and what the page shows after a run fails. Handlers are called as
plain functions on tiny checkpoints written here (as the page calls them), or served on 127.0.0.1."""

import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import uploaded
from PIL import Image

import app
import explain
from benchmarks.app_harness import queue_completions, queue_join, serve, upload_file, write_image, write_model
from dat_core import build_model, save_model
from explain.attribution import METHODS
from webapp import fairness
from webapp.demo import build_demo
from webapp.explainer import Cancelled, Explainer
from webapp.inputs import ATTR_FRAMES
from webapp.tabs import attributions, counterfactual, landscape, try_again
from webapp.wiring import bind


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit30")
    torch.manual_seed(0)
    robust = save_model(build_model("wrn-10-1"), root / "robust")
    photo, other = root / "photo.png", root / "other.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(photo)
    Image.fromarray(np.full((36, 36, 3), 200, np.uint8)).save(other)
    return {"robust": robust, "photo": uploaded(photo), "other": uploaded(other)}


@pytest.fixture(scope="module")
def ex(dirs):
    return Explainer(str(dirs["robust"]), standard_model=None)


class Decodes:
    """Counts the images decoded into a model input (`explain.to_model_input`, which every handler reads through)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        real = explain.to_model_input

        def counted(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(explain, "to_model_input", counted)


def test_the_target_box_decodes_no_image(ex, dirs, monkeypatch):
    """Changing tab 1's target box (an unqueued event: no queue, no concurrency limit) decoded the whole image again
    to tell whether Try again still fits: a 126 KB PNG of 40 MP took 1.7 s and ~360 MB each time, so forty requests
    at once held ~14 GB outside the model queue. The box now compares the image tab 1 read last, by its bytes."""
    state = ex.new_session()
    counterfactual.preview(ex, dirs["photo"], state)
    ran = counterfactual.run(ex, dirs["photo"], "cat", "L2", "0.02", 2, 0.1, state)._asdict()
    assert ran["cf_retry"]["visible"] is True                        # fell short: Try again offered
    decodes = Decodes(monkeypatch)
    assert try_again.on_target(ex, state, dirs["photo"], "cat") == ran["cf_retry"]
    assert try_again.on_target(ex, state, uploaded(dirs["photo"]), "cat") == ran["cf_retry"]   # the same bytes
    assert try_again.on_target(ex, state, dirs["photo"], "dog")["visible"] is False
    assert try_again.on_target(ex, state, dirs["other"], "cat")["visible"] is False   # an image tab 1 did not read
    assert decodes.calls == 0
    counterfactual.preview(ex, dirs["other"], state)                 # another image chosen, then the first again
    assert try_again.on_target(ex, state, dirs["photo"], "cat")["visible"] is False
    counterfactual.preview(ex, dirs["photo"], state)
    assert try_again.on_target(ex, state, dirs["photo"], "cat") == ran["cf_retry"]


class Forwards:
    """Counts the model's forwards and, at the `at`-th, does what a visitor does meanwhile (`then`)."""

    def __init__(self, model, at, then):
        self.calls, self.at, self.then = 0, at, then
        self.hook = model.register_forward_hook(self.seen)

    def seen(self, module, args, out):
        self.calls += 1
        if self.calls == self.at:
            self.then()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.hook.remove()


def _path(ex, dirs):
    state = ex.new_session()
    counterfactual.run(ex, dirs["photo"], "cat", "L2", "3", 2, 0.1, state)
    return state


def test_attributions_stop_when_the_visitor_leaves(ex, dirs):
    """A reload or a closed tab stops PGD at its next step (fairness.Visitors.leave); Captum's attributions, which
    have no PGD hook, ran every method to the end for a page nobody had any more (minutes of a worker on an
    ImageNet model). They now stop at the model's next forward."""
    state = _path(ex, dirs)
    visitors, request = fairness.Visitors(), SimpleNamespace(session_hash="gone-" + state["id"])
    handler = visitors.one_at_a_time(bind(attributions.run, ex))
    with Forwards(ex.default.model, 2, lambda: visitors.leave(request)) as forwards, pytest.raises(Cancelled):
        handler(state, list(METHODS), ATTR_FRAMES[0], 0, request=request)
    assert forwards.calls == 2                                       # no forward after the page went
    full = Forwards(ex.default.model, 0, lambda: None)
    with full:
        handler(state, list(METHODS), ATTR_FRAMES[0], 0, request=SimpleNamespace(session_hash="stays"))
    assert full.calls > 10                                           # what leaving saved


def test_attributions_have_a_cancel_button(ex, dirs):
    """Every other computation of a path has its Cancel; Compute attributions had none, so a visitor who started
    five methods on a large model could only wait (or leave)."""
    state = _path(ex, dirs)
    with Forwards(ex.default.model, 2, lambda: ex.cancel(state)) as forwards, pytest.raises(Cancelled):
        attributions.run(ex, state, list(METHODS), ATTR_FRAMES[0], 0)
    assert forwards.calls == 2
    demo = build_demo(explainer=ex)
    ids = {block.elem_id: i for i, block in demo.blocks.items() if getattr(block, "elem_id", None)}
    clicks = {elem: [d for d in demo.config["dependencies"] if (ids[elem], "click") in map(tuple, d["targets"])]
              for elem in ("attr-run", "attr-cancel")}
    work = {d["id"] for d in demo.config["dependencies"] if d["trigger_after"] in {c["id"] for c in clicks["attr-run"]}}
    assert work and any(work & set(c["cancels"]) for c in clicks["attr-cancel"])   # Cancel cancels the computation


def test_a_landscape_stops_when_the_visitor_leaves(ex, dirs):
    """A landscape's batches (up to a minute of forwards by its plan) went on for a page that had gone."""
    state = _path(ex, dirs)
    visitors, request = fairness.Visitors(), SimpleNamespace(session_hash="gone-land-" + state["id"])
    handler = visitors.one_at_a_time(bind(landscape.run, ex))
    with Forwards(ex.default.model, 2, lambda: visitors.leave(request)) as forwards, pytest.raises(Cancelled):
        handler(state, 0, landscape.ENERGIES[0], 65, request=request)
    assert forwards.calls == 2


def test_a_paths_downloads_are_written_once(ex, dirs, monkeypatch):
    """Tab 1's downloads are a chained event in the queue, one at a time for the whole server, and any visitor can
    send it again and again: each wrote the stored path's GIF anew (5.9 s for a 500-step path here), so 256 of them
    (the queue's size) filled the queue for everyone for 25 minutes. A stored path's files are written once (again
    only when the server pruned them)."""
    import webapp.explainer as explainer

    state = _path(ex, dirs)
    written = []
    real = explainer.save_gif
    monkeypatch.setattr(explainer, "save_gif", lambda *a, **k: written.append(1) or real(*a, **k))
    first = counterfactual.export(ex, state)
    again = counterfactual.export(ex, state)
    assert len(written) == 1 and again == first
    Path(first.cf_gif["value"]).unlink()                             # pruned by the server's temp files
    third = counterfactual.export(ex, state)
    assert len(written) == 2 and Path(third.cf_gif["value"]).is_file() and Path(third.cf_json["value"]).is_file()


def test_an_image_chosen_during_ones_own_run_is_previewed(tmp_path):
    """With two or more workers (a CPU Space: one per core), an upload or example picked while one's own run still
    ran was refused as a second computation of the visitor: the toast said to wait, the upload was dropped and
    the page said "That file could not be used". A preview (one forward) now waits its turn beside the run."""
    demo = app.build_demo(str(write_model(tmp_path / "model")), standard_model=None, workers=2)
    names = {fn.name: i for i, fn in demo.fns.items()}
    forwards = []
    slow = demo.explainer.default.model.register_forward_hook(lambda *_: forwards.append(time.sleep(0.02)))
    try:
        with serve(demo) as url:
            url, session = url.rstrip("/"), uuid.uuid4().hex[:11]
            photo = upload_file(url, write_image(tmp_path / "photo.png"))
            other = upload_file(url, write_image(tmp_path / "other.png", seed=1))
            queue_join(url, names["run_live"], [photo, "cat", "L2", "3", 150, "0.01", None], session)
            deadline = time.monotonic() + 60
            while len(forwards) < 5 and time.monotonic() < deadline:
                time.sleep(0.05)
            queue_join(url, names["preview"], [other, None], session)
            replies = [line for _, line in queue_completions(url, session, n=2, timeout_s=120)]
    finally:
        slow.remove()
    assert all('"success":true' in r.replace(" ", "") for r in replies), [r[-300:] for r in replies]
    assert not any(fairness.BUSY[:40] in r for r in replies)


def test_the_model_tab_shows_only_a_training_record_it_can_vouch_for():
    """A checkpoint's `training` record (stage, step, T, validation keys) went into the Model tab's Markdown table as
    it was: a downloaded checkpoint could put a link, or a `|` that breaks the table, on the page in the app's voice.
    Only what training writes is shown: a known stage, whole numbers, plain metric names."""
    from types import SimpleNamespace

    from dat_core import build_model
    from webapp.describe import describe_model

    model = build_model("wrn-10-1", num_classes=3, class_names=["a", "b", "c"])
    loaded = SimpleNamespace(config=model.config, class_names=["a", "b", "c"], label="m", model=model, image_size=32)
    model.config["training"] = {"stage": "stage2", "step": 1500, "T": 40, "validation": {"clean_accuracy": 0.81}}
    table = describe_model(loaded)
    assert "stage2, 1500 steps, final contrastive steps T = 40" in table and "Validation clean accuracy" in table
    forged = "[Claim your prize](https://evil.example) |x|"
    model.config["training"] = {"stage": forged, "step": forged, "T": forged,
                                "validation": {forged: 0.5, "accuracy": 0.7}}
    table = describe_model(loaded)
    assert "evil.example" not in table and "|x|" not in table
    assert all(line.count("|") == 3 for line in table.splitlines()), table
    assert "Validation accuracy" in table and "?, ? steps" in table


def test_a_stoppable_model_says_the_mode_of_the_model_it_wraps():
    """The wrapper said train mode around an eval model (a fresh module's flag): code that reads `.training` to keep
    or restore a mode would have put the shared model in train mode."""
    import threading

    import torch

    from webapp.explainer import stoppable

    for mode in (False, True):
        model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)).train(mode)
        assert stoppable(model, threading.Event()).training is mode
