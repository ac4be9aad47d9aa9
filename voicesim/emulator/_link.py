"""One server-side WebSocket connection's outgoing side: a queue and a writer task.

Both gateways broadcast: a join in one channel sends messages to every other member,
from whatever task noticed the join. Sending straight into each peer's socket would
make one slow peer stall everyone, so every connection gets a bounded queue that
synchronous code fills without waiting, and one writer task that drains it in order.
A peer that lets its queue fill up is disconnected rather than allowed to grow memory
without limit.

Closing goes through the same queue, so everything queued before a close (an op 9, a
replay) reaches the peer before the close frame does.
"""

from __future__ import annotations

import contextlib
import logging

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

__all__ = ["Link"]

log = logging.getLogger("voicesim.emulator")

Frame = str | bytes

_QUEUE_SIZE = 4096
# Policy violation: what a server uses when a peer does not keep up.
_SLOW_PEER_CODE = 1008


@attrs.frozen
class _Close:
    code: int
    reason: str


class Link:
    """The outgoing half of one WebSocket; see the module docstring."""

    def __init__(
        self, ws: WebSocketConnection, *, queue_size: int = _QUEUE_SIZE
    ) -> None:
        self.ws = ws
        self._tx, self._rx = trio.open_memory_channel[Frame | _Close](queue_size)
        self._closing = False
        self._urgent: _Close | None = None
        self._writer_scope: trio.CancelScope | None = None

    @property
    def closing(self) -> bool:
        return self._closing

    def send(self, frame: Frame) -> bool:
        """Queue ``frame``; False if the link is closing (the frame is dropped)."""
        if self._closing:
            return False
        try:
            self._tx.send_nowait(frame)
        except trio.WouldBlock:
            log.warning("closing a WebSocket whose peer does not read its messages")
            self._close_now(_Close(_SLOW_PEER_CODE, "peer too slow"))
            return False
        return True

    def close(self, code: int, reason: str = "") -> None:
        """Close after everything already queued has been sent."""
        if self._closing:
            return
        self._closing = True
        try:
            self._tx.send_nowait(_Close(code, reason))
        except trio.WouldBlock:
            self._close_now(_Close(code, reason))

    def _close_now(self, request: _Close) -> None:
        self._closing = True
        self._urgent = request
        if self._writer_scope is not None:
            self._writer_scope.cancel()

    async def run_writer(self) -> None:
        """Send queued frames until a close request or the connection ends."""
        with trio.CancelScope() as scope:
            self._writer_scope = scope
            try:
                async for item in self._rx:
                    if isinstance(item, _Close):
                        await self._aclose(item)
                        return
                    await self.ws.send_message(item)
            except ConnectionClosed:
                return
        if self._urgent is not None:
            await self._aclose(self._urgent)

    async def _aclose(self, request: _Close) -> None:
        # The close handshake waits for the peer; a peer that never answers must not
        # keep the task (and the emulator's shutdown) waiting.
        with trio.move_on_after(2):
            with contextlib.suppress(ConnectionClosed):
                await self.ws.aclose(request.code, request.reason)
