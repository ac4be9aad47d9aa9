"""The voice gateway (v8): TLS WebSocket by default, plain on request.

Per connection: Hello; then Identify (checked against the voice state the main gateway
handed out: 4011 unknown guild, 4006 no voice state or another session, 4004 wrong
token; 4017 when DAVE is required and the client offers none) or Resume; Ready with
an SSRC and only the configured AEAD modes; op 11 both ways; Select Protocol (4012
for a protocol other than udp, 4016 for a mode not offered); Session Description with
a fresh key; then op 5 Speaking, heartbeats and, with DAVE, ops 23, 26, 28 and 31 for
the channel's group. Anything that does not decode closes with 4002, an op the client
may not send with 4001, anything before Identify with 4003, a second Identify with
4005. Heartbeat ACKs echo ``t``.
"""

from __future__ import annotations

import logging
import os
import secrets
import ssl
from functools import partial

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest

from voicesim._exceptions import RemoteProtocolError
from voicesim.emulator._counters import Counters
from voicesim.emulator._dave_group import DaveMode, negotiate_dave
from voicesim.emulator._link import Link
from voicesim.emulator._registry import Registry
from voicesim.emulator._voice_session import VoiceHub, VoiceSession
from voicesim.emulator._ws_server import serve_websockets
from voicesim.protocol._transport import TransportCipher
from voicesim.protocol._voice_gateway import (
    DaveMlsCommitWelcome,
    DaveMlsInvalidCommitWelcome,
    DaveMlsKeyPackage,
    DaveTransitionReady,
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
    VoiceCloseCode,
    VoiceMessage,
    decode_voice_message,
    encode_voice_message,
)

__all__ = ["VoiceGateway"]

log = logging.getLogger("voicesim.emulator.voice")

# Binary MLS messages (a commit, a welcome for a full channel) run to tens of KiB;
# anything past this is not a voice gateway message.
MAX_PAYLOAD = 1 << 20

_DAVE_CLIENT_MESSAGES = (
    DaveTransitionReady,
    DaveMlsKeyPackage,
    DaveMlsCommitWelcome,
    DaveMlsInvalidCommitWelcome,
)
_ENDING_CODES = (1000, 1001)


class VoiceGateway:
    """Serves voice WebSockets; one :class:`_VoiceConnection` per client."""

    def __init__(
        self,
        registry: Registry,
        hub: VoiceHub,
        counters: Counters,
        *,
        modes: tuple[str, ...],
        dave: DaveMode,
        heartbeat_interval_ms: float,
        resume_timeout: float,
    ) -> None:
        self.registry = registry
        self.hub = hub
        self.counters = counters
        self.modes = modes
        self.dave = dave
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.resume_timeout = resume_timeout
        self._nursery: trio.Nursery | None = None

    async def serve(
        self,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.hub.nursery = nursery
            bound = await nursery.start(
                partial(
                    serve_websockets,
                    self._handle,
                    host,
                    port,
                    ssl_context,
                    counters=self.counters,
                    gateway="voice",
                )
            )
            task_status.started(bound)

    async def _handle(self, request: WebSocketRequest) -> None:
        try:
            ws = await request.accept()
        except (ConnectionClosed, trio.BrokenResourceError):
            return
        self.counters.voice_connections += 1
        link = Link(ws)
        connection = _VoiceConnection(self, link)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(link.run_writer)
                await connection.read_loop()
                if not link.closing:
                    nursery.cancel_scope.cancel()
        except Exception:
            log.exception("voice gateway connection failed")
        finally:
            connection.detach()

    def schedule_expiry(self, session: VoiceSession) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._expire_later, session, session.generation)

    async def _expire_later(self, session: VoiceSession, generation: int) -> None:
        await trio.sleep(self.resume_timeout)
        if session.generation == generation and session.link is None:
            self.hub.end(session, VoiceCloseCode.SESSION_TIMEOUT, "Session timed out.")


