"""Tests of the capture writer: layout, run.json, closed chunks, checks, round trips."""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import soundfile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicesim._capture_format import (
    PACKETS_SCHEMA,
    SESSIONS_SCHEMA,
    TURNS_SCHEMA,
    SessionOutcome,
    TurnOutcome,
    read_table,
)
from voicesim._exceptions import ConfigError
from voicesim._thresholds import parse_threshold
from voicesim.engine._capture import CaptureWriter

DOCS = Path(__file__).resolve().parents[2] / "docs" / "capture.md"


def turn(session: int = 0, index: int = 0, **extra: Any) -> dict[str, Any]:
    """A minimal answered turn record."""
    return {
        "session": session,
        "turn": index,
        "fixture": "utt-01",
        "reference_text": "turn the lights off",
        "speech_start_ns": 1_000_000_000 + index,
        "speech_end_ns": 3_000_000_000 + index,
        "response_latency_ms": 1200.5,
        "word_errors": 1,
        "reference_words": 4,
        "outcome": "answered",
    } | extra


def session(index: int = 0, **extra: Any) -> dict[str, Any]:
    """A minimal completed session record."""
    return {"session": index, "join_requested_ns": 5, "outcome": "completed"} | extra


def test_capture_writer_creates_timestamped_directory_with_run_json(
    tmp_path: Path,
) -> None:
    """Without a directory the writer makes capture-<UTC time> and writes run.json at once."""
    writer = CaptureWriter.create(config={"sessions": 3}, parent=tmp_path)

    assert writer.path.parent == tmp_path
    assert writer.path.name.startswith("capture-20")
    run = json.loads((writer.path / "run.json").read_text())
    assert run["config"] == {"sessions": 3}
    assert run["capture_format"] == 1
    assert run["started_at"].endswith("+00:00")
    assert set(run["host"]) == {"hostname", "platform", "python", "cpu_count"}
    anchor = run["clock_anchor"]
    assert anchor["monotonic_ns"] > 0 and anchor["wall_ns"] > 1_600_000_000 * 10**9
    assert abs(anchor["unix"] - anchor["wall_ns"] / 1e9) < 1e-3
    assert "summary" not in run and "exit_code" not in run


def test_capture_writer_second_capture_in_the_same_second_gets_a_new_name(
    tmp_path: Path,
) -> None:
    """Two writers started together never share a directory."""
    first = CaptureWriter(parent=tmp_path)
    second = CaptureWriter(parent=tmp_path)
    assert first.path != second.path


def test_capture_writer_strips_secrets_at_any_depth(tmp_path: Path) -> None:
    """Keys naming tokens or secrets are dropped from the recorded configuration."""
    config = {
        "token": "a",
        "bot_tokens": ["b"],
        "target": {
            "Client_Secret": "c",
            "url": "ws://x",
            "users": [{"TOKEN_FILE": "d", "id": 1}],
        },
        "path": Path("/tmp/x"),
    }
    writer = CaptureWriter(config=config, directory=tmp_path / "c")

    text = (writer.path / "run.json").read_text()
    assert json.loads(text)["config"] == {
        "target": {"url": "ws://x", "users": [{"id": 1}]},
        "path": "/tmp/x",
    }
    for secret in ('"a"', '"b"', '"c"', '"d"'):
        assert secret not in text


def test_capture_writer_refuses_an_existing_capture_unless_overwriting(
    tmp_path: Path,
) -> None:
    """A directory holding a capture is not mixed with a new run's chunks."""
    first = CaptureWriter(directory=tmp_path / "c")
    first.add_turn(turn())
    first.close()

    with pytest.raises(ConfigError) as info:
        CaptureWriter(directory=tmp_path / "c")
    assert info.value.key == "capture"

    (tmp_path / "c" / "notes.txt").write_text("keep me")
    second = CaptureWriter(directory=tmp_path / "c", overwrite=True)
    assert not (second.path / "turns").exists()
    assert (second.path / "notes.txt").read_text() == "keep me"


def test_capture_writer_flushes_closed_chunks_every_n_rows(tmp_path: Path) -> None:
    """maybe_flush writes a chunk once a buffer holds flush_rows rows, never a temp file."""
    writer = CaptureWriter(directory=tmp_path / "c", flush_rows=3, flush_seconds=3600)
    now = writer.run["clock_anchor"]["monotonic_ns"]
    flushed = []
    for i in range(7):
        writer.add_turn(turn(index=i))
        flushed.append(writer.maybe_flush(now))

    assert flushed == [False, False, True, False, False, True, False]
    parts = sorted(p.name for p in (writer.path / "turns").iterdir())
    assert parts == ["part-00000.parquet", "part-00001.parquet"]
    writer.close()
    parts = sorted(p.name for p in (writer.path / "turns").iterdir())
    assert parts == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert len(pd.read_parquet(writer.path / "turns")) == 7


