"""A real emulator, the reference agent and synthetic speakers, all on loopback.

:func:`running_agent` starts an in-process :class:`Emulator` and a
:class:`ReferenceAgent` next to it; :class:`Speaker` is a synthetic user built on
``voicesim.voice`` (discord.py control plane, trio voice connection) that joins a
channel, speaks fixtures and records what it hears and reads.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import attrs
import trio

from voicesim.agent import AgentConfig, ReferenceAgent
from voicesim.emulator import Emulator, EmulatorConfig, EmulatorInfo, World
from voicesim.media import AUDIBLE_DBFS, SILENCE_FRAME, OpusDecoder, level_dbfs
from voicesim.voice import (
    Bot,
    ChatMessage,
    ControlPlane,
    MediaClock,
    ReceivedFrame,
    Speech,
    Target,
    VoiceConnection,
)

#: Bound on every wait in these tests; the agent answers within about 2 s.
WAIT_S = 20.0


@attrs.define(eq=False)
class World_:
    """What a test works with: the emulator, the agent and the shared clock."""

    emulator: Emulator
    agent: ReferenceAgent
    clock: MediaClock
    nursery: trio.Nursery

    @property
    def info(self) -> EmulatorInfo:
        return self.emulator.info

    def target(self) -> Target:
        return _target(self.info)

    def token(self, name: str) -> str:
        return self.info.user(name).token

    def place(self, guild: int) -> tuple[int, int]:
        found = self.info.guilds[guild]
        return found.id, found.voice_channels[0].id


def _target(info: EmulatorInfo) -> Target:
    return Target(
        api_base=info.api_base,
        gateway_url=info.gateway_url,
        ca_file=info.ca_file,
        guild_ready_timeout=0.2,
    )


@contextlib.asynccontextmanager
async def running_agent(
    config: AgentConfig,
    *,
    sessions: int = 1,
    per_channel: int = 1,
    join_all: bool = True,
) -> AsyncIterator[World_]:
    """An emulator sized for ``sessions`` and the agent logged in to it.

    With ``join_all`` the agent is configured with every guild's voice channel.
    """
    world = World.sized_for(sessions=sessions, per_channel=per_channel)
    clock = MediaClock()
    clock.start()
    try:
        async with (
            Emulator(EmulatorConfig(world=world, state_file=None)) as emulator,
            trio.open_nursery() as nursery,
        ):
            info = emulator.info
            assert info.agent_user_id is not None
            token = next(u.token for u in info.users if u.id == info.agent_user_id)
            channels = (
                [(g.id, g.voice_channels[0].id) for g in info.guilds]
                if join_all
                else []
            )
            agent = ReferenceAgent(
                config,
                target=_target(info),
                token=token,
                channels=channels,
                clock=clock,
            )
            await nursery.start(agent.run)
            try:
                yield World_(
                    emulator=emulator, agent=agent, clock=clock, nursery=nursery
                )
            finally:
                nursery.cancel_scope.cancel()
    finally:
        clock.stop()


@attrs.frozen(kw_only=True)
class Heard:
    """One frame the speaker received from the agent."""

    arrival_ns: int
    audible: bool
    seq: int = 0
    rtp_timestamp: int = 0


@attrs.define(eq=False)
class Speaker:
    """A synthetic user in one voice channel."""

    bot: Bot
    control: ControlPlane
    connection: VoiceConnection
    guild_id: int
    channel_id: int
    agent_id: int
    heard: list[Heard] = attrs.Factory(list)
    _decoder: OpusDecoder = attrs.Factory(OpusDecoder)
    _heard_event: trio.Event = attrs.Factory(trio.Event)

    def on_frame(self, frame: ReceivedFrame) -> None:
        if frame.user_id != self.agent_id:
            return
        if frame.payload == SILENCE_FRAME:
            audible = False
        else:
            audible = level_dbfs(self._decoder.decode(frame.payload)) > AUDIBLE_DBFS
        self.heard.append(
            Heard(
                arrival_ns=frame.arrival_ns,
                audible=audible,
                seq=frame.seq,
                rtp_timestamp=frame.rtp_timestamp,
            )
        )
        if audible:
            self._heard_event.set()

    async def say(self, frames: Sequence[bytes]) -> Speech:
        """Speak ``frames`` to the end; return the speech (for its intended times)."""
        speech = await self.connection.speak(frames)
        await speech.wait()
        await self.connection.stop_speaking()
        return speech

    async def next_message(self) -> ChatMessage:
        """The next message the agent posts that mentions this speaker."""
        with trio.fail_after(WAIT_S):
            async for message in self.bot.messages:
                if (
                    message.author_id == self.agent_id
                    and self.bot.user_id in message.mention_ids
                ):
                    return message
        raise AssertionError("message channel closed")

    async def audible_after(self, after_ns: int) -> int:
        """Wait for the agent's first audible frame after ``after_ns``; its arrival."""
        with trio.fail_after(WAIT_S):
            while True:
                for item in self.heard:
                    if item.audible and item.arrival_ns > after_ns:
                        return item.arrival_ns
                self._heard_event = trio.Event()
                await self._heard_event.wait()


@contextlib.asynccontextmanager
async def speaker(world: World_, name: str, guild: int = 0) -> AsyncIterator[Speaker]:
    """User ``name`` joined to guild ``guild``'s voice channel, until the block ends."""
    guild_id, channel_id = world.place(guild)
    agent_id = world.info.agent_user_id
    assert agent_id is not None
    async with ControlPlane(world.target()) as control, trio.open_nursery() as nursery:
        bot = await control.login(world.token(name))
        credentials, _ = await control.join(bot, guild_id, channel_id)
        holder: list[Speaker] = []
        connection = VoiceConnection(
            credentials,
            clock=world.clock,
            on_frame=lambda frame: holder[0].on_frame(frame) if holder else None,
            ssl_context=world.target().ssl_context(),
        )
        who = Speaker(
            bot=bot,
            control=control,
            connection=connection,
            guild_id=guild_id,
            channel_id=channel_id,
            agent_id=agent_id,
        )
        holder.append(who)
        with trio.fail_after(WAIT_S):
            await nursery.start(connection.run)
        try:
            yield who
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await control.leave(bot, guild_id)
                await connection.close()
            nursery.cancel_scope.cancel()


def timeline_path(tmp_path: Path) -> Path:
    return tmp_path / "timeline.jsonl"
