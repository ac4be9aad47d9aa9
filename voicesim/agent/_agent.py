"""The reference voice agent: a Discord bot that listens, transcribes and answers.

:class:`ReferenceAgent` logs one bot in through the control plane, holds one voice
connection per guild (as Discord allows a bot user), and runs a
:class:`~voicesim.agent._channel.ChannelAgent` for each. It joins the channels it
is configured with at start and stays there; it also follows other users' voice
states, joins a channel when a user it shares a guild with joins one, and leaves
such a channel again once nobody else is in it.
"""

from __future__ import annotations

import collections
import enum
import logging
import ssl
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from voicesim._exceptions import VoiceSimError
from voicesim.agent._channel import ChannelAgent, sole_error
from voicesim.agent._config import AgentConfig
from voicesim.agent._pipeline import AgentCore, open_agent_core
from voicesim.agent._stt import Transcriber
from voicesim.media import FixtureSet
from voicesim.voice import Bot, ControlPlane, MediaClock, Target

__all__ = ["ReferenceAgent"]

logger = logging.getLogger("voicesim.agent")

#: Bound on leaving every channel at shutdown; the channels leave in parallel.
LEAVE_TIMEOUT_S = 5.0
#: Wait before following users again after a stay that ended on its own.
REJOIN_DELAY_S = 1.0


class _FromTarget(enum.Enum):
    TOKEN = enum.auto()


#: ``voice_ssl_context`` default: the target's own TLS context (its CA file).
FROM_TARGET = _FromTarget.TOKEN


@attrs.define(eq=False)
class _Stay:
    channel: ChannelAgent
    scope: trio.CancelScope
    configured: bool


