"""Thresholds, reports, comparisons and live metrics hold on a capture a real swarm made.

One swarm of three real discord.py users against the embedded emulator and reference
agent (``real_run`` in conftest.py) is shared by most tests; a second one is killed
mid-run to leave a capture cut short.
"""

from __future__ import annotations

import base64
import io
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import matplotlib
import pyarrow.parquet as pq
import pytest
from matplotlib.figure import Figure

from tests.analysis._real_swarm import (
    SwarmRun,
    declared_names,
    run_swarm,
    run_voicesim,
    samples,
)
from voicesim import analysis
from voicesim.analysis import Capture

# The helpers build figures without pyplot; Agg renders them with no display.
matplotlib.use("Agg")

pytestmark = pytest.mark.slow

DASHBOARD = Path(__file__).parents[2] / "examples" / "grafana-dashboard.json"

#: DESIGN.md, "Capture layout": the columns notebooks may rely on.
TURN_COLUMNS = (
    "session", "turn", "fixture", "reference_text", "speech_start_ns", "speech_end_ns",
    "response_start_ns", "response_end_ns", "response_latency_ms", "transcript_text",
    "transcript_ns", "transcript_latency_ms", "word_errors", "reference_words",
    "jitter_ms", "packets_received", "packets_lost", "packets_reordered",
    "packets_duplicated", "barge_in", "barge_in_stop_ms", "outcome",
)  # fmt: skip
SESSION_COLUMNS = (
    "session", "user_id", "guild_id", "channel_id", "join_requested_ns", "joined_ns",
    "left_ns", "outcome", "reason", "frames_sent", "send_lateness_p99_ms",
)  # fmt: skip
PACKET_COLUMNS = ("session", "ssrc", "seq", "rtp_timestamp", "arrival_ns", "bytes")
PERCENTILES = ("min", "p50", "p90", "p95", "p99", "max")

PLOTS: list[tuple[str, Callable[[Capture], Figure]]] = [
    ("plot_latency_cdf", analysis.plot_latency_cdf),
    ("plot_latency_over_time", analysis.plot_latency_over_time),
    ("plot_jitter_loss", analysis.plot_jitter_loss),
    ("plot_send_lateness", analysis.plot_send_lateness),
    ("plot_session_heatmap", analysis.plot_session_heatmap),
]


@pytest.fixture(scope="module")
def capture(real_capture_path: Path) -> Capture:
    """The real capture, loaded."""
    return analysis.load(real_capture_path)


@pytest.fixture(scope="module")
def report(
    real_capture_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[int, Path, str]:
    """Exit code, HTML file and output of ``voicesim report`` on the real capture."""
    directory = tmp_path_factory.mktemp("real-report")
    output = directory / "out" / "report.html"
    done = run_voicesim(
        ["report", str(real_capture_path), "-o", str(output)], cwd=directory
    )
    return done.returncode, output, done.stdout + done.stderr


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory: pytest.TempPathFactory) -> SwarmRun:
    """A swarm sent SIGKILL once its first turns chunk was on disk."""
    directory = tmp_path_factory.mktemp("killed") / "run"
    directory.mkdir()
    return run_swarm(
        directory,
        ["--sessions", "2", "--duration", "60s", "--ramp", "0s", "--quiet",
         "--threshold", "response_latency: p(95) < 60s"],
        kill_after_first_chunk=True,
    )  # fmt: skip


# -- the swarm's own verdicts -------------------------------------------------------------


def test_swarm_exits_99_naming_the_failed_threshold(real_run: SwarmRun) -> None:
    """One threshold of two fails: exit 99, and only that one is reported on stderr."""
    assert real_run.returncode == 99, real_run.stderr

    failures = [line for line in real_run.stderr.splitlines() if "FAIL" in line]
    assert len(failures) == 1
    assert failures[0].startswith("response_latency p(50) = ")
    assert failures[0].endswith("(< 1.0 ms): FAIL")


