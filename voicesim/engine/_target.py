"""Where the swarm's sessions go: a real target, a running emulator, or the embedded one.

The embedded default runs the emulator and the reference agent in a **child process**
(``python -m voicesim embedded-target``), so the target never shares the generator's
interpreter, GIL or CPU accounting. The child writes a state file once the emulator
listens and the agent has logged in; the parent reads its URLs, tokens and channels
from it, and at the end sends SIGINT and waits, so the agent leaves its channels
cleanly. The engine never imports the emulator or the agent: the process boundary is
the layer boundary.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import trio

from voicesim._exceptions import ConfigError, TransportError, VoiceTimeout
from voicesim.engine._config import SwarmConfig

__all__ = ["TargetSpec", "read_emulator_state", "resolve_target"]


@attrs.frozen(kw_only=True)
class TargetSpec:
    """A resolved target: endpoints, one token per session, and channels to join."""

    api_base: str | None
    gateway_url: str | None
    ca_file: Path | None
    tokens: tuple[str, ...] = attrs.field(repr=False)
    placements: tuple[tuple[int, int], ...]  # (guild_id, voice channel_id)
    agent_user_id: int | None
    plain_voice: bool = False
    local: bool = False


def read_emulator_state(path: Path, *, key: str = "emulator_state") -> TargetSpec:
    """Build a target from an emulator's state file.

    Every user but the agent becomes a synthetic user; every guild's first voice
    channel is a place to talk.
    """
    try:
        state = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError:
        raise ConfigError(
            key, f"{path} is not an emulator state file (bad JSON)"
        ) from None
    try:
        agent_id = state.get("agent_user_id")
        agent = int(agent_id) if agent_id is not None else None
        tokens = tuple(
            str(user["token"]) for user in state["users"] if int(user["id"]) != agent
        )
        placements = tuple(
            (int(guild["id"]), int(guild["voice_channels"][0]["id"]))
            for guild in state["guilds"]
            if guild.get("voice_channels")
        )
        ca_file = state.get("ca_file")
        return TargetSpec(
            api_base=str(state["api_base"]),
            gateway_url=str(state["gateway_url"]),
            ca_file=Path(ca_file) if ca_file else None,
            tokens=tokens,
            placements=placements,
            agent_user_id=agent,
            plain_voice=bool(state.get("plain_voice", False)),
            local=True,
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ConfigError(
            key, f"{path} lacks a field an emulator state has: {exc}"
        ) from None


def _target_from_config(config: SwarmConfig) -> TargetSpec:
    tokens = config.tokens()
    if not tokens:
        raise ConfigError(
            "tokens_file", "wanted one bot token a line for a real target"
        )
    if not config.channels:
        raise ConfigError("channel", "wanted at least one voice channel id")
    guilds = list(config.guilds)
    if len(guilds) == 1 and len(config.channels) > 1:
        guilds = guilds * len(config.channels)
    if len(guilds) != len(config.channels):
        raise ConfigError(
            "guild", "wanted one guild id per channel id (or a single guild)"
        )
    return TargetSpec(
        api_base=config.api_base,
        gateway_url=config.gateway_url,
        ca_file=Path(config.ca_file) if config.ca_file else None,
        tokens=tuple(tokens),
        placements=tuple(zip(guilds, config.channels, strict=True)),
        agent_user_id=config.agent_user_id,
    )


@contextlib.asynccontextmanager
async def resolve_target(
    config: SwarmConfig, given: TargetSpec | None
) -> AsyncIterator[TargetSpec]:
    """Yield the target the config names, starting the embedded one if needed."""
    if given is not None:
        yield given
    elif config.emulator_state is not None:
        yield read_emulator_state(Path(config.emulator_state))
    elif config.api_base is not None or config.tokens_file is not None:
        yield _target_from_config(config)
    else:
        async with embedded_target(config) as target:
            yield target


@contextlib.asynccontextmanager
async def embedded_target(
    config: SwarmConfig, *, start_timeout: float = 90.0
) -> AsyncIterator[TargetSpec]:
    """Run the emulator and the reference agent in a child process."""
    sessions = config.sessions
    per_channel = config.per_channel
    with tempfile.TemporaryDirectory(prefix="voicesim-target-") as tmp:
        state_file = Path(tmp) / "emulator.json"
        log_path = Path(tmp) / "target.log"
        command = [
            sys.executable,
            "-m",
            "voicesim",
            "embedded-target",
            "--state-file",
            str(state_file),
            "--sessions",
            str(sessions),
            "--per-channel",
            str(per_channel),
            "--dave",
            config.dave,
            *config.agent_args,
        ]
        with open(log_path, "wb") as log_file:
            process = await trio.lowlevel.open_process(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # Its own process group: a Ctrl-C in the terminal reaches the swarm,
                # which then stops the child in order instead of both dying at once.
                start_new_session=True,
            )
        try:
            with trio.move_on_after(start_timeout) as scope:
                while not _ready(state_file):
                    if process.poll() is not None:
                        raise TransportError(
                            "the embedded target exited during start-up:\n"
                            + _tail(log_path)
                        )
                    await trio.sleep(0.1)
            if scope.cancelled_caught:
                raise VoiceTimeout(
                    f"the embedded target did not start within {start_timeout:g} s:\n"
                    + _tail(log_path)
                )
            yield read_emulator_state(state_file)
        finally:
            with trio.CancelScope(shield=True):
                await _stop(process)


def _ready(state_file: Path) -> bool:
    try:
        state: Any = json.loads(state_file.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return bool(state.get("agent_ready"))


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def _stop(process: trio.Process) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGINT)
    with trio.move_on_after(10):
        await process.wait()
        return
    process.kill()
    await process.wait()
