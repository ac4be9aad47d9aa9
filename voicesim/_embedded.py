"""The embedded default target: the emulator and the reference agent in one process.

``python -m voicesim swarm`` with no target starts this module in a child process
(``python -m voicesim embedded-target``, not listed in the usage), so the agent's
transcription never shares the generator's interpreter, GIL or CPU accounting. The
child sizes the emulator's world to the swarm, logs the agent in, joins it to every
voice channel, and only then writes the state file, with ``agent_ready`` set: the
parent waits for that key, so its first session never speaks to an empty channel.

SIGINT or SIGTERM stop the child in order: the agent leaves its channels, then the
emulator closes, then the state file (which holds tokens) is removed. The child runs
in a session of its own, out of reach of a terminal's Ctrl-C, so it also stops the
same way when its parent is gone (a swarm killed with SIGKILL never signals it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import trio

from voicesim._exceptions import ConfigError, VoiceSimError

__all__ = ["run_embedded_target", "target_command"]

log = logging.getLogger("voicesim.embedded")

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_FAILED = 3


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _parser() -> _Parser:
    parser = _Parser(prog="voicesim embedded-target", add_help=False)
    parser.add_argument("--state-file", type=Path, required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--per-channel", type=int, default=1)
    parser.add_argument("--dave", choices=("off", "on", "required"), default="off")
    return parser


async def run_embedded_target(
    *,
    state_file: Path,
    sessions: int,
    per_channel: int,
    dave: str,
    agent_argv: Sequence[str],
    task_status: trio.TaskStatus[dict[str, Any]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the emulator and the agent until cancelled.

    The state file is written once the agent is in every voice channel; the value
    passed to ``task_status.started`` is what it holds.
    """
    from voicesim.agent import ReferenceAgent
    from voicesim.agent._command import agent_config_from_argv
    from voicesim.emulator import Emulator, EmulatorConfig, World
    from voicesim.voice import Target

    agent_config = agent_config_from_argv(list(agent_argv))
    world = World.sized_for(sessions=sessions, per_channel=per_channel)
    config = EmulatorConfig(world=world, state_file=None, dave=dave)
    async with Emulator(config) as emulator, trio.open_nursery() as nursery:
        info = emulator.info
        agent_id = info.agent_user_id
        token = next(u.token for u in info.users if u.id == agent_id)
        channels = [
            (guild.id, guild.voice_channels[0].id)
            for guild in info.guilds
            if guild.voice_channels
        ]
        target = Target(
            api_base=info.api_base,
            gateway_url=info.gateway_url,
            ca_file=info.ca_file,
            guild_ready_timeout=0.2,
        )
        agent = ReferenceAgent(
            agent_config, target=target, token=token, channels=channels
        )
        await nursery.start(agent.run)

        state = info.to_json() | {"agent_ready": True, "plain_voice": False}
        _write_private(state_file, state)
        log.info("embedded target ready: %d voice channels", len(channels))
        task_status.started(state)
        try:
            await trio.sleep_forever()
        finally:
            state_file.unlink(missing_ok=True)


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically, readable by the owner only: it holds bot tokens."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


async def _stop_when_orphaned(scope: trio.CancelScope, parent: int) -> None:
    # A dead parent's children are handed to another process (init, or a
    # subreaper), so the parent pid changing is the sign; polling it costs nothing.
    while os.getppid() == parent:
        await trio.sleep(0.5)
    log.warning("the swarm that started this target is gone; stopping")
    scope.cancel()


async def _serve_until_signalled(
    args: argparse.Namespace, agent_argv: list[str]
) -> None:
    parent = os.getppid()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_when_orphaned, nursery.cancel_scope, parent)
            await nursery.start(
                lambda task_status: run_embedded_target(
                    state_file=args.state_file,
                    sessions=args.sessions,
                    per_channel=args.per_channel,
                    dave=args.dave,
                    agent_argv=agent_argv,
                    task_status=task_status,
                )
            )
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def target_command(argv: Sequence[str]) -> int:
    """Run the embedded target until SIGINT or SIGTERM; returns the exit code."""
    try:
        args, agent_argv = _parser().parse_known_args(list(argv))
        if args.sessions < 1 or args.per_channel < 1:
            raise _UsageError("--sessions and --per-channel must be at least 1")
    except _UsageError as exc:
        print(f"voicesim embedded-target: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("discord").setLevel(logging.WARNING)
    try:
        trio.run(_serve_until_signalled, args, agent_argv)
    except ConfigError as exc:
        print(f"voicesim embedded-target: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except VoiceSimError as exc:
        print(f"voicesim embedded-target: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
