"""Voice sessions and voice channels ("rooms") on the server side.

A voice session starts with a good Identify and outlives its WebSocket: a client that
loses the connection may resume it, and gets back the messages it missed from the
session's replay buffer (voice gateway v8 "buffered resume"). The session ends when the
user leaves or moves, when its main gateway session ends, when a new Identify replaces
it, when the client closes normally, or when nobody resumes it in time.

The hub tells the channel's other members about each of those changes (op 11 on join,
op 5 on speaking, op 13 on leave), keeps the relay's view in step, and hands DAVE events
to the channel's group when DAVE is on.
"""

from __future__ import annotations

import collections
import logging
import secrets
from collections.abc import Sequence

import attrs
import trio

from voicesim.emulator._counters import Counters
from voicesim.emulator._dave import CloseMember, DaveGroup, DaveGroupFactory, DaveOutput
from voicesim.emulator._link import Link
from voicesim.emulator._registry import VoiceStateRecord
from voicesim.emulator._relay import Relay, RelayMember, RelayRoom
from voicesim.protocol._voice_gateway import (
    ClientDisconnect,
    ClientsConnect,
    Speaking,
    VoiceMessage,
    encode_voice_message,
)

__all__ = ["ReplayBuffer", "VoiceHub", "VoiceRoom", "VoiceSession"]

log = logging.getLogger("voicesim.emulator.voice")

_SEQ_MODULUS = 1 << 16
_DISCONNECTED = 4014
_LEAVE_GRACE = 1.0


class ReplayBuffer:
    """Numbers a session's replayable messages and keeps the last ``size`` of them.

    Seqs are 16 bits wide (binary frames carry a u16) and wrap; they start at 1,
    because discord.js ignores a seq of 0 when it records what it has seen.
    """

    def __init__(self, size: int) -> None:
        self._frames: collections.deque[tuple[int, str | bytes]] = collections.deque(
            maxlen=size
        )
        self.last_seq = 0
        self._sent = 0

    def next_seq(self) -> int:
        self.last_seq = (self.last_seq + 1) % _SEQ_MODULUS
        return self.last_seq

    def keep(self, seq: int, frame: str | bytes) -> None:
        self._frames.append((seq, frame))
        self._sent += 1

    def frames_after(self, seq_ack: int) -> list[str | bytes] | None:
        """What a client that saw ``seq_ack`` missed, or None if some of it is gone."""
        if self._sent == 0 or seq_ack == self.last_seq:
            return []
        if seq_ack < 0:
            # It saw nothing: everything must still be here.
            if len(self._frames) < self._sent:
                return None
            return [frame for _, frame in self._frames]
        for index, (seq, _) in enumerate(self._frames):
            if seq == seq_ack:
                return [frame for _, frame in list(self._frames)[index + 1 :]]
        return None


@attrs.define(eq=False)
class VoiceSession:
    """One user's voice session in one voice channel."""

    guild_id: int
    channel_id: int
    user_id: int
    session_id: str
    token: str
    ssrc: int
    member: RelayMember
    replay: ReplayBuffer
    room: VoiceRoom
    dave_version: int = 0
    link: Link | None = None
    mode: str | None = None
    speaking: int | None = None
    generation: int = 0
    ended: bool = False

    def send(self, message: VoiceMessage, *, replayable: bool = True) -> None:
        if replayable:
            seq = self.replay.next_seq()
            frame = encode_voice_message(message, seq=seq)
            self.replay.keep(seq, frame)
        else:
            frame = encode_voice_message(message)
        if self.link is not None:
            self.link.send(frame)


@attrs.define(eq=False)
class VoiceRoom:
    """One voice channel's live sessions, its relay room and its DAVE group."""

    guild_id: int
    channel_id: int
    relay_room: RelayRoom
    group: DaveGroup | None
    sessions: dict[int, VoiceSession] = attrs.Factory(dict)
    timer_scope: trio.CancelScope | None = None
    wake: trio.Event = attrs.Factory(trio.Event)

    def others(self, user_id: int) -> list[VoiceSession]:
        return [s for s in self.sessions.values() if s.user_id != user_id]


