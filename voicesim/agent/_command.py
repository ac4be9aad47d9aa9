"""``python -m voicesim agent``: run the reference agent until Ctrl-C.

The target is a running emulator (``--emulator-state``, the file it writes) or any
Discord-compatible service including Discord itself (``--api-base``,
``--gateway-url``, ``--token-file``, ``--ca-file``; with none of them, real Discord).
The agent's settings are flags named after the :class:`AgentConfig` keys. The token
is read from a file or from ``VOICESIM_AGENT_TOKEN`` and never printed.
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

import attrs
import trio

from voicesim._exceptions import ConfigError, VoiceSimError
from voicesim.agent._agent import ReferenceAgent
from voicesim.agent._channel import sole_error
from voicesim.agent._config import AgentConfig
from voicesim.voice import Target

__all__ = ["agent_command", "agent_config_from_argv"]

log = logging.getLogger("voicesim.agent.command")

_PROG = "voicesim agent"
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_INTERRUPTED = 130
TOKEN_ENV = "VOICESIM_AGENT_TOKEN"

# Flag -> (AgentConfig key, how the text becomes the value). Durations and the
# think distribution stay text: AgentConfig parses them and names its key.
_SETTINGS: dict[str, tuple[str, str]] = {
    "--stt": ("stt", "text"),
    "--stt-workers": ("stt_workers", "int"),
    "--stt-streams-per-worker": ("stt_streams_per_worker", "int"),
    "--end-silence": ("end_silence", "text"),
    "--vad-on-dbfs": ("vad_on_dbfs", "float"),
    "--vad-off-dbfs": ("vad_off_dbfs", "float"),
    "--vad-attack": ("vad_attack", "text"),
    "--think": ("think", "text"),
    "--reply": ("reply", "text"),
    "--barge-in": ("barge_in", "text"),
    "--barge-in-threshold": ("barge_in_threshold", "text"),
    "--max-utterance": ("max_utterance", "text"),
    "--calibration-delay": ("calibration_delay", "text"),
    "--timeline": ("timeline_path", "text"),
    "--seed": ("seed", "int"),
}

_HELP = {
    "--stt": "speech recogniser: pocketsphinx or none",
    "--stt-workers": "transcription worker processes (default: one per CPU)",
    "--stt-streams-per-worker": "utterances one worker decodes at once (default 8)",
    "--end-silence": "silence that ends an utterance (default 700ms)",
    "--vad-on-dbfs": "level that can start speech (default -40)",
    "--vad-off-dbfs": "level speech continues above (default -50)",
    "--vad-attack": "sound needed before it counts as speech (default 40ms)",
    "--think": "think time, a duration or distribution (default 300ms)",
    "--reply": "what to answer: fixtures or echo",
    "--barge-in": "when talked over: stop or none",
    "--barge-in-threshold": "overlap that counts as an interruption (default 300ms)",
    "--max-utterance": "longest utterance; longer speech is cut (default 30s)",
    "--calibration-delay": "calibration mode: answer exactly this long after speech",
    "--timeline": "file to append one JSON line per turn to",
    "--seed": "seed of the think-time draws",
}


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line naming the flag, not argparse's usage dump.
        raise _UsageError(message)


def _add_settings(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("agent settings")
    for flag, (key, _) in _SETTINGS.items():
        group.add_argument(flag, dest=key, metavar="VALUE", help=_HELP[flag])


def _settings_parser() -> _Parser:
    parser = _Parser(prog=_PROG, add_help=False)
    _add_settings(parser)
    return parser


def _parser() -> _Parser:
    p = _Parser(prog=_PROG, description="Run voicesim's reference voice agent.")
    target = p.add_argument_group("target")
    target.add_argument(
        "--emulator-state",
        type=Path,
        metavar="FILE",
        help="a running emulator's state file (endpoints, CA file, tokens)",
    )
    target.add_argument(
        "--as-user",
        metavar="NAME",
        help="with --emulator-state: log in as this user (default: the agent user)",
    )
    target.add_argument("--api-base", metavar="URL", help="REST base URL")
    target.add_argument("--gateway-url", metavar="URL", help="main gateway URL")
    target.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help=f"file holding the bot token (default: ${TOKEN_ENV})",
    )
    target.add_argument(
        "--ca-file", type=Path, metavar="FILE", help="CA of the voice gateway's TLS"
    )
    target.add_argument(
        "--plain-voice",
        action="store_true",
        help="voice gateway over ws:// (an emulator run with --plain-voice)",
    )
    target.add_argument(
        "--channel",
        action="append",
        default=[],
        metavar="GUILD:CHANNEL",
        help="voice channel to join at start and stay in (repeatable)",
    )
    _add_settings(p)
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    return p


def _config_from(namespace: argparse.Namespace) -> AgentConfig:
    values: dict[str, Any] = {}
    for key, kind in _SETTINGS.values():
        text = getattr(namespace, key)
        if text is None:
            continue
        if kind == "int":
            try:
                values[key] = int(text)
            except ValueError:
                raise ConfigError(key, f"wanted a whole number, not {text!r}") from None
        elif kind == "float":
            try:
                values[key] = float(text)
            except ValueError:
                raise ConfigError(key, f"wanted a number, not {text!r}") from None
        else:
            values[key] = text
    return AgentConfig.from_mapping(values)


def agent_config_from_argv(argv: Sequence[str]) -> AgentConfig:
    """Build an :class:`AgentConfig` from agent setting flags only.

    Raises:
        ConfigError: an unknown flag or a bad value, naming it.
    """
    try:
        namespace = _settings_parser().parse_args(list(argv))
    except _UsageError as exc:
        raise ConfigError("agent_args", str(exc)) from None
    return _config_from(namespace)


@attrs.frozen(kw_only=True)
class _Plan:
    target: Target
    token: str = attrs.field(repr=False)
    channels: tuple[tuple[int, int], ...]
    plain_voice: bool


def _channel(text: str) -> tuple[int, int]:
    guild, sep, channel = text.partition(":")
    try:
        if not sep:
            raise ValueError(text)
        return int(guild), int(channel)
    except ValueError:
        raise ConfigError(
            "channel", f"wanted GUILD:CHANNEL (two ids), not {text!r}"
        ) from None


def _read_token(path: Path | None) -> str:
    if path is not None:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                "token_file", f"cannot read {path}: {exc.strerror}"
            ) from None
        if not token:
            raise ConfigError("token_file", f"{path} is empty")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ConfigError(
            "token_file", f"give --token-file or set {TOKEN_ENV} (or --emulator-state)"
        )
    return token


def _from_state(path: Path, as_user: str | None) -> tuple[Target, str, bool]:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            "emulator_state", f"cannot read {path}: {exc.strerror}"
        ) from None
    except json.JSONDecodeError:
        raise ConfigError("emulator_state", f"{path} is not JSON") from None
    try:
        users = [
            (int(u["id"]), str(u["name"]), str(u["token"])) for u in state["users"]
        ]
        agent_id = state.get("agent_user_id")
        if as_user is not None:
            chosen = [u for u in users if u[1] == as_user]
        else:
            chosen = [
                u for u in users if agent_id is not None and u[0] == int(agent_id)
            ]
            chosen = chosen or [u for u in users if u[1] == "agent"]
        ca_file = state.get("ca_file")
        target = Target(
            api_base=str(state["api_base"]),
            gateway_url=str(state["gateway_url"]),
            ca_file=Path(ca_file) if ca_file else None,
            guild_ready_timeout=0.2,
        )
        plain_voice = state.get("voice_tls") is False
    except (KeyError, TypeError, ValueError):
        raise ConfigError(
            "emulator_state", f"{path} is not an emulator state file"
        ) from None
    if not chosen:
        wanted = repr(as_user) if as_user is not None else "the agent user"
        raise ConfigError("emulator_state", f"{path} has no user {wanted}")
    return target, chosen[0][2], plain_voice


def _plan(args: argparse.Namespace) -> _Plan:
    channels = tuple(_channel(text) for text in args.channel)
    if len({g for g, _ in channels}) != len(channels):
        raise ConfigError("channel", "one voice channel per guild")
    if args.emulator_state is not None:
        if args.api_base or args.gateway_url or args.token_file:
            raise ConfigError(
                "emulator_state",
                "cannot be combined with --api-base, --gateway-url or --token-file",
            )
        target, token, plain = _from_state(args.emulator_state, args.as_user)
        return _Plan(
            target=target,
            token=token,
            channels=channels,
            plain_voice=plain or args.plain_voice,
        )
    if args.as_user is not None:
        raise ConfigError("as_user", "only with --emulator-state")
    target = Target(
        api_base=args.api_base,
        gateway_url=args.gateway_url,
        ca_file=args.ca_file,
    )
    return _Plan(
        target=target,
        token=_read_token(args.token_file),
        channels=channels,
        plain_voice=args.plain_voice,
    )


async def _serve(plan: _Plan, config: AgentConfig) -> int:
    agent = ReferenceAgent(
        config,
        target=plan.target,
        token=plan.token,
        channels=plan.channels,
        voice_ssl_context=None if plan.plain_voice else plan.target.ssl_context(),
    )
    received: list[int] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

        async def stop_on_signal(scope: trio.CancelScope) -> None:
            async for signum in signals:
                received.append(signum)
                log.info("stopping: leaving every channel")
                scope.cancel()
                return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_on_signal, nursery.cancel_scope)
            await nursery.start(agent.run)
            log.info(
                "agent %s logged in; in %d voice channels; Ctrl-C stops it",
                agent.user_id,
                len(agent.channels),
            )
    if received and received[0] == signal.SIGINT:
        return EXIT_INTERRUPTED
    return EXIT_OK


def agent_command(argv: list[str]) -> int:
    """Run the agent with command-line ``argv``; returns the exit code."""
    try:
        args = _parser().parse_args(argv)
        config = _config_from(args)
        plan = _plan(args)
    except (_UsageError, ConfigError) as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return trio.run(_serve, plan, config)
    except KeyboardInterrupt:
        # Ctrl-C before the signal receiver was installed or after it closed.
        return EXIT_INTERRUPTED
    except VoiceSimError as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED
    except BaseExceptionGroup as group:
        _, rest = group.split(KeyboardInterrupt)
        if rest is None:
            return EXIT_INTERRUPTED
        error = sole_error(group)
        if error is None:
            raise
        print(f"{_PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE if isinstance(error, ConfigError) else EXIT_FAILED
