"""Loading a capture directory into pandas DataFrames."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pandas as pd

from voicesim._capture_format import (
    RUN_JSON,
    SEND_LATENESS_EDGES_MS,
    TABLES,
    read_table,
)
from voicesim._exceptions import ConfigError
from voicesim._stats import summarize
from voicesim._thresholds import Threshold, Verdict, evaluate, parse_thresholds

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Capture", "load"]


@attrs.define(eq=False)
class Capture:
    """One run's capture, loaded: its tables as DataFrames and its ``run.json``.

    ``turns`` and ``sessions`` always exist (empty when the run produced no rows);
    ``packets`` is None when packets were not captured. Times (``*_ns`` columns) are
    ``time.perf_counter_ns()`` readings of the generator process: ``elapsed_s`` turns
    them into seconds since the run started and ``wall_time`` into UTC timestamps.
    Nullable integer columns come back as float64 with NaN when a value is missing.

    ``incomplete`` lists, for a person, why the capture may lack data (the run was
    killed, a chunk was being written, ...); it is empty for a run that finished.
    """

    path: Path
    run: dict[str, Any]
    turns: pd.DataFrame
    sessions: pd.DataFrame
    packets: pd.DataFrame | None
    verdicts: list[Verdict]
    incomplete: list[str] = attrs.field(factory=list)
    warnings: list[str] = attrs.field(factory=list)
    _summary: dict[str, Any] | None = attrs.field(default=None, repr=False)

    @property
    def config(self) -> dict[str, Any]:
        """The run's configuration, as recorded (secrets were never written)."""
        config = self.run.get("config")
        return config if isinstance(config, dict) else {}

    @property
    def complete(self) -> bool:
        """True when the run finished and nothing is missing."""
        return not self.incomplete

    @property
    def name(self) -> str:
        """The capture directory's name."""
        return self.path.name

    @property
    def lateness_edges_ms(self) -> tuple[float, ...]:
        """Bucket edges of ``sessions.send_lateness_hist`` for this capture."""
        edges = self.run.get("send_lateness_edges_ms")
        return tuple(float(e) for e in edges) if edges else SEND_LATENESS_EDGES_MS

    @property
    def t0_ns(self) -> int:
        """The monotonic time taken as the run's start (the clock anchor)."""
        anchor = self.run.get("clock_anchor") or {}
        if "monotonic_ns" in anchor:
            return int(anchor["monotonic_ns"])
        firsts = [
            frame[column].min()
            for frame, column in (
                (self.sessions, "join_requested_ns"),
                (self.turns, "speech_start_ns"),
            )
            if len(frame) and frame[column].notna().any()
        ]
        return int(min(firsts)) if firsts else 0

    def elapsed_s(self, ns: Any) -> Any:
        """Seconds since the run's start for perf_counter_ns values (scalar or Series)."""
        return (ns - self.t0_ns) / 1e9

    def wall_time(self, ns: pd.Series) -> pd.Series:
        """UTC timestamps for perf_counter_ns values, through run.json's clock anchor."""
        anchor = self.run.get("clock_anchor") or {}
        if "wall_ns" not in anchor:
            raise ValueError(f"{self.path} has no clock anchor in run.json")
        wall = anchor["wall_ns"] + (ns - self.t0_ns)
        return pd.to_datetime(wall, unit="ns", utc=True)

    def summary(self) -> dict[str, Any]:
        """Counts and pooled percentiles (see ``voicesim._stats.summarize``)."""
        if self._summary is None:
            self._summary = summarize(
                self.turns,
                self.sessions,
                self.packets,
                lateness_edges_ms=self.lateness_edges_ms,
            )
        return self._summary

    def evaluate(self, thresholds: Iterable[Threshold | str]) -> list[Verdict]:
        """Evaluate thresholds (parsed or as text) against this capture's records."""
        parsed = [
            t if isinstance(t, Threshold) else parse_thresholds(t)[0]
            for t in thresholds
        ]
        return evaluate(
            parsed, self.turns, self.sessions, lateness_edges_ms=self.lateness_edges_ms
        )

    def audio_files(self) -> dict[int, Path]:
        """session -> FLAC file of what the session heard (empty if not captured)."""
        directory = self.path / "audio"
        if not directory.is_dir():
            return {}
        return {
            int(p.stem): p
            for p in sorted(directory.glob("*.flac"))
            if p.stem.lstrip("-").isdigit()
        }

    # Plots: thin methods so a notebook can write ``capture.plot_latency_cdf()``.

    def plot_latency_cdf(self, **kwargs: Any) -> Figure:
        """See :func:`voicesim.analysis.plot_latency_cdf`."""
        from voicesim.analysis._plots import plot_latency_cdf

        return plot_latency_cdf(self, **kwargs)

    def plot_latency_over_time(self, **kwargs: Any) -> Figure:
        """See :func:`voicesim.analysis.plot_latency_over_time`."""
        from voicesim.analysis._plots import plot_latency_over_time

        return plot_latency_over_time(self, **kwargs)

    def plot_jitter_loss(self, **kwargs: Any) -> Figure:
        """See :func:`voicesim.analysis.plot_jitter_loss`."""
        from voicesim.analysis._plots import plot_jitter_loss

        return plot_jitter_loss(self, **kwargs)

    def plot_send_lateness(self, **kwargs: Any) -> Figure:
        """See :func:`voicesim.analysis.plot_send_lateness`."""
        from voicesim.analysis._plots import plot_send_lateness

        return plot_send_lateness(self, **kwargs)

    def plot_session_heatmap(self, **kwargs: Any) -> Figure:
        """See :func:`voicesim.analysis.plot_session_heatmap`."""
        from voicesim.analysis._plots import plot_session_heatmap

        return plot_session_heatmap(self, **kwargs)


