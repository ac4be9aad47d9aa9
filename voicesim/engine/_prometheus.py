"""Live metrics for Prometheus, served over HTTP on 127.0.0.1 while a swarm runs.

The exporter owns its own ``CollectorRegistry``, so two swarms in one process (tests,
notebooks) never share or collide on metric names, and nothing lands in the process
default registry. The HTTP server runs in a daemon thread started by ``start``.

Names (all prefixed ``voicesim_``; ``examples/grafana-dashboard.json`` plots them):

- ``active_sessions`` gauge; ``sessions_started_total``; ``sessions_ended_total{outcome}``
- ``turns_total{outcome}``; ``errors_total{reason}``
- ``response_latency_seconds``, ``transcript_latency_seconds``, ``jitter_seconds``,
  ``send_lateness_seconds`` histograms
- ``packets_received_total``, ``packets_lost_total``, ``word_errors_total``,
  ``reference_words_total`` (so loss and WER pool in PromQL as a ratio of rates)

Send lateness comes fifty frames a second a session. prometheus_client's
``Histogram.observe`` costs a lock and a bucket search per call, so lateness goes
through a small numpy histogram of our own that takes a whole batch in one vectorised
step and is exported by a custom collector. The swarm adds nothing per frame: the media
clock already counts every frame into its streams' ``LatenessHistogram``, and
``follow_lateness`` makes each scrape read their pooled counts.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import start_http_server as _start_http_server
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from voicesim._capture_format import (
    FAILED_SESSION_OUTCOMES,
    UNJOINED_SESSION_OUTCOMES,
)
from voicesim._histogram import LATENESS_EDGES_NS, LatenessHistogram

__all__ = ["PrometheusExporter"]

LATENCY_BUCKETS_S = (
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    1.25,
    1.5,
    2.0,
    2.5,
    3.0,
    4.0,
    5.0,
    7.5,
    10.0,
    15.0,
    30.0,
)
JITTER_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32)
LATENESS_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    1.0,
)


def _lateness_bucket_map() -> tuple[int, ...]:
    # Bucket i of a LatenessHistogram holds values below LATENESS_EDGES_NS[i] (the
    # last one everything above); each goes under the first Prometheus bound at or
    # above that upper edge, so a frame is never shown earlier than it was sent. The
    # lateness buckets are 5 % wide, which bounds the overstatement.
    upper = [edge / 1e9 for edge in LATENESS_EDGES_NS]
    return (
        *(bisect.bisect_left(LATENESS_BUCKETS_S, u) for u in upper),
        len(LATENESS_BUCKETS_S),
    )


_LATENESS_BUCKET_OF = np.asarray(_lateness_bucket_map(), dtype=np.intp)

#: Distinct ``reason`` label values kept before further ones are counted as "other":
#: each value is a time series, and a reason carrying free text would create one per
#: error.
MAX_REASONS = 50


@attrs.define(eq=False)
class _BatchHistogram:
    """A Prometheus histogram fed in batches; thread-safe, exported by ``collect``."""

    name: str
    documentation: str
    bounds: tuple[float, ...]
    #: Counts per bucket and their sum added at every scrape, e.g. a live histogram.
    source: Callable[[], tuple[npt.NDArray[np.int64], float]] | None = None
    _bounds: npt.NDArray[np.float64] = attrs.field(init=False)
    _counts: npt.NDArray[np.int64] = attrs.field(init=False)
    _sum: float = attrs.field(init=False, default=0.0)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)

    def __attrs_post_init__(self) -> None:
        self._bounds = np.asarray((*self.bounds, math.inf), dtype=np.float64)
        self._counts = np.zeros(len(self._bounds), dtype=np.int64)

    def observe(self, value: float) -> None:
        # Prometheus buckets are "less than or equal": the first bound >= value.
        index = bisect.bisect_left(self.bounds, value)
        with self._lock:
            self._counts[index] += 1
            self._sum += value

    def observe_many(self, values: npt.ArrayLike) -> None:
        array = np.asarray(values, dtype=np.float64).ravel()
        if array.size == 0:
            return
        index = np.searchsorted(self._bounds, array, side="left")
        counts = np.bincount(index, minlength=len(self._counts))
        total = float(array.sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts = self._counts.copy()
            total = self._sum
        if self.source is not None:
            # Read outside the lock: the source takes its own locks.
            extra, extra_sum = self.source()
            counts += extra
            total += extra_sum
        cumulative = np.cumsum(counts)
        family = HistogramMetricFamily(self.name, self.documentation)
        buckets = [
            ("+Inf" if math.isinf(b) else repr(float(b)), float(c))
            for b, c in zip(self._bounds, cumulative, strict=True)
        ]
        family.add_metric([], buckets, total)
        yield family


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


@attrs.define(eq=False)
class PrometheusExporter:
    """Counts sessions, turns and errors and exposes them to Prometheus.

    The engine calls ``session_started`` / ``session_ended`` / ``turn_done`` from its
    trio thread and ``frame_lateness`` / ``lateness_batch`` from the media clock's
    thread; all are thread-safe. ``start(0)`` serves on an OS-chosen port and returns
    it.
    """

    max_reasons: int = MAX_REASONS
    registry: CollectorRegistry = attrs.field(init=False, factory=CollectorRegistry)
    _server: Any = attrs.field(init=False, default=None)
    _thread: threading.Thread | None = attrs.field(init=False, default=None)
    _reasons: set[str] = attrs.field(init=False, factory=set)
    _reasons_lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    active_sessions: Gauge = attrs.field(init=False)
    sessions_started: Counter = attrs.field(init=False)
    sessions_ended: Counter = attrs.field(init=False)
    turns: Counter = attrs.field(init=False)
    errors: Counter = attrs.field(init=False)
    response_latency: Histogram = attrs.field(init=False)
    transcript_latency: Histogram = attrs.field(init=False)
    jitter: Histogram = attrs.field(init=False)
    packets_received: Counter = attrs.field(init=False)
    packets_lost: Counter = attrs.field(init=False)
    word_errors: Counter = attrs.field(init=False)
    reference_words: Counter = attrs.field(init=False)
    send_lateness: _BatchHistogram = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        r = self.registry
        self.active_sessions = Gauge(
            "voicesim_active_sessions", "Sessions running now", registry=r
        )
        self.sessions_started = Counter(
            "voicesim_sessions_started", "Sessions started", registry=r
        )
        self.sessions_ended = Counter(
            "voicesim_sessions_ended",
            "Sessions ended, by outcome",
            ["outcome"],
            registry=r,
        )
        self.turns = Counter(
            "voicesim_turns", "Turns finished, by outcome", ["outcome"], registry=r
        )
        self.errors = Counter(
            "voicesim_errors", "Errors, by reason", ["reason"], registry=r
        )
        self.response_latency = Histogram(
            "voicesim_response_latency_seconds",
            "Speech end to the agent's first audible frame",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.transcript_latency = Histogram(
            "voicesim_transcript_latency_seconds",
            "Speech end to the agent's transcript message",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.jitter = Histogram(
            "voicesim_jitter_seconds",
            "RFC 3550 jitter of the agent's stream, per turn",
            buckets=JITTER_BUCKETS_S,
            registry=r,
        )
        self.packets_received = Counter(
            "voicesim_packets_received", "Agent packets received", registry=r
        )
        self.packets_lost = Counter(
            "voicesim_packets_lost", "Agent packets lost", registry=r
        )
        self.word_errors = Counter(
            "voicesim_word_errors", "Word errors in transcripts", registry=r
        )
        self.reference_words = Counter(
            "voicesim_reference_words",
            "Words in the references of transcribed turns",
            registry=r,
        )
        self.send_lateness = _BatchHistogram(
            "voicesim_send_lateness_seconds",
            "Actual minus intended send time of each frame",
            LATENESS_BUCKETS_S,
        )
        r.register(self.send_lateness)

    # -- serving ---------------------------------------------------------------------

    def start(self, port: int = 0, addr: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``addr:port`` in a daemon thread; returns the port."""
        if self._server is not None:
            raise RuntimeError("the Prometheus exporter is already serving")
        self._server, self._thread = _start_http_server(
            port, addr=addr, registry=self.registry
        )
        return self.port or 0

    @property
    def port(self) -> int | None:
        """The port being served, or None when stopped."""
        return None if self._server is None else int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop serving and close the socket; a no-op when not serving."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()

    def render(self) -> bytes:
        """The current metrics in the Prometheus text format."""
        return bytes(generate_latest(self.registry))

    # -- what the engine reports ---------------------------------------------------------

    def _reason(self, reason: str) -> str:
        reason = reason.strip()[:80] or "unknown"
        with self._reasons_lock:
            if reason in self._reasons:
                return reason
            if len(self._reasons) >= self.max_reasons:
                return "other"
            self._reasons.add(reason)
            return reason

    def error(self, reason: str) -> None:
        """Count one error under a short reason ("close 4006", "decrypt", ...)."""
        self.errors.labels(reason=self._reason(reason)).inc()

    def session_started(self) -> None:
        """A session joined its voice channel."""
        self.sessions_started.inc()
        self.active_sessions.inc()

    def session_ended(
        self, outcome: str, reason: str | None = None, *, joined: bool | None = None
    ) -> None:
        """A session ended; failures also count as errors under ``reason``.

        ``joined`` says whether ``session_started`` was called for it; when None it is
        inferred from the outcome (``failed`` and ``not_started`` sessions never
        joined), so that the active count never goes below the truth.
        """
        outcome = str(outcome)
        self.sessions_ended.labels(outcome=outcome).inc()
        if joined is None:
            joined = outcome not in UNJOINED_SESSION_OUTCOMES
        if joined:
            self.active_sessions.dec()
        if outcome in FAILED_SESSION_OUTCOMES:
            self.error(reason or f"session {outcome}")

    def turn_done(self, record: Mapping[str, Any]) -> None:
        """A turn finished; ``record`` is the row given to ``CaptureWriter.add_turn``."""
        outcome = str(record.get("outcome", "unknown"))
        self.turns.labels(outcome=outcome).inc()
        if outcome == "error":
            self.error(str(record.get("reason") or "turn error"))
        for histogram, key in (
            (self.response_latency, "response_latency_ms"),
            (self.transcript_latency, "transcript_latency_ms"),
            (self.jitter, "jitter_ms"),
        ):
            value = _finite(record.get(key))
            if value is not None:
                histogram.observe(value / 1000.0)
        self.packets_received.inc(int(record.get("packets_received") or 0))
        self.packets_lost.inc(int(record.get("packets_lost") or 0))
        word_errors = record.get("word_errors")
        if word_errors is not None:
            self.word_errors.inc(int(word_errors))
            self.reference_words.inc(int(record.get("reference_words") or 0))

    def frame_lateness(self, seconds: float) -> None:
        """One frame's send lateness, in seconds."""
        self.send_lateness.observe(seconds)

    def lateness_batch(self, values: npt.ArrayLike) -> None:
        """Many frames' send lateness, in seconds, in one cheap call."""
        self.send_lateness.observe_many(values)

    def follow_lateness(self, source: Callable[[], LatenessHistogram]) -> None:
        """Export, at every scrape, the send lateness ``source`` returns then.

        ``source`` returns a cumulative histogram (the swarm passes its media clock's
        pooled one), so the exported counts only grow, as a Prometheus histogram's
        must; frames passed to ``frame_lateness`` or ``lateness_batch`` add to them.
        """

        def converted() -> tuple[npt.NDArray[np.int64], float]:
            histogram = source()
            counts = np.zeros(len(LATENESS_BUCKETS_S) + 1, dtype=np.int64)
            np.add.at(counts, _LATENESS_BUCKET_OF, np.asarray(histogram.counts))
            return counts, histogram.sum_ns / 1e9

        self.send_lateness.source = converted
