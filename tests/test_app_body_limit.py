"""No request body past the app's cap is read whole (real Gradio on 127.0.0.1, raw HTTP as any client may send it).

Gradio caps uploaded files only (`max_file_size`): an image sent inside an event's JSON as a data URL, an MCP call's
base64 image or any other POST body was read into memory whole, however large."""

import base64

import httpx
import pytest

import app
from benchmarks.app_harness import serve, write_model
from webapp import limits


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    demo = app.build_demo(str(write_model(tmp_path_factory.mktemp("limit") / "model")), standard_model=None)
    with serve(demo) as served:   # launched as any caller launches it: the limits come with every launch
        yield served.rstrip("/")


def _event(size: int) -> bytes:
    """A queue event whose image is a data URL of `size` bytes of JSON in all."""
    head, tail = b'{"data": [{"url": "data:image/png;base64,', b'"}], "fn_index": 0, "session_hash": "abc"}'
    return head + base64.b64encode(b"\0" * ((size - len(head) - len(tail)) * 3 // 4)) + tail


def test_an_event_body_past_the_cap_is_refused_unread(url):
    reply = httpx.post(f"{url}/gradio_api/queue/join", content=_event(limits.MAX_BODY_BYTES + 1024),
                       headers={"content-type": "application/json"}, timeout=60)
    assert reply.status_code == 413 and "at most 36 MB" in reply.text


def test_a_streamed_body_without_a_length_is_cut_off_at_the_cap(url):
    body = _event(limits.MAX_BODY_BYTES + 4 * 2**20)

    def chunks():
        for i in range(0, len(body), 2**20):
            yield body[i:i + 2**20]
    reply = httpx.post(f"{url}/gradio_api/queue/join", content=chunks(), timeout=60,
                       headers={"content-type": "application/json"})
    assert reply.status_code == 413


def test_a_body_under_the_cap_and_an_upload_of_the_largest_file_still_pass(url):
    reply = httpx.post(f"{url}/gradio_api/queue/join", content=_event(2**20),
                       headers={"content-type": "application/json"}, timeout=60)
    assert reply.status_code != 413
    big = b"\0" * (25 * 2**20 - 1024)   # Gradio's "25mb" is 25 MiB
    assert httpx.post(f"{url}/gradio_api/upload", files={"files": ("a.png", big)}, timeout=60).status_code == 200
    too_big = httpx.post(f"{url}/gradio_api/upload", files={"files": ("a.png", big + b"\0" * 4096)}, timeout=60)
    assert too_big.status_code == 413   # Gradio's own file cap, now set however the app is launched


def test_a_declared_length_that_is_no_number_is_refused():
    import asyncio

    sent: list[dict] = []

    async def app_(scope, receive, send):
        raise AssertionError("the app ran")

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "headers": [(b"content-length", b"-5")]}
    asyncio.run(limits.BodyLimit(app_)(scope, receive, send))
    assert sent[0]["status"] == 413


def test_a_streamed_mcp_call_past_the_cap_is_answered_413(tmp_path_factory):
    """The MCP transport catches every error while it reads a body: the cut-off chunked call was its 500 (and a
    traceback in the log), not the 413 every other route answers."""
    from benchmarks.app_harness import HOST, free_port

    demo = app.build_demo(str(write_model(tmp_path_factory.mktemp("mcp") / "model")), standard_model=None)
    demo.launch(prevent_thread_lock=True, server_name=HOST, server_port=free_port(), quiet=True, mcp_server=True)
    try:
        body = b'{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"x": "' + b"a" * (
            limits.MAX_BODY_BYTES + 2**20) + b'"}}'

        def chunks():
            for i in range(0, len(body), 2**20):
                yield body[i:i + 2**20]
        reply = httpx.post(demo.local_url.rstrip("/") + "/gradio_api/mcp/", content=chunks(), timeout=60,
                           headers={"content-type": "application/json",
                                    "accept": "application/json, text/event-stream"})
        assert reply.status_code == 413, (reply.status_code, reply.text[:200])
    finally:
        demo.close()


def test_the_largest_upload_fits_as_a_data_url_too(url):
    """The cap let a 25 MB upload through but not the same image sent inside an event as a data URL (4/3 larger)."""
    reply = httpx.post(f"{url}/gradio_api/queue/join", content=_event(25 * 2**20 * 4 // 3 + 4096),
                       headers={"content-type": "application/json"}, timeout=60)
    assert reply.status_code != 413
