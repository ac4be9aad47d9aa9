"""The emulator's live state shared by REST and the main gateway.

The world says who exists; the registry says who is logged in (gateway sessions), who
sits in which voice channel (voice states) and what was said (messages). Its methods are
synchronous and never wait: they change state and queue dispatches on the sessions'
links, so that a REST request and a gateway message see one consistent state without
locks (everything runs in one trio thread).
"""

from __future__ import annotations

import collections
import re
import secrets
import time
from collections.abc import Iterator
from typing import Any, Protocol

import attrs

from voicesim.emulator._counters import Counters
from voicesim.emulator._link import Link
from voicesim.emulator._objects import message_json
from voicesim.emulator._world import (
    DISCORD_EPOCH_MS,
    Channel,
    ChannelKind,
    Guild,
    User,
    World,
)
from voicesim.protocol._gateway import GatewayPayload, encode_gateway_payload

__all__ = [
    "GatewaySession",
    "IdentifyLimiter",
    "Intents",
    "Registry",
    "VoiceHooks",
    "VoiceStateRecord",
]


class Intents:
    """The gateway intent bits the emulator filters on."""

    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_VOICE_STATES = 1 << 7
    GUILD_MESSAGES = 1 << 9
    MESSAGE_CONTENT = 1 << 15


_MESSAGES_KEPT = 1000
_MENTION = re.compile(r"<@!?(\d+)>")
_START_LIMIT_PERIOD = 24 * 3600.0


@attrs.define(eq=False)
class GatewaySession:
    """One main gateway session; it outlives its connection until resumed or expired."""

    session_id: str
    user: User
    intents: int
    guild_ids: tuple[int, ...]
    buffer: collections.deque[tuple[int, str]]
    seq: int = 0
    link: Link | None = None
    # Bumped on every detach, so a stale expiry timer knows it lost the race.
    generation: int = 0
    ended: bool = False

    def dispatch(self, event: str, data: Any) -> None:
        self.seq += 1
        frame = encode_gateway_payload(
            GatewayPayload(op=0, d=data, s=self.seq, t=event)
        )
        self.buffer.append((self.seq, frame))
        if self.link is not None:
            self.link.send(frame)

    def frames_after(self, seq: int) -> list[str] | None:
        """The dispatches after ``seq``, or None when the buffer lost some of them."""
        if seq >= self.seq:
            return []
        if not self.buffer or self.buffer[0][0] > seq + 1:
            return None
        return [frame for s, frame in self.buffer if s > seq]


@attrs.define(eq=False)
class VoiceStateRecord:
    """Where a user sits in one guild's voice, and the voice token they were given."""

    guild_id: int
    user_id: int
    channel_id: int
    session_id: str
    token: str
    self_mute: bool = False
    self_deaf: bool = False

    def to_json(self, *, with_guild: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "channel_id": str(self.channel_id),
            "user_id": str(self.user_id),
            "session_id": self.session_id,
            "deaf": False,
            "mute": False,
            "self_deaf": self.self_deaf,
            "self_mute": self.self_mute,
            "self_stream": False,
            "self_video": False,
            "suppress": False,
            "request_to_speak_timestamp": None,
        }
        if with_guild:
            data["guild_id"] = str(self.guild_id)
        return data


class VoiceHooks(Protocol):
    """What the registry needs from the voice gateway."""

    def end_voice_session(
        self, guild_id: int, user_id: int, code: int, reason: str
    ) -> None: ...

    def has_live_session(self, guild_id: int, user_id: int, token: str) -> bool: ...


class _NoVoice:
    def end_voice_session(
        self, guild_id: int, user_id: int, code: int, reason: str
    ) -> None:
        pass

    def has_live_session(self, guild_id: int, user_id: int, token: str) -> bool:
        return False


class IdentifyLimiter:
    """At most ``max_concurrency`` identifies per application in any 5 s window."""

    def __init__(self, max_concurrency: int, window: float = 5.0) -> None:
        self.max_concurrency = max_concurrency
        self.window = window
        self._starts: dict[int, collections.deque[float]] = {}

    def try_acquire(self, application_id: int, now: float) -> bool:
        starts = self._starts.setdefault(application_id, collections.deque())
        while starts and now - starts[0] >= self.window:
            starts.popleft()
        if len(starts) >= self.max_concurrency:
            return False
        starts.append(now)
        return True