def _read_run_json(path: Path, problems: list[str]) -> dict[str, Any]:
    file = path / RUN_JSON
    if not file.exists():
        problems.append(
            "run.json is missing: the run's configuration and verdicts are lost"
        )
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"run.json cannot be read: {exc}")
        return {}
    if not isinstance(data, dict):
        problems.append("run.json does not hold a JSON object")
        return {}
    if data.get("aborted"):
        problems.append(f"the run was aborted: {data['aborted']}")
    elif data.get("exit_code") is None and data.get("summary") is None:
        problems.append(
            "run.json has no summary or exit code: the run did not finish "
            "(killed, crashed, or still running)"
        )
    return data


def _stored_verdicts(run: dict[str, Any], warnings: list[str]) -> list[Verdict] | None:
    stored = run.get("thresholds")
    if not isinstance(stored, list) or not stored:
        return None
    verdicts = []
    for entry in stored:
        try:
            verdicts.append(Verdict.from_dict(entry))
        except (ConfigError, KeyError, TypeError, ValueError) as exc:
            warnings.append(f"stored verdict {entry!r} cannot be read: {exc}")
    return verdicts


def load(path: str | Path) -> Capture:
    """Load a capture directory (or its ``run.json``).

    A capture cut short loads with the reasons in ``capture.incomplete``; only a path
    that is no capture at all raises ConfigError (key "capture").
    """
    path = Path(path)
    if path.name == RUN_JSON and path.is_file():
        path = path.parent
    has_tables = any((path / name).is_dir() for name in TABLES)
    if not path.is_dir() or not ((path / RUN_JSON).exists() or has_tables):
        raise ConfigError("capture", f"{path} is not a capture directory (no run.json)")

    incomplete: list[str] = []
    warnings: list[str] = []
    run = _read_run_json(path, incomplete)

    frames: dict[str, pd.DataFrame] = {}
    for name, (_, schema) in TABLES.items():
        table, problems = read_table(path / name, schema)
        incomplete.extend(problems)
        frames[name] = table.to_pandas()
        expected = (run.get("tables") or {}).get(name, {}).get("rows")
        if expected is not None and expected != len(frames[name]):
            incomplete.append(
                f"{name}: run.json records {expected} rows, the chunks hold "
                f"{len(frames[name])}"
            )
    turns = frames["turns"].sort_values(["session", "turn"], kind="stable")
    sessions = frames["sessions"].sort_values("session", kind="stable")
    packets = frames["packets"] if (path / "packets").is_dir() else None

    capture = Capture(
        path=path,
        run=run,
        turns=turns.reset_index(drop=True),
        sessions=sessions.reset_index(drop=True),
        packets=packets,
        verdicts=[],
        incomplete=incomplete,
        warnings=warnings,
    )
    stored = _stored_verdicts(run, warnings)
    if stored is not None:
        capture.verdicts = stored
    elif capture.config.get("thresholds"):
        # A run cut short never stored its verdicts: evaluate what it was asked for.
        try:
            capture.verdicts = capture.evaluate(
                parse_thresholds(capture.config["thresholds"])
            )
        except (ConfigError, TypeError) as exc:
            warnings.append(f"the configured thresholds cannot be evaluated: {exc}")
    return capture
