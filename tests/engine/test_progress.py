from __future__ import annotations

import io
from typing import Any

import attrs
import trio
import trio.testing
from rich.console import Console

from voicesim.engine._progress import (
    ProgressDisplay,
    ProgressState,
    render_progress,
    render_summary,
    status_line,
)


def console(*, terminal: bool) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(
        file=buffer, force_terminal=terminal, width=140, color_system=None
    ), buffer


def busy_state() -> ProgressState:
    state = ProgressState(sessions=4, duration_s=60.0)
    for session, s in enumerate(["joined", "speaking", "speaking", "joining"]):
        state.session_state(session, s)
    for latency in (700.0, 800.0, 820.0, 900.0, 1400.0):
        state.turn_done(
            {
                "outcome": "answered",
                "response_latency_ms": latency,
                "jitter_ms": 2.5,
                "packets_received": 199,
                "packets_lost": 1,
            }
        )
    state.turn_done({"outcome": "timeout", "response_latency_ms": None})
    state.session_ended(
        {"session": 3, "outcome": "failed", "reason": "VoiceTimeout: join took 30 s"}
    )
    state.send_lateness_p99_ms = 0.93
    return state


def test_progress_state_counts_sessions_turns_and_errors() -> None:
    """Session states, turn outcomes, packet totals and error reasons add up."""
    state = busy_state()
    assert state.joined == 3
    assert state.count("speaking") == 2
    assert state.sessions_failed == 1
    assert state.turns == 6
    assert state.turn_outcomes == {"answered": 5, "timeout": 1}
    assert state.loss_percent == 0.5
    assert state.errors == {"VoiceTimeout": 1, "turn timeout": 1}


def test_render_progress_shows_the_numbers() -> None:
    """The live panel renders to a plain console and shows each figure."""
    out, buffer = console(terminal=False)
    out.print(render_progress(busy_state(), elapsed_s=12.3))
    text = buffer.getvalue()
    for shown in (
        "12s/60s",
        "3/4 joined",
        "2 speaking",
        "1 failed",
        "6 done",
        "5 answered",
        "1 timed out",
        "p50 820 ms",
        "p95 1.40 s",
        "jitter p50 2.50 ms",
        "loss 0.50 %",
        "p99 0.93 ms",
        "VoiceTimeout 1",
    ):
        assert shown in text, shown


def test_render_progress_empty_state() -> None:
    """Before anything happened the panel shows dashes, not errors."""
    out, buffer = console(terminal=False)
    out.print(render_progress(ProgressState(), elapsed_s=0.0))
    assert "p50 -" in buffer.getvalue()
    assert "errors" in buffer.getvalue()


def test_display_without_terminal_writes_a_line_every_ten_seconds() -> None:
    """Off a TTY, the display writes one status line per ten seconds at most."""
    out, buffer = console(terminal=False)
    display = ProgressDisplay(busy_state(), console=out)
    assert not display.live_mode
    for elapsed in (0.0, 0.25, 3.0, 9.9, 10.0, 15.0, 19.9, 20.5):
        display.refresh(elapsed_s=elapsed)
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("voicesim 0s/60s: sessions 3/4 joined")
    assert lines[1].startswith("voicesim 10s/60s")
    assert "latency p50 820 ms p95 1.40 s" in lines[2]


def test_display_quiet_writes_nothing() -> None:
    """A disabled display stays silent, in a terminal or not."""
    for terminal in (True, False):
        out, buffer = console(terminal=terminal)
        display = ProgressDisplay(busy_state(), console=out, enabled=False)
        display.refresh(elapsed_s=0.0)
        display.refresh(elapsed_s=30.0)
        display.stop()
        assert buffer.getvalue() == ""


