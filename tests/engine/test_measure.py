from __future__ import annotations

import bisect
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicesim._capture_format import SEND_LATENESS_EDGES_MS
from voicesim.engine._measure import (
    LATENESS_EDGES_NS,
    NORMALISER_VERSION,
    LatenessHistogram,
    ResponseTracker,
    StreamSnapshot,
    StreamStats,
    normalise,
    word_errors,
)

MS = 1_000_000


def feed(stats: StreamStats, seqs: list[int], *, ts0: int = 0) -> None:
    """Add packets with the given seqs, 20 ms apart, timestamps following the seq."""
    for i, seq in enumerate(seqs):
        stats.add(seq & 0xFFFF, (ts0 + 960 * seq) & 0xFFFFFFFF, i * 20 * MS)


# -- StreamStats: jitter -----------------------------------------------------------


@pytest.mark.parametrize("ts0", [0, 0xFFFFFC00])
def test_stream_stats_jitter_follows_rfc3550_by_hand(ts0: int) -> None:
    """Jitter matches J += (|D| - J) / 16 worked by hand, also across a timestamp wrap."""
    stats = StreamStats()
    arrivals_ms = [0, 20, 45, 60, 80]  # D = 0, +5, -5, 0 ms
    expected = [0.0, 0.0, 0.3125, 0.60546875, 0.567626953125]
    for i, (arrival, want) in enumerate(zip(arrivals_ms, expected, strict=True)):
        stats.add(i, (ts0 + 960 * i) & 0xFFFFFFFF, arrival * MS)
        assert stats.jitter_ms == pytest.approx(want, abs=1e-9)


def test_stream_stats_jitter_is_zero_for_a_perfect_stream() -> None:
    """Packets arriving exactly at their timestamps' pace show no jitter."""
    stats = StreamStats()
    feed(stats, list(range(200)), ts0=123456)
    assert stats.jitter_ms == pytest.approx(0.0, abs=1e-9)


def test_stream_stats_new_spurt_takes_no_difference() -> None:
    """A talk spurt whose timestamp did not advance during the pause adds no jitter."""
    stats = StreamStats()
    stats.add(1, 960, 0)
    stats.add(2, 1920, 20 * MS)
    # Three seconds of silence, timestamp advanced by one frame only.
    stats.add(3, 2880, 3020 * MS, new_spurt=True)
    stats.add(4, 3840, 3040 * MS)
    assert stats.jitter_ms == pytest.approx(0.0, abs=1e-9)

    unmarked = StreamStats()
    unmarked.add(1, 960, 0)
    unmarked.add(2, 1920, 20 * MS)
    unmarked.add(3, 2880, 3020 * MS)
    assert unmarked.jitter_ms == pytest.approx((3000 - 20) / 16)


def test_stream_stats_duplicates_do_not_move_jitter() -> None:
    """A repeated packet is not a new sample, so it leaves the jitter alone."""
    stats = StreamStats()
    stats.add(1, 0, 0)
    stats.add(2, 960, 20 * MS)
    stats.add(2, 960, 35 * MS)
    stats.add(3, 1920, 40 * MS)
    assert stats.jitter_ms == 0.0
    assert stats.duplicated == 1


# -- StreamStats: sequence accounting ----------------------------------------------


def test_stream_stats_loss_across_16_bit_wrap() -> None:
    """Extended sequence numbers count a loss across the wrap, not 65536 of them."""
    stats = StreamStats()
    feed(stats, [65533, 65534, 65535, 65536, 65538, 65539])  # 65537 (= 1) is lost
    assert stats.received == 6
    assert stats.lost == 1
    assert stats.extended_max_seq == 65536 + 3
    assert stats.reordered == 0


def test_stream_stats_gap_counts_every_missing_packet() -> None:
    """A forward jump below the dropout limit is that many lost packets."""
    stats = StreamStats()
    feed(stats, [1, 1001])
    assert stats.lost == 999


def test_stream_stats_reordered_packet_is_not_lost() -> None:
    """A packet arriving after a higher seq counts as reordered and fills its gap."""
    stats = StreamStats()
    feed(stats, [1, 2, 4, 3, 5])
    assert stats.snapshot() == StreamSnapshot(
        packets_received=5,
        packets_lost=0,
        packets_reordered=1,
        packets_duplicated=0,
        jitter_ms=stats.jitter_ms,
    )


