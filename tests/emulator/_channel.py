"""Putting a peer into a voice channel: main gateway login, op 4, then the voice side."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tests.emulator._peers import GatewayPeer, VoiceGrant, VoicePeer
from voicesim.emulator import EmulatorInfo


@asynccontextmanager
async def granted(
    info: EmulatorInfo, name: str, guild_index: int = 0
) -> AsyncIterator[tuple[GatewayPeer, VoiceGrant]]:
    """A logged-in main gateway peer that has joined the guild's first voice channel."""
    guild = info.guilds[guild_index]
    async with GatewayPeer.connect(info, name) as gateway:
        grant = await gateway.join_voice(guild.id, guild.voice_channels[0].id)
        yield gateway, grant


@asynccontextmanager
async def in_voice(
    info: EmulatorInfo, name: str, guild_index: int = 0, **voice: Any
) -> AsyncIterator[VoicePeer]:
    """A voice peer, handshake done (unless ``handshake=False``), in the first channel."""
    async with (
        granted(info, name, guild_index) as (_, grant),
        VoicePeer.connect(info, grant, **voice) as peer,
    ):
        yield peer
