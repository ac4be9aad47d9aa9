"""The emulator's configuration: one frozen value, checked when it is built."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import attrs

from voicesim._exceptions import ConfigError
from voicesim.emulator._dave import DaveGroupFactory
from voicesim.emulator._dave_group import DaveMode
from voicesim.emulator._world import World
from voicesim.protocol._transport import EncryptionMode

__all__ = ["DEFAULT_MODES", "DaveMode", "EmulatorConfig"]

# AES-GCM first, as real servers list it where the hardware has AES; discord.py, which
# lacks AES-GCM, skips to XChaCha20, so each library gets its own preferred mode.
DEFAULT_MODES: tuple[str, ...] = (
    EncryptionMode.AES256_GCM.value,
    EncryptionMode.XCHACHA20_POLY1305.value,
)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@attrs.frozen(kw_only=True)
class EmulatorConfig:
    """Everything an :class:`~voicesim.emulator.Emulator` needs to start.

    Ports of 0 let the OS choose. ``state_file`` None writes no state file.
    ``dave`` is ``off`` (every client gets ``dave_protocol_version: 0``), ``on`` (DAVE
    with clients that offer it) or ``required`` (4017 for clients that do not, as
    Discord does since March 2026). ``dave_group_factory`` builds a voice channel's
    DAVE group; left None, the emulator's own MLS external sender is used.
    """

    world: World = attrs.field(factory=World.default)
    host: str = "127.0.0.1"
    allow_non_loopback: bool = False
    rest_port: int = 0
    gateway_port: int = 0
    voice_port: int = 0
    udp_port: int = 0
    state_file: Path | None = Path("emulator.json")
    plain_voice: bool = False
    dave: DaveMode = attrs.field(default=DaveMode.OFF, converter=DaveMode)
    dave_group_factory: DaveGroupFactory | None = None
    modes: tuple[str, ...] = DEFAULT_MODES
    gateway_heartbeat_interval_ms: int = 41250
    voice_heartbeat_interval_ms: float = 13750
    # How many replayable voice messages a session keeps for a resume.
    voice_replay_buffer: int = 256
    # How many dispatches a main gateway session keeps for a resume.
    gateway_replay_buffer: int = 4096
    # How long a dropped connection stays resumable, in seconds.
    gateway_resume_timeout: float = 60.0
    voice_resume_timeout: float = 30.0
    max_concurrency: int = 1
    session_start_limit: int = 1000
    cert_dir: Path | None = None

    def __attrs_post_init__(self) -> None:
        if not self.allow_non_loopback and not is_loopback(self.host):
            raise ConfigError(
                "host",
                f"{self.host!r} is not a loopback address; pass --allow-non-loopback "
                "to serve other machines",
            )
        if not self.modes:
            raise ConfigError("modes", "must offer at least one encryption mode")
        for mode in self.modes:
            if mode not in DEFAULT_MODES:
                raise ConfigError(
                    "modes", f"{mode!r} is not one of {', '.join(DEFAULT_MODES)}"
                )
        if len(set(self.modes)) != len(self.modes):
            raise ConfigError("modes", f"lists a mode twice: {self.modes!r}")
        for key, value in (
            ("voice-replay-buffer", self.voice_replay_buffer),
            ("gateway-replay-buffer", self.gateway_replay_buffer),
            ("max-concurrency", self.max_concurrency),
            ("session-start-limit", self.session_start_limit),
            ("gateway-heartbeat-interval", self.gateway_heartbeat_interval_ms),
        ):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(key, f"must be a positive integer, got {value!r}")
        for key, number in (
            ("voice-heartbeat-interval", self.voice_heartbeat_interval_ms),
            ("gateway-resume-timeout", self.gateway_resume_timeout),
            ("voice-resume-timeout", self.voice_resume_timeout),
        ):
            if not number > 0:
                raise ConfigError(key, f"must be positive, got {number!r}")
        for key, port in (
            ("rest-port", self.rest_port),
            ("gateway-port", self.gateway_port),
            ("voice-port", self.voice_port),
            ("udp-port", self.udp_port),
        ):
            if not isinstance(port, int) or not 0 <= port <= 65535:
                raise ConfigError(key, f"must be a port number 0..65535, got {port!r}")
