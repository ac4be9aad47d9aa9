"""Fixtures for the emulator tests: a running emulator on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from voicesim.emulator import Emulator, EmulatorConfig, World


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """An emulator with 2 guilds and 6 users, writing no state file."""
    config = EmulatorConfig(world=World.default(guilds=2, users=6), state_file=None)
    async with Emulator(config) as emu:
        yield emu