def test_swarm_writes_summary_json_and_junit(real_run: SwarmRun) -> None:
    """The JSON holds both verdicts; the JUnit file one test case each, one failed."""
    summary = json.loads((real_run.directory / "summary.json").read_text())
    root = ET.parse(real_run.directory / "junit.xml").getroot()

    assert summary["passed"] is False
    assert [(v["threshold"], v["passed"]) for v in summary["thresholds"]] == [
        ("response_latency: p(95) < 60s", True),
        ("response_latency: p(50) < 1ms", False),
    ]
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [
        "response_latency: p(95) < 60s",
        "response_latency: p(50) < 1ms",
    ]
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None and "FAIL" in (failure.get("message") or "")


def test_run_json_holds_verdicts_summary_and_exit_code(
    real_run: SwarmRun, capture: Capture
) -> None:
    """run.json records both verdicts with what was observed, and exit code 99."""
    run = json.loads((real_run.capture / "run.json").read_text())
    latency = run["summary"]["response_latency_ms"]

    assert run["exit_code"] == 99
    assert [(v["threshold"], v["passed"]) for v in run["thresholds"]] == [
        ("response_latency: p(95) < 60s", True),
        ("response_latency: p(50) < 1ms", False),
    ]
    assert run["thresholds"][0]["observed"] == pytest.approx(latency["p95"])
    assert run["thresholds"][1]["observed"] == pytest.approx(latency["p50"])
    for key in ("voicesim_version", "started_at", "clock_anchor", "config", "host"):
        assert run[key], key
    assert [v.passed for v in capture.verdicts] == [True, False]
    # What the generator's pacing thread was granted is on record beside its figures.
    clock = run["summary"]["media_clock"]
    assert clock["scheduling"] in {"realtime", "nice", "normal"}
    assert clock["ticks_behind_max"] >= 0


# -- loading, summary and plots ---------------------------------------------------------


def test_real_capture_loads_complete_with_documented_columns(capture: Capture) -> None:
    """turns, sessions and packets have rows and every documented column."""
    assert capture.complete, capture.incomplete
    assert not capture.warnings
    assert [c for c in TURN_COLUMNS if c not in capture.turns.columns] == []
    assert [c for c in SESSION_COLUMNS if c not in capture.sessions.columns] == []
    assert capture.packets is not None
    assert [c for c in PACKET_COLUMNS if c not in capture.packets.columns] == []

    assert sorted(capture.sessions["session"]) == [0, 1, 2]
    assert len(capture.turns) > 0 and len(capture.packets) > 0
    assert set(capture.turns["session"]) <= set(capture.sessions["session"])
    assert sorted(capture.audio_files()) == [0, 1, 2]


def test_real_latencies_agree_with_the_times_they_come_from(capture: Capture) -> None:
    """Each answered turn's latencies are its arrival times minus its speech end."""
    answered = capture.turns[capture.turns["outcome"] == "answered"]
    assert len(answered) > 0

    response = (answered["response_start_ns"] - answered["speech_end_ns"]) / 1e6
    transcript = (answered["transcript_ns"] - answered["speech_end_ns"]) / 1e6
    assert list(answered["response_latency_ms"]) == pytest.approx(list(response))
    assert list(answered["transcript_latency_ms"].dropna()) == pytest.approx(
        list(transcript.dropna())
    )
    assert (answered["response_latency_ms"] > 0).all()


def test_summary_of_real_capture_matches_what_the_swarm_wrote(
    capture: Capture, real_run: SwarmRun
) -> None:
    """p50..max are ordered, count the answered turns and equal the swarm's summary."""
    summary = capture.summary()
    written = json.loads((real_run.directory / "summary.json").read_text())["summary"]

    for metric in ("response_latency_ms", "transcript_latency_ms", "jitter_ms"):
        figures = summary[metric]
        values = [figures[p] for p in PERCENTILES]
        assert values == sorted(values), metric
        assert figures["count"] == capture.turns[metric].notna().sum()
        for key in ("count", "mean", *PERCENTILES):
            assert figures[key] == pytest.approx(written[metric][key]), (metric, key)


