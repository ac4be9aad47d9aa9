"""The main gateway: JSON text frames over a plain WebSocket (v10, no compression).

Clients may ask for ``compress=zlib-stream``; the server may ignore that and send text
frames, which discord.py decodes directly (it inflates only binary frames).

A connection says Hello, then expects Identify or Resume. Identify checks the token
(4004 otherwise) and the application's identify budget (op 9 Invalid Session when
over it, as Discord does), then sends READY and one GUILD_CREATE per guild. After
that the connection carries heartbeats, op 4 voice state updates and op 8 member
requests; every dispatch goes through the session, which numbers it and keeps it for
a resume. A dropped connection leaves its session resumable for a while; a client
that closes with 1000 or 1001 ends it at once, as Discord does.
"""

from __future__ import annotations

import collections
import logging
from functools import partial
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest

from voicesim._exceptions import RemoteProtocolError
from voicesim.emulator._counters import Counters
from voicesim.emulator._link import Link
from voicesim.emulator._objects import guild_create_json, member_json, user_json
from voicesim.emulator._registry import GatewaySession, Registry
from voicesim.emulator._ws_server import serve_websockets
from voicesim.protocol._gateway import (
    GatewayHello,
    GatewayIdentify,
    GatewayInvalidSession,
    GatewayOp,
    GatewayPayload,
    GatewayResume,
    UpdateVoiceState,
    decode_gateway_payload,
    encode_gateway_payload,
    parse_snowflake,
)

__all__ = ["MainGateway"]

log = logging.getLogger("voicesim.emulator.gateway")

# Discord's send limit: 120 gateway events per connection per 60 s.
_RATE_LIMIT = 120
# Discord closes a connection whose payload is over 4096 bytes with 4002.
MAX_PAYLOAD = 4096
_RATE_PERIOD = 60.0
_CHUNK_SIZE = 1000
# Every intent bit Discord defines today: 0-16, the two auto-moderation bits (20, 21)
# and the two poll bits (24, 25).
_KNOWN_INTENTS = sum(1 << b for b in (*range(17), 20, 21, 24, 25))
_ENDING_CODES = (1000, 1001)

_HEARTBEAT_ACK = encode_gateway_payload(GatewayPayload(op=GatewayOp.HEARTBEAT_ACK))
_INVALID_SESSION = encode_gateway_payload(
    GatewayInvalidSession(resumable=False).to_payload()
)


class MainGateway:
    """Serves the main gateway WebSocket; one :class:`_Connection` per client."""

    def __init__(
        self,
        registry: Registry,
        counters: Counters,
        *,
        heartbeat_interval_ms: int,
        resume_timeout: float,
    ) -> None:
        self.registry = registry
        self.counters = counters
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.resume_timeout = resume_timeout
        self._nursery: trio.Nursery | None = None

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            bound = await nursery.start(
                partial(
                    serve_websockets,
                    self._handle,
                    host,
                    port,
                    None,
                    counters=self.counters,
                    gateway="gateway",
                )
            )
            task_status.started(bound)

    async def _handle(self, request: WebSocketRequest) -> None:
        try:
            ws = await request.accept()
        except ConnectionClosed:
            return
        link = Link(ws)
        connection = _Connection(self, link)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(link.run_writer)
                await connection.read_loop()
                if not link.closing:
                    nursery.cancel_scope.cancel()
        except Exception:
            log.exception("main gateway connection failed")
        finally:
            connection.detach()

    def schedule_expiry(self, session: GatewaySession) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._expire_later, session, session.generation)

    async def _expire_later(self, session: GatewaySession, generation: int) -> None:
        await trio.sleep(self.resume_timeout)
        if session.generation == generation and session.link is None:
            self.registry.end_session(session)


