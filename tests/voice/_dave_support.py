"""Shared pieces of the DAVE tests: an emulator with DAVE, and voicesim members.

A :class:`Member` is one synthetic user as voicesim runs it: a bot logged in over the
emulator's main gateway (the small :class:`GatewayPeer` of the emulator tests), and a
real :class:`voicesim.voice.VoiceConnection` on the credentials it gets. Every frame
the connection hands on is kept per sending user, and every payload it received is
kept as the relay delivered it (after transport decryption, before DAVE).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import trio

from tests.emulator._peers import GatewayPeer, opus_test_frames
from voicesim.emulator import (
    DaveMode,
    Emulator,
    EmulatorConfig,
    EmulatorInfo,
    World,
    emulator_ssl_context,
)
from voicesim.emulator._dave import default_dave_group_factory
from voicesim.emulator._dave_group import DaveGroup
from voicesim.protocol import UpdateVoiceState
from voicesim.voice import MediaClock, ReceivedFrame, VoiceConnection, VoiceCredentials

__all__ = [
    "DaveEmulator",
    "Member",
    "dave_emulator",
    "opus_test_frames",
    "wait_until",
]

TIMEOUT = 20.0


class DaveEmulator:
    """A running emulator and the DAVE groups it made, one per voice channel."""

    def __init__(self, emulator: Emulator, groups: list[DaveGroup]) -> None:
        self.emulator = emulator
        self.groups = groups

    @property
    def info(self) -> EmulatorInfo:
        return self.emulator.info

    def group(self) -> DaveGroup:
        assert len(self.groups) == 1, self.groups
        return self.groups[0]


@asynccontextmanager
async def dave_emulator(
    mode: DaveMode = DaveMode.ON, *, users: int = 6
) -> AsyncIterator[DaveEmulator]:
    """An emulator with one guild and DAVE in ``mode``, recording its groups."""
    groups: list[DaveGroup] = []

    def factory(guild_id: int, channel_id: int) -> DaveGroup:
        group = default_dave_group_factory(guild_id, channel_id)
        assert isinstance(group, DaveGroup)
        groups.append(group)
        return group

    config = EmulatorConfig(
        world=World.default(guilds=1, users=users),
        state_file=None,
        dave=mode,
        dave_group_factory=factory,
    )
    async with Emulator(config) as emulator:
        yield DaveEmulator(emulator, groups)


async def wait_until(check: Callable[[], object], timeout: float = TIMEOUT) -> None:
    """Poll ``check`` until it is true (the state lives in other tasks and threads)."""
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.01)


class Member:
    """One voicesim user in the channel; see the module docstring."""

    def __init__(self, name: str, user_id: int) -> None:
        self.name = name
        self.user_id = user_id
        self.frames: dict[int, list[bytes]] = defaultdict(list)
        self.arrivals: dict[int, list[int]] = defaultdict(list)
        self.raw: dict[int, list[bytes]] = defaultdict(list)
        self.connection: VoiceConnection | None = None
        self.closed: BaseException | None = None
        self._gateway: GatewayPeer | None = None
        self._guild_id = 0

    @property
    def voice(self) -> VoiceConnection:
        assert self.connection is not None
        return self.connection

    def _on_frame(self, frame: ReceivedFrame) -> None:
        if frame.user_id is not None:
            self.frames[frame.user_id].append(frame.payload)
            self.arrivals[frame.user_id].append(frame.arrival_ns)

    def _on_raw(self, ssrc: int, payload: bytes) -> None:
        self.raw[ssrc].append(payload)

    def speech_from(self, user_id: int) -> list[bytes]:
        """What arrived from ``user_id``, without the silence frames."""
        return [f for f in self.frames[user_id] if f != b"\xf8\xff\xfe"]

    @classmethod
    @asynccontextmanager
    async def join(
        cls,
        nursery: trio.Nursery,
        info: EmulatorInfo,
        clock: MediaClock,
        name: str,
        *,
        max_dave_protocol_version: int = 1,
    ) -> AsyncIterator[Member]:
        """Log in, join the first voice channel, and run a voice connection."""
        guild = info.guilds[0]
        channel = guild.voice_channels[0]
        member = cls(name, info.user(name).id)
        async with AsyncExitStack() as stack:
            gateway = await stack.enter_async_context(GatewayPeer.connect(info, name))
            await gateway.wait_for("GUILD_CREATE", lambda d: d["id"] == str(guild.id))
            grant = await gateway.join_voice(guild.id, channel.id)
            member._gateway = gateway
            member._guild_id = guild.id
            credentials = VoiceCredentials(
                user_id=grant.user_id,
                guild_id=grant.guild_id,
                channel_id=grant.channel_id,
                session_id=grant.session_id,
                token=grant.token,
                endpoint=grant.endpoint,
            )
            member.connection = VoiceConnection(
                credentials,
                clock=clock,
                on_frame=member._on_frame,
                ssl_context=emulator_ssl_context(info) if info.voice_tls else None,
                max_dave_protocol_version=max_dave_protocol_version,
                on_dave_payload=member._on_raw,
            )
            done = trio.Event()

            async def run() -> None:
                try:
                    await member.voice.run()
                except BaseException as exc:
                    member.closed = exc
                finally:
                    done.set()

            nursery.start_soon(run)
            with trio.fail_after(TIMEOUT):
                while not member.voice.ready and not done.is_set():
                    await trio.sleep(0.01)
            try:
                yield member
            finally:
                await member.leave()
                with trio.fail_after(TIMEOUT):
                    await done.wait()

    async def leave(self) -> None:
        """Leave the channel the way a bot does: voice state, then close the socket."""
        if self._gateway is not None and self._gateway.closed is None:
            await self._gateway.send(
                UpdateVoiceState(guild_id=self._guild_id, channel_id=None).to_payload()
            )
            self._gateway = None
        if self.connection is not None:
            await self.connection.close()
