"""compare(): no change for the same capture, worse when latency rises, bootstrap sanity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicesim.analysis import compare, load
from voicesim.analysis._compare import _quantiles


def test_compare_same_capture_finds_no_change(capture_path: Path) -> None:
    """A capture against itself: every shift is zero and none is detectable."""
    result = compare(capture_path, capture_path)

    assert result.shifts and not result.worse and result.exit_code == 0
    for shift in result.shifts:
        assert shift.difference == 0 and shift.relative == 0
        assert shift.verdict == "no detectable change"
        assert shift.ci_low is not None and shift.ci_high is not None
        assert shift.ci_low <= 0 <= shift.ci_high
    assert "no regression beyond 10% tolerance" in result.format()


def test_compare_detects_injected_latency(
    capture_path: Path, slower_capture_path: Path
) -> None:
    """300 ms more response latency is a regression beyond 10 %."""
    result = compare(load(capture_path), load(slower_capture_path))

    by_key = {(s.metric, s.statistic): s for s in result.shifts}
    median, p95 = (
        by_key[("response_latency", "median")],
        by_key[("response_latency", "p95")],
    )
    assert median.difference == pytest.approx(300.0)
    assert median.verdict == "worse" and median.beyond_tolerance
    assert median.ci_low is not None and median.ci_low > 0
    # The tail moves as much, but 20 sessions leave its interval wide: the point estimate
    # is exact, the interval leans upward.
    assert p95.difference == pytest.approx(300.0)
    assert p95.ci_low is not None and p95.ci_high is not None
    assert p95.ci_high > 300 > p95.ci_low
    # Only response latency was touched.
    assert by_key[("transcript_latency", "median")].verdict == "no detectable change"
    assert result.worse and result.exit_code == 99
    # The report names every regression on its last line; whether the p95's wide
    # interval clears zero depends on the bootstrap draw, so only the median is sure.
    last_line = str(result).splitlines()[-1]
    assert last_line.startswith("worse beyond 10% tolerance: response_latency median")


def test_compare_reversed_is_better(
    capture_path: Path, slower_capture_path: Path
) -> None:
    """Going from the slower capture to the base one is better, not a regression."""
    result = compare(slower_capture_path, capture_path)
    shift = next(s for s in result.shifts if s.metric == "response_latency")
    assert shift.verdict == "better" and not shift.beyond_tolerance
    assert result.exit_code == 0


def test_compare_tolerance_decides_regression(
    capture_path: Path, slower_capture_path: Path
) -> None:
    """A detectable change smaller than the tolerance is worse but no regression."""
    result = compare(capture_path, slower_capture_path, tolerance=0.5)
    assert any(s.verdict == "worse" for s in result.shifts)
    assert not result.worse and result.exit_code == 0


def test_compare_is_repeatable_with_a_seed(
    capture_path: Path, slower_capture_path: Path
) -> None:
    """The same seed gives the same intervals."""
    first = compare(capture_path, slower_capture_path, seed=7, n_boot=300)
    second = compare(capture_path, slower_capture_path, seed=7, n_boot=300)
    assert first == second
    frame = first.to_frame()
    assert {"metric", "statistic", "ci_low", "ci_high", "verdict"} <= set(frame.columns)


def test_compare_rejects_bad_parameters(capture_path: Path) -> None:
    """Confidence outside (0, 1), negative tolerance and tiny n_boot are refused."""
    for kwargs in ({"confidence": 1.0}, {"tolerance": -0.1}, {"n_boot": 10}):
        with pytest.raises(ValueError):
            compare(capture_path, capture_path, **kwargs)  # type: ignore[arg-type]


@given(st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=60),
       st.sampled_from([0.05, 0.5, 0.95, 1.0]))  # fmt: skip
def test_weighted_quantile_with_unit_weights_is_inverted_cdf(
    values: list[float], q: float
) -> None:
    """With every session drawn once, the bootstrap statistic is numpy's inverted CDF."""
    ordered = np.sort(np.asarray(values))
    cumulative = np.arange(1, ordered.size + 1)[None, :]
    (value,) = _quantiles(ordered, cumulative, (q,))[0]
    assert value == np.quantile(ordered, q, method="inverted_cdf")
