"""Writing a capture: ``run.json`` at once, then the tables in closed Parquet chunks.

The layout and every column are described in ``voicesim/_capture_format.py`` and
``docs/capture.md``. The writer's job is to lose as little as possible when a run dies:

- ``run.json`` is written when the writer is created (configuration without secrets,
  versions, host, clock anchor) and rewritten atomically at the end with the summary,
  the verdicts and the exit code. A capture whose ``run.json`` lacks them was cut short.
- Rows are buffered in memory and written as a new chunk (``part-00000.parquet``,
  ``part-00001.parquet``, ...) when the engine asks (``maybe_flush``) and a buffer has
  ``flush_rows`` rows or ``flush_seconds`` have passed. Each chunk is written under a
  hidden temporary name and renamed into place, so a kill loses at most the rows not
  yet flushed and never leaves half a Parquet file under a real name.

Writing a chunk takes milliseconds, which a trio task must not spend while it
timestamps packets. So ``flush`` swaps the buffers under a short lock and writes
outside it: the engine may call ``should_flush`` in its own thread and run ``flush`` in
a worker thread (``trio.to_thread.run_sync``) while ``add_*`` go on.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from voicesim._capture_format import (
    CAPTURE_FORMAT_VERSION,
    RUN_JSON,
    SEND_LATENESS_EDGES_MS,
    TABLES,
    Column,
    SessionOutcome,
    TurnOutcome,
    part_name,
    read_table,
    strip_secrets,
    temp_name,
    write_json_atomic,
)
from voicesim._exceptions import ConfigError
from voicesim._stats import summarize
from voicesim._thresholds import Threshold, Verdict, evaluate

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CaptureWriter"]

_OUTCOMES: dict[str, frozenset[str]] = {
    "turns": frozenset(TurnOutcome),
    "sessions": frozenset(SessionOutcome),
}
_PACKET_COLUMNS = ("session", "ssrc", "seq", "rtp_timestamp", "arrival_ns", "bytes")


def _voicesim_version() -> str:
    try:
        return importlib.metadata.version("voicesim")
    except importlib.metadata.PackageNotFoundError:
        # Running from a source tree that was never installed.
        return str(getattr(sys.modules.get("voicesim"), "__version__", "unknown"))


def _clock_anchor() -> dict[str, Any]:
    # Read the wall clock on both sides of the monotonic reading: their midpoint is the
    # wall time of the monotonic reading to within half their difference.
    before = time.time_ns()
    monotonic_ns = time.perf_counter_ns()
    after = time.time_ns()
    wall_ns = (before + after) // 2
    return {
        "wall_ns": wall_ns,
        "unix": wall_ns / 1e9,
        "monotonic_ns": monotonic_ns,
        "monotonic_clock": "time.perf_counter_ns",
        "uncertainty_ns": (after - before + 1) // 2,
    }


def _host() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }


def _coerce(table: str, column: Column, value: Any) -> Any:
    """Check and convert one value so a bad record fails in ``add_*``, not in a flush."""
    if value is None or (isinstance(value, float) and value != value):
        if column.nullable:
            return None
        raise ValueError(f"{table}.{column.name} must not be null")
    try:
        if pa.types.is_integer(column.type):
            return int(value.__index__())
        if pa.types.is_floating(column.type):
            return float(value)
        if pa.types.is_boolean(column.type):
            return bool(value)
        if pa.types.is_list(column.type):
            items = value.tolist() if isinstance(value, np.ndarray) else value
            return [int(item.__index__()) for item in items]
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError(
            f"{table}.{column.name} wants {column.type}, got {value!r}"
        ) from exc
    text = str(value)
    if column.name == "outcome" and text not in _OUTCOMES[table]:
        raise ValueError(
            f"{table}.outcome {text!r} is not one of {', '.join(sorted(_OUTCOMES[table]))}"
        )
    return text


@attrs.define(eq=False)
class _Buffer:
    """Rows of one table waiting for the next chunk, stored column by column."""

    columns: dict[str, list[Any]]
    rows: int = 0

    @classmethod
    def empty(cls, names: Iterable[str]) -> _Buffer:
        return cls(columns={name: [] for name in names})


@attrs.define(kw_only=True, eq=False)
class CaptureWriter:
    """Writes one run's capture directory.

    ``directory`` is the capture's path; when None a new ``capture-<UTC time>``
    directory is made under ``parent``. An existing directory that already holds a
    capture is refused (ConfigError, key "capture") unless ``overwrite`` is set.
    ``run.json`` exists as soon as the writer does.

    Typical use by the engine::

        writer = CaptureWriter.create(path, config=config.as_dict())
        ...                                    # during the run
        writer.add_session({...}); writer.add_turn({...})
        if writer.should_flush(time.perf_counter_ns()):
            await trio.to_thread.run_sync(writer.flush)
        ...                                    # at the end
        summary, verdicts = writer.results(thresholds)
        writer.close(summary, verdicts, exit_code)
    """

    config: Mapping[str, Any] = attrs.field(factory=dict)
    directory: Path | str | None = None
    parent: Path | str = "."
    flush_rows: int = 10_000
    flush_seconds: float = 5.0
    overwrite: bool = False

    path: Path = attrs.field(init=False)
    run: dict[str, Any] = attrs.field(init=False)
    _buffers: dict[str, _Buffer] = attrs.field(init=False)
    _parts: dict[str, int] = attrs.field(init=False)
    _rows_written: dict[str, int] = attrs.field(init=False)
    _last_flush_ns: int = attrs.field(init=False)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    _write_lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    _closed: bool = attrs.field(init=False, default=False)

    @classmethod
    def create(
        cls,
        directory: Path | str | None = None,
        *,
        config: Mapping[str, Any],
        **options: Any,
    ) -> CaptureWriter:
        """Make the capture directory (a new ``capture-<UTC time>`` one when
        ``directory`` is None) and write ``run.json``; ``options`` as the constructor's."""
        return cls(config=config, directory=directory, **options)

    def __attrs_post_init__(self) -> None:
        if self.flush_rows < 1 or self.flush_seconds <= 0:
            raise ValueError("flush_rows and flush_seconds must be positive")
        anchor = _clock_anchor()
        started = dt.datetime.fromtimestamp(anchor["wall_ns"] / 1e9, tz=dt.UTC)
        self.path = self._make_directory(started)
        self._buffers = {
            name: _Buffer.empty(c.name for c in cols)
            for name, (cols, _) in TABLES.items()
        }
        self._parts = dict.fromkeys(TABLES, 0)
        self._rows_written = dict.fromkeys(TABLES, 0)
        self._last_flush_ns = anchor["monotonic_ns"]
        self.run = {
            "capture_format": CAPTURE_FORMAT_VERSION,
            "voicesim_version": _voicesim_version(),
            "started_at": started.isoformat(timespec="milliseconds"),
            "clock_anchor": anchor,
            "host": _host(),
            "config": strip_secrets(self.config),
            "send_lateness_edges_ms": list(SEND_LATENESS_EDGES_MS),
        }
        write_json_atomic(self.path / RUN_JSON, self.run)

    def _make_directory(self, started: dt.datetime) -> Path:
        if self.directory is not None:
            path = Path(self.directory)
            if (path / RUN_JSON).exists():
                if not self.overwrite:
                    raise ConfigError(
                        "capture",
                        f"{path} already holds a capture; choose a new directory "
                        "or allow overwriting it",
                    )
                # Remove only what a capture consists of, never unrelated files.
                for name in (*TABLES, "audio"):
                    shutil.rmtree(path / name, ignore_errors=True)
                (path / RUN_JSON).unlink()
            path.mkdir(parents=True, exist_ok=True)
            return path

        base = Path(self.parent) / f"capture-{started:%Y-%m-%dT%H-%M-%S}"
        path, suffix = base, 1
        while True:
            try:
                path.mkdir(parents=True)
                return path
            except FileExistsError:
                suffix += 1
                path = base.with_name(f"{base.name}-{suffix}")

    # -- rows ------------------------------------------------------------------------

    def _add(self, table: str, record: Mapping[str, Any]) -> None:
        columns = TABLES[table][0]
        unknown = set(record) - {c.name for c in columns}
        if unknown:
            raise ValueError(f"unknown {table} column(s): {', '.join(sorted(unknown))}")
        row: list[Any] = []
        for column in columns:
            if column.name in record:
                row.append(_coerce(table, column, record[column.name]))
            elif column.default is not None or column.nullable:
                row.append(column.default)
            else:
                raise ValueError(f"{table} record lacks {column.name!r}")

        with self._lock:
            self._check_open()
            buffer = self._buffers[table]
            for column, value in zip(columns, row, strict=True):
                buffer.columns[column.name].append(value)
            buffer.rows += 1

    def add_turn(self, record: Mapping[str, Any]) -> None:
        """Buffer one ``turns`` row (column name -> value; optional columns may be left out).

        ValueError for an unknown column, a missing required one, a value of the wrong
        type or an outcome outside ``TurnOutcome``.
        """
        self._add("turns", record)

    def add_session(self, record: Mapping[str, Any]) -> None:
        """Buffer one ``sessions`` row; checked like ``add_turn``."""
        self._add("sessions", record)

    def add_packet(self, record: Mapping[str, int]) -> None:
        """Buffer one received packet: ``session``, ``ssrc``, ``seq``, ``rtp_timestamp``,
        ``arrival_ns`` and ``bytes``. Not checked: this is called for every packet."""
        with self._lock:
            buffer = self._buffers["packets"]
            for name in _PACKET_COLUMNS:
                buffer.columns[name].append(record[name])
            buffer.rows += 1

    def add_packets(
        self,
        session: int,
        ssrc: int,
        seq: Sequence[int] | npt.NDArray[Any],
        rtp_timestamp: Sequence[int] | npt.NDArray[Any],
        arrival_ns: Sequence[int] | npt.NDArray[Any],
        size: Sequence[int] | npt.NDArray[Any],
    ) -> None:
        """Buffer a batch of packets of one stream (equal-length sequences)."""
        n = len(seq)
        if not len(rtp_timestamp) == len(arrival_ns) == len(size) == n:
            raise ValueError("add_packets wants sequences of equal length")
        with self._lock:
            columns = self._buffers["packets"].columns
            columns["session"].extend([session] * n)
            columns["ssrc"].extend([ssrc] * n)
            for name, values in zip(
                _PACKET_COLUMNS[2:], (seq, rtp_timestamp, arrival_ns, size), strict=True
            ):
                columns[name].extend(
                    values.tolist() if isinstance(values, np.ndarray) else values
                )
            self._buffers["packets"].rows += n

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"capture {self.path} is closed")

    # -- chunks ----------------------------------------------------------------------

    def should_flush(self, now_ns: int) -> bool:
        """True when a buffer is full or ``flush_seconds`` passed with rows waiting."""
        buffered = [b.rows for b in self._buffers.values()]
        if max(buffered) >= self.flush_rows:
            return True
        return (
            any(buffered) and now_ns - self._last_flush_ns >= self.flush_seconds * 1e9
        )

    def maybe_flush(self, now_ns: int) -> bool:
        """Write chunks if ``should_flush(now_ns)``; returns whether it did."""
        if not self.should_flush(now_ns):
            return False
        self.flush(now_ns)
        return True

    def flush(self, now_ns: int | None = None) -> int:
        """Write every non-empty buffer as a new closed chunk; returns the rows written.

        Safe to call from another thread than the one adding rows.
        """
        with self._lock:
            self._last_flush_ns = time.perf_counter_ns() if now_ns is None else now_ns
            pending: list[tuple[str, int, _Buffer]] = []
            for table, buffer in self._buffers.items():
                if buffer.rows:
                    pending.append((table, self._parts[table], buffer))
                    self._parts[table] += 1
                    self._buffers[table] = _Buffer.empty(buffer.columns)

        written = 0
        with self._write_lock:
            for table, index, buffer in pending:
                self._write_chunk(table, index, buffer)
                written += buffer.rows
                with self._lock:
                    self._rows_written[table] += buffer.rows
        return written

    def _write_chunk(self, table: str, index: int, buffer: _Buffer) -> None:
        directory = self.path / table
        directory.mkdir(exist_ok=True)
        schema = TABLES[table][1]
        arrow = pa.Table.from_pydict(buffer.columns, schema=schema)
        final = directory / part_name(index)
        temporary = directory / temp_name(final.name)
        pq.write_table(arrow, temporary, compression="zstd")
        os.replace(temporary, final)

    def write_audio(
        self, session: int, pcm: npt.NDArray[Any], sample_rate: int = 48_000
    ) -> Path:
        """Write what a session heard as ``audio/<session>.flac`` (int16 or float PCM,
        shape (frames,) or (frames, channels)); returns the file's path."""
        import soundfile

        directory = self.path / "audio"
        directory.mkdir(exist_ok=True)
        final = directory / f"{session}.flac"
        temporary = directory / temp_name(final.name)
        soundfile.write(temporary, pcm, sample_rate, format="FLAC", subtype="PCM_16")
        os.replace(temporary, final)
        return final

    # -- reading back and finishing ------------------------------------------------------

    def read_tables(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
        """Flush, then read turns, sessions and packets (None if none were added)."""
        self.flush()
        with self._write_lock:
            frames = {
                name: read_table(self.path / name, schema)[0].to_pandas()
                for name, (_, schema) in TABLES.items()
            }
        packets = frames["packets"] if self._rows_written["packets"] else None
        return frames["turns"], frames["sessions"], packets

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Flush, then read back the ``turns`` and ``sessions`` written so far."""
        turns, sessions, _ = self.read_tables()
        return turns, sessions

    def results(
        self, thresholds: Iterable[Threshold] = ()
    ) -> tuple[dict[str, Any], list[Verdict]]:
        """The run's summary and the verdicts of ``thresholds``, from what was written."""
        turns, sessions, packets = self.read_tables()
        summary = summarize(turns, sessions, packets)
        return summary, evaluate(thresholds, turns, sessions)

    def annotate(self, **fields: Any) -> None:
        """Add top-level entries to run.json now (secrets stripped), e.g. the target."""
        with self._lock:
            self._check_open()
            self.run.update(strip_secrets(fields))
            write_json_atomic(self.path / RUN_JSON, self.run)

    def _finish(self, extra: Mapping[str, Any]) -> Path:
        with self._lock:
            self._check_open()
        self.flush()
        with self._lock, self._write_lock:
            self._closed = True
            finished_ns = time.time_ns()
            self.run.update(
                {
                    "finished_at": dt.datetime.fromtimestamp(
                        finished_ns / 1e9, tz=dt.UTC
                    ).isoformat(timespec="milliseconds"),
                    "duration_s": (finished_ns - self.run["clock_anchor"]["wall_ns"])
                    / 1e9,
                    "tables": {
                        name: {
                            "rows": self._rows_written[name],
                            "parts": self._parts[name],
                        }
                        for name in TABLES
                    },
                }
            )
            self.run.update(extra)
            write_json_atomic(self.path / RUN_JSON, self.run)
        return self.path

    def close(
        self,
        summary: Mapping[str, Any] | None = None,
        thresholds: Iterable[Verdict | Mapping[str, Any]] = (),
        exit_code: int | None = None,
    ) -> Path:
        """Flush everything and rewrite run.json with summary, verdicts and exit code."""
        verdicts = [
            v.to_dict() if isinstance(v, Verdict) else dict(v) for v in thresholds
        ]
        return self._finish(
            {
                "summary": strip_secrets(summary) if summary is not None else None,
                "thresholds": strip_secrets(verdicts),
                "exit_code": exit_code,
            }
        )

    def abort(self, reason: str) -> Path:
        """Flush what is buffered and mark the capture as cut short by ``reason``."""
        return self._finish({"aborted": reason})

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: object, tb: object
    ) -> None:
        # A run that raised still keeps its rows; close() is the caller's on success.
        if not self._closed:
            if exc_type is not None:
                self.abort(f"{exc_type.__name__}: {exc}")
            else:
                self.close()
