"""Forged requests on the served app, over real HTTP: file paths the browser never uploaded, and values of
any type in every event's inputs.

Handlers take raw payloads (`preprocess=False`); Gradio checks a payload's path only when it carries the upload
marker (`meta`), so `{"path": "/any/server/file"}` without it reached the handlers, which opened it: a private
event echoed the file back as a download, `/counterfactual` returned a server image as its result, and the
messages told which paths exist. Every event with an image input is sent such payloads here.

A visitor can send any value to any event (the page's own events too, by number): each must answer with a
result or one message, never an unhandled exception (HTTP 500 / an empty error, a traceback in the log).
"""

import json
import os
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import app
from benchmarks.app_harness import queue_completions, queue_join, serve, write_image, write_model

REFUSED = "did not come from an upload"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("forged")
    secret = root / "secret.png"      # a server image no visitor uploaded
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(secret)
    (root / "secret.txt").write_text("server-only text " * 20)
    demo = app.build_demo(str(write_model(root / "model")), standard_model=None)
    with serve(demo) as url:
        yield demo, url.rstrip("/"), root


def _send(url: str, fn_index: int, data: list, queued: bool, event_data: dict | None = None) -> str:
    """One event as the browser sends it, in a fresh session; its reply (queued: the completion message)."""
    session = uuid.uuid4().hex[:11]
    if not queued:
        body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": event_data,
                "trigger_id": None}
        return httpx.post(f"{url}/gradio_api/run/predict", json=body, timeout=60).text
    queue_join(url, fn_index, data, session, event_data)
    return "\n".join(line for _, line in queue_completions(url, session, timeout_s=120))


def _forged(component, path: str):
    if type(component).__name__ == "ImageEditor":
        return {"background": {"path": path}, "layers": [{"path": path}], "composite": {"path": path}}
    return {"path": path}


def _image_events(demo):
    for index, fn in demo.fns.items():
        slots = [i for i, c in enumerate(fn.inputs) if type(c).__name__ in ("Image", "ImageEditor")]
        if slots and fn.fn is not None:
            yield index, fn, slots


def _cached_copies(data: bytes) -> list[Path]:
    cache = Path(os.environ["GRADIO_TEMP_DIR"])
    return [p for p in cache.rglob("*") if p.is_file() and p.stat().st_size == len(data) and p.read_bytes() == data]


def test_the_counterfactual_endpoint_refuses_a_server_image(served):
    demo, url, root = served
    index = next(i for i, fn in demo.fns.items() if fn.api_name == "counterfactual")
    for path in (str(root / "secret.png"), str(root / "missing.png"), str(root), "app.py", "/etc/passwd"):
        reply = _send(url, index, [{"path": path}, "cat", "3", 1, 0.1], queued=True)
        assert REFUSED in reply, reply[-500:]
        assert "not found" not in reply and "directory" not in reply and "secret" not in reply


@pytest.mark.parametrize("where", ["http://127.0.0.1:9/cat.png", "https://no-such-host.invalid/cat.png"])
def test_an_image_address_that_cannot_be_fetched_gets_a_message(served, caplog, where):
    """Gradio fetched an image URL (MCP clients send them) before the handler ran: a failed fetch answered with
    `"error": null` and left a traceback in the log."""
    demo, url, _ = served
    index = next(i for i, fn in demo.fns.items() if fn.api_name == "counterfactual")
    reply = _send(url, index, [{"path": where, "url": where, "meta": {"_type": "gradio.FileData"}}, "cat", "3", 1,
                               0.1], queued=True)
    assert _answered(reply) and "could not be fetched" in reply, reply[-500:]
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("what", ["secret.png", "secret.txt", "app.py"])
def test_no_event_reads_a_file_it_was_not_sent_by_upload(served, what):
    demo, url, root = served
    path = what if what == "app.py" else str(root / what)
    data = Path(path).read_bytes()
    before = set(_cached_copies(data))
    sent = 0
    for index, fn, slots in _image_events(demo):
        payload = [None] * len(fn.inputs)
        for i in slots:
            payload[i] = _forged(fn.inputs[i], path)
        reply = _send(url, index, payload, queued=fn.queue)
        sent += 1
        assert Path(path).name not in reply, (fn.name, reply[-400:])
        assert set(_cached_copies(data)) == before, f"{fn.name} copied the server file into the download cache"
    assert sent >= 8  # tab 1's preview and run, the region editor, the card, the API endpoints, ...


