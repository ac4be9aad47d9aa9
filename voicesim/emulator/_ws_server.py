"""A WebSocket listener whose connections cannot take the server down.

trio-websocket's own ``serve_websocket`` runs each connection's reader task in the
listener's nursery, so an error inside the library (one seen here: a peer that sends a
message over the size limit while the server is already closing makes the reader send
a second close frame, and wsproto raises) escapes into that nursery and ends every
other connection with it. A Discord stand-in must outlive any one misbehaving peer, so
here each connection gets a nursery of its own, and whatever escapes it is counted
under ``websocket_error`` and logged, never re-raised.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from trio_websocket import WebSocketRequest, wrap_server_stream

from voicesim.emulator._counters import Counters

__all__ = ["serve_websockets"]

log = logging.getLogger("voicesim.emulator")

Handler = Callable[[WebSocketRequest], Awaitable[None]]

# The library's own limit only bounds memory: the gateways apply Discord's payload
# limits themselves and close with their own codes, well below it. Past it the
# library closes with 1009, and a peer that goes on sending after the server began
# closing breaks the library's state machine (see above) and is cut off.
_MAX_MESSAGE_SIZE = 4 << 20


async def serve_websockets(
    handler: Handler,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    *,
    counters: Counters,
    gateway: str,
    connect_timeout: float = 10.0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve WebSocket connections on ``host:port`` until cancelled.

    Reports the bound port through ``task_status``; ``gateway`` names the counter
    bucket (``gateway`` or ``voice``).
    """
    on_stream = partial(
        _serve_one,
        handler,
        counters=counters,
        gateway=gateway,
        connect_timeout=connect_timeout,
    )
    tcp = await trio.open_tcp_listeners(port, host=host)
    sockname = tcp[0].socket.getsockname()
    listeners: list[trio.abc.Listener[Any]] = list(tcp)
    if ssl_context is not None:
        # The handshake happens on the first read, inside the connection's nursery,
        # so a peer that fails it is contained like any other.
        listeners = [
            trio.SSLListener(listener, ssl_context, https_compatible=True)
            for listener in tcp
        ]
    task_status.started(int(sockname[1]))
    await trio.serve_listeners(on_stream, listeners)


async def _serve_one(
    handler: Handler,
    stream: trio.abc.Stream,
    *,
    counters: Counters,
    gateway: str,
    connect_timeout: float,
) -> None:
    try:
        async with trio.open_nursery() as nursery:
            # The opening handshake is bounded; the conversation after it is not.
            request: WebSocketRequest | None = None
            with trio.move_on_after(connect_timeout):
                request = await wrap_server_stream(
                    nursery, stream, max_message_size=_MAX_MESSAGE_SIZE
                )
            if request is not None:
                await handler(request)
            # The handler closed the socket (or the peer did); stop its reader.
            nursery.cancel_scope.cancel()
    except Exception:
        # A peer that broke the library's state machine loses its connection;
        # nobody else notices.
        counters.protocol_errors[f"{gateway}:websocket_error"] += 1
        log.debug(
            "%s gateway connection ended by a library error", gateway, exc_info=True
        )
    finally:
        await trio.aclose_forcefully(stream)