def test_capture_writer_flushes_after_flush_seconds(tmp_path: Path) -> None:
    """With rows waiting, a flush is due once flush_seconds have passed, not before."""
    writer = CaptureWriter(directory=tmp_path / "c", flush_seconds=2.0)
    start = writer.run["clock_anchor"]["monotonic_ns"]
    assert not writer.should_flush(start + 5 * 10**9)  # nothing buffered

    writer.add_session(session())
    assert not writer.should_flush(start + 1 * 10**9)
    assert writer.maybe_flush(start + 2 * 10**9)
    assert not writer.should_flush(start + 3 * 10**9)
    assert (writer.path / "sessions" / "part-00000.parquet").exists()


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (turn(colour="red"), "unknown turns column"),
        (
            {k: v for k, v in turn().items() if k != "speech_end_ns"},
            "lacks 'speech_end_ns'",
        ),
        (turn(turn=1.5), "turns.turn wants int32"),
        (turn(speech_start_ns=None), "turns.speech_start_ns must not be null"),
        (turn(outcome="answred"), "turns.outcome 'answred' is not one of"),
    ],
)
def test_capture_writer_rejects_bad_turn_records(
    tmp_path: Path, record: dict[str, Any], message: str
) -> None:
    """A bad record fails in add_turn, naming the problem, and is not buffered."""
    writer = CaptureWriter(directory=tmp_path / "c")
    with pytest.raises(ValueError, match=message):
        writer.add_turn(record)
    assert writer.flush() == 0


def test_capture_writer_accepts_every_outcome_word(tmp_path: Path) -> None:
    """All TurnOutcome and SessionOutcome values are accepted, as enums or strings."""
    writer = CaptureWriter(directory=tmp_path / "c")
    for i, outcome in enumerate(TurnOutcome):
        writer.add_turn(turn(index=i, outcome=outcome))
    for i, outcome in enumerate(SessionOutcome):
        writer.add_session(session(i, outcome=str(outcome)))
    turns, sessions = writer.frames()
    assert list(turns["outcome"]) == [str(o) for o in TurnOutcome]
    assert list(sessions["outcome"]) == [str(o) for o in SessionOutcome]


def test_capture_writer_close_records_summary_verdicts_and_exit_code(
    tmp_path: Path,
) -> None:
    """close() flushes and rewrites run.json with summary, verdicts, exit code and counts."""
    writer = CaptureWriter(directory=tmp_path / "c")
    writer.add_turn(turn())
    writer.add_session(session())
    summary, verdicts = writer.results(
        [parse_threshold("response_latency: p(95) < 1s")]
    )
    assert summary["turns"]["total"] == 1
    assert [v.passed for v in verdicts] == [False]

    writer.close(summary, verdicts, 99)

    run = json.loads((writer.path / "run.json").read_text())
    assert run["exit_code"] == 99
    assert run["summary"]["response_latency_ms"]["p50"] == 1200.5
    assert run["thresholds"][0]["threshold"] == "response_latency: p(95) < 1s"
    assert run["thresholds"][0]["passed"] is False
    assert run["tables"]["turns"] == {"rows": 1, "parts": 1}
    assert run["tables"]["packets"] == {"rows": 0, "parts": 0}
    with pytest.raises(RuntimeError, match="closed"):
        writer.add_turn(turn())


def test_capture_writer_context_manager_aborts_on_error(tmp_path: Path) -> None:
    """A run that raises keeps its rows and says why in run.json."""
    with pytest.raises(KeyError), CaptureWriter(directory=tmp_path / "c") as writer:
        writer.add_turn(turn())
        raise KeyError("boom")

    run = json.loads((tmp_path / "c" / "run.json").read_text())
    assert run["aborted"] == "KeyError: 'boom'"
    assert "exit_code" not in run
    assert len(pd.read_parquet(tmp_path / "c" / "turns")) == 1


def test_capture_writer_packets_round_trip(tmp_path: Path) -> None:
    """Packets added one by one or in batches come back in order with their values."""
    writer = CaptureWriter(directory=tmp_path / "c")
    writer.add_packet(
        {
            "session": 1,
            "ssrc": 7,
            "seq": 65535,
            "rtp_timestamp": 2**32 - 1,
            "arrival_ns": 10,
            "bytes": 99,
        }
    )
    writer.add_packets(2, 8, np.array([0, 1]), [0, 960], np.array([20, 40]), [60, 61])
    writer.close()

    packets = pd.read_parquet(writer.path / "packets")
    assert packets.to_dict("list") == {
        "session": [1, 2, 2],
        "ssrc": [7, 8, 8],
        "seq": [65535, 0, 1],
        "rtp_timestamp": [2**32 - 1, 0, 960],
        "arrival_ns": [10, 20, 40],
        "bytes": [99, 60, 61],
    }


def test_capture_writer_writes_audio_as_flac(tmp_path: Path) -> None:
    """write_audio stores lossless FLAC under audio/<session>.flac."""
    writer = CaptureWriter(directory=tmp_path / "c")
    pcm = (np.random.default_rng(1).normal(0, 3000, (4800, 2))).astype(np.int16)

    path = writer.write_audio(12, pcm)

    assert path == writer.path / "audio" / "12.flac"
    data, rate = soundfile.read(path, dtype="int16")
    assert rate == 48_000
    assert np.array_equal(data, pcm)
    assert [p.name for p in path.parent.iterdir()] == ["12.flac"]


