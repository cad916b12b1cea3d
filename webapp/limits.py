"""What every launch of the app keeps, however it is started (app.py, a Space, `build_demo().launch()`): an upload of
at most `MAX_UPLOAD`, and no request body over `MAX_BODY_BYTES`.

Gradio caps uploaded files only: an image sent inside an event's JSON as a data URL, an MCP call's base64 image or
any other POST body was read into memory whole, however large, and up to `demo.QUEUE_SIZE` requests may wait at once.
`BodyLimit` answers 413 to a body declared or streamed past the cap before the app reads it all.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

MAX_UPLOAD = "25mb"
MAX_BODY_BYTES = 36 * 2**20
"""A 25 MB (MiB, as Gradio reads "25mb") upload with its multipart framing fits, and so does an event's JSON or an MCP
call holding that file as a data URL or base64 (4/3 of its size: 33.3 MiB). A caller's larger `max_file_size` is
still cut here."""

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class _TooLarge(HTTPException):
    """Raised into the app's read of a streamed body: an HTTPException, so FastAPI answers it as 413 (any other error
    while reading a body is its 400)."""

    def __init__(self, max_bytes: int):
        super().__init__(413, _refusal(max_bytes))


class BodyLimit:
    """ASGI middleware: 413 for an HTTP request whose Content-Length, or whose streamed body, passes `max_bytes`."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.strip().isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        seen, started = 0, False

        async def counted() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:   # a chunked body declares no length: counted as it arrives
                    raise _TooLarge(self.max_bytes)
            return message

        async def sending(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = _refusal(self.max_bytes).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _refusal(max_bytes: int) -> str:
    return f"a request to this app may send at most {max_bytes >> 20} MB"


def launch_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """`Blocks.launch` keyword arguments with the app's limits added: `max_file_size` unless one is given, and
    `BodyLimit` first among the FastAPI app's middleware."""
    app_kwargs = dict(kwargs.get("app_kwargs") or {})
    app_kwargs["middleware"] = [Middleware(BodyLimit, max_bytes=MAX_BODY_BYTES), *app_kwargs.get("middleware", [])]
    return {**kwargs, "max_file_size": kwargs.get("max_file_size") or MAX_UPLOAD, "app_kwargs": app_kwargs}
