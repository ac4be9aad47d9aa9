"""The data plane of one voice connection, in trio.

A :class:`VoiceConnection` speaks voice gateway v8 over a TLS WebSocket (plain
``ws://`` for local use), discovers its address over UDP, agrees the transport
encryption mode, heartbeats with ``seq_ack``, and receives and decrypts the other
members' audio. Frames it sends go out through the process's :class:`MediaClock`, so
this module never paces audio itself.

What happens when the gateway goes away follows the close code
(:func:`voicesim.protocol.close_action`): a dropped socket or 4015 resumes the same
session (op 7) and keeps the UDP socket; 4006 and 4009 need fresh credentials, so the
connection asks its ``rejoin`` callback for them and starts over; 4014, 4021, 4022 and
the authentication failures end it with :class:`VoiceConnectionClosed`. Attempts that
cannot reach the gateway at all are retried after the waits in ``RETRY_DELAYS`` and
then given up.

DAVE (end-to-end encryption) is on when ``max_dave_protocol_version`` is above 0 and
the Session Description picks a version above 0. The MLS side lives in
:mod:`voicesim.voice._dave`; here it only adds an encrypt step to the outbound stream
(on the clock thread) and a decrypt step after transport decryption. Both are hooked
in per session, so a connection without DAVE runs the exact same per-packet code as
before: no DAVE check is made on any packet.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import trio
import trio_websocket

from voicesim._exceptions import (
    RemoteProtocolError,
    TransportError,
    VoiceConnectionClosed,
    VoiceTimeout,
)
from voicesim.protocol import (
    ClientDisconnect,
    ClientsConnect,
    CloseAction,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Identify,
    Ready,
    Resume,
    Resumed,
    SelectProtocol,
    SessionDescription,
    Speaking,
    TransportCipher,
    build_discovery_request,
    choose_mode,
    close_action,
    decode_voice_message,
    encode_voice_message,
    open_rtp,
    parse_discovery_response,
)
from voicesim.voice._clock import MediaClock, OutboundStream, Playback
from voicesim.voice._control import VoiceCredentials
from voicesim.voice._dave import (
    DAVE_PROTOCOL_VERSION,
    DAVE_SERVER_MESSAGES,
    DaveClient,
    DaveToServer,
)

__all__ = ["ConnectionStats", "ReceivedFrame", "Speech", "VoiceConnection"]

log = logging.getLogger("voicesim.voice.connection")

SILENCE_FRAME = b"\xf8\xff\xfe"
_SILENCE_TAIL = (SILENCE_FRAME,) * 5
_RTCP_TYPES = frozenset(range(200, 207))


@attrs.frozen(kw_only=True)
class ReceivedFrame:
    """One decrypted Opus frame of another member's stream."""

    ssrc: int
    user_id: int | None
    seq: int
    rtp_timestamp: int
    payload: bytes
    arrival_ns: int
    size: int


@attrs.define
class ConnectionStats:
    """Counters of what the connection received and what went wrong.

    ``dave_decrypt_failures`` counts received frames whose DAVE layer could not be
    opened (they are not passed on); ``dave_failures_by_ssrc`` splits it by stream.
    ``dave_longest_gap_ns`` is the longest time any stream went without decodable
    audio because of DAVE failures (a key change, a member joining or leaving);
    ``dave_recoveries`` counts op 31 resets, after failed commits or too many
    consecutive decrypt failures. ``dave_unnamed_dropped`` counts frames dropped
    while their SSRC waited for the op 5 that names its sender (see
    :data:`UNNAMED_HOLD_FRAMES`).
    """

    packets_received: int = 0
    malformed_packets: int = 0
    decrypt_failures: int = 0
    dave_decrypt_failures: int = 0
    dave_failures_by_ssrc: dict[int, int] = attrs.Factory(dict)
    dave_longest_gap_ns: int = 0
    dave_recoveries: int = 0
    dave_unnamed_dropped: int = 0
    resumes: int = 0
    reconnects: int = 0


@attrs.define(eq=False)
class Speech:
    """An utterance being sent: the clock's playback plus a trio event for its end."""

    playback: Playback
    done: trio.Event

    @property
    def t0_ns(self) -> int:
        return self.playback.t0_ns

    def intended_ns(self, index: int) -> int:
        return self.playback.intended_ns(index)

    async def wait(self) -> None:
        await self.done.wait()

    def cancel(self) -> None:
        self.playback.cancel()