def test_capture_writer_flush_in_another_thread_loses_no_rows(tmp_path: Path) -> None:
    """Rows added while a worker thread flushes all end up in exactly one chunk."""
    writer = CaptureWriter(directory=tmp_path / "c", flush_rows=1)
    done = threading.Event()

    def flusher() -> None:
        while not done.is_set():
            writer.flush()

    thread = threading.Thread(target=flusher)
    thread.start()
    for i in range(3000):
        writer.add_packet(
            {
                "session": 0,
                "ssrc": 1,
                "seq": i % 65536,
                "rtp_timestamp": i,
                "arrival_ns": i,
                "bytes": 1,
            }
        )
    done.set()
    thread.join()
    writer.close()

    packets = pd.read_parquet(writer.path / "packets")
    assert sorted(packets["arrival_ns"]) == list(range(3000))


def test_capture_writer_stray_temp_file_is_skipped_by_readers(tmp_path: Path) -> None:
    """A half-written chunk left by a kill is ignored by pandas and reported by read_table."""
    writer = CaptureWriter(directory=tmp_path / "c")
    writer.add_turn(turn())
    writer.flush()
    (writer.path / "turns" / ".part-00001.parquet.tmp").write_bytes(b"PAR1\x00half")

    assert len(pd.read_parquet(writer.path / "turns")) == 1
    table, problems = read_table(writer.path / "turns", TURNS_SCHEMA)
    assert table.num_rows == 1
    assert len(problems) == 1 and ".part-00001.parquet.tmp" in problems[0]


def test_capture_schemas_hold_the_design_columns() -> None:
    """Every column DESIGN.md promises exists, so notebooks can rely on it."""
    turns = {
        "session",
        "turn",
        "fixture",
        "reference_text",
        "speech_start_ns",
        "speech_end_ns",
        "response_start_ns",
        "response_end_ns",
        "response_latency_ms",
        "transcript_text",
        "transcript_ns",
        "transcript_latency_ms",
        "word_errors",
        "reference_words",
        "jitter_ms",
        "packets_received",
        "packets_lost",
        "packets_reordered",
        "packets_duplicated",
        "barge_in",
        "barge_in_stop_ms",
        "outcome",
    }
    sessions = {
        "session",
        "user_id",
        "guild_id",
        "channel_id",
        "join_requested_ns",
        "joined_ns",
        "left_ns",
        "outcome",
        "reason",
        "frames_sent",
        "send_lateness_p99_ms",
    }
    packets = {"session", "ssrc", "seq", "rtp_timestamp", "arrival_ns", "bytes"}
    assert turns <= set(TURNS_SCHEMA.names)
    assert sessions <= set(SESSIONS_SCHEMA.names)
    assert packets == set(PACKETS_SCHEMA.names)


def test_capture_docs_describe_every_column() -> None:
    """docs/capture.md has a row for each column of each table, and each has a doc."""
    text = DOCS.read_text()
    for schema in (TURNS_SCHEMA, SESSIONS_SCHEMA, PACKETS_SCHEMA):
        for field in schema:
            assert f"| `{field.name}` |" in text
            assert field.metadata[b"doc"]


optional_ns = st.none() | st.integers(0, 2**62)
optional_ms = st.none() | st.floats(0, 1e6, allow_nan=False)
turn_records = st.fixed_dictionaries(
    {
        "session": st.integers(0, 2**40),
        "turn": st.integers(0, 2**31 - 1),
        "fixture": st.text(max_size=8),
        "reference_text": st.text(max_size=30),
        "speech_start_ns": st.integers(0, 2**62),
        "speech_end_ns": st.integers(0, 2**62),
        "response_start_ns": optional_ns,
        "response_latency_ms": optional_ms,
        "transcript_text": st.none() | st.text(max_size=30),
        "word_errors": st.none() | st.integers(0, 1000),
        "reference_words": st.none() | st.integers(0, 1000),
        "jitter_ms": optional_ms,
        "packets_received": st.integers(0, 2**31 - 1),
        "barge_in": st.booleans(),
        "outcome": st.sampled_from([str(o) for o in TurnOutcome]),
    }
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(turn_records, min_size=1, max_size=5))
def test_capture_writer_turn_records_round_trip(records: list[dict[str, Any]]) -> None:
    """Any valid turn records come back from the Parquet chunks unchanged."""
    with tempfile.TemporaryDirectory() as directory:
        writer = CaptureWriter(directory=Path(directory) / "c", flush_rows=2)
        for record in records:
            writer.add_turn(record)
            writer.maybe_flush(0)
        writer.close()
        table, problems = read_table(writer.path / "turns", TURNS_SCHEMA)

    assert problems == []
    rows = table.to_pylist()
    for record, row in zip(records, rows, strict=True):
        assert {k: row[k] for k in record} == record
        assert row["packets_lost"] == 0 and row["reason"] is None
