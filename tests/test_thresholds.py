"""Tests of k6-style thresholds: parsing, errors that name the problem, evaluation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicesim._exceptions import ConfigError
from voicesim._stats import LatenessHistogram
from voicesim._thresholds import (
    METRICS,
    Verdict,
    evaluate,
    parse_threshold,
    parse_thresholds,
)


def turns_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A turns table with the columns thresholds read, defaults filled in."""
    defaults = {
        "session": 0, "response_latency_ms": np.nan, "transcript_latency_ms": np.nan,
        "jitter_ms": np.nan, "barge_in_stop_ms": np.nan, "word_errors": np.nan,
        "reference_words": np.nan, "packets_received": 0, "packets_lost": 0,
        "packets_reordered": 0, "packets_duplicated": 0, "outcome": "answered",
    }  # fmt: skip
    return pd.DataFrame([defaults | row for row in rows], columns=list(defaults))


def sessions_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A sessions table with the columns thresholds read, defaults filled in."""
    defaults = {
        "session": 0, "join_time_ms": np.nan, "outcome": "completed",
        "dave_decrypt_failures": 0, "send_lateness_hist": None,
        "send_lateness_sum_ms": 0.0, "send_lateness_max_ms": np.nan,
    }  # fmt: skip
    return pd.DataFrame([defaults | row for row in rows], columns=list(defaults))


@pytest.mark.parametrize(
    ("text", "metric", "aggregate", "percentile", "op", "value"),
    [
        (
            "response_latency: p(95) < 1500ms",
            "response_latency",
            "p(95)",
            95.0,
            "<",
            1500.0,
        ),
        (
            "response_latency:p(99.9)<=2s",
            "response_latency",
            "p(99.9)",
            99.9,
            "<=",
            2000.0,
        ),
        (
            "transcript_latency: med != 1200",
            "transcript_latency",
            "med",
            50.0,
            "!=",
            1200.0,
        ),
        ("jitter: avg >= 0.5", "jitter", "avg", None, ">=", 0.5),
        ("wer: rate < 15%", "wer", "rate", None, "<", 0.15),
        ("loss: rate > 0.01", "loss", "rate", None, ">", 0.01),
        ("failed_sessions: count == 0", "failed_sessions", "count", None, "==", 0.0),
        ("send_lateness: p(99) < 2ms", "send_lateness", "p(99)", 99.0, "<", 2.0),
        ("join_time: max < 1.5e3", "join_time", "max", None, "<", 1500.0),
    ],
)
def test_parse_threshold_reads_every_part(
    text: str,
    metric: str,
    aggregate: str,
    percentile: float | None,
    op: str,
    value: float,
) -> None:
    """Metric, aggregate, operator and value (converted to the metric's unit) are parsed."""
    threshold = parse_threshold(text)
    assert (threshold.metric, threshold.aggregate, threshold.percentile, threshold.op) == (
        metric, aggregate, percentile, op,
    )  # fmt: skip
    assert threshold.value == pytest.approx(value)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("resp_latency: p(95) < 1500ms", "unknown metric 'resp_latency'"),
        ("response_latency: p95 < 1500ms", "unknown aggregate 'p95'"),
        ("response_latency: p(101) < 1500ms", "percentile 'p(101)'"),
        ("response_latency: p(95) 1500ms", "no comparison operator"),
        ("response_latency: p(95) < fast", "value 'fast'"),
        ("response_latency: p(95) < 15%", "unit '%' does not fit a value in ms"),
        ("wer: rate < 10ms", "unit 'ms' does not fit a value in ratio"),
        ("wer: avg < 10%", "WER pools over words"),
        ("loss: p(95) < 1%", "aggregate 'p(95)' does not fit loss"),
        ("failed_turns: count < 5%", "unit '%' does not fit a value in count"),
        ("response latency p95 under 1.5 s", "is not 'metric: aggregate op value'"),
    ],
)
def test_parse_threshold_error_names_the_bad_part(text: str, named: str) -> None:
    """A bad threshold raises ConfigError(key='threshold') whose message names the problem."""
    with pytest.raises(ConfigError) as info:
        parse_threshold(text)
    assert info.value.key == "threshold"
    assert named in str(info.value)


def test_parse_threshold_unknown_metric_lists_the_known_ones() -> None:
    """The message for an unknown metric lists every metric it could have meant."""
    with pytest.raises(ConfigError) as info:
        parse_threshold("latency: p(95) < 1s")
    for name in METRICS:
        assert name in str(info.value)


def test_parse_thresholds_accepts_lists_and_k6_tables() -> None:
    """A list of texts and a metric -> expression(s) table parse to the same thresholds."""
    texts = parse_thresholds(["response_latency: p(95) < 1500ms", "wer: rate < 15%"])
    table = parse_thresholds(
        {"response_latency": ["p(95) < 1500ms"], "wer": "rate < 15%"}
    )
    assert texts == table
    assert [str(t) for t in texts] == [
        "response_latency: p(95) < 1500ms",
        "wer: rate < 15%",
    ]


def test_metrics_registry_describes_each_metric() -> None:
    """Every metric names its source, unit and the aggregates it accepts."""
    for name, metric in METRICS.items():
        assert metric.name == name
        assert metric.source and metric.description and metric.aggregates
        assert metric.unit in ("ms", "ratio", "count")
    for required in ("response_latency", "transcript_latency", "wer", "jitter", "loss",
                     "send_lateness", "join_time", "barge_in_stop", "failed_turns",
                     "failed_sessions", "turn_timeouts", "dave_decrypt_failures"):  # fmt: skip
        assert required in METRICS


