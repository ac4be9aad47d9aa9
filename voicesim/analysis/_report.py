"""Reports of a capture: one self-contained HTML file, a JSON summary, JUnit XML.

The HTML report loads nothing from anywhere: styles are inline and plots are PNG
images embedded as base64 ``data:`` URIs, so it can be attached to a CI run, mailed or
opened offline and looks the same.
"""

from __future__ import annotations

import base64
import html
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voicesim._capture_format import strip_secrets, write_json_atomic
from voicesim._stats import PERCENTILES, summary_rows
from voicesim._thresholds import Verdict
from voicesim.analysis import _plots

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from voicesim.analysis._capture import Capture

__all__ = ["write_junit", "write_report", "write_summary_json"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.pass { color: #1a7f37; font-weight: bold; } .fail { color: #cf222e; font-weight: bold; }
.warning { background: #fff8c5; border: 1px solid #d4a72c; padding: 0.5em 1em; }
img { max-width: 100%; display: block; margin: 1em 0; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; }
"""

#: (title, plot function) of the figures in the report, in order.
_FIGURES: tuple[tuple[str, Callable[[Capture], Figure]], ...] = (
    ("Latency CDF", _plots.plot_latency_cdf),
    ("Latency over time", _plots.plot_latency_over_time),
    ("Jitter and loss", _plots.plot_jitter_loss),
    ("Send lateness", _plots.plot_send_lateness),
    ("Sessions", _plots.plot_session_heatmap),
)


def _number(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{float(value):.{digits}f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows
    )
    # A key-value table has no column names: an empty header row would show as a bar.
    thead = f"<thead><tr>{head}</tr></thead>" if any(header) else ""
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    # No "Software" entry: the report should carry no URL, not even in PNG metadata.
    figure.savefig(buffer, format="png", dpi=96, metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _facts(capture: Capture) -> str:
    run = capture.run
    host = run.get("host") or {}
    facts = [
        ("capture", capture.name),
        ("started", run.get("started_at")),
        ("finished", run.get("finished_at")),
        ("duration (s)", _number(run.get("duration_s"))),
        ("voicesim", run.get("voicesim_version")),
        (
            "host",
            f"{host.get('hostname', '?')} ({host.get('platform', '?')}, "
            f"Python {host.get('python', '?')}, {host.get('cpu_count', '?')} CPUs)",
        ),
        ("exit code", run.get("exit_code")),
    ]
    return _table(
        ["", ""],
        [
            (html.escape(k), html.escape(str(v if v is not None else "-")))
            for k, v in facts
        ],
    )


def _summary_section(summary: Mapping[str, Any]) -> str:
    sessions, turns = summary["sessions"], summary["turns"]
    counts = [
        ("sessions", sessions["total"]),
        ("peak active sessions", sessions["max_active"]),
        ("failed sessions", sessions["failed"]),
        ("turns", turns["total"]),
        ("answered turns", turns["answered"]),
        ("failed turns", turns["failed"]),
        ("turn timeouts", turns["timeouts"]),
        ("DAVE decrypt failures", sessions["dave_decrypt_failures"]),
    ]
    outcomes = [
        (f"session outcome: {k}", v) for k, v in sessions["outcomes"].items()
    ] + [(f"turn outcome: {k}", v) for k, v in turns["outcomes"].items()]
    count_table = _table(
        ["count", ""], [(html.escape(k), str(v)) for k, v in counts + outcomes]
    )
    rows = []
    for row in summary_rows(dict(summary)):
        if row["metric"].endswith("(pooled)"):
            value = row["mean"]
            rows.append(
                [
                    html.escape(row["metric"]),
                    str(row["count"]),
                    "-" if value is None else f"{value * 100:.2f} %",
                ]
                + ["" for _ in PERCENTILES]
                + [""]
            )
            continue
        rows.append(
            [html.escape(row["metric"]), str(row["count"]), _number(row["mean"])]
            + [_number(row[f"p{p}"]) for p in PERCENTILES]
            + [_number(row["max"])]
        )
    header = ["metric", "n", "mean", *(f"p{p}" for p in PERCENTILES), "max"]
    return count_table + _table(header, rows)


def _verdicts_section(verdicts: Sequence[Verdict]) -> str:
    if not verdicts:
        return "<p>No thresholds were set for this run.</p>"
    rows = []
    for verdict in verdicts:
        status = (
            '<span class="pass">pass</span>'
            if verdict.passed
            else '<span class="fail">FAIL</span>'
        )
        rows.append(
            (
                html.escape(verdict.threshold.text),
                html.escape(verdict.observed_text),
                status,
            )
        )
    return _table(["threshold", "observed", "result"], rows)


def write_report(
    capture: Capture, path: str | Path, *, verdicts: Sequence[Verdict] | None = None
) -> Path:
    """Write one self-contained HTML report of ``capture``; returns its path.

    ``verdicts`` defaults to the capture's own (from run.json).
    """
    path = Path(path)
    verdicts = capture.verdicts if verdicts is None else verdicts
    title = f"voicesim report: {capture.name}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        _facts(capture),
    ]
    if capture.incomplete:
        items = "".join(f"<li>{html.escape(r)}</li>" for r in capture.incomplete)
        parts.append(
            f'<div class="warning"><p>This capture is incomplete:</p><ul>{items}</ul></div>'
        )
    parts += [
        "<h2>Thresholds</h2>",
        _verdicts_section(verdicts),
        "<h2>Summary</h2>",
        "<p>Percentiles are pooled over all turns (and, for send lateness, all frames); "
        "WER and loss are pooled over words and packets.</p>",
        _summary_section(capture.summary()),
    ]
    for heading, plot in _FIGURES:
        figure = plot(capture)
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(
            f'<img alt="{html.escape(heading)}" src="data:image/png;base64,{_png(figure)}">'
        )
    config = json.dumps(strip_secrets(capture.config), indent=2, sort_keys=True)
    parts += [
        "<h2>Configuration</h2>",
        f"<pre>{html.escape(config)}</pre>",
        "</body></html>",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def write_summary_json(
    summary: Mapping[str, Any], verdicts: Sequence[Verdict], path: str | Path
) -> Path:
    """Write ``{"passed", "summary", "thresholds"}`` as JSON for CI and other tools."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        path,
        {
            "passed": all(v.passed for v in verdicts),
            "summary": strip_secrets(summary),
            "thresholds": [v.to_dict() for v in verdicts],
        },
    )
    return path


def write_junit(verdicts: Sequence[Verdict], path: str | Path) -> Path:
    """Write JUnit XML with one test case per threshold, failed when it did not hold."""
    path = Path(path)
    failures = sum(not v.passed for v in verdicts)
    suites = ET.Element("testsuites", tests=str(len(verdicts)), failures=str(failures))
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="voicesim.thresholds",
        tests=str(len(verdicts)),
        failures=str(failures),
        errors="0",
        skipped="0",
    )
    for verdict in verdicts:
        case = ET.SubElement(
            suite,
            "testcase",
            classname="voicesim.thresholds",
            name=verdict.threshold.text,
            time="0",
        )
        if not verdict.passed:
            failure = ET.SubElement(case, "failure", message=verdict.describe())
            failure.text = verdict.describe()
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
    return path
