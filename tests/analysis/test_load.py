"""Loading captures: complete ones, ones cut short, and paths that are no capture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.analysis._synthetic_capture import write_synthetic_capture
from voicesim._exceptions import ConfigError
from voicesim.analysis import Capture, load


def test_load_reads_tables_run_and_verdicts(capture_path: Path) -> None:
    """A finished capture loads complete, with its tables, config and stored verdicts."""
    capture = load(capture_path)

    assert capture.complete and capture.incomplete == [] and capture.warnings == []
    assert len(capture.sessions) == 20 and len(capture.turns) == 20 * 8
    assert capture.packets is not None and len(capture.packets) > 0
    assert list(
        capture.turns[["session", "turn"]].itertuples(index=False, name=None)
    ) == [(s, t) for s in range(20) for t in range(8)]
    assert capture.run["exit_code"] == 0
    assert capture.config["sessions"] == 20
    assert [v.threshold.text for v in capture.verdicts] == [
        "response_latency: p(95) < 5s", "wer: rate < 50%",
    ]  # fmt: skip
    assert all(v.passed for v in capture.verdicts)
    assert sorted(capture.audio_files()) == [0, 1]


def test_load_never_returns_secrets(capture_path: Path) -> None:
    """Tokens and secrets in the run's configuration were never written."""
    capture = load(capture_path)
    text = (capture_path / "run.json").read_text()
    assert "secret-token" not in text and "hunter2" not in text
    assert "bot_tokens" not in capture.config
    assert capture.config["target"] == {"agent_user_id": "1000"}


def test_load_accepts_the_run_json_path(capture_path: Path) -> None:
    """Pointing at run.json loads its directory."""
    assert load(capture_path / "run.json").path == capture_path


def test_load_converts_times(capture_path: Path) -> None:
    """elapsed_s counts from the clock anchor; wall_time lands on the run's date."""
    capture = load(capture_path)
    elapsed = capture.elapsed_s(capture.sessions["join_requested_ns"])
    assert elapsed.min() >= 0 and elapsed.max() < 60
    wall = capture.wall_time(capture.sessions["join_requested_ns"])
    started = pd.Timestamp(capture.run["started_at"])
    offsets = (wall - started).dt.total_seconds().to_numpy()
    assert offsets == pytest.approx(elapsed.to_numpy(), abs=2e-3)


def test_load_without_packets_gives_none(tmp_path: Path) -> None:
    """A capture whose run did not record packets has packets None and no audio."""
    write_synthetic_capture(tmp_path / "c", sessions=3, turns=2, packets=False)
    capture = load(tmp_path / "c")
    assert capture.packets is None and capture.audio_files() == {}
    assert len(capture.turns) == 6


def test_load_capture_cut_short_by_a_kill(tmp_path: Path) -> None:
    """Unfinished run.json and a stray temp chunk load with reasons, not an exception."""
    writer = write_synthetic_capture(tmp_path / "c", sessions=4, turns=3, close=False)
    writer.flush()
    # What a kill during a chunk write leaves behind: a half file under the temp name.
    (tmp_path / "c" / "turns" / ".part-00009.parquet.tmp").write_bytes(b"PAR1 half")

    capture = load(tmp_path / "c")

    assert not capture.complete
    assert any("did not finish" in r for r in capture.incomplete)
    assert any(".part-00009.parquet.tmp" in r for r in capture.incomplete)
    assert len(capture.turns) == 12 and len(capture.sessions) == 4
    # The run never stored verdicts: the configured thresholds are evaluated instead.
    assert [v.threshold.metric for v in capture.verdicts] == ["response_latency", "wer"]
    assert capture.summary()["turns"]["total"] == 12


def test_load_reports_a_lost_chunk(tmp_path: Path) -> None:
    """A chunk that run.json counts but that is gone or unreadable is reported."""
    write_synthetic_capture(tmp_path / "c", sessions=4, turns=3, flush_rows=4)
    parts = sorted((tmp_path / "c" / "turns").glob("part-*.parquet"))
    parts[0].write_bytes(b"not parquet at all")

    capture = load(tmp_path / "c")

    assert any(f"{parts[0].name} cannot be read" in r for r in capture.incomplete)
    assert any("run.json records 12 rows" in r for r in capture.incomplete)


def test_load_aborted_capture_says_why(tmp_path: Path) -> None:
    """A capture closed by abort() is incomplete with the abort reason."""
    writer = write_synthetic_capture(tmp_path / "c", sessions=2, turns=1, close=False)
    writer.abort("KeyboardInterrupt: ")
    capture = load(tmp_path / "c")
    assert capture.incomplete == ["the run was aborted: KeyboardInterrupt: "]


def test_load_capture_with_damaged_run_json(tmp_path: Path) -> None:
    """An unreadable run.json is reported; the tables still load."""
    write_synthetic_capture(tmp_path / "c", sessions=2, turns=1)
    (tmp_path / "c" / "run.json").write_text("{ not json")
    capture = load(tmp_path / "c")
    assert capture.run == {} and len(capture.turns) == 2
    assert any("run.json cannot be read" in r for r in capture.incomplete)


def test_load_rejects_a_path_that_is_no_capture(tmp_path: Path) -> None:
    """A directory without run.json or tables raises ConfigError naming the path."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    assert info.value.key == "capture" and str(tmp_path) in str(info.value)
    with pytest.raises(ConfigError):
        load(tmp_path / "missing")


def test_load_empty_capture_has_typed_empty_tables(tmp_path: Path) -> None:
    """A run that wrote no rows still gives DataFrames with every column."""
    from voicesim.engine._capture import CaptureWriter

    CaptureWriter(directory=tmp_path / "c").close({}, [], 0)
    capture = load(tmp_path / "c")
    assert isinstance(capture, Capture) and capture.complete
    assert len(capture.turns) == 0 and "response_latency_ms" in capture.turns.columns
    assert "send_lateness_hist" in capture.sessions.columns
    assert capture.summary()["response_latency_ms"]["p95"] is None
    assert (
        capture.t0_ns
        == json.loads((tmp_path / "c" / "run.json").read_text())["clock_anchor"][
            "monotonic_ns"
        ]
    )
    assert np.isnan(capture.elapsed_s(np.nan))
