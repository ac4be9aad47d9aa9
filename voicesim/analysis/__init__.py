"""Reading and judging captures: DataFrames, plots, reports, comparisons.

Imports neither trio nor discord.py, so a notebook can use it without starting either::

    from voicesim import analysis

    capture = analysis.load("capture-2026-12-03T18-40-00")
    capture.summary()["response_latency_ms"]["p95"]
    capture.plot_latency_cdf()
    analysis.write_report(capture, "report.html")
    print(analysis.compare("baseline-capture", capture))
"""

from __future__ import annotations

from voicesim._capture_format import SessionOutcome, TurnOutcome
from voicesim._stats import LatenessHistogram, summarize, summary_rows
from voicesim._thresholds import (
    METRICS,
    Metric,
    Threshold,
    Verdict,
    evaluate,
    parse_threshold,
    parse_thresholds,
)
from voicesim.analysis._capture import Capture, load
from voicesim.analysis._commands import compare_command, report_command
from voicesim.analysis._compare import Comparison, Shift, compare
from voicesim.analysis._plots import (
    plot_jitter_loss,
    plot_latency_cdf,
    plot_latency_over_time,
    plot_send_lateness,
    plot_session_heatmap,
)
from voicesim.analysis._report import write_junit, write_report, write_summary_json

__all__ = [
    "METRICS",
    "Capture",
    "Comparison",
    "LatenessHistogram",
    "Metric",
    "SessionOutcome",
    "Shift",
    "Threshold",
    "TurnOutcome",
    "Verdict",
    "compare",
    "compare_command",
    "evaluate",
    "load",
    "parse_threshold",
    "parse_thresholds",
    "plot_jitter_loss",
    "plot_latency_cdf",
    "plot_latency_over_time",
    "plot_send_lateness",
    "plot_session_heatmap",
    "report_command",
    "summarize",
    "summary_rows",
    "write_junit",
    "write_report",
    "write_summary_json",
]
