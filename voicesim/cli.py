"""The ``python -m voicesim`` command line.

Each subcommand lives with the layer it drives; this module only dispatches, so that
``python -m voicesim report`` never imports trio or discord.py.

Exit codes, shared by every subcommand:

====  ==========================================================================
0     the run completed and every threshold held
2     bad usage or configuration (one line on stderr names the key)
3     the run could not be carried out (for example no session could join, or the
      embedded target did not start)
99    the run completed and a threshold failed, or ``compare`` found a regression
130   interrupted with Ctrl-C; everything written so far is kept
====  ==========================================================================
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

__all__ = ["EXIT_FAILED_THRESHOLD", "EXIT_RUN_FAILED", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_RUN_FAILED = 3
EXIT_FAILED_THRESHOLD = 99
EXIT_INTERRUPTED = 130

_USAGE = """\
usage: python -m voicesim COMMAND [options]

commands:
  swarm      run synthetic voice sessions against an agent and measure it
  emulator   run the local Discord emulator until Ctrl-C
  agent      run the reference voice agent
  report     write an HTML report (and JSON/JUnit) from a capture
  compare    compare two captures and say whether latency regressed

'python -m voicesim COMMAND --help' describes each command.
"""


def _swarm(argv: list[str]) -> int:
    from voicesim._swarm_command import swarm_command

    return swarm_command(argv)


def _emulator(argv: list[str]) -> int:
    from voicesim.emulator._command import emulator_command

    return emulator_command(argv)


def _agent(argv: list[str]) -> int:
    from voicesim.agent._command import agent_command

    return agent_command(argv)


def _report(argv: list[str]) -> int:
    from voicesim.analysis._commands import report_command

    return report_command(argv)


def _compare(argv: list[str]) -> int:
    from voicesim.analysis._commands import compare_command

    return compare_command(argv)


def _target(argv: list[str]) -> int:
    from voicesim._embedded import target_command

    return target_command(argv)


_COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "swarm": _swarm,
    "emulator": _emulator,
    "agent": _agent,
    "report": _report,
    "compare": _compare,
    # Not listed in the usage: the child process that swarm's embedded default starts.
    "embedded-target": _target,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        sys.stdout.write(_USAGE)
        return EXIT_OK if args else EXIT_USAGE
    if args[0] in {"-V", "--version"}:
        from voicesim._version import __version__

        sys.stdout.write(f"voicesim {__version__}\n")
        return EXIT_OK
    command = _COMMANDS.get(args[0])
    if command is None:
        sys.stderr.write(f"voicesim: unknown command {args[0]!r}\n{_USAGE}")
        return EXIT_USAGE
    try:
        return command(args[1:])
    except KeyboardInterrupt:
        sys.stderr.write("voicesim: interrupted\n")
        return EXIT_INTERRUPTED
