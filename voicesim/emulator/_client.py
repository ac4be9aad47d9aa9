"""Pointing an unmodified discord.py bot at the emulator.

discord.py has no option for another Discord, but it reads two class attributes every
time it builds a request or opens the gateway: ``discord.http.Route.BASE`` and
``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY``. Setting them redirects every
``discord.Client`` in the process. The voice WebSocket is always ``wss://`` and goes
through the client's aiohttp session, so the client must also get a connector whose
SSL context trusts the emulator's CA::

    async def main() -> None:
        kwargs = configure_discord_client(emulator.info)   # inside the running loop
        client = discord.Client(intents=discord.Intents.default(), **kwargs)
        await client.start(token)

The emulator answers op 8 (Request Guild Members), so bots with the members intent
work as they are; ``chunk_guilds_at_startup=False`` saves them the wait all the same.
Only ``AutoShardedClient`` calls ``GET /gateway/bot``; plain ``Client`` goes to
``DEFAULT_GATEWAY`` directly, and READY's ``resume_gateway_url`` keeps resumes local.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from voicesim.emulator._info import EmulatorInfo

__all__ = ["configure_discord_client", "emulator_ssl_context"]


def emulator_ssl_context(info: EmulatorInfo) -> ssl.SSLContext:
    """A client SSL context trusting the system's CAs and the emulator's."""
    context = ssl.create_default_context()
    if info.ca_file is not None:
        context.load_verify_locations(cafile=str(info.ca_file))
    return context


def configure_discord_client(target: EmulatorInfo | Path | str) -> dict[str, Any]:
    """Point discord.py at the emulator; return keyword arguments for ``discord.Client``.

    ``target`` is an :class:`EmulatorInfo` (``emulator.info``) or the path of the state
    file a running emulator wrote. Sets ``discord.http.Route.BASE`` and
    ``DiscordWebSocket.DEFAULT_GATEWAY`` for the whole process and returns
    ``{"connector": aiohttp.TCPConnector(ssl=...)}``. Call it inside the running
    asyncio loop: aiohttp builds connectors only there. One connector serves one
    client; call again for each.
    """
    import aiohttp
    import discord.gateway
    import discord.http
    import yarl

    info = target if isinstance(target, EmulatorInfo) else EmulatorInfo.load(target)
    discord.http.Route.BASE = info.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(info.gateway_url)
    connector = aiohttp.TCPConnector(limit=0, ssl=emulator_ssl_context(info))
    return {"connector": connector}
