"""A local, protocol-faithful Discord for voice bots.

The emulator serves what a bot needs to log in, join a voice channel and talk:

- REST (``/api/v10``) over plain HTTP, with Discord's error shapes and the exact
  ``Content-Type: application/json`` discord.py requires;
- the main gateway over plain WebSocket: Hello, heartbeats, Identify (token checked,
  identify budget per application), READY, GUILD_CREATE, Resume, voice state updates,
  MESSAGE_CREATE, member chunks;
- the voice gateway v8 over TLS WebSocket (both bot libraries hard-code ``wss://``;
  the certificate's CA file is in :attr:`EmulatorInfo.ca_file`), with buffered resume,
  only the two AEAD transport modes, and DAVE version 0 unless configured otherwise;
- a UDP relay that answers IP discovery and re-encrypts each packet for every other
  member of the channel, dropping and counting whatever does not belong.

Real discord.py and @discordjs/voice connect to it unchanged; see
:func:`configure_discord_client` for discord.py. The emulator binds 127.0.0.1 unless
told otherwise, and every port is the OS's choice unless given.
"""

from __future__ import annotations

from voicesim.emulator._client import configure_discord_client, emulator_ssl_context
from voicesim.emulator._command import emulator_command
from voicesim.emulator._config import DEFAULT_MODES, EmulatorConfig
from voicesim.emulator._counters import EmulatorCounters
from voicesim.emulator._dave import DaveGroup, DaveGroupFactory
from voicesim.emulator._dave_group import DaveMode
from voicesim.emulator._emulator import Emulator
from voicesim.emulator._info import ChannelInfo, EmulatorInfo, GuildInfo, UserInfo
from voicesim.emulator._world import Channel, ChannelKind, Guild, User, World

__all__ = [
    "DEFAULT_MODES",
    "Channel",
    "ChannelInfo",
    "ChannelKind",
    "DaveGroup",
    "DaveGroupFactory",
    "DaveMode",
    "Emulator",
    "EmulatorConfig",
    "EmulatorCounters",
    "EmulatorInfo",
    "Guild",
    "GuildInfo",
    "User",
    "UserInfo",
    "World",
    "configure_discord_client",
    "emulator_command",
    "emulator_ssl_context",
]
