"""A real discord.py bot plays into the emulator; a voicesim.protocol peer receives."""

from __future__ import annotations

from tests.emulator._dpy import DpyBot
from tests.emulator._peers import GatewayPeer, VoicePeer, opus_test_frames
from voicesim.emulator import Emulator
from voicesim.protocol._voice_gateway import Speaking

FRAMES = 50  # one second of audio


async def test_discordpy_bot_frames_reach_other_member_in_order(
    emulator: Emulator,
) -> None:
    """Every frame a discord.py bot plays arrives at another member, decrypted, in order."""
    info = emulator.info
    guild = info.guilds[0]
    channel = guild.voice_channels[0]
    frames = opus_test_frames(FRAMES)

    async with GatewayPeer.connect(info, "bot-2") as gateway:
        await gateway.wait_for("GUILD_CREATE", lambda d: d["id"] == str(guild.id))
        grant = await gateway.join_voice(guild.id, channel.id)
        async with VoicePeer.connect(info, grant) as listener:
            bot = DpyBot(info, "bot-1", guild.id, channel.id, frames)
            bot.start()
            await bot.wait(bot.joined)
            assert bot.mode == "aead_xchacha20_poly1305_rtpsize"
            assert bot.ssrc is not None

            # The emulator maps the bot's SSRC to its user for the listener (op 5).
            bot_id = str(info.user("bot-1").id)
            await listener.wait_for(
                Speaking, lambda m: m.user_id == bot_id and m.ssrc == bot.ssrc
            )
            bot.go.set()
            received = await listener.wait_frames(bot.ssrc, FRAMES)
            await bot.wait(bot.finished)
            await bot.join_thread()

            assert received == frames

    counters = emulator.counters
    assert counters.relayed_packets >= FRAMES
    assert counters.dropped_total == 0