class VoiceHub:
    """All voice sessions and rooms; implements the registry's ``VoiceHooks``."""

    def __init__(
        self,
        relay: Relay,
        counters: Counters,
        *,
        replay_buffer: int,
        dave_group_factory: DaveGroupFactory | None,
    ) -> None:
        self.relay = relay
        self.counters = counters
        self.replay_buffer = replay_buffer
        self.dave_group_factory = dave_group_factory
        self.rooms: dict[tuple[int, int], VoiceRoom] = {}
        self.sessions: dict[tuple[int, int], VoiceSession] = {}
        self.by_session_id: dict[tuple[int, str], VoiceSession] = {}
        self.nursery: trio.Nursery | None = None

    # -- VoiceHooks --------------------------------------------------------------------

    def has_live_session(self, guild_id: int, user_id: int, token: str) -> bool:
        session = self.sessions.get((guild_id, user_id))
        return session is not None and session.token == token

    def end_voice_session(
        self, guild_id: int, user_id: int, code: int, reason: str
    ) -> None:
        session = self.sessions.get((guild_id, user_id))
        if session is not None:
            self.end(session, code, reason)

    # -- lifecycle ---------------------------------------------------------------------

    def _room(self, guild_id: int, channel_id: int) -> VoiceRoom:
        key = (guild_id, channel_id)
        room = self.rooms.get(key)
        if room is None:
            group = None
            if self.dave_group_factory is not None:
                group = self.dave_group_factory(guild_id, channel_id)
            room = VoiceRoom(
                guild_id=guild_id,
                channel_id=channel_id,
                relay_room=RelayRoom(key),
                group=group,
            )
            self.rooms[key] = room
            if group is not None and self.nursery is not None:
                self.nursery.start_soon(self._dave_timer, room)
        return room

    def _new_ssrc(self) -> int:
        while True:
            ssrc = secrets.randbits(32)
            if ssrc and ssrc not in self.relay.members:
                return ssrc

    def open(self, state: VoiceStateRecord, dave_version: int) -> VoiceSession:
        """Start a voice session for ``state``, replacing any older one of that user."""
        old = self.sessions.get((state.guild_id, state.user_id))
        if old is not None:
            self.end(old, 4006, "Session is no longer valid.")
        room = self._room(state.guild_id, state.channel_id)
        ssrc = self._new_ssrc()
        session = VoiceSession(
            guild_id=state.guild_id,
            channel_id=state.channel_id,
            user_id=state.user_id,
            session_id=state.session_id,
            token=state.token,
            ssrc=ssrc,
            member=self.relay.add(room.relay_room, ssrc, state.user_id),
            replay=ReplayBuffer(self.replay_buffer),
            room=room,
            dave_version=dave_version,
        )
        room.sessions[state.user_id] = session
        self.sessions[(state.guild_id, state.user_id)] = session
        self.by_session_id[(state.guild_id, state.session_id)] = session
        self.counters.voice_sessions = len(self.sessions)
        return session

    def announce(self, session: VoiceSession) -> None:
        """Op 11 both ways between a new member and the channel, after its Ready."""
        others = session.room.others(session.user_id)
        if others:
            session.send(ClientsConnect(user_ids=tuple(str(s.user_id) for s in others)))
        for other in others:
            other.send(ClientsConnect(user_ids=(str(session.user_id),)))

    def introduce_speakers(self, session: VoiceSession) -> None:
        """Op 5 for every member that has spoken, so the newcomer can map SSRCs."""
        for other in session.room.others(session.user_id):
            if other.speaking is not None:
                session.send(
                    Speaking(
                        speaking=other.speaking,
                        ssrc=other.ssrc,
                        delay=None,
                        user_id=str(other.user_id),
                    )
                )

    def set_speaking(self, session: VoiceSession, speaking: int) -> None:
        session.speaking = speaking
        session.member.speaking = True
        message = Speaking(
            speaking=speaking,
            ssrc=session.ssrc,
            delay=None,
            user_id=str(session.user_id),
        )
        for other in session.room.others(session.user_id):
            other.send(message)
        # The others hear of the SSRC first, then get what it sent before this op 5.
        self.relay.release(session.member)

    def end(self, session: VoiceSession, code: int, reason: str) -> None:
        """End a session for good: close its socket, tell the others, free its SSRC."""
        if session.ended:
            return
        session.ended = True
        if session.link is not None:
            if code == _DISCONNECTED and self.nursery is not None:
                self.nursery.start_soon(self._close_later, session.link, code, reason)
            else:
                session.link.close(code, reason)
            session.link = None
        room = session.room
        self.relay.remove(session.member)
        if room.sessions.get(session.user_id) is session:
            del room.sessions[session.user_id]
        if self.sessions.get((session.guild_id, session.user_id)) is session:
            del self.sessions[(session.guild_id, session.user_id)]
        if self.by_session_id.get((session.guild_id, session.session_id)) is session:
            del self.by_session_id[(session.guild_id, session.session_id)]
        self.counters.voice_sessions = len(self.sessions)

        for other in room.others(session.user_id):
            other.send(ClientDisconnect(user_id=str(session.user_id)))
        if room.group is not None and session.dave_version > 0:
            self.deliver(
                room, room.group.remove_member(session.user_id, trio.current_time())
            )
        if not room.sessions:
            if room.timer_scope is not None:
                room.timer_scope.cancel()
            del self.rooms[(room.guild_id, room.channel_id)]

    async def _close_later(self, link: Link, code: int, reason: str) -> None:
        # A client that left on its own (op 4 without a channel) closes its voice
        # socket itself right after; give it the chance, so that it sees its own
        # normal close instead of racing a 4014 against the main gateway's update.
        await trio.sleep(_LEAVE_GRACE)
        link.close(code, reason)

    # -- DAVE --------------------------------------------------------------------------

    def deliver(self, room: VoiceRoom, outgoing: Sequence[DaveOutput]) -> None:
        for user_id, message in outgoing:
            target = room.sessions.get(user_id)
            if target is None or target.ended:
                log.debug("DAVE message for absent user %s dropped", user_id)
                continue
            if isinstance(message, CloseMember):
                self.counters.protocol_errors[f"voice:{message.code}"] += 1
                self.end(target, message.code, message.reason)
            else:
                target.send(message)
        # The group's deadline may have moved; let the timer look again.
        room.wake.set()

    async def _dave_timer(self, room: VoiceRoom) -> None:
        group = room.group
        assert group is not None
        with trio.CancelScope() as scope:
            room.timer_scope = scope
            while True:
                deadline = group.next_deadline()
                room.wake = trio.Event()
                with trio.move_on_at(
                    deadline if deadline is not None else float("inf")
                ):
                    await room.wake.wait()
                    continue
                self.deliver(room, group.tick(trio.current_time()))
