"""Pass/fail thresholds in the style of k6, evaluated on a run's records.

A threshold reads ``metric: aggregate op value[unit]``::

    response_latency: p(95) < 1500ms
    transcript_latency: med <= 1.2s
    wer: rate < 15%
    failed_sessions: count == 0

Aggregates are ``p(N)`` (0 < N <= 100), ``avg``, ``min``, ``max``, ``med`` (= p(50)),
``rate`` (a pooled fraction) and ``count``. Operators are ``<``, ``<=``, ``>``, ``>=``,
``==`` and ``!=``. A value without a unit is in the metric's own unit (ms for times, a
fraction for rates); ``s`` and ``ms`` apply to times, ``%`` to rates.

``METRICS`` names every metric, where its values come from and which aggregates make
sense for it: an average of WER over utterances, for instance, is refused, because WER
pools over words. A threshold whose metric has no data fails, so that an empty run
cannot pass a latency bound.

Pure: stdlib and numpy (the tables arrive as pandas DataFrames, read through their
methods).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from voicesim._capture_format import (
    FAILED_SESSION_OUTCOMES,
    FAILED_TURN_OUTCOMES,
    SessionOutcome,
    TurnOutcome,
)
from voicesim._exceptions import ConfigError
from voicesim._stats import finite_values, pooled_lateness

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "METRICS",
    "Metric",
    "Threshold",
    "Verdict",
    "evaluate",
    "parse_threshold",
    "parse_thresholds",
]

#: Aggregates of a distribution of values.
TREND = ("p(N)", "avg", "min", "max", "med")


@attrs.frozen(kw_only=True)
class Metric:
    """A quantity thresholds can bound."""

    name: str
    #: where the values come from: ``table.column``, or how they are derived
    source: str
    #: unit of the values of a distribution: "ms" or "ratio" (a fraction)
    unit: str
    #: the aggregates that make sense, in the order error messages list them
    aggregates: tuple[str, ...]
    description: str
    #: why an aggregate is refused, for the ones people are likely to try
    refusals: Mapping[str, str] = attrs.field(factory=dict)


def _metrics(*metrics: Metric) -> dict[str, Metric]:
    return {m.name: m for m in metrics}


METRICS: dict[str, Metric] = _metrics(
    Metric(name="response_latency", source="turns.response_latency_ms", unit="ms", aggregates=TREND,
           description="speech end to the agent's first audible frame"),
    Metric(name="transcript_latency", source="turns.transcript_latency_ms", unit="ms", aggregates=TREND,
           description="speech end to the agent's transcript message"),
    Metric(name="jitter", source="turns.jitter_ms", unit="ms", aggregates=TREND,
           description="RFC 3550 jitter of the agent's stream, per turn"),
    Metric(name="barge_in_stop", source="turns.barge_in_stop_ms", unit="ms", aggregates=TREND,
           description="user onset to the agent's last audible frame when talked over"),
    Metric(name="join_time", source="sessions.join_time_ms", unit="ms", aggregates=TREND,
           description="voice join requested to first frame sent"),
    Metric(name="send_lateness", source="sessions.send_lateness_hist (pooled histogram)", unit="ms",
           aggregates=("p(N)", "avg", "max", "med"),
           description="actual minus intended send time of every frame voicesim sent",
           refusals={"min": "the histogram does not keep the minimum"}),
    Metric(name="wer", source="sum(turns.word_errors) / sum(turns.reference_words)", unit="ratio",
           aggregates=("rate", "p(N)", "max", "med"),
           description="word error rate of transcripts; rate pools over words, p(N)/med/max are over turns",
           refusals={"avg": "WER pools over words, an average over utterances misleads: use rate"}),
    Metric(name="loss", source="sum(turns.packets_lost) / sum(packets_received + packets_lost)", unit="ratio",
           aggregates=("rate",), description="fraction of the agent's packets lost"),
    Metric(name="reorder", source="sum(turns.packets_reordered) / sum(turns.packets_received)", unit="ratio",
           aggregates=("rate",), description="fraction of the agent's packets out of order"),
    Metric(name="duplicates", source="sum(turns.packets_duplicated) / sum(turns.packets_received)", unit="ratio",
           aggregates=("rate",), description="fraction of the agent's packets received twice"),
    Metric(name="failed_turns", source="turns.outcome in (timeout, error)", unit="ratio",
           aggregates=("rate", "count"), description="turns not answered (cancelled turns excluded)"),
    Metric(name="turn_timeouts", source="turns.outcome == timeout", unit="ratio",
           aggregates=("rate", "count"), description="turns the agent did not answer in time"),
    Metric(name="answered_turns", source="turns.outcome == answered", unit="ratio",
           aggregates=("rate", "count"), description="turns the agent answered"),
    Metric(name="failed_sessions", source="sessions.outcome in (failed, lost, error, not_started)", unit="ratio",
           aggregates=("rate", "count"), description="sessions that failed or could not start (cancelled excluded)"),
    Metric(name="missed_starts", source="sessions.outcome == not_started", unit="ratio",
           aggregates=("rate", "count"), description="sessions that could not start on schedule"),
    Metric(name="dave_decrypt_failures", source="sum(sessions.dave_decrypt_failures)", unit="count",
           aggregates=("count",), description="agent frames whose DAVE layer did not decrypt"),
)  # fmt: skip

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_ALL_AGGREGATES = "p(N), avg, min, max, med, rate or count"
_SHAPE = re.compile(r"^\s*(?P<metric>[^:]*?)\s*:\s*(?P<rest>.*?)\s*$", re.S)
_OP = re.compile(r"(<=|>=|==|!=|<|>)")
_PERCENTILE = re.compile(r"^p\(\s*(?P<n>\d+(?:\.\d+)?)\s*\)$")
_VALUE = re.compile(r"^(?P<number>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<unit>ms|s|%)?$")  # fmt: skip


@attrs.frozen(kw_only=True)
class Threshold:
    """A parsed threshold. ``value`` is in the metric's own unit (ms, fraction, count)."""

    metric: str
    aggregate: str  # "p(95)", "avg", "min", "max", "med", "rate" or "count"
    percentile: float | None  # 95.0 for "p(95)", 50.0 for "med"
    op: str
    value: float
    #: the unit the value was written in: "ms", "s", "%" or ""
    unit: str
    text: str

    def __str__(self) -> str:
        return self.text

    @property
    def value_unit(self) -> str:
        """The unit of ``value`` and of the observed value: "ms", "ratio" or "count"."""
        if self.aggregate == "count":
            return "count"
        if self.aggregate == "rate":
            return "ratio"
        return METRICS[self.metric].unit


