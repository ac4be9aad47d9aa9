"""Pooled statistics over a capture's tables.

Every percentile here is computed from pooled records: all turns of the run, all frames
of all sessions. Percentiles of sessions are never averaged, because the mean of
per-session p99s is not the p99 of anything. Ratios pool the same way: WER is the sum
of word errors over the sum of reference words, loss the sum of lost packets over the
sum of expected ones, so a short utterance weighs as much as its words and no more.

Send lateness is too plentiful to keep per frame (fifty frames a second a session), so
each session keeps a histogram with the fixed edges of
``voicesim._capture_format.SEND_LATENESS_EDGES_MS``; adding the histograms of all
sessions gives the run's exact distribution at bucket resolution (about 2.5 %), and
its percentiles interpolate inside one bucket.

Pure numpy and pandas: no trio, no discord.py, no I/O.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt
import pandas as pd

from voicesim._capture_format import (
    FAILED_SESSION_OUTCOMES,
    FAILED_TURN_OUTCOMES,
    SEND_LATENESS_EDGES_MS,
    TurnOutcome,
)

__all__ = [
    "PERCENTILES",
    "LatenessHistogram",
    "active_sessions",
    "pooled_lateness",
    "summarize",
    "summary_rows",
    "trend",
]

#: The percentiles every latency-like summary reports.
PERCENTILES = (50, 90, 95, 99)

FloatArray = npt.NDArray[np.float64]


def finite_values(frame: pd.DataFrame | None, column: str) -> FloatArray:
    """The non-null, finite values of ``column`` as float64 (empty if absent)."""
    if frame is None or column not in frame.columns or len(frame) == 0:
        return np.empty(0, dtype=np.float64)
    values: FloatArray = pd.to_numeric(frame[column], errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    return values[np.isfinite(values)]


def _number(value: float | np.floating[Any] | None) -> float | None:
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value)


def trend(values: npt.ArrayLike) -> dict[str, float | int | None]:
    """count, mean, min, p50, p90, p95, p99 and max of pooled ``values``.

    Percentiles interpolate linearly between order statistics (numpy's default).
    Statistics of no values are None, so the result serialises to JSON.
    """
    array = np.asarray(values, dtype=np.float64)
    array = array[np.isfinite(array)]
    result: dict[str, float | int | None] = {"count": int(array.size)}
    if array.size == 0:
        result.update({"mean": None, "min": None, "max": None})
        result.update({f"p{p}": None for p in PERCENTILES})
        return result
    result["mean"] = float(array.mean())
    result["min"] = float(array.min())
    for p, value in zip(PERCENTILES, np.percentile(array, PERCENTILES), strict=True):
        result[f"p{p}"] = float(value)
    result["max"] = float(array.max())
    return result


@attrs.define
class LatenessHistogram:
    """Send lateness of many frames, in fixed buckets, so that histograms pool exactly.

    The engine keeps one per session, feeds it with ``add`` or ``add_many`` (in ms) and
    stores ``session_columns()`` in the session's record. ``merge`` adds another
    histogram with the same edges (another session, another machine).
    """

    edges_ms: tuple[float, ...] = SEND_LATENESS_EDGES_MS
    counts: npt.NDArray[np.int64] = attrs.field()
    sum_ms: float = 0.0
    max_ms: float | None = None
    _edges_array: FloatArray = attrs.field(init=False, repr=False)

    @counts.default
    def _empty_counts(self) -> npt.NDArray[np.int64]:
        return np.zeros(len(self.edges_ms) + 1, dtype=np.int64)

    def __attrs_post_init__(self) -> None:
        if len(self.counts) != len(self.edges_ms) + 1:
            raise ValueError(
                f"{len(self.counts)} counts do not fit {len(self.edges_ms)} edges "
                "(want one more count than edges)"
            )
        self._edges_array = np.asarray(self.edges_ms, dtype=np.float64)

    @property
    def count(self) -> int:
        """Number of frames recorded."""
        return int(self.counts.sum())

    def add(self, value_ms: float) -> None:
        """Record one frame's lateness (ms)."""
        self.counts[bisect.bisect_right(self.edges_ms, value_ms)] += 1
        self.sum_ms += value_ms
        if self.max_ms is None or value_ms > self.max_ms:
            self.max_ms = value_ms

    def add_many(self, values_ms: npt.ArrayLike) -> None:
        """Record many frames' lateness (ms) in one vectorised step."""
        values = np.asarray(values_ms, dtype=np.float64).ravel()
        if values.size == 0:
            return
        index = np.searchsorted(self._edges_array, values, side="right")
        self.counts += np.bincount(index, minlength=len(self.counts))
        self.sum_ms += float(values.sum())
        top = float(values.max())
        if self.max_ms is None or top > self.max_ms:
            self.max_ms = top

    def merge(self, other: LatenessHistogram) -> None:
        """Add ``other``'s frames to this histogram."""
        if other.edges_ms != self.edges_ms:
            raise ValueError("cannot merge lateness histograms with different edges")
        self.counts += other.counts
        self.sum_ms += other.sum_ms
        if other.max_ms is not None and (
            self.max_ms is None or other.max_ms > self.max_ms
        ):
            self.max_ms = other.max_ms

    def mean(self) -> float | None:
        """Exact mean lateness (ms), from the running sum."""
        n = self.count
        return self.sum_ms / n if n else None

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) in ms, interpolated inside its bucket.

        Frames sent early (negative lateness) count as 0; the top bucket reaches up to
        the exact maximum. None when the histogram is empty.
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], not {q!r}")
        n = self.count
        if n == 0:
            return None
        cumulative = np.cumsum(self.counts)
        rank = q * n
        bucket = int(np.searchsorted(cumulative, max(rank, 1e-9), side="left"))
        below = int(cumulative[bucket - 1]) if bucket > 0 else 0
        if bucket == 0:
            value = 0.0
        else:
            low = self.edges_ms[bucket - 1]
            high = (
                self.edges_ms[bucket]
                if bucket < len(self.edges_ms)
                else max(self.max_ms or low, low)
            )
            fraction = (rank - below) / int(self.counts[bucket])
            value = low + min(max(fraction, 0.0), 1.0) * (high - low)
        if self.max_ms is not None:
            value = min(value, max(self.max_ms, 0.0))
        return value

    def summary(self) -> dict[str, float | int | None]:
        """The same keys as :func:`trend`, from the histogram."""
        result: dict[str, float | int | None] = {
            "count": self.count,
            "mean": self.mean(),
            "min": None,  # not kept: the low buckets say enough
        }
        for p in PERCENTILES:
            result[f"p{p}"] = self.quantile(p / 100)
        result["max"] = self.max_ms if self.count else None
        return result

    def session_columns(self) -> dict[str, Any]:
        """The ``sessions`` table columns that store this histogram."""
        return {
            "send_lateness_hist": self.counts.tolist(),
            "send_lateness_sum_ms": self.sum_ms,
            "send_lateness_max_ms": self.max_ms,
            "send_lateness_p99_ms": self.quantile(0.99),
        }


