"""`voicesim report` and `voicesim compare`: files written, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voicesim.analysis import compare_command, report_command


def test_report_command_writes_report_summary_and_junit(
    capture_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """All outputs are written and exit 0 when the run's thresholds held."""
    code = report_command(
        [str(capture_path), "-o", str(tmp_path / "r.html"),
         "--summary-json", str(tmp_path / "s.json"), "--junit", str(tmp_path / "j.xml")]
    )  # fmt: skip

    assert code == 0
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert json.loads((tmp_path / "s.json").read_text())["passed"] is True
    assert "<testsuite" in (tmp_path / "j.xml").read_text()
    out = capsys.readouterr().out
    assert "response_latency p(95) = " in out and f"wrote {tmp_path / 'r.html'}" in out


def test_report_command_exits_99_when_a_threshold_fails(
    capture_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Thresholds given on the command line replace the run's and decide the exit code."""
    code = report_command(
        [str(capture_path), "-o", str(tmp_path / "r.html"), "--junit", str(tmp_path / "j.xml"),
         "--threshold", "response_latency: p(50) < 10ms", "--threshold", "wer: rate < 90%"]
    )  # fmt: skip

    assert code == 99
    assert "1 failed" in capsys.readouterr().out
    assert 'failures="1"' in (tmp_path / "j.xml").read_text()


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        ([], "the following arguments are required: capture"),
        (
            ["{capture}", "--threshold", "latency: p(95) < 1s"],
            "unknown metric 'latency'",
        ),
        (["{tmp}/nowhere"], "is not a capture directory"),
        (["{capture}", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_report_command_usage_errors_exit_2_with_one_line(
    capture_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    named: str,
) -> None:
    """Bad usage prints exactly one line naming the problem and exits 2."""
    args = [a.format(capture=capture_path, tmp=tmp_path) for a in argv]
    assert report_command(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("voicesim report: error: ")
        and named in lines[0]
    )


def test_compare_command_same_capture_exits_0(
    capture_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Comparing a capture with itself exits 0 and prints the table."""
    assert compare_command([str(capture_path), str(capture_path)]) == 0
    assert "no regression beyond 10% tolerance" in capsys.readouterr().out


def test_compare_command_worse_beyond_tolerance_exits_99(
    capture_path: Path, slower_capture_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """300 ms slower responses exit 99; a 60 % tolerance accepts them."""
    assert (
        compare_command(
            [str(capture_path), str(slower_capture_path), "--tolerance", "10%"]
        )
        == 99
    )
    assert "worse beyond 10% tolerance" in capsys.readouterr().out
    assert (
        compare_command(
            [str(capture_path), str(slower_capture_path), "--tolerance", "0.6"]
        )
        == 0
    )


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["{capture}"], "the following arguments are required: new"),
        (["{capture}", "{capture}", "--tolerance", "ten"], "'ten' is not a fraction"),
        (
            ["{capture}", "{capture}", "--confidence", "100%"],
            "confidence must be between",
        ),
        (["{capture}", "{tmp}"], "is not a capture directory"),
    ],
)
def test_compare_command_usage_errors_exit_2_with_one_line(
    capture_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    named: str,
) -> None:
    """Bad usage prints exactly one line naming the problem and exits 2."""
    args = [a.format(capture=capture_path, tmp=tmp_path) for a in argv]
    assert compare_command(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("voicesim compare: error: ")
        and named in lines[0]
    )