@pytest.mark.parametrize(("name", "plot"), PLOTS)
def test_every_plot_helper_draws_the_real_capture(
    capture: Capture, name: str, plot: Callable[[Capture], Figure]
) -> None:
    """Each helper returns a figure with data drawn, which renders to a PNG."""
    figure = plot(capture)

    assert isinstance(figure, Figure)
    assert any(
        ax.lines or ax.collections or ax.patches or ax.images for ax in figure.axes
    ), name
    png = io.BytesIO()
    figure.savefig(png, format="png")
    assert png.getvalue().startswith(b"\x89PNG")


# -- report, secrets, thresholds after the fact ---------------------------------------------


def test_report_command_writes_one_self_contained_html_file(
    report: tuple[int, Path, str],
) -> None:
    """The report embeds its figures as data URIs and loads nothing from anywhere."""
    code, output, printed = report
    text = output.read_text(encoding="utf-8")

    # The run's own verdicts decide, and one of them failed.
    assert code == 99, printed
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"<(script|link|iframe|object|embed)\b", text)
    assert not re.search(r"url\(", text)
    sources = re.findall(r'src="([^"]*)"', text)
    assert len(sources) == len(PLOTS)
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1]).startswith(b"\x89PNG")
    assert list(output.parent.iterdir()) == [output]


def test_no_bot_token_reaches_capture_report_metrics_or_terminal(
    real_run: SwarmRun, report: tuple[int, Path, str]
) -> None:
    """None of the emulator's bot tokens is in any file, table cell or output."""
    # The embedded target handed its tokens over in its state file while it ran.
    assert len(real_run.tokens) == 4  # three synthetic users and the agent
    _, output, printed = report
    texts = [real_run.stdout, real_run.stderr, printed, *real_run.scrapes]
    blobs = [
        path.read_bytes()
        for path in (*real_run.capture.rglob("*"), *real_run.directory.glob("*.*"))
        if path.is_file()
    ]
    blobs.append(output.read_bytes())
    # Parquet chunks are compressed: read their cells too, not only their bytes.
    for part in real_run.capture.glob("*/part-*.parquet"):
        texts.append(json.dumps(pq.read_table(part).to_pylist(), default=str))

    for token in real_run.tokens:
        # The last part is the secret; the first is only the user id in base64.
        secret = token.rsplit(".", 1)[-1]
        assert not any(secret in text for text in texts)
        assert not any(secret.encode() in blob for blob in blobs)


def test_thresholds_given_to_report_decide_its_exit_code(
    real_capture_path: Path, tmp_path: Path
) -> None:
    """A threshold the real run held exits 0; one it did not, 99."""
    held = run_voicesim(
        ["report", str(real_capture_path), "-o", str(tmp_path / "held.html"),
         "--threshold", "response_latency: p(95) < 60s",
         "--threshold", "failed_sessions: rate < 50%"],
        cwd=tmp_path,
    )  # fmt: skip
    failed = run_voicesim(
        ["report", str(real_capture_path), "-o", str(tmp_path / "failed.html"),
         "--threshold", "transcript_latency: p(95) < 1ms"],
        cwd=tmp_path,
    )  # fmt: skip

    assert held.returncode == 0, held.stderr
    assert "(2 thresholds, 0 failed)" in held.stdout
    assert failed.returncode == 99, failed.stderr
    assert "transcript_latency p(95) = " in failed.stdout
    assert "(1 thresholds, 1 failed)" in failed.stdout


@pytest.mark.parametrize(
    ("threshold", "named"),
    [
        ("latency: p(95) < 1s", "unknown metric 'latency'"),
        ("response_latency: p(95) <", "'response_latency: p(95) <'"),
    ],
)
def test_bad_threshold_exits_2_before_any_swarm_starts(
    tmp_path: Path, threshold: str, named: str
) -> None:
    """One stderr line names the threshold; no capture and no target are made."""
    done = run_voicesim(
        ["swarm", "--sessions", "1", "--quiet", "--capture", str(tmp_path / "c"),
         "--threshold", threshold],
        cwd=tmp_path,
    )  # fmt: skip

    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "threshold" in lines[0] and named in lines[0]
    assert done.stdout == ""
    assert not (tmp_path / "c").exists()
    assert not list((tmp_path / "tmp").glob("voicesim-target-*"))


# -- compare ---------------------------------------------------------------------------


