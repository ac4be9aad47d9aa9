"""Interop with the installed discord.py's main gateway code.

discord.py's ``DiscordWebSocket`` builds its payloads in coroutines that only await an
uncontended lock and the socket's ``send_str``; with a recording socket they finish on
their first step, so they run here without an event loop and voicesim decodes what
discord.py would send.
"""

from __future__ import annotations

import types
from collections.abc import Coroutine
from typing import Any

import discord
import pytest
from discord import utils
from discord.gateway import DiscordWebSocket, KeepAliveHandler

from voicesim.protocol._gateway import (
    GatewayHeartbeat,
    GatewayIdentify,
    GatewayOp,
    GatewayPayload,
    GatewayResume,
    UpdateVoiceState,
    decode_gateway_payload,
)

GUILD_ID = 41771983423143937
CHANNEL_ID = 127121515262115840


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends, and return its result."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise AssertionError("the coroutine waited on something; the fakes are incomplete")


class RecordingSocket:
    """Stands in for aiohttp's websocket: keeps every frame discord.py sends."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_str(self, data: str) -> None:
        self.sent.append(data)


async def _no_hooks(*args: Any, **kwargs: Any) -> None:
    return None


@pytest.fixture
def dpy_ws() -> DiscordWebSocket:
    """discord.py's main gateway websocket over a recording socket, after READY."""
    socket: Any = RecordingSocket()
    loop: Any = None
    ws = DiscordWebSocket(socket, loop=loop)
    ws.token = "bot-token"
    ws.shard_id = None
    ws.shard_count = None
    ws.session_id = "sess"
    ws.sequence = 1337
    ws._initial_identify = True
    ws.call_hooks = _no_hooks
    intents = discord.Intents.none()
    intents.guilds = True
    intents.voice_states = True
    connection: Any = types.SimpleNamespace(
        _activity=None, _status=None, _intents=intents
    )
    ws._connection = connection
    return ws


def _sent(ws: DiscordWebSocket) -> GatewayPayload:
    socket: Any = ws.socket
    sent = socket.sent
    assert len(sent) == 1
    return decode_gateway_payload(sent[0])


@pytest.mark.parametrize("channel_id", [CHANNEL_ID, None])
def test_discordpy_voice_state_decodes(
    dpy_ws: DiscordWebSocket, channel_id: int | None
) -> None:
    """discord.py's op 4 (integer ids, or a null channel to leave) decodes."""
    run_sync(dpy_ws.voice_state(GUILD_ID, channel_id, self_mute=True))
    payload = _sent(dpy_ws)
    assert payload.op == GatewayOp.VOICE_STATE_UPDATE
    assert payload.d["guild_id"] == GUILD_ID  # discord.py sends integers
    assert UpdateVoiceState.from_payload(payload.d) == UpdateVoiceState(
        guild_id=GUILD_ID, channel_id=channel_id, self_mute=True
    )


def test_discordpy_identify_decodes(dpy_ws: DiscordWebSocket) -> None:
    """discord.py's Identify decodes with compress, large_threshold and intents 129."""
    run_sync(dpy_ws.identify())
    payload = _sent(dpy_ws)
    assert payload.op == GatewayOp.IDENTIFY
    identify = GatewayIdentify.from_payload(payload.d)
    assert identify.token == "bot-token"
    assert identify.intents == 129
    assert identify.compress is True
    assert identify.large_threshold == 250
    assert identify.properties["browser"] == "discord.py"
    assert identify.shard is None


def test_discordpy_resume_decodes(dpy_ws: DiscordWebSocket) -> None:
    """discord.py's Resume carries its session and last sequence number."""
    run_sync(dpy_ws.resume())
    payload = _sent(dpy_ws)
    assert GatewayResume.from_payload(payload.d) == GatewayResume(
        token="bot-token", session_id="sess", seq=1337
    )


def test_discordpy_heartbeat_decodes(dpy_ws: DiscordWebSocket) -> None:
    """discord.py's heartbeat is op 1 with its last sequence number."""
    handler: Any = types.SimpleNamespace(ws=dpy_ws)
    beat = KeepAliveHandler.get_payload(handler)
    payload = decode_gateway_payload(utils._to_json(beat))
    assert payload.op == GatewayOp.HEARTBEAT
    assert GatewayHeartbeat.from_payload(payload.d) == GatewayHeartbeat(seq=1337)