def test_display_live_in_terminal_redraws_and_stops() -> None:
    """In a terminal the display draws the live panel and leaves it on stop."""
    out, buffer = console(terminal=True)
    state = busy_state()
    display = ProgressDisplay(state, console=out)
    assert display.live_mode
    display.refresh(elapsed_s=1.0)
    state.turn_done({"outcome": "answered", "response_latency_ms": 5000.0})
    display.refresh(elapsed_s=1.25)
    display.stop()
    display.stop()
    display.refresh(elapsed_s=2.0)  # ignored once stopped
    text = buffer.getvalue()
    assert "7 done" in text
    assert "p99 0.93 ms" in text


async def test_display_run_paces_itself_in_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """run() refreshes on trio's clock and ends cleanly when cancelled."""
    out, buffer = console(terminal=False)
    display = ProgressDisplay(busy_state(), console=out)
    with trio.move_on_after(25):
        await display.run()
    lines = buffer.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "voicesim 0s/60s",
        "voicesim 10s/60s",
        "voicesim 20s/60s",
    ]
    assert display._stopped


SUMMARY: dict[str, Any] = {
    "duration_s": 61.2,
    "sessions": {"total": 8, "failed": 1, "outcomes": {"completed": 7, "failed": 1}},
    "turns": {"total": 120, "answered": 118, "timeouts": 2},
    "response_latency_ms": {
        "count": 118, "mean": 850.0, "min": 600.0, "p50": 820.0, "p90": 1200.0,
        "p95": 1400.0, "p99": 2100.0, "max": 3050.0,
    },
    "jitter_ms": {"count": 118, "mean": 2.1, "p50": 1.9, "p95": 4.4, "p99": 7.0, "max": 9.5},
    "send_lateness_ms": {"count": 30000, "mean": 0.3, "p50": 0.25, "p95": 0.6, "p99": 0.93, "max": 4.0},
    "queue_wait_ms": {"count": 3, "p50": 12.0},
    "wer": {"word_errors": 10, "reference_words": 120, "wer": 10 / 120},
    "packets": {"received": 9990, "lost": 10, "loss_rate": 0.001},
}  # fmt: skip


def test_render_summary_shows_pooled_figures() -> None:
    """The summary table shows percentiles, pooled WER and loss, and the totals."""
    out, buffer = console(terminal=False)
    out.print(render_summary(SUMMARY))
    text = buffer.getvalue()
    for shown in (
        "response latency",
        "820 ms",
        "1.40 s",
        "2.10 s",
        "3.05 s",
        "0.93 ms",
        "30,000",
        "queue wait",
        "12.0 ms",
        "WER (pooled)",
        "8.33 %",
        "10,000",
        "0.10 %",
        "sessions 8 (1 failed)",
        "turns 120 (118 answered, 2 timed out)",
        "duration 61.2 s",
    ):
        assert shown in text, shown


def test_render_summary_tolerates_missing_and_odd_values() -> None:
    """An empty or partly malformed summary renders dashes instead of failing."""
    for summary in (
        {},
        {"response_latency_ms": None, "wer": "n/a", "packets": {"received": None}},
        {"jitter_ms": {"p50": "fast", "max": float("nan")}, "turns": {"total": 3}},
    ):
        out, buffer = console(terminal=False)
        out.print(render_summary(summary))
        assert "response latency" in buffer.getvalue()
        assert "-" in buffer.getvalue()


@attrs.frozen
class FakeVerdict:
    passed: bool
    text: str

    def describe(self) -> str:
        return self.text


def test_print_summary_adds_verdicts_and_capture_path() -> None:
    """print_summary writes the table, each verdict and the capture directory."""
    out, buffer = console(terminal=False)
    display = ProgressDisplay(ProgressState(), console=out, summary_console=out)
    display.print_summary(
        SUMMARY,
        "capture-2026-12-03T18-40-00",
        verdicts=[
            FakeVerdict(True, "response_latency p(95) = 1400 ms (< 1500 ms): pass")
        ],
    )
    text = buffer.getvalue()
    assert "voicesim summary" in text
    assert "(< 1500 ms): pass" in text
    assert "capture: capture-2026-12-03T18-40-00" in text


def test_status_line_is_one_line() -> None:
    """The log line never wraps into several lines."""
    assert "\n" not in status_line(busy_state(), elapsed_s=5.0)
