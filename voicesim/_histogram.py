"""A fixed-edge histogram of send lateness that pools exactly.

Every frame voicesim sends has a lateness: actual send time minus intended send time.
Keeping every value would cost memory in proportion to the run, and averaging
per-session percentiles would be wrong. Counting into buckets with the capture
format's fixed edges (``SEND_LATENESS_EDGES_MS``) in every session, thread and process
lets the counts be added and the pooled percentile read off the sum. Recording is a
table lookup, cheap enough for the media clock, which records once per frame.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence

from voicesim._capture_format import SEND_LATENESS_EDGES_MS

__all__ = ["LATENESS_EDGES_NS", "LatenessHistogram"]


def _edges_ns() -> tuple[int, ...]:
    # The capture's edges are ms floats with six significant digits; as integers, a
    # value in ns is at or above an edge exactly when it is at or above its ceiling.
    return tuple(math.ceil(round(edge * 1e6, 3)) for edge in SEND_LATENESS_EDGES_MS)


#: ``SEND_LATENESS_EDGES_MS`` in ns. Bucket 0 counts early frames (lateness < 0),
#: bucket i counts ``edges[i-1] <= lateness < edges[i]``, the last one the rest.
LATENESS_EDGES_NS: tuple[int, ...] = _edges_ns()
_LAST = len(LATENESS_EDGES_NS)  # index of the last bucket
_UPPER = (*LATENESS_EDGES_NS, 1 << 62)  # _UPPER[i]: upper edge of bucket i
_TOP = LATENESS_EDGES_NS[-1]


def _bucket_by_search(value: int) -> int:
    return bisect.bisect_right(LATENESS_EDGES_NS, value)


def _slot_table() -> list[int]:
    # One entry per (bit length, top 7 bits) of a value: the bucket of the smallest
    # value in that slot. A slot spans less than 1/64 of its values, the buckets grow
    # by 5 %, so a slot meets at most one edge and ``record`` needs one comparison.
    table = [0] * ((_TOP.bit_length() + 1) << 7)
    for bits in range(_TOP.bit_length() + 1):
        shift = max(0, bits - 7)
        low_slot = 0 if bits == 0 else (1 << (bits - 1)) >> shift
        for slot in range(low_slot, 1 << min(bits, 7)):
            low = slot << shift
            high = ((slot + 1) << shift) - 1
            bucket = _bucket_by_search(low)
            if _bucket_by_search(high) - bucket > 1:
                raise RuntimeError("lateness edges too dense for the slot table")
            table[(bits << 7) | slot] = bucket
    return table


_SLOTS = _slot_table()


# Send lateness is recorded once per sent frame inside the media clock thread, so
# ``record`` must cost well under a microsecond: it finds the bucket with a bit
# length, a shift, one table lookup and one comparison, all on integers, with no
# search and no numpy. The edges are those of the capture's ``send_lateness_hist``
# column (10 us growing by 5 % a bucket up to 10 s), so ``to_list()`` is that column
# and histograms of every session, thread and process add exactly: a pooled
# percentile is read off summed counts, never averaged from per-session ones.
# Percentiles interpolate inside their bucket as ``voicesim._stats`` does, so the
# live display and the final summary agree; the estimate always lies in the bucket
# holding the true nearest-rank percentile, within 5 % of it.
class LatenessHistogram:
    """Fixed-edge histogram of send lateness in nanoseconds, mergeable exactly."""

    __slots__ = ("counts", "max_ns", "sum_ns", "total")

    def __init__(self) -> None:
        self.counts = [0] * (_LAST + 1)
        self.total = 0
        self.sum_ns = 0
        self.max_ns = 0

    def record(self, lateness_ns: int) -> None:
        """Count one frame's lateness (actual minus intended send time)."""
        if lateness_ns < 0:
            index = 0
        elif lateness_ns < _TOP:
            bits = lateness_ns.bit_length()
            slot = lateness_ns >> (bits - 7) if bits > 7 else lateness_ns
            index = _SLOTS[(bits << 7) | slot]
            if lateness_ns >= _UPPER[index]:
                index += 1
        else:
            index = _LAST
        self.counts[index] += 1
        if self.total == 0 or lateness_ns > self.max_ns:
            self.max_ns = lateness_ns
        self.total += 1
        self.sum_ns += lateness_ns

    def merge(self, other: LatenessHistogram) -> None:
        """Add ``other``'s frames into this histogram."""
        if other.total == 0:
            return
        counts = self.counts
        for i, count in enumerate(other.counts):
            counts[i] += count
        self.max_ns = (
            other.max_ns if self.total == 0 else max(self.max_ns, other.max_ns)
        )
        self.total += other.total
        self.sum_ns += other.sum_ns

    def __add__(self, other: LatenessHistogram) -> LatenessHistogram:
        return LatenessHistogram.pooled((self, other))

    @classmethod
    def pooled(cls, histograms: Iterable[LatenessHistogram]) -> LatenessHistogram:
        result = cls()
        for histogram in histograms:
            result.merge(histogram)
        return result

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0 to 100) in ns; early frames count as 0.

        NaN when the histogram is empty.
        """
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be within 0..100, got {q!r}")
        if self.total == 0:
            return math.nan

        # Find the bucket holding the value of rank q * total, then place the value
        # inside the bucket by its rank among the bucket's own frames.
        rank = max(q * self.total / 100, 1e-9)
        seen = 0
        index = 0
        counts = self.counts
        while not counts[index] or seen + counts[index] < rank:
            seen += counts[index]
            index += 1
        count = counts[index]
        if index == 0:
            return 0.0
        low = LATENESS_EDGES_NS[index - 1]
        high = _UPPER[index] if index < _LAST else max(self.max_ns, low)
        value = low + min(1.0, (rank - seen) / count) * (high - low)
        return min(value, float(max(self.max_ns, 0)))

    def percentile_ms(self, q: float) -> float:
        return self.percentile(q) / 1e6

    @property
    def mean_ns(self) -> float:
        return self.sum_ns / self.total if self.total else math.nan

    def to_list(self) -> list[int]:
        """The bucket counts: the capture's ``sessions.send_lateness_hist`` column."""
        return list(self.counts)

    @classmethod
    def from_list(
        cls, counts: Sequence[int], *, sum_ns: int = 0, max_ns: int | None = None
    ) -> LatenessHistogram:
        """Rebuild a histogram from :meth:`to_list` and the sum and maximum.

        Without ``max_ns`` the maximum is taken as the upper edge of the highest
        non-empty bucket, an overestimate by at most one bucket.

        Raises:
            ValueError: the counts do not fit the edges or are negative.
        """
        if len(counts) != _LAST + 1:
            raise ValueError(f"wanted {_LAST + 1} bucket counts, got {len(counts)}")
        result = cls()
        result.counts = [int(c) for c in counts]
        if any(c < 0 for c in result.counts):
            raise ValueError("lateness histogram counts must not be negative")
        result.total = sum(result.counts)
        result.sum_ns = int(sum_ns)
        if max_ns is not None:
            result.max_ns = int(max_ns)
        elif result.total:
            top = max(i for i, c in enumerate(result.counts) if c)
            result.max_ns = 0 if top == 0 else min(_UPPER[top], 1 << 40)
        return result

    def session_columns(self) -> dict[str, object]:
        """The ``sessions`` capture columns that store this histogram."""
        empty = self.total == 0
        return {
            "send_lateness_hist": self.to_list(),
            "send_lateness_sum_ms": self.sum_ns / 1e6,
            "send_lateness_max_ms": None if empty else self.max_ns / 1e6,
            "send_lateness_p99_ms": None if empty else self.percentile_ms(99),
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatenessHistogram):
            return NotImplemented
        return (self.counts, self.sum_ns, self.max_ns) == (
            other.counts,
            other.sum_ns,
            other.max_ns,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<LatenessHistogram total={self.total} max_ns={self.max_ns}>"