class ReferenceAgent:
    """The reference agent. Construct it, then run :meth:`run` in a trio nursery.

    ``channels`` are ``(guild_id, voice_channel_id)`` pairs joined at start and kept
    for the whole run. ``fixtures`` holds the reply fixtures (default: voicesim's
    own). ``voice_ssl_context`` verifies the voice gateway's certificate; ``None``
    means plain ``ws://`` voice. ``clock`` is the process's media clock if it
    already has one; otherwise the agent starts and stops its own.
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        target: Target,
        token: str,
        channels: Sequence[tuple[int, int]] = (),
        fixtures: FixtureSet | None = None,
        voice_ssl_context: ssl.SSLContext | _FromTarget | None = FROM_TARGET,
        clock: MediaClock | None = None,
        transcriber: Transcriber | None = None,
        join_timeout: float = 30.0,
    ) -> None:
        guilds = [guild for guild, _ in channels]
        if len(set(guilds)) != len(guilds):
            raise ValueError(
                f"one voice channel per guild, got {list(channels)!r}: a bot user "
                "holds one voice connection per guild"
            )
        self.config = config
        self.target = target
        self._token = token
        self._configured = {int(g): int(c) for g, c in channels}
        self._fixtures = fixtures
        self._voice_ssl_context = (
            target.ssl_context()
            if isinstance(voice_ssl_context, _FromTarget)
            else voice_ssl_context
        )
        self._clock = clock
        self._transcriber = transcriber
        self._join_timeout = join_timeout
        self._stays: dict[int, _Stay] = {}
        # guild -> user -> voice channel, from the voice states seen.
        self._voice_members: dict[int, dict[int, int]] = {}
        self._bot: Bot | None = None
        self._changed = trio.Event()
        # Starts a stay that follows users into a channel; set while voice states
        # are being followed.
        self._follow: Callable[[int, int], None] | None = None
        self._stay_nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        return f"<ReferenceAgent channels={self.channels!r}>"

    @property
    def user_id(self) -> int | None:
        """The agent's user id, once logged in."""
        return None if self._bot is None else self._bot.user_id

    @property
    def channels(self) -> dict[int, int]:
        """The voice channel the agent is in (or joining), by guild."""
        return {guild: stay.channel.channel_id for guild, stay in self._stays.items()}

    def channel_agent(self, guild_id: int) -> ChannelAgent | None:
        """The agent's stay in ``guild_id``'s voice channel, if it has one."""
        stay = self._stays.get(guild_id)
        return None if stay is None else stay.channel

    async def wait_changed(self) -> None:
        """Wait until the agent joins or leaves a channel."""
        await self._changed.wait()

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Log in, join the configured channels, serve until cancelled.

        ``task_status.started()`` is called once the bot is logged in and in every
        configured channel. On cancellation the agent leaves every channel, shielded
        and bounded by :data:`LEAVE_TIMEOUT_S`.

        Raises:
            TransportError: the token was refused or the target cannot be reached.
            VoiceTimeout: logging in or joining a configured channel took too long.
        """
        clock = self._clock
        own_clock = clock is None
        if clock is None:
            clock = MediaClock()
            clock.start()
        try:
            async with (
                open_agent_core(
                    self.config,
                    fixtures=self._fixtures,
                    transcriber=self._transcriber,
                ) as core,
                ControlPlane(self.target) as control,
            ):
                bot = await control.login(self._token)
                self._bot = bot
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(
                            self._follow_voice_states,
                            nursery,
                            core,
                            control,
                            bot,
                            clock,
                        )
                        async with trio.open_nursery() as joins:
                            for guild_id, channel_id in self._configured.items():
                                joins.start_soon(
                                    self._start_stay,
                                    nursery,
                                    core,
                                    control,
                                    bot,
                                    clock,
                                    guild_id,
                                    channel_id,
                                )
                        task_status.started()
                except BaseExceptionGroup as group:
                    error = sole_error(group)
                    if error is None:
                        raise
                    raise error from group
                finally:
                    self._bot = None
        finally:
            if own_clock:
                clock.stop()

    # -- channels ----------------------------------------------------------------------

    async def _start_stay(
        self,
        nursery: trio.Nursery,
        core: AgentCore,
        control: ControlPlane,
        bot: Bot,
        clock: MediaClock,
        guild_id: int,
        channel_id: int,
    ) -> None:
        # Configured channels are joined before run() reports it has started.
        stay = self._new_stay(core, control, bot, clock, guild_id, channel_id, True)
        await nursery.start(self._hold, stay)

    def _new_stay(
        self,
        core: AgentCore,
        control: ControlPlane,
        bot: Bot,
        clock: MediaClock,
        guild_id: int,
        channel_id: int,
        configured: bool,
    ) -> _Stay:
        channel = ChannelAgent(
            core=core,
            control=control,
            bot=bot,
            clock=clock,
            guild_id=guild_id,
            channel_id=channel_id,
            ssl_context=self._voice_ssl_context,
            join_timeout=self._join_timeout,
        )
        stay = _Stay(channel=channel, scope=trio.CancelScope(), configured=configured)
        self._stays[guild_id] = stay
        self._notify()
        return stay

    async def _hold(
        self,
        stay: _Stay,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        channel = stay.channel
        try:
            with stay.scope:
                await channel.run(task_status=task_status)
        except VoiceSimError as exc:
            joined = channel.connection is not None and channel.connection.ready
            if stay.configured and not joined:
                raise
            logger.warning(
                "agent's stay in channel %s of guild %s ended: %s",
                channel.channel_id,
                channel.guild_id,
                exc,
            )
        finally:
            if self._stays.get(channel.guild_id) is stay:
                del self._stays[channel.guild_id]
                self._notify()
                if not stay.configured and self._follow is not None:
                    # Users may have come in while the agent was leaving, or the
                    # connection may have ended under users still there: follow them
                    # again. A stay that ended on its own (not an emptied channel)
                    # waits first, so a channel that keeps refusing the agent is not
                    # retried in a tight loop.
                    delay = 0.0 if stay.scope.cancel_called else REJOIN_DELAY_S
                    self._nursery_for_stays().start_soon(
                        self._rejoin_later, channel.guild_id, delay
                    )

    def _nursery_for_stays(self) -> trio.Nursery:
        assert self._stay_nursery is not None
        return self._stay_nursery

    async def _rejoin_later(self, guild_id: int, delay: float) -> None:
        await trio.sleep(delay)
        members = self._voice_members.get(guild_id, {})
        if guild_id in self._stays or not members or self._follow is None:
            return
        # Where most of the guild's users are.
        channel_id = collections.Counter(members.values()).most_common(1)[0][0]
        self._follow(guild_id, channel_id)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- voice states ------------------------------------------------------------------

    async def _follow_voice_states(
        self,
        nursery: trio.Nursery,
        core: AgentCore,
        control: ControlPlane,
        bot: Bot,
        clock: MediaClock,
    ) -> None:
        def follow(guild_id: int, channel_id: int) -> None:
            # The stay is recorded before the next voice state is read: users
            # joining together must not start a second join in the same guild,
            # which discord.py refuses (one voice connection per guild).
            stay = self._new_stay(
                core, control, bot, clock, guild_id, channel_id, False
            )
            nursery.start_soon(self._hold, stay)

        self._stay_nursery = nursery
        self._follow = follow
        async for data in bot.voice_states:
            update = _parse_voice_state(data)
            if update is None or update[1] == bot.user_id:
                continue
            guild_id, user_id, channel_id = update
            members = self._voice_members.setdefault(guild_id, {})
            previous = members.pop(user_id, None)
            if channel_id is not None:
                members[user_id] = channel_id

            stay = self._stays.get(guild_id)
            if stay is not None and previous == stay.channel.channel_id:
                if channel_id != previous:
                    stay.channel.user_left(user_id)
                if not stay.configured and not self._others_in(guild_id):
                    logger.info(
                        "channel %s in guild %s is empty; leaving",
                        stay.channel.channel_id,
                        guild_id,
                    )
                    stay.scope.cancel()
            elif stay is None and channel_id is not None:
                follow(guild_id, channel_id)

    def _others_in(self, guild_id: int) -> bool:
        stay = self._stays.get(guild_id)
        if stay is None:
            return False
        members = self._voice_members.get(guild_id, {})
        return any(c == stay.channel.channel_id for c in members.values())


def _parse_voice_state(data: Any) -> tuple[int, int, int | None] | None:
    """``(guild_id, user_id, channel_id)`` of a VOICE_STATE_UPDATE, or None if bad."""
    try:
        guild_id = int(data["guild_id"])
        user_id = int(data["user_id"])
        channel = data.get("channel_id")
        channel_id = None if channel is None else int(channel)
    except (KeyError, TypeError, ValueError):
        logger.debug("dropped a malformed voice state")
        return None
    return guild_id, user_id, channel_id
