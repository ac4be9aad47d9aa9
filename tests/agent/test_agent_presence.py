"""The agent with no configured channels follows users in and out of voice."""

from __future__ import annotations

from collections.abc import Callable

import trio

from tests.agent._harness import WAIT_S, World_, running_agent, speaker
from tests.emulator._peers import GatewayPeer
from voicesim.agent import AgentConfig
from voicesim.media import load_fixtures
from voicesim.protocol._gateway import UpdateVoiceState


async def _until(check: Callable[[], bool]) -> None:
    """Wait until ``check()`` holds; the emulator and agent share this trio run."""
    with trio.fail_after(WAIT_S):
        while not check():
            await trio.sleep(0.02)


def _agent_channel(world: World_, guild_id: int) -> int | None:
    """The voice channel the emulator has the agent in, in ``guild_id``."""
    agent_id = world.info.agent_user_id
    assert agent_id is not None
    state = world.emulator.registry.voice_state(guild_id, agent_id)
    return None if state is None else state.channel_id


def _agent_voice_sessions(world: World_) -> list[int]:
    """Guilds of the agent's live voice sessions on the emulator's voice server."""
    agent_id = world.info.agent_user_id
    return sorted(g for g, u in world.emulator.hub.sessions if u == agent_id)


async def test_agent_follows_a_user_in_answers_there_and_leaves_when_alone() -> None:
    """The agent joins a user's channel, answers a turn there and leaves once empty."""
    fixture = load_fixtures().get("timer-twenty")
    config = AgentConfig(stt="none", think="50ms")
    async with running_agent(config, sessions=2, join_all=False) as world:
        guild_1, channel_1 = world.place(0)
        guild_2, channel_2 = world.place(1)
        assert world.agent.channels == {}
        assert _agent_channel(world, guild_1) is None

        async with speaker(world, "user-1", 0) as user:
            await _until(lambda: _agent_channel(world, guild_1) == channel_1)
            assert world.agent.channels == {guild_1: channel_1}

            # The stay must be a working one: the user's turn is answered there.
            speech = await user.say(fixture.frames)
            await user.audible_after(speech.intended_ns(fixture.last_voiced_frame))

            async with speaker(world, "user-2", 1):
                await _until(lambda: _agent_channel(world, guild_2) == channel_2)
                await _until(lambda: _agent_voice_sessions(world) == [guild_1, guild_2])
                assert world.agent.channels == {guild_1: channel_1, guild_2: channel_2}

            # user-2 left guild 2, so the agent leaves it and stays with user-1.
            await _until(lambda: _agent_channel(world, guild_2) is None)
            await _until(lambda: _agent_voice_sessions(world) == [guild_1])
            assert world.agent.channels == {guild_1: channel_1}

        await _until(lambda: _agent_channel(world, guild_1) is None)
        await _until(lambda: _agent_voice_sessions(world) == [])
        assert world.agent.channels == {}


async def test_users_joining_together_get_one_agent_connection_in_their_guild() -> None:
    """Three users joining one channel at once bring the agent in once, not thrice."""
    config = AgentConfig(stt="none")
    names = ["user-1", "user-2", "user-3"]
    async with (
        running_agent(config, sessions=3, per_channel=3, join_all=False) as world,
        GatewayPeer.connect(world.info, "user-1") as first,
        GatewayPeer.connect(world.info, "user-2") as second,
        GatewayPeer.connect(world.info, "user-3") as third,
    ):
        guild_id, channel_id = world.place(0)
        agent_id = str(world.info.agent_user_id)
        peers = [first, second, third]

        # Sent back to back, so the agent sees the voice states in one burst.
        for peer in peers:
            await peer.send(
                UpdateVoiceState(guild_id=guild_id, channel_id=channel_id).to_payload()
            )
        await _until(lambda: _agent_channel(world, guild_id) == channel_id)
        user_ids = {str(world.info.user(name).id) for name in names}
        await first.wait_until(
            lambda: (
                user_ids
                <= {
                    p.d["user_id"]
                    for p in first.dispatches
                    if p.t == "VOICE_STATE_UPDATE" and p.d["channel_id"] is not None
                }
            )
        )
        await _until(lambda: world.agent.channels == {guild_id: channel_id})

        for peer in peers:
            await peer.send(
                UpdateVoiceState(guild_id=guild_id, channel_id=None).to_payload()
            )
        await _until(lambda: _agent_channel(world, guild_id) is None)
        await _until(lambda: world.agent.channels == {})
        await _until(lambda: _agent_voice_sessions(world) == [])
        await first.wait_for(
            "VOICE_STATE_UPDATE",
            lambda d: d["user_id"] == agent_id and d["channel_id"] is None,
        )

        # Every voice state of the agent the guild saw: one join, one leave.
        agent_states = [
            p.d["channel_id"]
            for p in first.dispatches
            if p.t == "VOICE_STATE_UPDATE" and p.d["user_id"] == agent_id
        ]
        assert agent_states == [str(channel_id), None]


async def test_user_arriving_while_the_agent_leaves_brings_it_back() -> None:
    """A join seen while the agent is still leaving the emptied channel is followed."""
    config = AgentConfig(stt="none")
    async with (
        running_agent(config, sessions=2, per_channel=2, join_all=False) as world,
        GatewayPeer.connect(world.info, "user-1") as first,
        GatewayPeer.connect(world.info, "user-2") as second,
    ):
        guild_id, channel_id = world.place(0)
        await first.send(
            UpdateVoiceState(guild_id=guild_id, channel_id=channel_id).to_payload()
        )
        await _until(lambda: world.agent.channels == {guild_id: channel_id})

        # The only user leaves and another arrives straight after, before the
        # agent has finished leaving.
        await first.send(
            UpdateVoiceState(guild_id=guild_id, channel_id=None).to_payload()
        )
        await second.send(
            UpdateVoiceState(guild_id=guild_id, channel_id=channel_id).to_payload()
        )

        agent_id = str(world.info.agent_user_id)
        await second.wait_for(
            "VOICE_STATE_UPDATE",
            lambda d: d["user_id"] == agent_id and d["channel_id"] is None,
        )
        await _until(lambda: _agent_channel(world, guild_id) == channel_id)
        await _until(lambda: _agent_voice_sessions(world) == [guild_id])
        assert world.agent.channels == {guild_id: channel_id}