class _VoiceConnection:
    def __init__(self, gateway: VoiceGateway, link: Link) -> None:
        self.gateway = gateway
        self.hub = gateway.hub
        self.link = link
        self.session: VoiceSession | None = None
        self.close_code: int | None = None

    def send(self, message: VoiceMessage) -> None:
        self.link.send(encode_voice_message(message))

    def fail(self, code: int, reason: str) -> None:
        self.gateway.counters.protocol_errors[f"voice:{code}"] += 1
        self.link.close(code, reason)

    async def read_loop(self) -> None:
        self.send(Hello(heartbeat_interval=self.gateway.heartbeat_interval_ms))
        while True:
            try:
                frame = await self.link.ws.get_message()
            except ConnectionClosed as exc:
                # trio-websocket reports 1000 for a close this side started, which
                # must not read as the client ending its session on purpose.
                if exc.reason is not None and not self.link.closing:
                    self.close_code = exc.reason.code
                return
            if self.link.closing:
                continue
            if len(frame) > MAX_PAYLOAD:
                self.fail(VoiceCloseCode.FAILED_TO_DECODE, "Failed to decode payload.")
                continue
            try:
                message, _ = decode_voice_message(frame, from_server=False)
            except RemoteProtocolError as exc:
                log.debug("voice frame rejected: %s", exc)
                self.fail(VoiceCloseCode.FAILED_TO_DECODE, "Failed to decode payload.")
                continue
            self.handle(message)

    def handle(self, message: VoiceMessage) -> None:
        if isinstance(message, Heartbeat):
            self.send(HeartbeatAck(t=message.t))
            return
        session = self.session
        if session is None:
            if isinstance(message, Identify):
                self.identify(message)
            elif isinstance(message, Resume):
                self.resume(message)
            else:
                self.fail(VoiceCloseCode.NOT_AUTHENTICATED, "Not authenticated.")
            return

        if isinstance(message, Identify | Resume):
            self.fail(VoiceCloseCode.ALREADY_AUTHENTICATED, "Already authenticated.")
        elif isinstance(message, SelectProtocol):
            self.select_protocol(session, message)
        elif isinstance(message, Speaking):
            if message.ssrc != session.ssrc:
                self.fail(VoiceCloseCode.BAD_REQUEST, "Invalid SSRC.")
                return
            self.hub.set_speaking(session, message.speaking)
        elif isinstance(message, _DAVE_CLIENT_MESSAGES):
            group = session.room.group
            # A client that negotiated no DAVE has nothing to say to the group; like
            # Discord, the gateway ignores such messages rather than failing.
            if group is not None and session.dave_version > 0:
                self.hub.deliver(
                    session.room,
                    group.receive(session.user_id, message, trio.current_time()),
                )
        else:
            self.fail(VoiceCloseCode.UNKNOWN_OPCODE, "Unknown opcode.")

    # -- identify and resume -----------------------------------------------------------

    def identify(self, identify: Identify) -> None:
        registry = self.gateway.registry
        guild_id, user_id = int(identify.server_id), int(identify.user_id)
        if guild_id not in registry.guilds:
            self.fail(VoiceCloseCode.SERVER_NOT_FOUND, "Server not found.")
            return
        state = registry.voice_state(guild_id, user_id)
        if state is None or state.session_id != identify.session_id:
            self.fail(
                VoiceCloseCode.SESSION_NO_LONGER_VALID, "Session is no longer valid."
            )
            return
        if not secrets.compare_digest(state.token, identify.token):
            self.fail(VoiceCloseCode.AUTHENTICATION_FAILED, "Authentication failed.")
            return

        negotiation = negotiate_dave(
            self.gateway.dave, identify.max_dave_protocol_version
        )
        if negotiation.close_code is not None:
            self.fail(negotiation.close_code, negotiation.close_reason)
            return
        session = self.hub.open(state, dave_version=0)
        if session.room.group is not None:
            session.dave_version = negotiation.dave_protocol_version

        self.attach(session)
        relay = self.hub.relay
        self.send(
            Ready(
                ssrc=session.ssrc,
                ip=relay.ip,
                port=relay.port,
                modes=self.gateway.modes,
            )
        )
        self.hub.announce(session)

    def resume(self, resume: Resume) -> None:
        key = (int(resume.server_id), resume.session_id)
        session = self.hub.by_session_id.get(key)
        if session is None or session.ended:
            self.fail(
                VoiceCloseCode.SESSION_NO_LONGER_VALID, "Session is no longer valid."
            )
            return
        if not secrets.compare_digest(session.token, resume.token):
            self.fail(VoiceCloseCode.AUTHENTICATION_FAILED, "Authentication failed.")
            return
        frames = session.replay.frames_after(resume.seq_ack)
        if frames is None:
            # The buffer no longer holds what was missed: the client must start over.
            self.fail(
                VoiceCloseCode.SESSION_NO_LONGER_VALID, "Session is no longer valid."
            )
            self.hub.end(
                session,
                VoiceCloseCode.SESSION_NO_LONGER_VALID,
                "Session is no longer valid.",
            )
            return
        if session.link is not None:
            session.link.close(
                VoiceCloseCode.SESSION_NO_LONGER_VALID, "Resumed elsewhere."
            )
        self.attach(session)
        self.gateway.counters.voice_resumes += 1
        self.send(Resumed())
        for frame in frames:
            self.link.send(frame)

    def attach(self, session: VoiceSession) -> None:
        session.link = self.link
        session.generation += 1
        self.session = session

    def detach(self) -> None:
        session = self.session
        if session is None or session.link is not self.link:
            return
        session.link = None
        session.generation += 1
        if self.close_code in _ENDING_CODES:
            self.hub.end(session, VoiceCloseCode.DISCONNECTED, "Disconnected.")
        else:
            self.gateway.schedule_expiry(session)

    # -- media setup -------------------------------------------------------------------

    def select_protocol(self, session: VoiceSession, select: SelectProtocol) -> None:
        if select.protocol != "udp":
            self.fail(VoiceCloseCode.UNKNOWN_PROTOCOL, "Unknown protocol.")
            return
        if select.mode not in self.gateway.modes:
            self.fail(
                VoiceCloseCode.UNKNOWN_ENCRYPTION_MODE, "Unknown encryption mode."
            )
            return
        if session.mode is not None:
            # A repeated Select Protocol changes nothing: the key is per session.
            return

        secret_key = os.urandom(32)
        session.mode = select.mode
        session.member.cipher = TransportCipher(select.mode, secret_key)
        self.send(
            SessionDescription(
                mode=select.mode,
                secret_key=secret_key,
                dave_protocol_version=session.dave_version,
                media_session_id=secrets.token_hex(16),
            )
        )
        self.hub.introduce_speakers(session)
        group = session.room.group
        if group is not None and session.dave_version > 0:
            self.hub.deliver(
                session.room, group.add_member(session.user_id, trio.current_time())
            )