def _fail(text: str, problem: str) -> ConfigError:
    return ConfigError("threshold", f"{problem} in {text.strip()!r}")


def _parse_aggregate(text: str, metric: Metric, word: str) -> tuple[str, float | None]:
    percentile: float | None
    match = _PERCENTILE.match(word)
    if match:
        n = float(match["n"])
        if not 0.0 < n <= 100.0:
            raise _fail(text, f"percentile {word!r} is outside p(0)..p(100)")
        aggregate, kind, percentile = f"p({match['n']})", "p(N)", n
    elif word in ("avg", "min", "max", "med", "rate", "count"):
        aggregate, kind = word, word
        percentile = 50.0 if word == "med" else None
    else:
        raise _fail(text, f"unknown aggregate {word!r}; use {_ALL_AGGREGATES}")
    if kind not in metric.aggregates:
        why = metric.refusals.get(kind, f"it does not apply to {metric.name}")
        raise _fail(
            text,
            f"aggregate {word!r} does not fit {metric.name} ({why}); "
            f"use {', '.join(metric.aggregates)}",
        )
    return aggregate, percentile


def _parse_value(text: str, word: str, value_unit: str) -> tuple[float, str]:
    match = _VALUE.match(word)
    if not match:
        raise _fail(
            text, f"value {word!r} is not a number with an optional unit ms, s or %"
        )
    number, unit = float(match["number"]), match["unit"] or ""
    allowed = {"ms": ("", "ms", "s"), "ratio": ("", "%"), "count": ("",)}[value_unit]
    if unit not in allowed:
        wanted = " or ".join(u for u in allowed if u) or "a plain number"
        raise _fail(
            text, f"unit {unit!r} does not fit a value in {value_unit}; use {wanted}"
        )
    if unit == "s":
        number *= 1000.0
    elif unit == "%":
        number /= 100.0
    return number, unit


