"""Tests of pooled statistics: trends, the lateness histogram, active sessions, summaries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicesim._capture_format import SEND_LATENESS_EDGES_MS
from voicesim._stats import (
    LatenessHistogram,
    active_sessions,
    pooled_lateness,
    summary_rows,
    trend,
)


def test_trend_reports_pooled_percentiles_and_ignores_missing() -> None:
    """NaN and infinities are dropped; percentiles match numpy's linear interpolation."""
    values = np.array([5.0, np.nan, 1.0, 3.0, np.inf, 2.0, 4.0])
    result = trend(values)
    assert result["count"] == 5
    assert result["p50"] == 3.0 and result["p90"] == pytest.approx(4.6)
    assert (result["min"], result["max"], result["mean"]) == (1.0, 5.0, 3.0)
    assert trend([]) == {"count": 0, "mean": None, "min": None, "max": None,
                         "p50": None, "p90": None, "p95": None, "p99": None}  # fmt: skip


def test_lateness_edges_cover_ten_seconds_at_five_percent() -> None:
    """Edges start at 0 and 10 us, grow by 5 % and reach at least 10 s."""
    edges = np.asarray(SEND_LATENESS_EDGES_MS)
    assert edges[0] == 0.0 and edges[1] == 0.01 and edges[-1] >= 10_000
    assert np.allclose(edges[2:] / edges[1:-1], 1.05, rtol=1e-4)


def test_lateness_histogram_bins_at_edges_and_outside() -> None:
    """Early frames go to bucket 0, an edge value to the bucket it opens, huge ones last."""
    histogram = LatenessHistogram()
    for value in (-0.5, 0.0, 0.01, 0.0105, 1e9):
        histogram.add(value)
    nonzero = {int(i): int(c) for i, c in enumerate(histogram.counts) if c}
    assert nonzero == {0: 1, 1: 1, 2: 1, 3: 1, len(SEND_LATENESS_EDGES_MS): 1}
    assert histogram.max_ms == 1e9 and histogram.quantile(0.0) == 0.0


@given(st.lists(st.floats(-5, 20_000, allow_nan=False), min_size=1, max_size=200))
def test_lateness_histogram_add_many_equals_add(values: list[float]) -> None:
    """The vectorised path puts every value in the same bucket as the scalar one."""
    one, many = LatenessHistogram(), LatenessHistogram()
    for value in values:
        one.add(value)
    many.add_many(values)
    assert np.array_equal(one.counts, many.counts)
    assert one.sum_ms == pytest.approx(many.sum_ms) and one.max_ms == many.max_ms


@given(st.lists(st.floats(0.02, 5_000, allow_nan=False), min_size=1, max_size=300),
       st.sampled_from([0.5, 0.9, 0.99, 1.0]))  # fmt: skip
def test_lateness_histogram_quantile_is_within_its_bucket(
    values: list[float], q: float
) -> None:
    """A histogram quantile lies within one 5 % bucket of the exact inverted-CDF value."""
    histogram = LatenessHistogram()
    histogram.add_many(values)
    exact = float(np.quantile(values, q, method="inverted_cdf"))
    assert histogram.quantile(q) == pytest.approx(exact, rel=0.051)


def test_lateness_histogram_merge_equals_one_histogram_of_everything() -> None:
    """Merging per-session histograms gives exactly the histogram of all frames."""
    rng = np.random.default_rng(0)
    parts = [rng.gamma(2.0, 0.4, n) for n in (100, 2000, 7)]
    merged, whole = LatenessHistogram(), LatenessHistogram()
    for part in parts:
        session = LatenessHistogram()
        session.add_many(part)
        merged.merge(session)
    whole.add_many(np.concatenate(parts))
    assert np.array_equal(merged.counts, whole.counts)
    assert merged.max_ms == whole.max_ms and merged.sum_ms == pytest.approx(
        whole.sum_ms
    )


def test_lateness_histogram_rejects_mismatched_shapes() -> None:
    """Counts that do not fit the edges, or merging other edges, raise ValueError."""
    with pytest.raises(ValueError, match="counts do not fit"):
        LatenessHistogram(counts=np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="different edges"):
        LatenessHistogram().merge(LatenessHistogram(edges_ms=(0.0, 1.0)))
    with pytest.raises(ValueError, match="quantile"):
        LatenessHistogram().quantile(1.5)
    assert (
        LatenessHistogram().quantile(0.5) is None and LatenessHistogram().mean() is None
    )


def test_pooled_lateness_skips_sessions_without_histogram() -> None:
    """Sessions that never sent (null histogram) do not disturb the pooled one."""
    histogram = LatenessHistogram()
    histogram.add_many([0.5, 1.5])
    sessions = pd.DataFrame([histogram.session_columns(), {"send_lateness_hist": None,
                             "send_lateness_sum_ms": 0.0, "send_lateness_max_ms": np.nan}])  # fmt: skip
    pooled = pooled_lateness(sessions)
    assert pooled.count == 2 and pooled.mean() == 1.0 and pooled.max_ms == 1.5


def test_active_sessions_steps_up_and_down() -> None:
    """Joined sessions count until they leave; a session still running counts to the end."""
    sessions = pd.DataFrame(
        {
            "joined_ns": [10.0, 20.0, np.nan, 30.0],
            "left_ns": [40.0, 30.0, np.nan, np.nan],
        }
    )
    times, counts = active_sessions(sessions, until_ns=50)
    assert times.tolist() == [10, 20, 30, 30, 40, 50]
    assert counts.tolist() == [1, 2, 1, 2, 1, 0]


def test_summary_rows_cover_distributions_and_pooled_ratios() -> None:
    """summary_rows yields one row per distribution plus WER and loss rows."""
    summary = {
        "response_latency_ms": trend([1.0, 2.0]),
        "wer": {"word_errors": 1, "reference_words": 10, "wer": 0.1},
        "packets": {"received": 99, "lost": 1, "loss_rate": 0.01},
    }
    rows = summary_rows(summary)
    assert rows[0]["metric"] == "response latency (ms)" and rows[0]["p50"] == 1.5
    assert rows[-2] == {"metric": "WER (pooled)", "count": 10, "mean": 0.1, "p50": None,
                             "p90": None, "p95": None, "p99": None, "max": None}  # fmt: skip
    assert rows[-1]["count"] == 100 and rows[-1]["mean"] == 0.01