def test_stream_stats_duplicates_do_not_hide_loss() -> None:
    """A repeat is counted as a duplicate and cannot make up for a lost packet."""
    stats = StreamStats()
    feed(stats, [1, 2, 2, 4, 2])
    assert stats.received == 5
    assert stats.duplicated == 2
    assert stats.lost == 1
    assert stats.reordered == 0


def test_stream_stats_restart_resynchronises() -> None:
    """A big jump confirmed by the next packet is a restarted sender, not a loss."""
    stats = StreamStats()
    feed(stats, [10, 11, 40000, 40001, 40002])
    assert (stats.received, stats.lost, stats.reordered) == (5, 0, 0)


def test_stream_stats_stray_packet_is_ignored_for_loss() -> None:
    """A lone packet far behind the stream is late, not a reason to count losses."""
    stats = StreamStats()
    feed(stats, [300, 301, 5, 302, 303])
    assert (stats.received, stats.lost, stats.reordered) == (5, 0, 1)


def test_stream_stats_reset_starts_a_new_interval() -> None:
    """After reset, counts restart but a packet lost across the mark is still seen."""
    stats = StreamStats()
    feed(stats, [1, 2, 2, 3])
    stats.reset()
    assert (stats.received, stats.lost, stats.duplicated, stats.jitter_ms) == (
        0,
        0,
        0,
        0.0,
    )
    stats.add(5, 5 * 960, 10_000 * MS)  # 4 lost; timestamp gap is no jitter
    stats.add(6, 6 * 960, 10_020 * MS)
    assert (stats.received, stats.lost, stats.jitter_ms) == (2, 1, 0.0)


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(0, 0xFFFF),
    kept=st.lists(st.booleans(), min_size=2, max_size=300),
    swaps=st.lists(st.integers(1, 298), max_size=20),
    repeats=st.lists(st.integers(0, 299), max_size=10),
)
def test_stream_stats_counts_match_what_was_dropped(
    start: int, kept: list[bool], swaps: list[int], repeats: list[int]
) -> None:
    """Over any drop, local reorder and repeat pattern, lost equals what was dropped."""
    kept[0] = True
    seqs = [start + i for i, keep in enumerate(kept) if keep]
    arrival = list(seqs)
    for i in swaps:  # swap neighbours, never the first packet
        if i + 1 < len(arrival):
            arrival[i], arrival[i + 1] = arrival[i + 1], arrival[i]
    for i in repeats:
        if i < len(arrival):
            arrival.append(arrival[i])

    stats = StreamStats()
    feed(stats, arrival)
    dropped = (max(seqs) - start + 1) - len(seqs)
    assert stats.lost == dropped
    assert stats.received == len(arrival)
    assert stats.duplicated == len(arrival) - len(seqs)


# -- ResponseTracker ----------------------------------------------------------------


def test_response_tracker_starts_at_first_audible_frame_after_speech_end() -> None:
    """Sound before speech end and silent frames after it do not start the answer."""
    tracker = ResponseTracker(1000 * MS)
    tracker.add(900 * MS, True)  # before the user finished
    tracker.add(1100 * MS, False)  # silence frame
    assert tracker.response_start_ns is None
    assert not tracker.answer_done(5000 * MS)
    tracker.add(1720 * MS, True)
    assert tracker.response_start_ns == 1720 * MS
    assert tracker.response_latency_ms == pytest.approx(720.0)


def test_response_tracker_ends_after_quiet_period() -> None:
    """The answer ends at its last audible frame once quiet_ms passed without sound."""
    tracker = ResponseTracker(0, quiet_ms=600)
    for t in range(100, 1000, 20):
        tracker.add(t * MS, True)
    tracker.add(1300 * MS, True)  # a 320 ms pause between sentences stays inside
    for t in range(1320, 2000, 20):
        tracker.add(t * MS, False)  # silence frames do not extend the answer
    assert tracker.response_end_ns == 1300 * MS
    assert not tracker.answer_done(1899 * MS)
    assert tracker.answer_done(1900 * MS)
    tracker.add(2100 * MS, True)  # later sound belongs to no turn
    assert tracker.response_end_ns == 1300 * MS
    assert tracker.answer_done(1901 * MS)