class Registry:
    """See the module docstring."""

    def __init__(
        self,
        world: World,
        counters: Counters,
        *,
        max_concurrency: int = 1,
        session_start_limit: int = 1000,
        gateway_replay_buffer: int = 4096,
    ) -> None:
        self.world = world
        self.counters = counters
        self.users = {u.id: u for u in world.users}
        self.users_by_token = {u.token: u for u in world.users}
        self.guilds = {g.id: g for g in world.guilds}
        self.channels: dict[int, Channel] = {c.id: c for c in world.iter_channels()}
        self.sessions: dict[str, GatewaySession] = {}
        self._sessions_by_user: dict[int, set[GatewaySession]] = {}
        self.voice_states: dict[int, dict[int, VoiceStateRecord]] = {
            g: {} for g in self.guilds
        }
        self.messages: dict[int, collections.deque[dict[str, Any]]] = {}
        self.limiter = IdentifyLimiter(max_concurrency)
        self.session_start_limit = session_start_limit
        self._starts: dict[int, tuple[float, int]] = {}
        self._gateway_replay_buffer = gateway_replay_buffer
        self._last_message_id = 0
        self.voice: VoiceHooks = _NoVoice()
        # Filled in by the emulator once the servers are bound.
        self.gateway_url = ""
        self.voice_endpoint = ""

    # -- membership --------------------------------------------------------------------

    def guilds_of(self, user_id: int) -> list[Guild]:
        return [g for g in self.world.guilds if user_id in g.member_ids]

    def is_member(self, user_id: int, guild_id: int) -> bool:
        guild = self.guilds.get(guild_id)
        return guild is not None and user_id in guild.member_ids

    def sessions_of(self, user_id: int) -> Iterator[GatewaySession]:
        yield from self._sessions_by_user.get(user_id, ())

    def _guild_sessions(self, guild: Guild, intent: int) -> Iterator[GatewaySession]:
        for member_id in guild.member_ids:
            for session in self._sessions_by_user.get(member_id, ()):
                if session.intents & intent and guild.id in session.guild_ids:
                    yield session

    # -- sessions ----------------------------------------------------------------------

    def start_limit(self, application_id: int, now: float) -> tuple[int, float]:
        """``(remaining, reset_after seconds)`` of the daily session start limit."""
        first, used = self._starts.get(application_id, (now, 0))
        if now - first >= _START_LIMIT_PERIOD:
            first, used = now, 0
        return self.session_start_limit - used, max(
            0.0, first + _START_LIMIT_PERIOD - now
        )

    def may_identify(self, user: User, now: float) -> bool:
        """Charge one identify to ``user``'s application, if its limits allow it."""
        remaining, _ = self.start_limit(user.application_id, now)
        if remaining <= 0 or not self.limiter.try_acquire(user.application_id, now):
            return False
        first, used = self._starts.get(user.application_id, (now, 0))
        if now - first >= _START_LIMIT_PERIOD:
            first, used = now, 0
        self._starts[user.application_id] = (first, used + 1)
        return True

    def open_session(
        self, user: User, intents: int, shard: tuple[int, int] | None
    ) -> GatewaySession:
        guilds = self.guilds_of(user.id)
        if shard is not None:
            shard_id, shard_count = shard
            guilds = [g for g in guilds if (g.id >> 22) % shard_count == shard_id]
        session = GatewaySession(
            session_id=secrets.token_hex(16),
            user=user,
            intents=intents,
            guild_ids=tuple(g.id for g in guilds),
            buffer=collections.deque(maxlen=self._gateway_replay_buffer),
        )
        self.sessions[session.session_id] = session
        self._sessions_by_user.setdefault(user.id, set()).add(session)
        self.counters.identifies += 1
        self.counters.gateway_sessions = len(self.sessions)
        return session

    def end_session(self, session: GatewaySession) -> None:
        """Forget a session for good; its voice states go with it."""
        if session.ended:
            return
        session.ended = True
        self.sessions.pop(session.session_id, None)
        self._sessions_by_user.get(session.user.id, set()).discard(session)
        self.counters.gateway_sessions = len(self.sessions)
        for guild_id, states in self.voice_states.items():
            state = states.get(session.user.id)
            if state is not None and state.session_id == session.session_id:
                self.leave_voice(session, guild_id)

    # -- voice states ------------------------------------------------------------------

    def _broadcast_voice_state(self, guild: Guild, data: dict[str, Any]) -> None:
        for target in self._guild_sessions(guild, Intents.GUILD_VOICE_STATES):
            target.dispatch("VOICE_STATE_UPDATE", data)

    def join_voice(
        self,
        session: GatewaySession,
        guild_id: int,
        channel_id: int,
        *,
        self_mute: bool,
        self_deaf: bool,
    ) -> bool:
        """Op 4 with a channel: move the user there and send both voice dispatches.

        Returns False when the request names a guild or channel the user cannot join;
        as on Discord, nothing is sent back then.
        """
        guild = self.guilds.get(guild_id)
        channel = self.channels.get(channel_id)
        user_id = session.user.id
        if (
            guild is None
            or channel is None
            or channel.guild_id != guild_id
            or channel.kind is not ChannelKind.VOICE
            or user_id not in guild.member_ids
        ):
            return False
        states = self.voice_states[guild_id]
        old = states.get(user_id)
        occupants = sum(1 for s in states.values() if s.channel_id == channel_id)
        if (
            channel.user_limit
            and occupants >= channel.user_limit
            and (old is None or old.channel_id != channel_id)
        ):
            return False

        # A repeat op 4 for the channel a live voice session already uses only
        # changes the mute flags; anything else starts a new voice session.
        if (
            old is not None
            and old.channel_id == channel_id
            and old.session_id == session.session_id
            and self.voice.has_live_session(guild_id, user_id, old.token)
        ):
            old.self_mute, old.self_deaf = self_mute, self_deaf
            self._broadcast_voice_state(guild, old.to_json())
            return True
        state = VoiceStateRecord(
            guild_id=guild_id,
            user_id=user_id,
            channel_id=channel_id,
            session_id=session.session_id,
            token=secrets.token_hex(8),
            self_mute=self_mute,
            self_deaf=self_deaf,
        )
        states[user_id] = state
        self._broadcast_voice_state(guild, state.to_json())
        if old is not None:
            # Moved, or reconnecting: the old voice session cannot be reused. The
            # state update goes out first, so the client knows why its socket closes.
            self.voice.end_voice_session(guild_id, user_id, 4014, "Disconnected.")
        session.dispatch(
            "VOICE_SERVER_UPDATE",
            {
                "token": state.token,
                "guild_id": str(guild_id),
                "endpoint": self.voice_endpoint,
            },
        )
        return True

    def leave_voice(self, session: GatewaySession, guild_id: int) -> None:
        """Op 4 without a channel: leave, and confirm it even if the user was not in one."""
        guild = self.guilds.get(guild_id)
        if guild is None or session.user.id not in guild.member_ids:
            return
        user_id = session.user.id
        old = self.voice_states[guild_id].pop(user_id, None)
        data = {
            "guild_id": str(guild_id),
            "channel_id": None,
            "user_id": str(user_id),
            "session_id": session.session_id,
            "deaf": False,
            "mute": False,
            "self_deaf": False,
            "self_mute": False,
            "self_stream": False,
            "self_video": False,
            "suppress": False,
            "request_to_speak_timestamp": None,
        }
        if old is None:
            # Nothing changed for anyone else, but discord.py waits for this
            # confirmation before its disconnect returns.
            if session.intents & Intents.GUILD_VOICE_STATES:
                session.dispatch("VOICE_STATE_UPDATE", data)
            return
        self._broadcast_voice_state(guild, data)
        self.voice.end_voice_session(guild_id, user_id, 4014, "Disconnected.")

    def kick_voice(self, guild_id: int, user_id: int) -> None:
        """Remove a user from voice as a moderator would (the fault hooks use this)."""
        state = self.voice_states.get(guild_id, {}).pop(user_id, None)
        guild = self.guilds.get(guild_id)
        if state is None or guild is None:
            return
        data = state.to_json()
        data["channel_id"] = None
        self._broadcast_voice_state(guild, data)
        self.voice.end_voice_session(guild_id, user_id, 4014, "Disconnected.")

    def voice_state(self, guild_id: int, user_id: int) -> VoiceStateRecord | None:
        return self.voice_states.get(guild_id, {}).get(user_id)

    # -- messages ----------------------------------------------------------------------

    def _next_message_id(self) -> int:
        stamp = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last_message_id = max(stamp, self._last_message_id + 1)
        return self._last_message_id

    def create_message(
        self, author: User, channel: Channel, content: str, nonce: str | int | None
    ) -> dict[str, Any]:
        """Store a message and dispatch MESSAGE_CREATE to the guild's sessions."""
        guild = self.guilds[channel.guild_id]
        mentioned = [
            self.users[int(m)]
            for m in dict.fromkeys(_MENTION.findall(content))
            if int(m) in self.users
        ]
        message = message_json(
            message_id=self._next_message_id(),
            channel=channel,
            author=author,
            guild=guild,
            content=content,
            mentions=mentioned,
            nonce=nonce,
        )
        self.messages.setdefault(
            channel.id, collections.deque(maxlen=_MESSAGES_KEPT)
        ).append(message)
        self.counters.messages += 1

        # Without the MESSAGE_CONTENT intent a bot sees content only of its own
        # messages and of messages that mention it.
        mentioned_ids = {u.id for u in mentioned}
        hidden = dict(message, content="", embeds=[], attachments=[], components=[])
        for target in self._guild_sessions(guild, Intents.GUILD_MESSAGES):
            visible = (
                target.intents & Intents.MESSAGE_CONTENT
                or target.user.id == author.id
                or target.user.id in mentioned_ids
            )
            target.dispatch("MESSAGE_CREATE", message if visible else hidden)
        return message

    def channel_messages(self, channel_id: int) -> list[dict[str, Any]]:
        return list(self.messages.get(channel_id, ()))