class _Connection:
    def __init__(self, gateway: MainGateway, link: Link) -> None:
        self.gateway = gateway
        self.registry = gateway.registry
        self.link = link
        self.session: GatewaySession | None = None
        self.close_code: int | None = None
        self._recent: collections.deque[float] = collections.deque()

    def send(self, payload: GatewayPayload) -> None:
        self.link.send(encode_gateway_payload(payload))

    def fail(self, code: int, reason: str) -> None:
        self.gateway.counters.protocol_errors[f"gateway:{code}"] += 1
        self.link.close(code, reason)

    async def read_loop(self) -> None:
        hello = GatewayHello(heartbeat_interval=self.gateway.heartbeat_interval_ms)
        self.send(hello.to_payload())
        while True:
            try:
                message = await self.link.ws.get_message()
            except ConnectionClosed as exc:
                # trio-websocket reports 1000 for a close this side started, which
                # must not read as the client ending its session on purpose.
                if exc.reason is not None and not self.link.closing:
                    self.close_code = exc.reason.code
                return
            if self.link.closing:
                continue
            if len(message) > MAX_PAYLOAD:
                self.fail(4002, "Error while decoding payload.")
                continue
            now = trio.current_time()
            self._recent.append(now)
            while now - self._recent[0] > _RATE_PERIOD:
                self._recent.popleft()
            if len(self._recent) > _RATE_LIMIT:
                self.fail(4008, "Rate limited.")
                continue
            try:
                self.handle(decode_gateway_payload(message))
            except RemoteProtocolError as exc:
                log.debug("gateway payload rejected: %s", exc)
                self.fail(4002, "Error while decoding payload.")

    def handle(self, payload: GatewayPayload) -> None:
        op = payload.op
        if op == GatewayOp.HEARTBEAT:
            self.link.send(_HEARTBEAT_ACK)
            return
        if self.session is None:
            if op == GatewayOp.IDENTIFY:
                self.identify(GatewayIdentify.from_payload(payload.d))
            elif op == GatewayOp.RESUME:
                self.resume(GatewayResume.from_payload(payload.d))
            else:
                self.fail(4003, "Not authenticated.")
            return

        session = self.session
        if op in (GatewayOp.IDENTIFY, GatewayOp.RESUME):
            self.fail(4005, "Already authenticated.")
        elif op == GatewayOp.VOICE_STATE_UPDATE:
            update = UpdateVoiceState.from_payload(payload.d)
            if update.guild_id not in session.guild_ids:
                return
            if update.channel_id is None:
                self.registry.leave_voice(session, update.guild_id)
            else:
                self.registry.join_voice(
                    session,
                    update.guild_id,
                    update.channel_id,
                    self_mute=update.self_mute,
                    self_deaf=update.self_deaf,
                )
        elif op == GatewayOp.REQUEST_GUILD_MEMBERS:
            self.request_members(payload.d)
        elif op == GatewayOp.PRESENCE_UPDATE:
            pass
        else:
            self.fail(4001, "Unknown opcode.")

    # -- login -------------------------------------------------------------------------

    def identify(self, identify: GatewayIdentify) -> None:
        token = identify.token.removeprefix("Bot ")
        user = self.registry.users_by_token.get(token)
        if user is None:
            self.fail(4004, "Authentication failed.")
            return
        shard = identify.shard
        if shard is not None and not 0 <= shard[0] < shard[1]:
            self.fail(4010, "Invalid shard.")
            return
        if identify.intents & ~_KNOWN_INTENTS:
            self.fail(4013, "Invalid intent(s).")
            return
        if not self.registry.may_identify(user, trio.current_time()):
            # Over the identify budget: Discord answers op 9 and keeps the socket.
            self.link.send(_INVALID_SESSION)
            return

        session = self.registry.open_session(user, identify.intents, shard)
        self.attach(session)
        ready: dict[str, Any] = {
            "v": 10,
            "user": user_json(user),
            "guilds": [{"id": str(g), "unavailable": True} for g in session.guild_ids],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.registry.gateway_url,
            "application": {"id": str(user.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "user_settings": {},
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "auth": {},
        }
        if shard is not None:
            ready["shard"] = list(shard)
        session.dispatch("READY", ready)
        if not identify.intents & 1:
            return
        for guild_id in session.guild_ids:
            guild = self.registry.guilds[guild_id]
            states = [
                s.to_json(with_guild=False)
                for s in self.registry.voice_states[guild_id].values()
            ]
            session.dispatch(
                "GUILD_CREATE",
                guild_create_json(
                    self.registry.world, guild, self.registry.users, states
                ),
            )

    def resume(self, resume: GatewayResume) -> None:
        session = self.registry.sessions.get(resume.session_id)
        if session is None or session.user.token != resume.token.removeprefix("Bot "):
            self.link.send(_INVALID_SESSION)
            return
        frames = session.frames_after(resume.seq)
        if frames is None:
            # The buffer no longer holds what the client missed.
            self.registry.end_session(session)
            self.link.send(_INVALID_SESSION)
            return
        if session.link is not None:
            session.link.close(4009, "Session timed out.")
        self.attach(session)
        for frame in frames:
            self.link.send(frame)
        session.dispatch("RESUMED", {})

    def attach(self, session: GatewaySession) -> None:
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
            self.registry.end_session(session)
        else:
            self.gateway.schedule_expiry(session)

    # -- op 8 --------------------------------------------------------------------------

    def request_members(self, d: object) -> None:
        assert self.session is not None
        if not isinstance(d, dict):
            raise RemoteProtocolError("gateway op 8: d must be an object")
        raw_guilds = d.get("guild_id")
        guild_ids = raw_guilds if isinstance(raw_guilds, list) else [raw_guilds]
        raw_users = d.get("user_ids")
        wanted: set[int] | None = None
        if raw_users is not None:
            users = raw_users if isinstance(raw_users, list) else [raw_users]
            wanted = {parse_snowflake(u, field="user_ids") for u in users}
        query = d.get("query") or ""
        limit = d.get("limit") or 0
        nonce = d.get("nonce")
        if not isinstance(query, str) or not isinstance(limit, int):
            raise RemoteProtocolError(
                "gateway op 8: query must be a string, limit an int"
            )

        for raw in guild_ids:
            guild_id = parse_snowflake(raw, field="guild_id")
            if guild_id not in self.session.guild_ids:
                continue
            guild = self.registry.guilds[guild_id]
            members = [self.registry.users[m] for m in guild.member_ids]
            if wanted is not None:
                members = [u for u in members if u.id in wanted]
            else:
                members = [
                    u for u in members if u.name.lower().startswith(query.lower())
                ]
                if limit > 0:
                    members = members[:limit]
            chunks = [
                members[i : i + _CHUNK_SIZE]
                for i in range(0, len(members), _CHUNK_SIZE)
            ] or [[]]
            for index, chunk in enumerate(chunks):
                data: dict[str, Any] = {
                    "guild_id": str(guild_id),
                    "members": [member_json(u, guild) for u in chunk],
                    "chunk_index": index,
                    "chunk_count": len(chunks),
                }
                if nonce is not None:
                    data["nonce"] = nonce
                if wanted is not None and index == len(chunks) - 1:
                    found = {u.id for u in members}
                    data["not_found"] = [str(u) for u in wanted - found]
                self.session.dispatch("GUILD_MEMBERS_CHUNK", data)
