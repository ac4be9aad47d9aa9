"""A small HTTP/1.1 server on trio and h11, enough for Discord's REST API.

It speaks keep-alive (aiohttp, which discord.py uses, reuses connections), reads
bodies up to a bound, and turns every request into a :class:`Request` for one handler
coroutine that returns a :class:`Response`. Broken HTTP gets a 400 and a closed
connection; nothing a client sends can take the server down.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import trio

__all__ = ["Request", "Response", "json_response", "serve_http"]

log = logging.getLogger("voicesim.emulator.http")

MAX_BODY = 1 << 20
_RECEIVE_SIZE = 65536
# A connection that says nothing for this long is closed, so idle clients cannot
# hold sockets forever.
_IDLE_TIMEOUT = 120.0


@attrs.frozen(kw_only=True)
class Request:
    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]  # lower-case names
    body: bytes


@attrs.frozen(kw_only=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


def json_response(
    status: int, data: Any, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    # discord.py parses a body as JSON only when Content-Type is exactly
    # "application/json" (no charset parameter), so that is what we send.
    body = json.dumps(data, separators=(",", ":")).encode()
    return Response(
        status=status, body=body, content_type="application/json", headers=headers
    )


Handler = Callable[[Request], Awaitable[Response]]


async def _send_response(
    stream: trio.abc.Stream, conn: h11.Connection, response: Response
) -> None:
    headers = [
        ("content-length", str(len(response.body))),
        ("server", "voicesim-emulator"),
    ]
    if response.content_type is not None:
        headers.append(("content-type", response.content_type))
    headers.extend(response.headers)
    reason = _REASONS.get(response.status, "")
    out = conn.send(
        h11.Response(status_code=response.status, headers=headers, reason=reason)
    )
    if out:
        await stream.send_all(out)
    if response.body:
        out = conn.send(h11.Data(data=response.body))
        if out:
            await stream.send_all(out)
    out = conn.send(h11.EndOfMessage())
    if out:
        await stream.send_all(out)


_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    500: "Internal Server Error",
}


async def _next_event(stream: trio.abc.Stream, conn: h11.Connection) -> Any:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(_RECEIVE_SIZE)
            conn.receive_data(bytes(data))
            continue
        return event


async def _read_request(
    stream: trio.abc.Stream, conn: h11.Connection
) -> Request | None:
    event = await _next_event(stream, conn)
    if isinstance(event, h11.ConnectionClosed):
        return None
    if not isinstance(event, h11.Request):
        raise h11.RemoteProtocolError(f"expected a request, got {type(event).__name__}")
    body = bytearray()
    while True:
        part = await _next_event(stream, conn)
        if isinstance(part, h11.Data):
            body += part.data
            if len(body) > MAX_BODY:
                raise _TooLarge
        elif isinstance(part, h11.EndOfMessage):
            break
        else:
            raise h11.RemoteProtocolError("connection closed inside a request body")
    target = urlsplit(event.target.decode("latin-1"))
    return Request(
        method=event.method.decode("ascii", "replace"),
        path=target.path,
        query=parse_qs(target.query),
        headers={k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers},
        body=bytes(body),
    )


class _TooLarge(Exception):
    pass


async def _serve_connection(stream: trio.SocketStream, handler: Handler) -> None:
    conn = h11.Connection(h11.SERVER)
    async with stream:
        while True:
            try:
                with trio.fail_after(_IDLE_TIMEOUT):
                    request = await _read_request(stream, conn)
            except (h11.RemoteProtocolError, _TooLarge) as exc:
                # Answer when the state machine still allows a response; either way
                # the connection ends here.
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    status = 413 if isinstance(exc, _TooLarge) else 400
                    code = (
                        "413: Payload Too Large"
                        if status == 413
                        else "400: Bad Request"
                    )
                    with contextlib.suppress(
                        h11.LocalProtocolError, trio.BrokenResourceError
                    ):
                        await _send_response(
                            stream,
                            conn,
                            json_response(status, {"message": code, "code": 0}),
                        )
                return
            except (
                trio.TooSlowError,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
            ):
                return
            if request is None:
                return

            try:
                response = await handler(request)
            except Exception:
                log.exception(
                    "REST handler failed for %s %s", request.method, request.path
                )
                response = json_response(
                    500, {"message": "500: Internal Server Error", "code": 0}
                )
            try:
                await _send_response(stream, conn, response)
            except trio.BrokenResourceError:
                return

            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return


async def serve_http(
    handler: Handler,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler`` on ``host:port`` until cancelled; reports the bound port."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]

    async def serve_one(stream: trio.SocketStream) -> None:
        await _serve_connection(stream, handler)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, serve_one, listeners)
        task_status.started(bound)
