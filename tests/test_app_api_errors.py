"""Refusals as API clients get them, on the app served on 127.0.0.1 (real gradio_client, real HTTP): plain text
(a UI toast's message is escaped for HTML, an API answer is not), a clear message for an image that was not
uploaded (a server path sent as a string, or as a file payload), with no traceback in the server's log; and
the app benchmark's handler calls, which hand the app its image as an upload."""

import importlib
import json
import uuid
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

import app
from benchmarks.app_harness import queue_completions, queue_join, serve, upload_file, write_image, write_model

ROOT = Path(__file__).resolve().parent.parent
REFUSED = "That image did not come from an upload: upload it again."
SERVER_FILES = ("/etc/passwd", str(ROOT / "app.py"), "app.py")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("api-errors")
    demo = app.build_demo(str(write_model(root / "model")), standard_model=None)
    with serve(demo) as url:
        yield demo, url.rstrip("/"), Client(url, verbose=False), write_image(root / "photo.png")


def _queued(url: str, fn_index: int, data: list) -> dict:
    """One event as raw HTTP sends it, in a fresh session: its completion message."""
    session = uuid.uuid4().hex[:11]
    queue_join(url, fn_index, data, session)
    (_, line), = queue_completions(url, session, timeout_s=120)
    return json.loads(line.removeprefix("data:"))


def _error(url: str, fn_index: int, data: list, queued: bool) -> str | None:
    """The error message an event answers `data` with (None: a result, or an error without a message)."""
    if queued:
        return _queued(url, fn_index, data)["output"].get("error")
    body = {"data": data, "fn_index": fn_index, "session_hash": uuid.uuid4().hex[:11], "event_data": None,
            "trigger_id": None}
    return httpx.post(f"{url}/gradio_api/run/predict", json=body, timeout=60).json().get("error")


def _image_endpoints(demo) -> dict[str, tuple[int, list[int]]]:
    """Every named API endpoint with an image input: its fn index and image slots."""
    found = {}
    for index, fn in demo.fns.items():
        slots = [i for i, c in enumerate(fn.inputs) if type(c).__name__ in ("Image", "ImageEditor")]
        if fn.api_name and fn.api_visibility == "public" and slots:
            found[fn.api_name] = (index, slots)
    return found


def _request(demo, index: int, slots: list[int], image) -> list:
    """The endpoint's inputs with `image` in its image slots and small settings elsewhere."""
    fn = demo.fns[index]
    values = {"target": "cat", "eps": "3", "steps": 1, "step_size": 0.1, "methods": "saliency"}
    return [image if i in slots else values.get(c.label, None) for i, c in enumerate(fn.inputs)]


def test_api_errors_are_plain_text(served):
    """`<` and `>` are escaped for UI toasts (HTML) only: an API client reads the message as it was written."""
    _, _, client, photo = served
    with pytest.raises(AppError) as info:
        client.predict(image=handle_file(str(photo)), target="cat", eps="-1", steps=1, api_name="/counterfactual")
    assert "ε must be >= 0" in str(info.value) and "&gt;" not in str(info.value), str(info.value)
    with pytest.raises(AppError) as info:
        client.predict(image=handle_file(str(photo)), target="<b>zebra<img src=x>", steps=1,
                       api_name="/landscape")
    assert "Unknown class '<b>zebra<img src=x>'" in str(info.value) and "&lt;" not in str(info.value), str(info.value)


def test_ui_toasts_stay_escaped(served):
    """The same kind of refusal in a UI event (tab 1's Run) is still escaped: its toast renders HTML."""
    demo, url, _, photo = served
    index = next(i for i, fn in demo.fns.items() if fn.name == "run_live")
    reply = _queued(url, index, [upload_file(url, photo), "<b>zebra<img src=x>", "L2", "3", 1, 0.1, None])
    assert "Unknown class '&lt;b&gt;zebra&lt;img src=x&gt;'" in reply["output"]["error"], reply


def test_a_server_path_as_image_is_refused_with_a_message(served, capfd):
    """A server file named as the image (a path string, or a file payload whose path no upload made) is refused
    with one plain sentence that echoes no path, by every endpoint that takes an image, and logs no traceback."""
    demo, url, client, _ = served
    endpoints = _image_endpoints(demo)
    assert set(endpoints) == {"counterfactual", "landscape", "attribute"}
    for name, (index, slots) in endpoints.items():
        for path in SERVER_FILES:
            with pytest.raises(AppError) as info:  # gradio_client sends a bare string as it is
                client.predict(*_request(demo, index, slots, path), api_name=f"/{name}")
            assert str(info.value) == REFUSED, (name, path, str(info.value))
            for payload in ({"path": path, "meta": {"_type": "gradio.FileData"}}, {"path": path}, path):
                reply = _queued(url, index, _request(demo, index, slots, payload))
                assert reply["output"]["error"] == REFUSED, (name, payload, reply)
    assert "Traceback" not in capfd.readouterr().err


def test_every_image_event_refuses_a_server_path_with_a_message(served, capfd):
    """The class: Gradio's own checks of a file payload run before any handler (so before `user_errors`); what
    they refuse is answered as a message too, by every event with an image input (the page's own, by number)."""
    demo, url, _, _ = served
    events = 0
    for index, fn in demo.fns.items():
        slots = [i for i, c in enumerate(fn.inputs) if type(c).__name__ in ("Image", "ImageEditor")]
        if not slots or fn.fn is None:
            continue
        for payload in ({"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, "/etc/passwd"):
            error = _error(url, index, [payload if i in slots else None for i in range(len(fn.inputs))], fn.queue)
            assert error and "passwd" not in error and "/etc" not in error, (fn.name, payload, error)
        events += 1
    assert events >= 8
    assert "Traceback" not in capfd.readouterr().err


def test_the_app_benchmarks_server_figures_run(served, monkeypatch):
    """`python benchmarks/app.py --quick` (README) stopped at its first figure: its handler calls named the
    image by a path of this machine, which the app refuses. `server_figures` hands it over as a visitor does
    (uploaded); the whole `--quick` run takes over a minute, so this runs that part, on the served app."""
    demo, url, _, photo = served
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))      # the benchmark imports its neighbours by name
    bench = importlib.import_module("benchmarks.app")
    names = demo.explainer.default.class_names
    figures = bench.server_figures(demo.explainer, url, photo, names[:2], scrubs=5)
    assert figures["server_run_s"] > 0 and figures["server_exports_s"] > 0 and figures["ratio"] > 0