def test_the_region_editor_echoes_no_server_file(served):
    demo, url, root = served
    index = next(i for i, fn in demo.fns.items() if fn.name == "fresh")
    reply = _send(url, index, [{"path": "app.py"}, None], queued=demo.fns[index].queue)
    assert REFUSED in reply and "app.py" not in reply, reply[-400:]
    # an upload still works: the editor shows it
    upload = httpx.post(f"{url}/gradio_api/upload", files={"files": ("photo.png", write_image(
        root / "photo.png").read_bytes())}, timeout=60).json()[0]
    shown = json.loads(_send(url, index, [{"path": upload, "meta": {"_type": "gradio.FileData"}}, None],
                             queued=demo.fns[index].queue))
    editor = next(i for i, c in enumerate(demo.fns[index].outputs) if type(c).__name__ == "ImageEditor")
    background = shown["data"][editor]["background"]
    assert background["path"].endswith("photo.png")


def _answered(reply: str) -> bool:
    """A result, or an error that carries a message of ours: an unhandled exception answered with "error": null, and
    now with webapp.wiring.FAILED's words (a crash on a forged value is still a crash)."""
    compact = reply.replace(" ", "")
    return '"error":null' not in compact and "Traceback" not in reply and "went wrong on the server" not in reply


@pytest.mark.parametrize("value", ["x", -1, {"a": 1}, [1, 2], True, "1" * 5000, 10 ** 400],
                         ids=lambda v: repr(v)[:20])
def test_every_event_answers_any_value_with_a_result_or_a_message(served, value, caplog):
    demo, url, root = served
    events = 0
    for index, fn in demo.fns.items():
        if fn.fn is None or not fn.inputs:
            continue
        kinds = [type(c).__name__ for c in fn.inputs]
        # image slots stay empty: Gradio itself checks their payload shape before any handler runs
        payload = [None if k in ("Image", "ImageEditor", "State") else value for k in kinds]
        # a click's data (gr.SelectData) forged too; Gradio itself needs its "index" key
        clicked = {"index": value, "value": value, "selected": value} if fn.collects_event_data else None
        reply = _send(url, index, payload, queued=fn.queue, event_data=clicked)
        events += 1
        assert _answered(reply), (fn.name, kinds, reply[-300:])
    assert events >= 30
    assert "Traceback" not in caplog.text


def test_every_event_answers_too_few_inputs_with_a_message(served, caplog):
    """Gradio's own count check raised a ValueError outside the handler: `"error": null` for the caller, and a
    traceback in the log that repeats what was sent."""
    demo, url, _ = served
    events = 0
    for index, fn in demo.fns.items():
        if fn.fn is None or not fn.inputs:
            continue
        for payload in ([], [None] * (len(fn.inputs) - 1)):
            reply = _send(url, index, payload, queued=fn.queue)
            assert _answered(reply) and "takes" in reply, (fn.name, len(payload), reply[-300:])
        events += 1
    assert events >= 30
    assert "Traceback" not in caplog.text and "didn't receive enough input values" not in caplog.text


def test_every_event_handler_shows_its_errors_safely(served):
    """The class of the defect above: each handler with inputs is wrapped by `user_errors` (webapp.wiring.bind
    does it for every bound handler)."""
    demo, _, _ = served
    bare = [fn.name for fn in demo.fns.values() if fn.fn is not None and fn.inputs
            and not getattr(fn.fn, "user_errors", False)]
    assert not bare