def test_compare_real_capture_with_itself_finds_no_change(
    real_capture_path: Path, tmp_path: Path
) -> None:
    """Comparing a capture with itself exits 0 and reports no regression."""
    done = run_voicesim(
        ["compare", str(real_capture_path), str(real_capture_path)], cwd=tmp_path
    )

    assert done.returncode == 0, done.stderr
    assert "no regression beyond 10% tolerance" in done.stdout
    assert "worse" not in done.stdout


def test_compare_finds_real_capture_with_delayed_answers_worse(
    real_capture_path: Path, delayed_real_capture_path: Path, tmp_path: Path
) -> None:
    """Answers all later than the slowest original one are a regression: exit 99."""
    done = run_voicesim(
        ["compare", str(real_capture_path), str(delayed_real_capture_path)],
        cwd=tmp_path,
    )

    assert done.returncode == 99, done.stderr
    regressions = done.stdout.splitlines()[-1]
    assert regressions.startswith("worse beyond 10% tolerance: response_latency")
    # Only the answer moved: the transcripts arrived when they did.
    assert "transcript_latency" not in regressions


# -- live metrics ---------------------------------------------------------------------


def test_metrics_scraped_during_the_run_show_sessions_and_turns(
    real_run: SwarmRun, capture: Capture
) -> None:
    """While the swarm ran, a scrape showed active sessions, turns and latencies."""
    assert real_run.scrapes, "the metrics endpoint never answered"
    live = [samples(text) for text in real_run.scrapes]
    busy = [
        s
        for s in live
        if s.get("voicesim_active_sessions", 0) > 0
        and s.get("voicesim_turns_total", 0) > 0
        and s.get("voicesim_response_latency_seconds_count", 0) > 0
    ]
    assert busy
    # The media clock's lateness is read live, not only once sessions end.
    assert all(s["voicesim_send_lateness_seconds_count"] > 0 for s in busy)

    last = live[-1]
    answered = int(capture.turns["response_latency_ms"].notna().sum())
    assert 0 < last["voicesim_response_latency_seconds_count"] <= answered
    assert last["voicesim_turns_total"] <= len(capture.turns)
    assert last["voicesim_sessions_started_total"] <= len(capture.sessions)
    assert last["voicesim_send_lateness_seconds_count"] > 0


def test_metrics_served_include_every_name_the_dashboard_queries(
    real_run: SwarmRun,
) -> None:
    """Every voicesim_ series in the Grafana dashboard is served during a real run."""
    queried = set(re.findall(r"\bvoicesim_\w+", DASHBOARD.read_text(encoding="utf-8")))
    served = set().union(*(declared_names(text) for text in real_run.scrapes))

    assert queried
    assert sorted(queried - served) == []


# -- a capture cut short ----------------------------------------------------------------


def test_killed_capture_loads_and_says_what_is_missing(killed_run: SwarmRun) -> None:
    """After SIGKILL the capture loads its flushed turns and flags the missing rest."""
    assert killed_run.returncode == -9
    # The embedded target outlives a killed swarm only until it notices.
    assert killed_run.target_stopped_itself is True
    capture = analysis.load(killed_run.capture)

    assert not capture.complete
    assert any("did not finish" in reason for reason in capture.incomplete)
    assert len(capture.turns) > 0
    # Session rows are written when a session ends, which none did.
    assert len(capture.sessions) == 0
    assert "exit_code" not in capture.run
    # The verdicts it never stored are evaluated from the configured thresholds.
    assert [v.threshold.text for v in capture.verdicts] == [
        "response_latency: p(95) < 60s"
    ]
    assert capture.summary()["turns"]["total"] == len(capture.turns)


def test_report_of_killed_capture_warns_that_it_is_incomplete(
    killed_run: SwarmRun, tmp_path: Path
) -> None:
    """The report command renders the cut capture and warns, on stderr and in the page."""
    done = run_voicesim(
        ["report", str(killed_run.capture), "-o", str(tmp_path / "r.html")],
        cwd=tmp_path,
    )

    assert done.returncode == 0, done.stderr
    assert "warning: run.json has no summary or exit code" in done.stderr
    assert "This capture is incomplete" in (tmp_path / "r.html").read_text()