def parse_threshold(text: str) -> Threshold:
    """Parse ``metric: aggregate op value[unit]``; ConfigError names the bad part."""
    shape = _SHAPE.match(text) if ":" in text else None
    if shape is None:
        raise ConfigError(
            "threshold",
            f"{text.strip()!r} is not 'metric: aggregate op value' "
            "(for example 'response_latency: p(95) < 1500ms')",
        )
    name = shape["metric"]
    metric = METRICS.get(name)
    if metric is None:
        raise _fail(
            text,
            f"unknown metric {name!r} (known metrics: {', '.join(sorted(METRICS))})",
        )

    parts = _OP.split(shape["rest"], maxsplit=1)
    if len(parts) != 3:
        raise _fail(text, "no comparison operator (use <, <=, >, >=, == or !=)")
    aggregate_word, op, value_word = (p.strip() for p in parts)
    aggregate, percentile = _parse_aggregate(text, metric, aggregate_word)
    threshold_unit = {"count": "count", "rate": "ratio"}.get(aggregate, metric.unit)
    value, unit = _parse_value(text, value_word, threshold_unit)
    return Threshold(
        metric=name,
        aggregate=aggregate,
        percentile=percentile,
        op=op,
        value=value,
        unit=unit,
        text=f"{name}: {aggregate} {op} {value_word.replace(' ', '')}",
    )


def parse_thresholds(spec: str | Iterable[str] | Mapping[str, Any]) -> list[Threshold]:
    """Parse thresholds given as one string, a list of strings, or a k6-style table.

    The table form maps a metric to one expression or a list of them::

        {"response_latency": ["p(95) < 1500ms", "max < 5s"], "wer": "rate < 15%"}
    """
    if isinstance(spec, str):
        return [parse_threshold(spec)]
    if isinstance(spec, Mapping):
        result: list[Threshold] = []
        for metric, expressions in spec.items():
            if isinstance(expressions, str):
                expressions = [expressions]
            result.extend(parse_threshold(f"{metric}: {e}") for e in expressions)
        return result
    return [parse_threshold(text) for text in spec]


