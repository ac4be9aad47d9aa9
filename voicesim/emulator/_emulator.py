"""The emulator: REST, main gateway, voice gateway and UDP relay in one trio nursery.

Use it as ``async with Emulator(config) as emu:`` or ``await nursery.start(emu.run)``.
Either way, once started, :attr:`Emulator.info` says where everything listens and the
state file (if configured) says the same to other processes.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from types import TracebackType

import trio

from voicesim.emulator._certs import Certificates, make_certificates
from voicesim.emulator._config import DaveMode, EmulatorConfig, is_loopback
from voicesim.emulator._counters import Counters, EmulatorCounters
from voicesim.emulator._dave import default_dave_group_factory
from voicesim.emulator._gateway import MainGateway
from voicesim.emulator._http import serve_http
from voicesim.emulator._info import EmulatorInfo
from voicesim.emulator._registry import Registry
from voicesim.emulator._relay import Relay
from voicesim.emulator._rest import RestApi
from voicesim.emulator._voice_gateway import VoiceGateway
from voicesim.emulator._voice_session import VoiceHub, VoiceSession
from voicesim.emulator._world import World
from voicesim.protocol._voice_gateway import VoiceCloseCode

__all__ = ["Emulator"]

log = logging.getLogger("voicesim.emulator")

_RESUMABLE = VoiceCloseCode.VOICE_SERVER_CRASHED
_LEAVING = (VoiceCloseCode.DISCONNECTED, VoiceCloseCode.CALL_TERMINATED)


class Emulator:
    """A local Discord for bots: see the package docstring."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config if config is not None else EmulatorConfig()
        factory = self.config.dave_group_factory or default_dave_group_factory
        self._counters = Counters()
        self.registry = Registry(
            self.config.world,
            self._counters,
            max_concurrency=self.config.max_concurrency,
            session_start_limit=self.config.session_start_limit,
            gateway_replay_buffer=self.config.gateway_replay_buffer,
        )
        self.relay = Relay(self._counters)
        self.hub = VoiceHub(
            self.relay,
            self._counters,
            replay_buffer=self.config.voice_replay_buffer,
            dave_group_factory=factory
            if self.config.dave is not DaveMode.OFF
            else None,
        )
        self.registry.voice = self.hub
        self._info: EmulatorInfo | None = None
        self._certs: Certificates | None = None
        self._nursery: trio.Nursery | None = None
        self._manager: contextlib.AbstractAsyncContextManager[trio.Nursery] | None = (
            None
        )

    # -- what callers read -------------------------------------------------------------

    @property
    def world(self) -> World:
        return self.config.world

    @property
    def info(self) -> EmulatorInfo:
        if self._info is None:
            raise RuntimeError("the emulator has not started yet")
        return self._info

    @property
    def counters(self) -> EmulatorCounters:
        return self._counters.snapshot()

    # -- running -----------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Emulator] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; ``nursery.start(emu.run)`` returns once all ports are bound."""
        config = self.config
        host = config.host
        public = () if is_loopback(host) else (host,)
        written: Path | None = None
        try:
            if not config.plain_voice:
                self._certs = make_certificates(public, config.cert_dir)
            self.relay.bind(host, config.udp_port)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.relay.run)
                rest_port = await nursery.start(
                    serve_http, RestApi(self.registry), host, config.rest_port
                )
                gateway = MainGateway(
                    self.registry,
                    self._counters,
                    heartbeat_interval_ms=config.gateway_heartbeat_interval_ms,
                    resume_timeout=config.gateway_resume_timeout,
                )
                gateway_port = await nursery.start(
                    gateway.serve, host, config.gateway_port
                )
                voice = VoiceGateway(
                    self.registry,
                    self.hub,
                    self._counters,
                    modes=config.modes,
                    dave=config.dave,
                    heartbeat_interval_ms=config.voice_heartbeat_interval_ms,
                    resume_timeout=config.voice_resume_timeout,
                )
                ssl_context = (
                    None if self._certs is None else self._certs.server_context()
                )
                voice_port = await nursery.start(
                    voice.serve, host, config.voice_port, ssl_context
                )

                # URLs name the host clients should dial: the certificate covers
                # "localhost", and both voice libraries accept it as an endpoint.
                url_host = "127.0.0.1" if is_loopback(host) else host
                voice_host = "localhost" if is_loopback(host) else host
                self.registry.gateway_url = f"ws://{url_host}:{gateway_port}/"
                self.registry.voice_endpoint = f"{voice_host}:{voice_port}"
                self._info = EmulatorInfo.from_world(
                    config.world,
                    api_base=f"http://{url_host}:{rest_port}/api/v10",
                    gateway_url=self.registry.gateway_url,
                    voice_endpoint=self.registry.voice_endpoint,
                    voice_tls=self._certs is not None,
                    udp_host=self.relay.ip,
                    udp_port=self.relay.port,
                    ca_file=None if self._certs is None else self._certs.ca_file,
                    dave=config.dave.value,
                    modes=config.modes,
                )
                if config.state_file is not None:
                    self._info.write(config.state_file)
                    written = config.state_file
                    log.info("emulator state written to %s", written)
                if self._certs is not None:
                    log.info("emulator CA certificate: %s", self._certs.ca_file)
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            self.relay.close()
            if written is not None:
                written.unlink(missing_ok=True)
            if self._certs is not None:
                self._certs.remove()

    async def __aenter__(self) -> Emulator:
        manager = trio.open_nursery()
        nursery = await manager.__aenter__()
        self._manager, self._nursery = manager, nursery
        try:
            await nursery.start(self.run)
        except BaseException as exc:
            nursery.cancel_scope.cancel()
            await manager.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._nursery is not None and self._manager is not None
        self._nursery.cancel_scope.cancel()
        return await self._manager.__aexit__(exc_type, exc, tb)

    # -- fault injection ---------------------------------------------------------------

    def drop_voice_connection(
        self, user_id: int, *, guild_id: int | None = None
    ) -> int:
        """Close the user's voice WebSocket(s) with 4015, keeping the sessions resumable.

        4015 ("voice server crashed") is the close after which discord.py,
        @discordjs/voice and voicesim's client all resume. Messages for the session
        produced meanwhile are kept for the resume. Returns how many were dropped.
        """
        dropped = 0
        for session in self._sessions_of(user_id, guild_id):
            if session.link is not None:
                session.link.close(_RESUMABLE, "Voice server crashed.")
                dropped += 1
        return dropped

    def disconnect_voice(
        self, user_id: int, code: int, *, guild_id: int | None = None, reason: str = ""
    ) -> int:
        """Close the user's voice session(s) with ``code``.

        4015 behaves like :meth:`drop_voice_connection`. 4014 and 4022 mean the user
        was removed from the channel: the voice state goes too, and the guild sees
        VOICE_STATE_UPDATE with no channel. Any other code ends the voice session but
        keeps the voice state, so the client may identify again. Returns the count.
        """
        if code == _RESUMABLE:
            return self.drop_voice_connection(user_id, guild_id=guild_id)
        sessions = self._sessions_of(user_id, guild_id)
        for session in sessions:
            self.hub.end(session, code, reason)
            if code in _LEAVING:
                self.registry.kick_voice(session.guild_id, user_id)
        return len(sessions)

    def _sessions_of(self, user_id: int, guild_id: int | None) -> list[VoiceSession]:
        return [
            s
            for (g, u), s in list(self.hub.sessions.items())
            if u == user_id and (guild_id is None or g == guild_id)
        ]