def pooled_lateness(
    sessions: pd.DataFrame | None, edges_ms: Sequence[float] | None = None
) -> LatenessHistogram:
    """Add up the send lateness histograms of every session that has one."""
    edges = tuple(edges_ms) if edges_ms is not None else SEND_LATENESS_EDGES_MS
    pooled = LatenessHistogram(edges_ms=edges)
    if sessions is None or "send_lateness_hist" not in sessions.columns:
        return pooled
    for index, row in enumerate(sessions.itertuples(index=False)):
        hist = row.send_lateness_hist
        if hist is None or (isinstance(hist, float) and math.isnan(hist)):
            continue
        counts = np.asarray(hist, dtype=np.int64)
        if counts.shape != pooled.counts.shape:
            raise ValueError(
                f"session row {index}: send_lateness_hist has {counts.size} buckets, "
                f"the edges make {pooled.counts.size}"
            )
        max_ms = _number(row.send_lateness_max_ms)
        pooled.merge(
            LatenessHistogram(
                edges_ms=edges,
                counts=counts,
                sum_ms=_number(row.send_lateness_sum_ms) or 0.0,
                max_ms=max_ms,
            )
        )
    return pooled


def active_sessions(
    sessions: pd.DataFrame, *, until_ns: int | None = None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Times (ns) at which the number of joined sessions changed, and the new number.

    A session counts from ``joined_ns`` to ``left_ns``; one that never left counts until
    ``until_ns`` (or to the end of the data).
    """
    empty = np.empty(0, dtype=np.int64)
    if len(sessions) == 0 or "joined_ns" not in sessions.columns:
        return empty, empty
    frame = sessions[sessions["joined_ns"].notna()]
    if len(frame) == 0:
        return empty, empty
    starts = frame["joined_ns"].to_numpy(dtype=np.float64)
    ends = (
        frame["left_ns"].to_numpy(dtype=np.float64, na_value=np.nan)
        if "left_ns" in frame.columns
        else np.full(starts.size, np.nan)
    )
    end_of_data = (
        float(until_ns)
        if until_ns is not None
        else float(np.nanmax(np.concatenate([starts, ends])))
    )
    ends = np.where(np.isnan(ends), end_of_data, ends)
    times = np.concatenate([starts, ends])
    steps = np.concatenate([np.ones(starts.size), -np.ones(ends.size)])
    # Leaving before joining at the same instant keeps the count from overshooting.
    order = np.lexsort((steps, times))
    return times[order].astype(np.int64), np.cumsum(steps[order]).astype(np.int64)


def _outcome_counts(frame: pd.DataFrame) -> dict[str, int]:
    if len(frame) == 0 or "outcome" not in frame.columns:
        return {}
    counts = frame["outcome"].astype(str).value_counts()
    return {str(k): int(v) for k, v in sorted(counts.items())}


def _sum(frame: pd.DataFrame | None, column: str) -> int:
    return int(finite_values(frame, column).sum())


def _count_dave(sessions: pd.DataFrame) -> dict[str, Any]:
    """How end-to-end encryption went: sessions that used it, failures, the gap."""
    # Captures written before these columns existed have none of them.
    versions = finite_values(sessions, "dave_protocol_version")
    gaps = finite_values(sessions, "dave_longest_gap_ms")
    return {
        "sessions": int((versions > 0).sum()),
        "decrypt_failures": _sum(sessions, "dave_decrypt_failures"),
        "recoveries": _sum(sessions, "dave_recoveries"),
        "longest_gap_ms": float(gaps.max()) if gaps.size else None,
    }


def summarize(
    turns: pd.DataFrame,
    sessions: pd.DataFrame,
    packets: pd.DataFrame | None = None,
    *,
    lateness_edges_ms: Sequence[float] | None = None,
) -> dict[str, Any]:
    """The run's summary: counts, outcomes and pooled distributions (JSON-ready dict).

    Latency-like entries (``*_ms``) hold count, mean, min, p50, p90, p95, p99 and max.
    """
    turn_outcomes = _outcome_counts(turns)
    session_outcomes = _outcome_counts(sessions)
    word_turns = turns[turns["word_errors"].notna()] if len(turns) else turns
    word_errors = _sum(word_turns, "word_errors")
    reference_words = _sum(word_turns, "reference_words")
    received = _sum(turns, "packets_received")
    lost = _sum(turns, "packets_lost")
    _, active_counts = active_sessions(sessions)

    starts = finite_values(sessions, "join_requested_ns")
    ends = np.concatenate(
        [finite_values(sessions, "left_ns"), finite_values(turns, "speech_end_ns")]
    )
    duration_s = (
        float((ends.max() - starts.min()) / 1e9) if starts.size and ends.size else None
    )
    summary: dict[str, Any] = {
        "duration_s": duration_s,
        "sessions": {
            "total": len(sessions),
            "outcomes": session_outcomes,
            "failed": sum(session_outcomes.get(o, 0) for o in FAILED_SESSION_OUTCOMES),
            "max_active": int(active_counts.max()) if active_counts.size else 0,
            "dave_decrypt_failures": _sum(sessions, "dave_decrypt_failures"),
            "dave": _count_dave(sessions),
            "reconnects": _sum(sessions, "reconnects"),
            "frames_sent": _sum(sessions, "frames_sent"),
        },
        "turns": {
            "total": len(turns),
            "outcomes": turn_outcomes,
            "answered": turn_outcomes.get(TurnOutcome.ANSWERED, 0),
            "failed": sum(turn_outcomes.get(o, 0) for o in FAILED_TURN_OUTCOMES),
            "timeouts": turn_outcomes.get(TurnOutcome.TIMEOUT, 0),
            "barge_ins": int(turns["barge_in"].astype(bool).sum()) if len(turns) else 0,
            "with_transcript": len(word_turns),
        },
        "response_latency_ms": trend(finite_values(turns, "response_latency_ms")),
        "transcript_latency_ms": trend(finite_values(turns, "transcript_latency_ms")),
        "jitter_ms": trend(finite_values(turns, "jitter_ms")),
        "barge_in_stop_ms": trend(finite_values(turns, "barge_in_stop_ms")),
        "join_time_ms": trend(finite_values(sessions, "join_time_ms")),
        "send_lateness_ms": pooled_lateness(sessions, lateness_edges_ms).summary(),
        "wer": {
            "word_errors": word_errors,
            "reference_words": reference_words,
            "wer": word_errors / reference_words if reference_words else None,
        },
        "packets": {
            "received": received,
            "lost": lost,
            "reordered": _sum(turns, "packets_reordered"),
            "duplicated": _sum(turns, "packets_duplicated"),
            "loss_rate": lost / (received + lost) if received + lost else None,
        },
    }
    if packets is not None:
        summary["packets"]["captured_rows"] = len(packets)
        summary["packets"]["captured_bytes"] = _sum(packets, "bytes")
    return summary


#: (summary key, label) of the distributions shown in summary tables.
SUMMARY_TRENDS = (
    ("response_latency_ms", "response latency (ms)"),
    ("transcript_latency_ms", "transcript latency (ms)"),
    ("jitter_ms", "jitter (ms)"),
    ("send_lateness_ms", "send lateness (ms)"),
    ("join_time_ms", "join time (ms)"),
    ("barge_in_stop_ms", "barge-in stop (ms)"),
)


def summary_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for a summary table: one per distribution, then the pooled ratios.

    Each row has ``metric``, ``count``, ``mean``, ``p50``, ``p90``, ``p95``, ``p99``
    and ``max`` (None where empty or not meaningful), for the command line, the report
    and notebooks. For the ratio rows (WER, packet loss) ``mean`` is the pooled ratio
    and ``count`` the words or packets it pools over.
    """
    rows: list[dict[str, Any]] = []
    for key, label in SUMMARY_TRENDS:
        entry = summary.get(key) or {}
        row: dict[str, Any] = {"metric": label, "count": entry.get("count", 0)}
        for stat in ("mean", *(f"p{p}" for p in PERCENTILES), "max"):
            row[stat] = entry.get(stat)
        rows.append(row)

    blank = {f"p{p}": None for p in PERCENTILES} | {"max": None}
    wer = summary.get("wer", {})
    rows.append(
        {"metric": "WER (pooled)", "count": wer.get("reference_words", 0)}
        | {"mean": wer.get("wer")}
        | blank
    )
    packets = summary.get("packets", {})
    expected = packets.get("received", 0) + packets.get("lost", 0)
    rows.append(
        {"metric": "packet loss (pooled)", "count": expected}
        | {"mean": packets.get("loss_rate")}
        | blank
    )
    return rows