def test_response_tracker_sound_after_long_gap_closes_the_answer() -> None:
    """An audible frame after quiet_ms of nothing ends the answer before it."""
    tracker = ResponseTracker(0, quiet_ms=600)
    tracker.add(100 * MS, True)
    tracker.add(800 * MS, True)
    assert tracker.response_end_ns == 100 * MS
    assert tracker.answer_done(800 * MS)


def test_response_tracker_barge_in_stop_time() -> None:
    """Barge-in stop time runs from the user's onset to the agent's last audible frame."""
    tracker = ResponseTracker(0)
    for t in range(500, 2000, 20):
        tracker.add(t * MS, True)
    assert tracker.barge_in(1500 * MS)
    assert not tracker.barge_in(1600 * MS)  # only the first counts
    assert tracker.barge_in_stop_ms is None  # not ended yet
    assert tracker.answer_done(3000 * MS)
    assert tracker.barge_in_stop_ms == pytest.approx(480.0)


def test_response_tracker_onset_outside_answer_is_no_barge_in() -> None:
    """Speaking before the answer started or after it ended is not a barge-in."""
    tracker = ResponseTracker(0)
    assert not tracker.barge_in(10 * MS)
    tracker.add(500 * MS, True)
    assert not tracker.barge_in(400 * MS)
    assert not tracker.barge_in(1200 * MS)
    assert tracker.barge_in_stop_ms is None


def test_response_tracker_refuses_non_positive_quiet() -> None:
    """A quiet period of zero would end every answer at its first frame."""
    with pytest.raises(ValueError, match="quiet_ms"):
        ResponseTracker(0, quiet_ms=0)


# -- WER ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Hello, World!  It's 42 o'clock.", ["hello", "world", "its", "42", "oclock"]),
        ("A well-known  fact\n\tindeed", ["a", "well", "known", "fact", "indeed"]),
        (
            "\uff28\uff45\uff4c\uff4c\uff4f na\u00efve Caf\u00e9",
            ["hello", "naïve", "café"],
        ),
        ("don\u2019t_stop ... (now)", ["dont", "stop", "now"]),
        ("  ?!  ", []),
    ],
)
def test_normalise_vectors(text: str, words: list[str]) -> None:
    """Version 1 lowercases, drops punctuation, keeps digits and splits on space."""
    assert NORMALISER_VERSION == "1"
    assert normalise(text) == words


@pytest.mark.parametrize(
    ("reference", "hypothesis", "expected"),
    [
        ("the cat sat on the mat", "the cat sat on the mat", (0, 6)),
        ("the cat sat on the mat", "the cat sat on mat", (1, 6)),
        ("Hello, world.", "hello world", (0, 2)),
        ("a b c", "a x c d", (2, 3)),
        ("one two three", "", (3, 3)),
        ("", "uh", (1, 0)),
        ("turn on the lights", "turn of the light please", (3, 4)),
        ("it is 42", "it is forty two", (2, 3)),
    ],
)
def test_word_errors_vectors(
    reference: str, hypothesis: str, expected: tuple[int, int]
) -> None:
    """Errors are substitutions, deletions and insertions after normalising."""
    assert word_errors(reference, hypothesis) == expected


def test_word_errors_pool_over_words() -> None:
    """Pooled WER weighs each word once, unlike the mean of per-utterance rates."""
    pairs = [
        ("yes", "no"),
        (
            "please book a table for four tonight",
            "please book a table for four tonight",
        ),
    ]
    counts = [word_errors(r, h) for r, h in pairs]
    pooled = sum(e for e, _ in counts) / sum(w for _, w in counts)
    assert pooled == pytest.approx(1 / 8)


# -- LatenessHistogram -------------------------------------------------------------


def _bucket_range(value_ns: float) -> tuple[float, float]:
    index = bisect.bisect_right(LATENESS_EDGES_NS, value_ns)
    low = LATENESS_EDGES_NS[index - 1]
    high = LATENESS_EDGES_NS[index] if index < len(LATENESS_EDGES_NS) else np.inf
    return low, high


def test_lateness_histogram_buckets_match_capture_edges() -> None:
    """Each value lands in the capture format's bucket, at and around every edge."""
    values = [-5, 0, 1, 9_999, 10_000, 10_001, 10**10, 2 * 10**10]
    values += [e + d for e in LATENESS_EDGES_NS for d in (-1, 0, 1)]
    for value in values:
        histogram = LatenessHistogram()
        histogram.record(value)
        index = histogram.counts.index(1)
        assert index == (
            0 if value < 0 else bisect.bisect_right(SEND_LATENESS_EDGES_MS, value / 1e6)
        )


