"""The HTML report is self-contained; JSON and JUnit outputs carry the verdicts."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from voicesim.analysis import (
    load,
    parse_threshold,
    write_junit,
    write_report,
    write_summary_json,
)


@pytest.fixture(scope="module")
def report_path(capture_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic capture's report, rendered once (rendering takes seconds)."""
    directory = tmp_path_factory.mktemp("report") / "out"
    return write_report(load(capture_path), directory / "report.html")


def test_report_is_one_self_contained_html_file(report_path: Path) -> None:
    """The report embeds its plots and loads nothing from anywhere."""
    path = report_path
    text = path.read_text()

    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"<(script|link|iframe)\b", text)
    sources = re.findall(r'src="([^"]*)"', text)
    assert len(sources) == 5
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1]).startswith(b"\x89PNG")
    assert [f for f in path.parent.iterdir()] == [path]


def test_report_shows_summary_verdicts_and_config_without_secrets(
    capture_path: Path, report_path: Path
) -> None:
    """Summary table, each threshold with its result, and the config minus secrets."""
    capture = load(capture_path)
    text = report_path.read_text()

    assert "response_latency: p(95) &lt; 5s" in text and 'class="pass"' in text
    p95 = capture.summary()["response_latency_ms"]["p95"]
    assert f"{p95:.1f}" in text
    assert "WER (pooled)" in text and "agent_user_id" in text
    assert (
        "secret-token" not in text
        and "hunter2" not in text
        and "bot_tokens" not in text
    )


def test_report_of_incomplete_capture_warns(tmp_path: Path) -> None:
    """A capture cut short says so at the top of its report."""
    from tests.analysis._synthetic_capture import write_synthetic_capture

    write_synthetic_capture(tmp_path / "c", sessions=2, turns=2, close=False).flush()
    text = write_report(load(tmp_path / "c"), tmp_path / "r.html").read_text()
    assert "This capture is incomplete" in text and "did not finish" in text


def test_write_junit_has_one_testcase_per_threshold(
    capture_path: Path, tmp_path: Path
) -> None:
    """Passing thresholds are plain test cases; failing ones carry a failure element."""
    capture = load(capture_path)
    verdicts = capture.evaluate(
        ["response_latency: p(95) < 5s", "response_latency: p(50) < 10ms"]
    )

    root = ET.parse(write_junit(verdicts, tmp_path / "j" / "junit.xml")).getroot()

    suite = root.find("testsuite")
    assert (
        suite is not None and suite.get("tests") == "2" and suite.get("failures") == "1"
    )
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [v.threshold.text for v in verdicts]
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None and "FAIL" in (failure.get("message") or "")


def test_write_summary_json_round_trips(capture_path: Path, tmp_path: Path) -> None:
    """The JSON file holds the summary, every verdict and an overall pass flag."""
    capture = load(capture_path)
    verdicts = capture.evaluate([parse_threshold("wer: rate < 1%")])

    data = json.loads(
        write_summary_json(capture.summary(), verdicts, tmp_path / "s.json").read_text()
    )

    assert data["passed"] is False
    assert data["thresholds"] == [verdicts[0].to_dict()]
    assert data["summary"]["turns"]["total"] == len(capture.turns)
