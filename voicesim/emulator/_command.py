"""``python -m voicesim emulator``: run the emulator until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import NoReturn

import trio

from voicesim._exceptions import ConfigError
from voicesim.emulator._config import EmulatorConfig
from voicesim.emulator._dave_group import DaveMode
from voicesim.emulator._emulator import Emulator
from voicesim.emulator._world import World

__all__ = ["emulator_command"]

_PROG = "voicesim emulator"


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line naming the flag, not argparse's usage dump.
        raise _UsageError(message)


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(text)
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


_port.__name__ = "port"
_count.__name__ = "positive int"


def _parser() -> _Parser:
    p = _Parser(
        prog=_PROG, description="Run a local, protocol-faithful Discord for bots."
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)"
    )
    p.add_argument(
        "--allow-non-loopback",
        action="store_true",
        help="allow --host to be an address other machines can reach",
    )
    p.add_argument(
        "--rest-port", type=_port, default=0, help="REST port (default: any)"
    )
    p.add_argument("--gateway-port", type=_port, default=0, help="main gateway port")
    p.add_argument("--voice-port", type=_port, default=0, help="voice gateway port")
    p.add_argument("--udp-port", type=_port, default=0, help="UDP media port")
    p.add_argument(
        "--state-file",
        type=Path,
        default=Path("emulator.json"),
        help="where to write endpoints and tokens (default emulator.json)",
    )
    p.add_argument("--world", type=Path, help="TOML file describing guilds and users")
    p.add_argument("--guilds", type=_count, help="number of guilds (default 4)")
    p.add_argument("--users", type=_count, help="number of bot users (default 8)")
    p.add_argument(
        "--plain-voice",
        action="store_true",
        help="serve the voice gateway as ws:// instead of wss://",
    )
    p.add_argument(
        "--dave",
        choices=[m.value for m in DaveMode],
        default=DaveMode.OFF.value,
        help="DAVE end-to-end encryption: off, on, or required (default off)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    return p


def _config(args: argparse.Namespace) -> EmulatorConfig:
    if args.world is not None:
        if args.guilds is not None or args.users is not None:
            raise ConfigError("world", "cannot be combined with --guilds or --users")
        world = World.from_toml(args.world)
    else:
        world = World.default(guilds=args.guilds or 4, users=args.users or 8)
    return EmulatorConfig(
        world=world,
        host=args.host,
        allow_non_loopback=args.allow_non_loopback,
        rest_port=args.rest_port,
        gateway_port=args.gateway_port,
        voice_port=args.voice_port,
        udp_port=args.udp_port,
        state_file=args.state_file,
        plain_voice=args.plain_voice,
        dave=DaveMode(args.dave),
    )


async def _serve(emulator: Emulator) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(emulator.run)
        info = emulator.info
        scheme = "wss" if info.voice_tls else "ws"
        lines = [
            f"voicesim emulator: {len(info.users)} users, {len(info.guilds)} guilds",
            f"  REST      {info.api_base}",
            f"  gateway   {info.gateway_url}",
            f"  voice     {scheme}://{info.voice_endpoint}",
            f"  UDP       {info.udp_host}:{info.udp_port}",
        ]
        if info.ca_file is not None:
            lines.append(f"  CA file   {info.ca_file}")
        if emulator.config.state_file is not None:
            lines.append(
                f"  state     {emulator.config.state_file} (holds the bot tokens)"
            )
        lines.append("Ctrl-C stops it.")
        print("\n".join(lines), flush=True)


def emulator_command(argv: list[str]) -> int:
    """Run the emulator with command-line ``argv``; returns the exit code."""
    try:
        args = _parser().parse_args(argv)
        config = _config(args)
        emulator = Emulator(config)
    except _UsageError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        # ConfigError keys are the flag names ("host", "rest-port", "guilds"...).
        print(f"{_PROG}: --{exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        # --help
        return exc.code if isinstance(exc.code, int) else 0

    if args.verbose:
        logging.basicConfig(level=logging.DEBUG)
    try:
        trio.run(_serve, emulator)
    except KeyboardInterrupt:
        return 0
    except BaseExceptionGroup as group:
        # Ctrl-C that landed inside a nursery arrives wrapped in a group.
        _, rest = group.split(KeyboardInterrupt)
        if rest is not None:
            raise
        return 0
    except OSError as exc:
        print(f"{_PROG}: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0
