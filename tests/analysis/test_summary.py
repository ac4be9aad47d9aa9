"""Summaries pool records across sessions: percentiles, WER, loss, lateness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voicesim.analysis import load, summarize


def test_summary_latency_percentiles_pool_all_turns(capture_path: Path) -> None:
    """p95 is taken over every answered turn, not averaged over sessions' p95s."""
    capture = load(capture_path)
    latencies = capture.turns["response_latency_ms"].dropna().to_numpy()
    summary = capture.summary()["response_latency_ms"]

    assert summary["count"] == latencies.size
    for p in (50, 90, 95, 99):
        assert summary[f"p{p}"] == pytest.approx(np.percentile(latencies, p))
    per_session = capture.turns.groupby("session")["response_latency_ms"].quantile(0.95)
    assert summary["p95"] != pytest.approx(per_session.mean(), rel=1e-3)
    assert summary["max"] == latencies.max()


def test_summary_wer_pools_over_words(capture_path: Path) -> None:
    """WER is the sum of word errors over the sum of reference words."""
    capture = load(capture_path)
    turns = capture.turns[capture.turns["word_errors"].notna()]
    wer = capture.summary()["wer"]

    assert wer["word_errors"] == int(turns["word_errors"].sum())
    assert wer["reference_words"] == int(turns["reference_words"].sum())
    assert wer["wer"] == pytest.approx(
        turns["word_errors"].sum() / turns["reference_words"].sum()
    )
    averaged = (turns["word_errors"] / turns["reference_words"]).mean()
    assert wer["wer"] != pytest.approx(averaged, rel=1e-6)


def test_summary_counts_outcomes_loss_and_lateness(capture_path: Path) -> None:
    """Outcome counts, pooled loss and pooled send lateness agree with the tables."""
    capture = load(capture_path)
    summary = capture.summary()
    turns, sessions = capture.turns, capture.sessions

    assert summary["turns"]["total"] == len(turns)
    assert summary["turns"]["outcomes"] == turns["outcome"].value_counts().to_dict()
    assert summary["turns"]["failed"] == int((turns["outcome"] == "timeout").sum())
    assert summary["sessions"]["outcomes"] == {"completed": 19, "error": 1}
    assert summary["sessions"]["max_active"] == 20
    lost, received = turns["packets_lost"].sum(), turns["packets_received"].sum()
    assert summary["packets"]["loss_rate"] == pytest.approx(lost / (lost + received))
    assert summary["packets"]["captured_rows"] == len(capture.packets)

    lateness = summary["send_lateness_ms"]
    assert lateness["count"] == sessions["frames_sent"].sum()
    assert lateness["max"] == sessions["send_lateness_max_ms"].max()
    assert lateness["mean"] == pytest.approx(
        sessions["send_lateness_sum_ms"].sum() / lateness["count"]
    )
    # Pooled p99 is not the mean of session p99s, and sits within the session range.
    assert (
        sessions["send_lateness_p99_ms"].min()
        <= lateness["p99"]
        <= sessions["send_lateness_p99_ms"].max()
    )


def test_summary_matches_run_json(capture_path: Path) -> None:
    """The summary the run stored equals the one computed from the loaded tables."""
    capture = load(capture_path)
    assert capture.summary()["turns"] == capture.run["summary"]["turns"]
    assert capture.summary()["response_latency_ms"] == pytest.approx(
        capture.run["summary"]["response_latency_ms"]
    )


def test_summary_of_empty_tables_is_json_ready(capture_path: Path) -> None:
    """Empty tables give zero counts and None statistics, never NaN."""
    capture = load(capture_path)
    summary = summarize(capture.turns.iloc[0:0], capture.sessions.iloc[0:0])
    assert summary["turns"]["total"] == 0 and summary["wer"]["wer"] is None
    assert summary["packets"]["loss_rate"] is None and summary["duration_s"] is None
    assert summary["send_lateness_ms"]["p99"] is None