def test_evaluate_one_threshold_holds_and_one_fails() -> None:
    """Pooled p95 of response latency is compared with each bound."""
    turns = turns_frame(
        [{"response_latency_ms": float(v)} for v in range(1000, 2001, 10)]
    )
    verdicts = evaluate(
        parse_thresholds(
            ["response_latency: p(95) < 2s", "response_latency: p(95) < 1500ms"]
        ),
        turns,
        sessions_frame([]),
    )
    assert [v.passed for v in verdicts] == [True, False]
    assert verdicts[0].observed == pytest.approx(
        np.percentile(np.arange(1000, 2001, 10), 95)
    )
    assert "FAIL" in verdicts[1].describe() and "1950.0 ms" in verdicts[1].describe()


def test_evaluate_metric_without_data_fails() -> None:
    """No answered turn means no latency, and a latency bound then fails."""
    turns = turns_frame([{"outcome": "timeout"}])
    (verdict,) = evaluate(
        [parse_threshold("response_latency: p(95) < 1s")], turns, sessions_frame([])
    )
    assert verdict.observed is None and not verdict.passed
    assert "no data" in verdict.describe()


def test_evaluate_wer_rate_pools_over_words_not_turns() -> None:
    """A 1-word miss and a 9-word hit give 1/10, not the 50 % an average of turns would."""
    turns = turns_frame(
        [
            {"word_errors": 1, "reference_words": 1},
            {"word_errors": 0, "reference_words": 9},
            {"word_errors": np.nan, "reference_words": np.nan, "outcome": "timeout"},
        ]
    )
    thresholds = parse_thresholds(["wer: rate < 15%", "wer: max <= 100%"])
    rate, worst = evaluate(thresholds, turns, sessions_frame([]))
    assert rate.observed == pytest.approx(0.1) and rate.passed
    assert worst.observed == pytest.approx(1.0) and worst.passed


def test_evaluate_rates_and_counts_of_outcomes() -> None:
    """failed_turns and failed_sessions count failures and exclude cancelled ones."""
    turns = turns_frame(
        [{"outcome": "answered"}] * 6 + [{"outcome": "timeout"}, {"outcome": "error"},
         {"outcome": "cut"}, {"outcome": "cancelled"}]
    )  # fmt: skip
    sessions = sessions_frame(
        [{"outcome": "completed"}, {"outcome": "lost"}, {"outcome": "not_started"},
         {"outcome": "cancelled"}, {"outcome": "completed", "dave_decrypt_failures": 3}]
    )  # fmt: skip
    texts = [
        "failed_turns: rate < 20%", "failed_turns: count == 2", "turn_timeouts: count <= 1",
        "failed_sessions: rate < 50%", "missed_starts: count == 1",
        "dave_decrypt_failures: count == 0",
    ]  # fmt: skip
    verdicts = evaluate(parse_thresholds(texts), turns, sessions)
    observed = [v.observed for v in verdicts]
    assert observed == pytest.approx([2 / 9, 2, 1, 0.5, 1, 3])
    assert [v.passed for v in verdicts] == [False, True, True, False, True, False]


def test_evaluate_loss_pools_over_packets() -> None:
    """Loss is the sum of lost packets over the sum of expected ones."""
    turns = turns_frame(
        [{"packets_received": 90, "packets_lost": 10}, {"packets_received": 900}]
    )
    (verdict,) = evaluate(
        [parse_threshold("loss: rate < 1.5%")], turns, sessions_frame([])
    )
    assert verdict.observed == pytest.approx(10 / 1000) and verdict.passed


def test_evaluate_send_lateness_pools_session_histograms() -> None:
    """send_lateness percentiles come from all sessions' frames together."""
    rng = np.random.default_rng(3)
    raw = [rng.gamma(2.0, 0.3, 5000), rng.gamma(2.0, 1.2, 500)]
    rows = []
    for values in raw:
        histogram = LatenessHistogram()
        histogram.add_many(values)
        rows.append(histogram.session_columns())
    verdicts = evaluate(
        parse_thresholds(
            [
                "send_lateness: p(99) < 5ms",
                "send_lateness: max < 1ms",
                "send_lateness: avg < 1ms",
            ]
        ),
        turns_frame([]),
        sessions_frame(rows),
    )
    pooled = np.concatenate(raw)
    assert verdicts[0].observed == pytest.approx(np.percentile(pooled, 99), rel=0.03)
    assert verdicts[1].observed == pytest.approx(pooled.max())
    assert verdicts[2].observed == pytest.approx(pooled.mean())
    assert [v.passed for v in verdicts] == [True, False, True]


@given(
    metric=st.sampled_from(["response_latency", "jitter", "join_time"]),
    aggregate=st.sampled_from(["p(50)", "p(99.5)", "avg", "min", "max", "med"]),
    op=st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
    value=st.integers(0, 10**6),
    unit=st.sampled_from(["ms", "s", ""]),
)
def test_threshold_text_round_trips(
    metric: str, aggregate: str, op: str, value: int, unit: str
) -> None:
    """A threshold's normalised text parses back to the same threshold."""
    threshold = parse_threshold(f"{metric}:{aggregate}   {op}{value} {unit}")
    assert parse_threshold(threshold.text) == threshold
    assert threshold.value == value * (1000 if unit == "s" else 1)


def test_verdict_dict_round_trips() -> None:
    """to_dict / from_dict preserve a verdict, as run.json stores it."""
    verdict = Verdict(
        threshold=parse_threshold("wer: rate < 15%"), observed=0.2, passed=False
    )
    assert Verdict.from_dict(verdict.to_dict()) == verdict
    assert verdict.to_dict()["unit"] == "ratio"