@attrs.frozen(kw_only=True)
class Verdict:
    """A threshold, the value observed for it, and whether it held."""

    threshold: Threshold
    #: None when the metric had no data (the threshold then fails)
    observed: float | None
    passed: bool

    @property
    def observed_text(self) -> str:
        """The observed value with its unit: ``1234.5 ms``, ``3.20 %``, ``no data``."""
        return _show(self.observed, self.threshold.value_unit)

    def describe(self) -> str:
        """One line: ``response_latency p(95) = 1234.5 ms (< 1500 ms): pass``."""
        t = self.threshold
        return (
            f"{t.metric} {t.aggregate} = {self.observed_text} "
            f"({t.op} {_show(t.value, t.value_unit)}): {'pass' if self.passed else 'FAIL'}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as stored in run.json and summary files."""
        t = self.threshold
        return {
            "threshold": t.text,
            "metric": t.metric,
            "aggregate": t.aggregate,
            "op": t.op,
            "value": t.value,
            "unit": t.value_unit,
            "observed": self.observed,
            "passed": self.passed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        """Rebuild a verdict from :meth:`to_dict`'s output."""
        observed = data.get("observed")
        return cls(
            threshold=parse_threshold(str(data["threshold"])),
            observed=None if observed is None else float(observed),
            passed=bool(data["passed"]),
        )


def _show(value: float | None, unit: str) -> str:
    if value is None:
        return "no data"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "ratio":
        return f"{value * 100:.2f} %"
    return f"{value:g}"


def _aggregate(values: np.ndarray[Any, Any], threshold: Threshold) -> float | None:
    if values.size == 0:
        return None
    if threshold.percentile is not None:
        return float(np.percentile(values, threshold.percentile))
    if threshold.aggregate == "avg":
        return float(np.mean(values))
    return float(np.min(values) if threshold.aggregate == "min" else np.max(values))


def _fraction(hits: int, total: int, threshold: Threshold) -> float | None:
    if threshold.aggregate == "count":
        return float(hits)
    return hits / total if total else None


def _outcomes(frame: pd.DataFrame) -> np.ndarray[Any, Any]:
    if len(frame) == 0:
        return np.empty(0, dtype=object)
    return np.asarray(frame["outcome"].astype(str).to_numpy(), dtype=object)


def _observe(
    t: Threshold,
    turns: pd.DataFrame,
    sessions: pd.DataFrame,
    edges_ms: Sequence[float] | None,
) -> float | None:
    table, _, column = METRICS[t.metric].source.partition(".")
    if t.metric == "send_lateness":
        pooled = pooled_lateness(sessions, edges_ms)
        if pooled.count == 0:
            return None
        if t.aggregate == "avg":
            return pooled.mean()
        if t.aggregate == "max":
            return pooled.max_ms
        assert t.percentile is not None
        return pooled.quantile(t.percentile / 100.0)
    if METRICS[t.metric].unit == "ms":
        frame = turns if table == "turns" else sessions
        return _aggregate(finite_values(frame, column), t)

    if t.metric == "wer":
        with_text = turns[turns["word_errors"].notna()] if len(turns) else turns
        errors = finite_values(with_text, "word_errors")
        words = finite_values(with_text, "reference_words")
        if t.aggregate == "rate":
            return float(errors.sum() / words.sum()) if words.sum() > 0 else None
        has_words = words > 0
        return _aggregate(errors[has_words] / words[has_words], t)
    if t.metric in ("loss", "reorder", "duplicates"):
        received = int(finite_values(turns, "packets_received").sum())
        lost = int(finite_values(turns, "packets_lost").sum())
        column = {"loss": "packets_lost", "reorder": "packets_reordered"}.get(
            t.metric, "packets_duplicated"
        )
        hits = int(finite_values(turns, column).sum())
        return _fraction(hits, received + lost if t.metric == "loss" else received, t)
    if t.metric == "dave_decrypt_failures":
        return float(finite_values(sessions, "dave_decrypt_failures").sum())

    if t.metric in ("failed_turns", "turn_timeouts", "answered_turns"):
        outcomes = _outcomes(turns)
        counted = outcomes[outcomes != TurnOutcome.CANCELLED]
        hit_set: frozenset[str] = {
            "failed_turns": FAILED_TURN_OUTCOMES,
            "turn_timeouts": frozenset({TurnOutcome.TIMEOUT}),
            "answered_turns": frozenset({TurnOutcome.ANSWERED}),
        }[t.metric]
    else:
        outcomes = _outcomes(sessions)
        counted = outcomes[outcomes != SessionOutcome.CANCELLED]
        hit_set = (
            FAILED_SESSION_OUTCOMES
            if t.metric == "failed_sessions"
            else frozenset({SessionOutcome.NOT_STARTED})
        )
    hits = int(sum(1 for o in counted if o in hit_set))
    return _fraction(hits, len(counted), t)


def evaluate(
    thresholds: Iterable[Threshold],
    turns: pd.DataFrame,
    sessions: pd.DataFrame,
    *,
    lateness_edges_ms: Sequence[float] | None = None,
) -> list[Verdict]:
    """Evaluate each threshold on pooled records; a metric without data fails."""
    verdicts: list[Verdict] = []
    for threshold in thresholds:
        observed = _observe(threshold, turns, sessions, lateness_edges_ms)
        ok = observed is not None and _OPS[threshold.op](observed, threshold.value)
        verdicts.append(Verdict(threshold=threshold, observed=observed, passed=ok))
    return verdicts