#: Frames kept per stream, and streams kept, while DAVE waits for an op 5 to name a
#: stream's sender. DAVE keys are per sender, so a frame from an SSRC no op 5 has
#: named yet cannot be opened; voice servers send op 5 over the WebSocket and media
#: over UDP, and a sender's first frames can overtake it. One second of audio covers
#: that race; a stream never named is not kept beyond it.
UNNAMED_HOLD_FRAMES = 50
UNNAMED_HOLD_STREAMS = 16

#: Waits before the 1st, 2nd, ... retry after attempts that never reached the voice
#: gateway; once they are used up the connection gives up.
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)


class _Reconnect(Exception):
    """Internal: the WebSocket closed and the code says how to go on.

    ``reached`` is false when the attempt never got a WebSocket to the gateway.
    """

    def __init__(self, code: int, reason: str, *, reached: bool = True) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason
        self.reached = reached


class VoiceConnection:
    """One voice connection: voice gateway, UDP socket, receive loop.

    ``on_frame`` is called for every decrypted frame, in the receive loop, with the
    arrival time already taken; it must be quick. ``rejoin`` returns fresh credentials
    after a 4006 or 4009 (a new voice state and server update from the main gateway).
    ``max_dave_protocol_version`` is what Identify offers (capped at davey's
    version); ``on_dave_payload``, if given, sees every received payload with its SSRC
    as the relay delivered it, before DAVE decryption, for captures and tests.
    """

    def __init__(
        self,
        credentials: VoiceCredentials,
        *,
        clock: MediaClock,
        on_frame: Callable[[ReceivedFrame], None],
        ssl_context: ssl.SSLContext | None,
        rejoin: Callable[[], Awaitable[VoiceCredentials]] | None = None,
        max_dave_protocol_version: int = 0,
        on_dave_payload: Callable[[int, bytes], None] | None = None,
        handshake_timeout: float = 20.0,
    ) -> None:
        self.credentials = credentials
        self._clock = clock
        # What the receive path calls per frame: the caller's callback, or the DAVE
        # decrypt step in front of it while a DAVE session is on.
        self._on_frame = on_frame
        self._frame_sink = on_frame
        self._on_dave_payload = on_dave_payload
        self._ssl_context = ssl_context
        self._rejoin = rejoin
        self._max_dave = min(max(max_dave_protocol_version, 0), DAVE_PROTOCOL_VERSION)
        self._handshake_timeout = handshake_timeout

        self.stats = ConnectionStats()
        self.users_by_ssrc: dict[int, int] = {}
        self.connected_users: set[int] = set()
        self._unnamed: dict[int, collections.deque[ReceivedFrame]] = {}
        self.ssrc = 0
        self.mode = ""
        self.dave_protocol_version = 0

        self._ws: trio_websocket.WebSocketConnection | None = None
        self._sock: socket.socket | None = None
        self._cipher: TransportCipher | None = None
        self._stream: OutboundStream | None = None
        self._seq_ack = -1
        self._pending_heartbeats = 0
        self._ready = trio.Event()
        self._closing = False
        self._udp_scope: trio.CancelScope | None = None
        self._dave: DaveClient | None = None
        self._nursery: trio.Nursery | None = None
        self._task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED

    # -- public -------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def speak(
        self, frames: Sequence[bytes], *, start_ns: int | None = None
    ) -> Speech:
        """Send ``frames`` then five silence frames, flagged as speaking.

        Returns at once with the intended time of the first frame fixed; await
        :meth:`Speech.wait` for the end, then :meth:`stop_speaking`. ``start_ns``
        asks for the first frame at that time (see :meth:`MediaClock.play`) instead
        of at the stream's next slot.
        """
        if self._stream is None:
            raise TransportError("the voice connection is not ready to send")
        await self._send(Speaking(speaking=1, ssrc=self.ssrc, delay=0))
        done = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def finished(_: Playback) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        playback = self._clock.play(
            self._stream,
            (*frames, *_SILENCE_TAIL),
            on_done=finished,
            start_ns=start_ns,
        )
        return Speech(playback=playback, done=done)

    async def stop_speaking(self) -> None:
        if self._ws is not None and not self._ws.closed:
            await self._send(Speaking(speaking=0, ssrc=self.ssrc, delay=0))

    @property
    def outbound(self) -> OutboundStream | None:
        return self._stream

    @property
    def dave(self) -> DaveClient | None:
        """The DAVE state of the current session, or None without DAVE."""
        return self._dave

    async def close(self) -> None:
        """Close the WebSocket normally; :meth:`run` then returns."""
        self._closing = True
        if self._ws is not None:
            # The server's answering close frame reaches run()'s reader, which then
            # ends run() and with it the WebSocket's own reader task; an aclose still
            # waiting for the handshake would then wait forever, so the wait is
            # bounded. The close frame itself has gone out by then.
            with trio.move_on_after(1.0):
                await self._ws.aclose(1000, "leaving")

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect, keep the connection up, and return when it is closed for good.

        ``task_status.started()`` is called once the first Session Description has
        arrived, when audio can flow both ways.
        """
        # The reader calls this when the first Session Description arrives; the
        # connection then keeps serving in this same task.
        self._task_status = task_status
        resume = False
        # Raised after the nursery has closed, so that callers catch the close
        # itself rather than a group that wraps it.
        final: VoiceConnectionClosed | None = None
        # Attempts in a row that never reached the gateway. A drop of a working
        # connection is retried at once, as Discord's clients do; a gateway that
        # cannot be reached is retried after growing waits and then given up, so a
        # vanished server costs neither a busy loop nor a session that never ends.
        failures = 0
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        await self._connect_once(nursery, resume=resume)
                        code, reason, reached = 1000, "", True
                    except _Reconnect as exc:
                        code, reason, reached = exc.code, exc.reason, exc.reached

                    if self._closing:
                        break
                    action = close_action(code)
                    log.info(
                        "voice gateway for user %s closed with %s: %s",
                        self.credentials.user_id,
                        code,
                        action.name,
                    )
                    resuming = action is CloseAction.RESUME and self._cipher is not None
                    rejoining = (
                        action is CloseAction.RECONNECT and self._rejoin is not None
                    )
                    failures = 0 if reached else failures + 1
                    if not (resuming or rejoining) or failures > len(RETRY_DELAYS):
                        final = VoiceConnectionClosed(code, reason)
                        break
                    if failures:
                        await trio.sleep(RETRY_DELAYS[failures - 1])
                        if self._closing:
                            break
                    if resuming:
                        self.stats.resumes += 1
                        resume = True
                        continue
                    assert self._rejoin is not None
                    self.stats.reconnects += 1
                    self._reset_session()
                    self.credentials = await self._rejoin()
                    resume = False
                nursery.cancel_scope.cancel()
        finally:
            self._reset_session()
        if final is not None:
            raise final

    # -- the WebSocket ------------------------------------------------------------

    def _url(self) -> str:
        scheme = "wss" if self._ssl_context is not None else "ws"
        return f"{scheme}://{self.credentials.endpoint}/?v=8"

    async def _send(self, message: Any) -> None:
        ws = self._ws
        if ws is None:
            return
        # On a closed socket the reader sees the close and decides what to do.
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            await ws.send_message(encode_voice_message(message))

    async def _connect_once(self, nursery: trio.Nursery, *, resume: bool) -> None:
        try:
            async with trio_websocket.open_websocket_url(
                self._url(), ssl_context=self._ssl_context, connect_timeout=10
            ) as ws:
                self._ws = ws
                self._pending_heartbeats = 0
                try:
                    await self._serve(ws, nursery, resume=resume)
                finally:
                    self._ws = None
        except trio_websocket.ConnectionClosed as exc:
            # trio-websocket leaves the reason unset when the socket dropped
            # without a close frame; that is 1006 in RFC 6455's terms.
            reason = exc.reason
            if reason is None or reason.code is None:
                raise _Reconnect(1006, "connection dropped") from None
            raise _Reconnect(reason.code, reason.reason or "") from None
        except trio_websocket.HandshakeError as exc:
            raise _Reconnect(1006, f"handshake failed: {exc}", reached=False) from None
        except OSError as exc:
            raise _Reconnect(1006, f"cannot connect: {exc}", reached=False) from None

    async def _serve(
        self,
        ws: trio_websocket.WebSocketConnection,
        nursery: trio.Nursery,
        *,
        resume: bool,
    ) -> None:
        # A close seen by the reader must leave this method as itself, not wrapped in
        # the heartbeat nursery's exception group, so the caller can read its code.
        closed: trio_websocket.ConnectionClosed | None = None
        async with trio.open_nursery() as beats:
            while True:
                try:
                    data = await ws.get_message()
                except trio_websocket.ConnectionClosed as exc:
                    closed = exc
                    beats.cancel_scope.cancel()
                    break
                try:
                    message, seq = decode_voice_message(data, from_server=True)
                except RemoteProtocolError as exc:
                    # A frame we cannot parse is logged and skipped; the session goes on.
                    log.debug("dropped a voice gateway message: %s", exc)
                    continue
                if seq is not None:
                    self._seq_ack = seq

                if isinstance(message, Hello):
                    beats.start_soon(self._heartbeat, ws, message.heartbeat_interval)
                    if resume:
                        await self._send(
                            Resume(
                                server_id=str(self.credentials.guild_id),
                                session_id=self.credentials.session_id,
                                token=self.credentials.token,
                                seq_ack=self._seq_ack,
                            )
                        )
                    else:
                        await self._send(
                            Identify(
                                server_id=str(self.credentials.guild_id),
                                user_id=str(self.credentials.user_id),
                                session_id=self.credentials.session_id,
                                token=self.credentials.token,
                                max_dave_protocol_version=self._max_dave,
                            )
                        )
                elif isinstance(message, Ready):
                    await self._on_ready(message, nursery)
                elif isinstance(message, SessionDescription):
                    self._on_session_description(message)
                    if self._dave is not None:
                        await self._send_dave(self._dave.start())
                    await self._send(Speaking(speaking=0, ssrc=self.ssrc, delay=0))
                    if not self._ready.is_set():
                        self._ready.set()
                        self._task_status.started()
                elif isinstance(message, DAVE_SERVER_MESSAGES):
                    # Without a DAVE session (version 0) these mean nothing, as in
                    # discord.py, and are ignored.
                    if self._dave is not None:
                        await self._send_dave(self._dave.handle(message))
                elif isinstance(message, Resumed):
                    log.debug("voice session resumed for %s", self.credentials.user_id)
                elif isinstance(message, HeartbeatAck):
                    self._pending_heartbeats = 0
                elif isinstance(message, Speaking):
                    if message.user_id is not None:
                        self.users_by_ssrc[message.ssrc] = int(message.user_id)
                        self._release_unnamed(message.ssrc, int(message.user_id))
                elif isinstance(message, ClientsConnect):
                    self.connected_users.update(int(u) for u in message.user_ids)
                elif isinstance(message, ClientDisconnect):
                    user = int(message.user_id)
                    self.connected_users.discard(user)
                    for ssrc in [s for s, u in self.users_by_ssrc.items() if u == user]:
                        del self.users_by_ssrc[ssrc]
        if closed is not None:
            raise closed

    async def _heartbeat(
        self, ws: trio_websocket.WebSocketConnection, interval_ms: float
    ) -> None:
        # discord.py beats at most every 5 s; so do we, so that a half-dead socket
        # is noticed in seconds rather than after a long server interval.
        interval = min(interval_ms / 1000, 5.0)
        while True:
            if self._pending_heartbeats >= 2:
                # Two beats without an ACK: the connection is dead though TCP has
                # not noticed. Closing it makes the reader resume.
                await ws.aclose(4000, "heartbeat not acknowledged")
                return
            self._pending_heartbeats += 1
            await self._send(
                Heartbeat(t=time.time_ns() // 1_000_000, seq_ack=self._seq_ack)
            )
            await trio.sleep(interval)

    # -- UDP ----------------------------------------------------------------------

    async def _on_ready(self, ready: Ready, nursery: trio.Nursery) -> None:
        self._reset_session()
        self.ssrc = ready.ssrc
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            sock.connect((ready.ip, ready.port))
            address, port = await self._discover(sock)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.mode = choose_mode(ready.modes)
        await self._send(SelectProtocol(address=address, port=port, mode=self.mode))
        self._udp_scope = trio.CancelScope()
        self._nursery = nursery
        nursery.start_soon(self._receive_loop, sock, self._udp_scope)

    async def _discover(self, sock: socket.socket) -> tuple[str, int]:
        request = build_discovery_request(self.ssrc)
        for _ in range(5):
            sock.send(request)
            with trio.move_on_after(1.0):
                while True:
                    await trio.lowlevel.wait_readable(sock)
                    try:
                        data = sock.recv(2048)
                    except BlockingIOError:
                        continue
                    try:
                        _, address, port = parse_discovery_response(data)
                    except RemoteProtocolError:
                        continue
                    return address, port
        raise VoiceTimeout("no IP discovery reply from the voice server")

    def _on_session_description(self, description: SessionDescription) -> None:
        assert self._sock is not None
        self._cipher = TransportCipher(description.mode, description.secret_key)
        self.mode = description.mode
        self.dave_protocol_version = description.dave_protocol_version
        if self._stream is not None:
            self._stream.closed = True
        self._stop_dave()
        if self._max_dave > 0 and description.dave_protocol_version > 0:
            self._dave = DaveClient(
                min(description.dave_protocol_version, self._max_dave),
                self.credentials.user_id,
                self.credentials.channel_id,
                known_users=self.connected_users,
            )
            self._on_frame = self._on_dave_frame
        self._stream = self._clock.open_stream(
            self._sock,
            self._cipher,
            self.ssrc,
            encrypt_frame=None if self._dave is None else self._dave.encrypt_frame,
        )

    def _reset_session(self) -> None:
        if self._udp_scope is not None:
            self._udp_scope.cancel()
            self._udp_scope = None
        if self._stream is not None:
            self._stream.closed = True
            self._stream = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._cipher = None
        self._stop_dave()
        self.users_by_ssrc.clear()

    # -- DAVE ---------------------------------------------------------------------

    def _stop_dave(self) -> None:
        self._dave = None
        self._on_frame = self._frame_sink
        self._unnamed.clear()

    def _hold_unnamed(self, frame: ReceivedFrame) -> None:
        held = self._unnamed.get(frame.ssrc)
        if held is None:
            if len(self._unnamed) >= UNNAMED_HOLD_STREAMS:
                self.stats.dave_unnamed_dropped += 1
                return
            held = self._unnamed[frame.ssrc] = collections.deque(
                maxlen=UNNAMED_HOLD_FRAMES
            )
        if len(held) == UNNAMED_HOLD_FRAMES:
            self.stats.dave_unnamed_dropped += 1
        held.append(frame)

    def _release_unnamed(self, ssrc: int, user_id: int) -> None:
        held = self._unnamed.pop(ssrc, None)
        if held is not None:
            for frame in held:
                self._on_frame(attrs.evolve(frame, user_id=user_id))

    async def _send_dave(self, messages: list[DaveToServer]) -> None:
        for message in messages:
            await self._send(message)

    def _on_dave_frame(self, frame: ReceivedFrame) -> None:
        dave = self._dave
        if dave is None:
            self._frame_sink(frame)
            return
        if frame.user_id is None:
            self._hold_unnamed(frame)
            return
        if self._on_dave_payload is not None:
            self._on_dave_payload(frame.ssrc, frame.payload)
        opened = dave.decrypt_frame(
            frame.ssrc, frame.user_id, frame.payload, frame.arrival_ns
        )
        stats = self.stats
        if opened is None:
            stats.dave_decrypt_failures += 1
            by_ssrc = stats.dave_failures_by_ssrc
            by_ssrc[frame.ssrc] = by_ssrc.get(frame.ssrc, 0) + 1
            recovery = dave.take_recovery()
            if recovery and self._nursery is not None:
                stats.dave_recoveries += 1
                self._nursery.start_soon(self._send_dave, recovery)
            return
        gap = dave.streams[frame.ssrc].longest_gap_ns
        if gap > stats.dave_longest_gap_ns:
            stats.dave_longest_gap_ns = gap
        if opened is not frame.payload:
            frame = attrs.evolve(frame, payload=opened)
        self._frame_sink(frame)

    async def _receive_loop(self, sock: socket.socket, scope: trio.CancelScope) -> None:
        with scope:
            recv = sock.recv
            while True:
                try:
                    await trio.lowlevel.wait_readable(sock)
                except (OSError, trio.ClosedResourceError):
                    return
                # Drain everything that is queued: one wake-up per burst, not per
                # packet, keeps the per-packet cost near that of the decrypt.
                while True:
                    try:
                        data = recv(4096)
                    except BlockingIOError:
                        break
                    except OSError:
                        # An ICMP error from a vanished peer; the socket stays usable.
                        break
                    self._on_datagram(data, time.perf_counter_ns())

    def _on_datagram(self, data: bytes, arrival_ns: int) -> None:
        cipher = self._cipher
        if cipher is None or len(data) < 13 or data[0] >> 6 != 2:
            self.stats.malformed_packets += 1
            return
        if data[1] in _RTCP_TYPES:
            return
        try:
            rtp = open_rtp(cipher, data)
        except RemoteProtocolError:
            self.stats.decrypt_failures += 1
            return
        self.stats.packets_received += 1
        self._on_frame(
            ReceivedFrame(
                ssrc=rtp.ssrc,
                user_id=self.users_by_ssrc.get(rtp.ssrc),
                seq=rtp.seq,
                rtp_timestamp=rtp.rtp_timestamp,
                payload=rtp.payload,
                arrival_ns=arrival_ns,
                size=len(data),
            )
        )
