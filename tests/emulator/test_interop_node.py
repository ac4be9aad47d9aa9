"""A real @discordjs/voice bot (Node) against the emulator, without DAVE.

The Node bot joins through ``joinVoiceChannel`` and its adapter hook over the
emulator's main gateway, exactly as a discord.js bot would, and then plays into the
channel or receives from it. The other side is a voicesim.protocol peer or a real
discord.py bot, so every payload crosses two independent implementations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from tests.emulator._dpy import DpyBot
from tests.emulator._node import NodePeer, skip_without_node
from tests.emulator._peers import GatewayPeer, VoicePeer, opus_test_frames
from voicesim.emulator import DEFAULT_MODES, Emulator, EmulatorConfig, World
from voicesim.protocol._voice_gateway import Speaking

pytestmark = [pytest.mark.node, skip_without_node]

FRAMES = 50  # one second of audio
SILENCE = b"\xf8\xff\xfe"
XCHACHA = "aead_xchacha20_poly1305_rtpsize"


@asynccontextmanager
async def _emulator(modes: tuple[str, ...]) -> AsyncIterator[Emulator]:
    config = EmulatorConfig(
        world=World.default(guilds=1, users=4), state_file=None, modes=modes
    )
    async with Emulator(config) as emu:
        yield emu


@pytest.mark.parametrize(
    "modes",
    [DEFAULT_MODES, (XCHACHA,)],
    ids=["aes256-gcm", "xchacha20-poly1305"],
)
async def test_node_bot_frames_reach_other_member_in_order(
    modes: tuple[str, ...],
) -> None:
    """Every frame an @discordjs/voice bot plays arrives at another member, in order."""
    frames = opus_test_frames(FRAMES)
    async with _emulator(modes) as emulator:
        info = emulator.info
        guild = info.guilds[0]
        channel = guild.voice_channels[0]
        async with GatewayPeer.connect(info, "bot-2") as gateway:
            grant = await gateway.join_voice(guild.id, channel.id)
            async with (
                VoicePeer.connect(info, grant, mode=XCHACHA) as listener,
                NodePeer.start(info, "bot-1") as bot,
            ):
                joined = await bot.join(guild.id, channel.id, dave=False)
                # @discordjs/voice takes the first mode the server lists that it has.
                assert joined["mode"] == modes[0]
                assert joined["dave_protocol_version"] == 0

                played = await bot.play(frames)
                assert played["frames"] == FRAMES

                # The emulator maps the bot's SSRC to its user for the listener (op 5).
                await listener.wait_for(
                    Speaking,
                    lambda m: m.user_id == bot.user_id and m.ssrc == joined["ssrc"],
                )
                # Silence frames follow the resource: the library pads its end with
                # them (five are prepared; the player goes idle before the last).
                await listener.wait_frames(joined["ssrc"], FRAMES + 1)
                stream = [p for p in listener.received if p.ssrc == joined["ssrc"]]
                received = [p.payload for p in stream]
                assert received[:FRAMES] == frames
                assert set(received[FRAMES:]) == {SILENCE}
                seqs = [p.seq for p in stream]
                assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]
                assert not bot.errors()

        counters = emulator.counters
        assert counters.relayed_packets >= FRAMES + 1
        assert counters.dropped_total == 0


async def test_node_bot_receives_discordpy_frames_in_order(
    emulator: Emulator,
) -> None:
    """An @discordjs/voice receiver gets exactly the frames a discord.py bot plays."""
    info = emulator.info
    guild = info.guilds[0]
    channel = guild.voice_channels[0]
    frames = opus_test_frames(FRAMES)

    async with NodePeer.start(info, "bot-2") as listener:
        await listener.join(guild.id, channel.id, dave=False, self_deaf=False)
        speaker_id = info.user("bot-1").id
        await listener.subscribe(speaker_id)

        bot = DpyBot(info, "bot-1", guild.id, channel.id, frames)
        bot.start()
        await bot.wait(bot.joined)
        ssrc = bot.ssrc
        assert ssrc is not None
        # @discordjs/voice drops packets of SSRCs it has not mapped, so wait for the
        # op 5 that discord.py's speaking 0 after connecting makes the emulator send.
        await listener.wait_until(
            lambda: listener.speakers.get(ssrc) == str(speaker_id)
        )
        bot.go.set()
        received = await listener.wait_packets(speaker_id, FRAMES)
        await bot.wait(bot.finished)
        await bot.join_thread()

        assert received == frames
        trailing = listener.packets[str(speaker_id)][FRAMES:]
        assert all(p == SILENCE for p in trailing)
        assert not listener.errors()

    counters = emulator.counters
    assert counters.relayed_packets >= FRAMES
    assert counters.dropped_total == 0
