"""Tests of the Prometheus exporter: HTTP endpoint, metric values, batching, labels."""

from __future__ import annotations

import urllib.error
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from voicesim.engine._prometheus import LATENESS_BUCKETS_S, PrometheusExporter


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse the text format into {(sample name, sorted labels): value}."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_prometheus_exporter_serves_metrics_over_http_on_loopback() -> None:
    """start(0) serves /metrics on 127.0.0.1 at an OS-chosen port until stop()."""
    exporter = PrometheusExporter()
    port = exporter.start(0)
    try:
        assert port > 0 and exporter.port == port
        exporter.session_started()
        exporter.turn_done({"outcome": "answered", "response_latency_ms": 1300.0})
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/metrics", timeout=10
        ) as reply:
            assert reply.status == 200
            text = reply.read().decode()
    finally:
        exporter.stop()

    values = samples(text)
    assert values[("voicesim_active_sessions", ())] == 1
    assert values[("voicesim_turns_total", (("outcome", "answered"),))] == 1
    assert values[("voicesim_response_latency_seconds_bucket", (("le", "1.5"),))] == 1
    assert values[("voicesim_response_latency_seconds_bucket", (("le", "1.25"),))] == 0
    assert exporter.port is None
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10)


def test_prometheus_exporter_counts_sessions_turns_and_errors() -> None:
    """Session and turn events land in the gauge, counters and histograms."""
    exporter = PrometheusExporter()
    for _ in range(3):
        exporter.session_started()
    exporter.session_ended("completed", "")
    exporter.session_ended("lost", "close 4006")
    exporter.session_ended("failed", "join timed out")  # never joined
    exporter.turn_done(
        {
            "outcome": "answered",
            "response_latency_ms": 900.0,
            "transcript_latency_ms": 400.0,
            "jitter_ms": 3.0,
            "packets_received": 95,
            "packets_lost": 5,
            "word_errors": 1,
            "reference_words": 6,
        }
    )
    exporter.turn_done({"outcome": "timeout", "response_latency_ms": None})
    exporter.turn_done({"outcome": "error", "reason": "decrypt"})

    values = samples(exporter.render().decode())
    assert values[("voicesim_active_sessions", ())] == 1
    assert values[("voicesim_sessions_started_total", ())] == 3
    assert values[("voicesim_sessions_ended_total", (("outcome", "lost"),))] == 1
    assert values[("voicesim_errors_total", (("reason", "close 4006"),))] == 1
    assert values[("voicesim_errors_total", (("reason", "join timed out"),))] == 1
    assert values[("voicesim_errors_total", (("reason", "decrypt"),))] == 1
    assert values[("voicesim_turns_total", (("outcome", "timeout"),))] == 1
    assert values[("voicesim_response_latency_seconds_count", ())] == 1
    assert values[("voicesim_response_latency_seconds_sum", ())] == pytest.approx(0.9)
    assert values[("voicesim_jitter_seconds_sum", ())] == pytest.approx(0.003)
    assert values[("voicesim_packets_lost_total", ())] == 5
    assert values[("voicesim_word_errors_total", ())] == 1
    assert values[("voicesim_reference_words_total", ())] == 6


def test_prometheus_lateness_batch_equals_single_observations() -> None:
    """lateness_batch and frame_lateness bucket the same values identically, edges included."""
    values = [
        -0.001,
        0.0,
        0.0001,
        0.00010001,
        0.0007,
        0.001,
        0.2,
        5.0,
        *LATENESS_BUCKETS_S,
    ]
    one, batch = PrometheusExporter(), PrometheusExporter()
    for value in values:
        one.frame_lateness(value)
    batch.lateness_batch(np.array(values))
    batch.lateness_batch([])

    a = {k: v for k, v in samples(one.render().decode()).items() if "lateness" in k[0]}
    b = {
        k: v for k, v in samples(batch.render().decode()).items() if "lateness" in k[0]
    }
    assert a == pytest.approx(b)
    assert a[("voicesim_send_lateness_seconds_count", ())] == len(values)
    assert a[("voicesim_send_lateness_seconds_bucket", (("le", "0.0001"),))] == 4
    assert (
        a[("voicesim_send_lateness_seconds_bucket", (("le", "1.0"),))]
        == len(values) - 1
    )


def test_prometheus_reason_labels_are_capped() -> None:
    """Past max_reasons distinct reasons, new ones are counted under 'other'."""
    exporter = PrometheusExporter(max_reasons=2)
    for reason in ("a", "b", "c", "d", "a"):
        exporter.error(reason)

    values = samples(exporter.render().decode())
    errors = {
        dict(k[1])["reason"]: v
        for k, v in values.items()
        if k[0] == "voicesim_errors_total"
    }
    assert errors == {"a": 2, "b": 1, "other": 2}


def test_prometheus_exporters_do_not_share_metrics() -> None:
    """Each exporter has its own registry, so two can live in one process."""
    first, second = PrometheusExporter(), PrometheusExporter()
    first.session_started()
    assert samples(second.render().decode())[("voicesim_active_sessions", ())] == 0
