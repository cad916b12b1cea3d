"""Computations that fail partway (the model raises in the middle of PGD, as a GPU out of memory does), in a real
browser (Debian chromium through Playwright): the page afterwards shows only consistent state, like after a
Cancel: no streamed frame or "Running" caption left as if it were a result, the run buttons back, the error
shown once. And API requests (real gradio_client): a failure is one plain message, and a caller that went stops
its computation."""

import inspect
import json
import subprocess
import sys
import time

import gradio as gr
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

import app
from benchmarks.app_harness import (
    browser_expect,
    browser_page,
    model_hooked,
    move_slider,
    open_tab,
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
from webapp.wiring import OUT_OF_MEMORY, bind

FAILURE = inspect.signature(model_hooked).parameters["failure"].default   # what the hooked model raises


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random checkpoint served (fast to run) and a photo."""
    root = tmp_path_factory.mktemp("failures")
    demo = app.build_demo(str(write_model(root / "model")), standard_model=None)
    with serve(demo) as url:
        yield demo, url, write_image(root / "photo.png")


def close_toasts(page) -> None:
    expect = browser_expect()
    for close in page.locator(".toast-body .toast-close").all():
        close.click()
    expect(page.locator(".toast-body")).to_have_count(0)


def failed_once(page) -> None:
    """One error toast, and still one a moment later (a second would be there by now); then closed."""
    expect = browser_expect()
    expect(page.locator(".toast-body.error")).to_have_count(1, timeout=30_000)
    page.wait_for_timeout(1500)
    assert page.locator(".toast-body.error").count() == 1, toasts(page)
    said = page.locator(".toast-body.error").inner_text()
    assert "went wrong on the server (RuntimeError)" in said and FAILURE not in said, said   # the type, no details
    close_toasts(page)


@pytest.mark.browser
def test_a_run_that_fails_partway_shows_the_stored_path_again(tiny):
    """A streamed run that failed partway left its last frame and "Running: step t of T" beside the stored
    path's slider and charts (only the buttons came back); a Cancel put the stored path back. A failure now
    restores what a Cancel restores: the stored path at the slider's step, its caption, its controls."""
    expect = browser_expect()   # the test is skipped without chromium or Playwright
    demo, url, photo = tiny
    controls = ["#cf-step input[type=range]", "#cf-play", "#cf-gif", "#cf-json", "#cf-card"]
    with browser_page(url) as page:
        upload(page, photo)
        settings(page, steps=3, step_size=0.1, eps=3)
        run_counterfactual(page)
        move_slider(page, "ArrowLeft")
        expect(page.locator("#cf-caption")).to_contain_text("Step 2 of 3")
        stored = shown_pixels(page, "#cf-frame")
        for c in controls:
            expect(page.locator(c)).to_be_enabled(timeout=30_000)
        settings(page, steps=500, step_size=0.01, eps="inf")
        with model_hooked(demo, fail_at=60):
            page.click("#cf-run")
            expect(page.locator("#cf-caption")).to_contain_text("Running: step", timeout=20_000)
            failed_once(page)
        expect(page.locator("#cf-caption")).to_contain_text("Step 2 of 3")
        expect(page.locator("#cf-caption")).not_to_contain_text("Running")
        assert np.array_equal(shown_pixels(page, "#cf-frame"), stored)   # the stored path's frame, not a streamed one
        assert slider_value(page) == 2
        expect(page.locator("#cf-run")).to_be_visible()
        expect(page.locator("#cf-cancel")).to_be_hidden()
        for c in controls:
            expect(page.locator(c)).to_be_enabled()
        assert page.evaluate("() => document.querySelectorAll('[id^=cf-] .error').length") == 0


@pytest.mark.browser
def test_every_computation_that_fails_partway_says_so_once_and_gives_its_buttons_back(tiny):
    """An unexpected failure (the model raising, not a refused request) was shown nowhere: Gradio sends no message
    for it unless the app is launched with show_error, and the red badge is taken off. Each computation that
    fails partway now says so once, gives its Run button back, hides its Cancel, and leaves no badge or progress."""
    expect = browser_expect()   # the test is skipped without chromium or Playwright
    demo, url, photo = tiny
    with browser_page(url) as page:
        upload(page, photo)
        settings(page, steps=3, step_size=0.1, eps=3)
        run_counterfactual(page)                                           # landscape and attributions explain it
        settings(page, steps=200, step_size=0.01, eps=3)

        def fails_once(run: str, cancel: str | None, after: int = 20) -> None:
            with model_hooked(demo, fail_at=after):
                page.click(run)
                failed_once(page)
            expect(page.locator(run)).to_be_visible()
            expect(page.locator(run)).to_be_enabled()
            if cancel:
                expect(page.locator(cancel)).to_be_hidden()
            page.wait_for_timeout(300)
            left = page.evaluate("""() => [...document.querySelectorAll('.error, .progress-text, .meta-text, .eta-bar')]
                .filter(e => e.offsetParent !== null).map(e => (e.closest('[id]') || {}).id)""")
            assert left == [], (run, left)                                   # no badge, no progress left behind

        fails_once("#cf-run", "#cf-cancel")
        page.locator("#cf-alternatives").get_by_text("Alternatives: other paths").click()
        fails_once("#alt-run", "#alt-cancel")
        open_tab(page, "All targets")
        fails_once("#all-run", "#all-cancel")
        open_tab(page, "Energy landscape")
        fails_once("#land-run", None, after=2)
        open_tab(page, "Attributions")
        fails_once("#attr-run", "#attr-cancel", after=2)
        open_tab(page, "Generate")
        type_into(page, "#gen-steps input", 200)
        fails_once("#gen-run", "#gen-cancel")


# a gradio_client caller that sends one request and waits (its process is killed meanwhile: a caller that went)
CALLER = """import json, sys, time
from gradio_client import Client, handle_file
url, name, photo, kwargs = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
Client(url, verbose=False).submit(image=handle_file(photo), **kwargs, api_name=name)
time.sleep(120)
"""


def settled(calls: list, seconds: float) -> int:
    """The forward count once no forward came for a while (a forward takes `seconds`)."""
    seen = -1
    while seen != len(calls):
        seen = len(calls)
        time.sleep(2 * seconds + 1.5)
    return seen


def test_an_api_request_whose_caller_went_stops(tiny):
    """A gradio_client caller that goes (its process ends, its connections close) fires the app's unload for its
    session, as a page that leaves does, and its PGD stopped at the next step; but /landscape's grid and
    /attribute's Captum maps ran on the bare model to the end, holding the model's worker for nobody. Every
    endpoint now stops at its next model forward after its caller went."""
    demo, url, photo = tiny
    request = {"target": "cat", "eps": "3", "steps": 1, "step_size": 0.1}
    endpoints = (("/landscape", request, 0.3), ("/attribute", {**request, "methods": "occlusion"}, 0.3),
                 ("/counterfactual", {**request, "eps": "inf", "steps": 400}, 0.02))
    for name, kwargs, seconds in endpoints:    # the landscape's timing forward (the third) quick: its grid is not cut
        with model_hooked(demo, seconds, slow_from=4) as calls:
            caller = subprocess.Popen([sys.executable, "-c", CALLER, url, name, str(photo), json.dumps(kwargs)])
            try:
                deadline = time.monotonic() + 60
                while len(calls) < 6 and time.monotonic() < deadline:   # past its PGD step: computing its result
                    time.sleep(0.01)
            finally:
                caller.kill()
                caller.wait()
            gone_at = len(calls)
            assert gone_at >= 6, name
            assert settled(calls, seconds) - gone_at <= 3, name            # its next forward or so, not the rest


def test_an_unexpected_error_is_one_plain_message_with_its_cause_kept():
    """Out of memory says what to do; any other unexpected error names its type only (its text may hold server
    paths); a refusal and a Cancel pass as they were; the cause stays chained for the server's log."""
    def oom(ex):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (/srv/app/model.py)")

    def streams_then_fails(ex):
        yield "frame"
        raise KeyError("/srv/app/secret")

    def refuses(ex):
        raise gr.Error("Unknown class 'zebra'.", print_exception=False)
    with pytest.raises(gr.Error) as info:
        bind(oom, None)()
    assert info.value.message == OUT_OF_MEMORY and isinstance(info.value.__cause__, torch.OutOfMemoryError)
    stream = bind(streams_then_fails, None, toasts=False)()
    assert next(stream) == "frame"
    with pytest.raises(gr.Error) as info:
        next(stream)
    assert "(KeyError)" in info.value.message and "/srv" not in info.value.message
    with pytest.raises(gr.Error) as info:
        bind(refuses, None)()
    assert info.value.message == "Unknown class 'zebra'."


def test_an_api_request_that_fails_partway_says_so(tiny):
    """An API caller read "The upstream Gradio app has raised an exception but has not enabled verbose error
    reporting", which asks them to change a launch they do not own: they now read what happened."""
    demo, url, photo = tiny
    with model_hooked(demo, 0.0, fail_at=10), pytest.raises(AppError) as info:
        Client(url, verbose=False).predict(image=handle_file(str(photo)), target="cat", eps="inf", steps=100,
                                           step_size=0.01, api_name="/counterfactual")
    assert "went wrong on the server (RuntimeError)" in str(info.value) and FAILURE not in str(info.value)


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to "
                 "allocate 3221225472 bytes. Error code 12 (Cannot allocate memory)"),
    MemoryError()])
def test_running_out_of_memory_on_a_cpu_says_to_ask_for_less(error):
    """On a CPU (a Space), torch's allocator raises a RuntimeError, not torch.OutOfMemoryError: it read "Something
    went wrong on the server (RuntimeError)" instead of what to do."""
    def fails(ex):
        raise error
    with pytest.raises(gr.Error) as info:
        bind(fails, None)()
    assert info.value.message == OUT_OF_MEMORY