def test_lateness_histogram_pooled_percentiles_match_numpy() -> None:
    """Percentiles of merged session histograms fall in the bucket of numpy's value."""
    rng = np.random.default_rng(7)
    sessions = [
        rng.lognormal(np.log(400_000), 0.6, size=3000).astype(np.int64),
        rng.lognormal(np.log(900_000), 0.3, size=2000).astype(np.int64),
        rng.exponential(2_000_000, size=1000).astype(np.int64),
    ]
    histograms = []
    for samples in sessions:
        histogram = LatenessHistogram()
        for value in samples:
            histogram.record(int(value))
        histograms.append(histogram)
    pooled = LatenessHistogram.pooled(histograms)
    everything = np.concatenate(sessions)

    for q in (1, 10, 25, 50, 75, 90, 95, 99, 99.9, 100):
        truth = float(np.percentile(everything, q, method="inverted_cdf"))
        low, high = _bucket_range(truth)
        assert low <= pooled.percentile(q) <= min(high, everything.max())
    assert pooled.percentile_ms(100) == everything.max() / 1e6
    assert pooled.mean_ns == pytest.approx(everything.mean())


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(-(10**6), 12 * 10**9), min_size=1, max_size=200),
    st.floats(0, 100),
)
def test_lateness_histogram_percentile_in_true_bucket(
    values: list[int], q: float
) -> None:
    """For any samples, the estimate lies in the bucket of the nearest-rank value."""
    histogram = LatenessHistogram()
    for value in values:
        histogram.record(value)
    # The nearest-rank percentile: the smallest value with q % of values at or below.
    # Early frames (negative lateness) read as 0.
    truth = max(0, sorted(values)[max(1, math.ceil(q * len(values) / 100)) - 1])
    low, high = _bucket_range(truth)
    assert low <= histogram.percentile(q) <= min(high, max(0, *values))


def test_lateness_histogram_merge_is_exact() -> None:
    """Merging histograms equals recording every value into one."""
    rng = np.random.default_rng(3)
    parts = [rng.integers(-50_000, 50_000_000, size=n) for n in (10, 500, 2000)]
    single = LatenessHistogram()
    histograms = []
    for part in parts:
        histogram = LatenessHistogram()
        for value in part:
            histogram.record(int(value))
            single.record(int(value))
        histograms.append(histogram)
    assert LatenessHistogram.pooled(histograms) == single
    assert histograms[0] + histograms[1] + histograms[2] == single
    assert single.total == sum(map(len, parts))
    assert sum(single.counts) == single.total


def test_lateness_histogram_list_round_trip() -> None:
    """to_list and from_list keep the counts that a capture column stores."""
    histogram = LatenessHistogram()
    for value in (-3, 0, 120_000, 730_000, 730_001, 4 * 10**9, 12 * 10**9):
        histogram.record(value)
    counts = histogram.to_list()
    assert len(counts) == len(SEND_LATENESS_EDGES_MS) + 1
    copy = LatenessHistogram.from_list(
        counts, sum_ns=histogram.sum_ns, max_ns=histogram.max_ns
    )
    assert copy == histogram
    assert copy.percentile(50) == histogram.percentile(50)
    columns = histogram.session_columns()
    assert columns["send_lateness_hist"] == counts
    assert columns["send_lateness_max_ms"] == 12_000.0


def test_lateness_histogram_edge_cases() -> None:
    """Early frames read as zero; empty histograms give NaN; bad input raises."""
    histogram = LatenessHistogram()
    assert np.isnan(histogram.percentile(99))
    assert histogram.session_columns()["send_lateness_p99_ms"] is None
    histogram.record(-40_000)
    assert histogram.counts[0] == 1
    assert histogram.percentile(50) == 0.0
    with pytest.raises(ValueError, match=r"0\.\.100"):
        histogram.percentile(101)
    with pytest.raises(ValueError, match="bucket counts"):
        LatenessHistogram.from_list([1, 2, 3])
    with pytest.raises(ValueError, match="negative"):
        LatenessHistogram.from_list([-1] + [0] * len(SEND_LATENESS_EDGES_MS))
