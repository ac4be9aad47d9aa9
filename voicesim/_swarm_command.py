"""``python -m voicesim swarm``: parse the settings, run the swarm, write the verdicts.

The command sits at the edge with the other commands because it joins two layers that
never import each other: the engine, which runs the swarm and writes the capture, and
the JSON and JUnit writers of :mod:`voicesim.analysis`, which CI systems read.

Exit codes are those of :mod:`voicesim.cli`: 0 every threshold held, 2 bad usage or
configuration (one line naming the key), 3 the run could not be carried out, 99 a
threshold failed, 130 interrupted. The capture is kept in every case.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import trio

from voicesim._exceptions import ConfigError, VoiceSimError

__all__ = ["swarm_command"]

EXIT_USAGE = 2
EXIT_RUN_FAILED = 3
EXIT_INTERRUPTED = 130

_DESCRIPTION = """\
Run synthetic voice sessions against a Discord voice agent and measure it. With no
target given, an embedded emulator and the reference agent are started in a child
process. Every setting can also come from voicesim.toml, [tool.voicesim] in
pyproject.toml, or a VOICESIM_* variable; flags win.
"""


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line naming the flag, not argparse's usage dump.
        raise _UsageError(message)


def _parser() -> _Parser:
    from voicesim.engine._config import add_swarm_arguments

    parser = _Parser(prog="voicesim swarm", description=_DESCRIPTION)
    add_swarm_arguments(parser)
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log to stderr: -v for one line per session, -vv for protocol detail",
    )
    return parser


def _configure_logging(verbosity: int) -> None:
    # The library never configures logging; the command does, for a person at a
    # terminal. Measurements never go to the log, only to the capture.
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # discord.py logs every gateway event at INFO; one line per session is enough.
    logging.getLogger("discord").setLevel(max(level, logging.WARNING))
    logging.getLogger("discord.gateway").addFilter(_drop_loopback_ack_race)


def _drop_loopback_ack_race(record: logging.LogRecord) -> bool:
    # discord.py's keep-alive thread notes when it sent a heartbeat only after the
    # send completes; on loopback the ACK can be handled before that, and discord.py
    # then warns "Can't keep up ... behind" by a whole heartbeat interval that never
    # happened. A control plane that really falls behind shows as its "heartbeat
    # blocked" warning, which is kept.
    return not str(record.msg).startswith("Can't keep up")


def _is_interrupt(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(KeyboardInterrupt)
        return rest is None
    return isinstance(exc, KeyboardInterrupt)


def _sole_leaf(exc: BaseException) -> BaseException:
    """The one exception inside nested groups of one, or ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _fail(message: str, code: int) -> int:
    print(f"voicesim swarm: {message}", file=sys.stderr)
    return code


def swarm_command(argv: Sequence[str]) -> int:
    """Run ``voicesim swarm``; returns the exit code."""
    from voicesim._thresholds import parse_threshold
    from voicesim.engine._config import config_from_args
    from voicesim.engine._swarm import Swarm

    try:
        args = _parser().parse_args(list(argv))
    except _UsageError as exc:
        return _fail(f"error: {exc}", EXIT_USAGE)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)

    verbosity = args.verbose
    del args.verbose
    try:
        config = config_from_args(args, cwd=Path.cwd(), environ=os.environ)
        for text in config.thresholds:
            parse_threshold(text)
    except ConfigError as exc:
        return _fail(f"error: {exc}", EXIT_USAGE)

    _configure_logging(verbosity)
    swarm = Swarm(config)
    try:
        result = trio.run(swarm.run)
    except BaseException as exc:
        # Ctrl-C and errors may arrive bare or wrapped in a nursery's group.
        if _is_interrupt(exc):
            where = swarm.capture_path
            kept = f"; the capture so far is in {where}" if where is not None else ""
            return _fail(f"interrupted{kept}", EXIT_INTERRUPTED)
        error = _sole_leaf(exc)
        if isinstance(error, ConfigError):
            return _fail(f"error: {error}", EXIT_USAGE)
        if isinstance(error, VoiceSimError):
            return _fail(f"the run could not be carried out: {error}", EXIT_RUN_FAILED)
        raise

    if config.summary_json is not None or config.junit is not None:
        # Imported only when asked for: the report module pulls in matplotlib.
        from voicesim.analysis._report import write_junit, write_summary_json

        try:
            if config.summary_json is not None:
                write_summary_json(result.summary, result.verdicts, config.summary_json)
            if config.junit is not None:
                write_junit(result.verdicts, config.junit)
        except OSError as exc:
            return _fail(f"cannot write {exc.filename}: {exc.strerror}", EXIT_USAGE)

    if config.quiet:
        for verdict in result.verdicts:
            if not verdict.passed:
                print(verdict.describe(), file=sys.stderr)
    return result.exit_code
