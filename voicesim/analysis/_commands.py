"""``python -m voicesim report`` and ``python -m voicesim compare``.

Exit codes follow the swarm's: 0 when everything holds, 99 when a threshold fails or
the new capture is worse beyond the tolerance, 2 for a usage error (printed as one
line naming the problem).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from voicesim._exceptions import ConfigError
from voicesim._thresholds import parse_thresholds
from voicesim.analysis._capture import load
from voicesim.analysis._compare import compare
from voicesim.analysis._report import write_junit, write_report, write_summary_json

__all__ = ["compare_command", "report_command"]

EXIT_OK, EXIT_USAGE, EXIT_FAILED = 0, 2, 99


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """An argument parser that raises instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _usage(command: str, problem: object) -> int:
    print(f"voicesim {command}: error: {problem}", file=sys.stderr)
    return EXIT_USAGE


def _fraction(text: str) -> float:
    """``10%`` or ``0.1`` -> 0.1."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a fraction like 10% or 0.1"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def _report_parser() -> _Parser:
    parser = _Parser(
        prog="voicesim report",
        description="Write a self-contained HTML report of a capture and check thresholds.",
    )
    parser.add_argument("capture", type=Path, help="capture directory")
    parser.add_argument(
        "-o", "--output", type=Path, help="HTML file (default: CAPTURE/report.html)"
    )
    parser.add_argument(
        "--summary-json", type=Path, help="also write the summary and verdicts as JSON"
    )
    parser.add_argument(
        "--junit", type=Path, help="also write the verdicts as JUnit XML"
    )
    parser.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="T",
        help="threshold to evaluate instead of the run's own, e.g. "
        "'response_latency: p(95) < 1500ms' (repeatable)",
    )
    return parser


def report_command(argv: Sequence[str]) -> int:
    """Run ``voicesim report``; returns the exit code."""
    try:
        args = _report_parser().parse_args(list(argv))
        thresholds = [t for text in args.threshold for t in parse_thresholds(text)]
        capture = load(args.capture)
    except (_UsageError, ConfigError) as exc:
        return _usage("report", exc)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)

    verdicts = capture.evaluate(thresholds) if thresholds else capture.verdicts
    output = args.output or capture.path / "report.html"
    try:
        write_report(capture, output, verdicts=verdicts)
        if args.summary_json:
            write_summary_json(capture.summary(), verdicts, args.summary_json)
        if args.junit:
            write_junit(verdicts, args.junit)
    except OSError as exc:
        return _usage("report", f"cannot write {exc.filename}: {exc.strerror}")

    failed = [v for v in verdicts if not v.passed]
    for reason in capture.incomplete:
        print(f"warning: {reason}", file=sys.stderr)
    for verdict in verdicts:
        print(verdict.describe())
    print(
        f"wrote {output} ({len(verdicts)} thresholds, {len(failed)} failed)"
        if verdicts
        else f"wrote {output}"
    )
    return EXIT_FAILED if failed else EXIT_OK


def _compare_parser() -> _Parser:
    parser = _Parser(
        prog="voicesim compare",
        description="Tell whether latency changed between two captures, with a bootstrap CI.",
    )
    parser.add_argument("base", type=Path, help="baseline capture directory")
    parser.add_argument("new", type=Path, help="new capture directory")
    parser.add_argument(
        "--tolerance",
        type=_fraction,
        default=0.10,
        help="relative worsening accepted, e.g. 10%% (default)",
    )
    parser.add_argument(
        "--confidence",
        type=_fraction,
        default=0.95,
        help="confidence of the intervals (default 95%%)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="bootstrap seed (default 0)"
    )
    return parser


def compare_command(argv: Sequence[str]) -> int:
    """Run ``voicesim compare``; returns the exit code (99 when worse beyond tolerance)."""
    try:
        args = _compare_parser().parse_args(list(argv))
        if not 0.0 < args.confidence < 1.0:
            raise _UsageError(
                f"confidence must be between 0% and 100%, not {args.confidence:g}"
            )
        base, new = load(args.base), load(args.new)
    except (_UsageError, ConfigError) as exc:
        return _usage("compare", exc)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)

    for capture in (base, new):
        for reason in capture.incomplete:
            print(f"warning: {capture.name}: {reason}", file=sys.stderr)
    result = compare(
        base, new, tolerance=args.tolerance, confidence=args.confidence, seed=args.seed
    )
    print(result.format())
    return result.exit_code
