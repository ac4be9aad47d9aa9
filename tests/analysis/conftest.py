"""Captures shared by the analysis tests, made once per test session.

Synthetic ones are written by the engine's CaptureWriter from made-up records; the real
one is left by ``python -m voicesim swarm`` run against the embedded target.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.analysis._real_swarm import (
    SwarmRun,
    delay_responses,
    free_port,
    run_swarm,
)
from tests.analysis._synthetic_capture import write_synthetic_capture


@pytest.fixture(scope="session")
def capture_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished synthetic capture with packets and audio."""
    path = tmp_path_factory.mktemp("captures") / "base-capture"
    write_synthetic_capture(path, packets=True, audio=True)
    return path


def inject_latency(source: Path, destination: Path, extra_ms: float) -> Path:
    """Copy a capture, adding ``extra_ms`` to every response latency in its chunks."""
    shutil.copytree(source, destination)
    for part in sorted((destination / "turns").glob("part-*.parquet")):
        table = pq.read_table(part)
        index = table.schema.get_field_index("response_latency_ms")
        shifted = pc.add(table.column(index), pa.scalar(extra_ms))
        table = table.set_column(index, table.schema.field(index), shifted)
        pq.write_table(table, part)
    return destination


@pytest.fixture(scope="session")
def slower_capture_path(
    tmp_path_factory: pytest.TempPathFactory, capture_path: Path
) -> Path:
    """The base capture with 300 ms added to every response latency."""
    return inject_latency(
        capture_path, tmp_path_factory.mktemp("captures") / "slower", 300.0
    )


# A capture made by a real swarm: the embedded emulator and reference agent in a child
# process, three real discord.py users, run through the command line as a user would.
REAL_SWARM_ARGS = (
    "--sessions", "3", "--duration", "15s", "--ramp", "2s", "--seed", "7", "--quiet",
    "--capture-packets", "--capture-audio",
    "--threshold", "response_latency: p(95) < 60s",
    "--threshold", "response_latency: p(50) < 1ms",
    "--summary-json", "summary.json", "--junit", "junit.xml",
)  # fmt: skip


@pytest.fixture(scope="session")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> SwarmRun:
    """One real swarm of 3 sessions for 15 s, its metrics scraped while it ran."""
    directory = tmp_path_factory.mktemp("real") / "run"
    directory.mkdir()
    return run_swarm(directory, REAL_SWARM_ARGS, metrics_port=free_port())


@pytest.fixture(scope="session")
def real_capture_path(real_run: SwarmRun) -> Path:
    """The real swarm's capture directory."""
    assert (real_run.capture / "run.json").is_file(), real_run.stderr
    return real_run.capture


@pytest.fixture(scope="session")
def delayed_real_capture_path(
    tmp_path_factory: pytest.TempPathFactory, real_capture_path: Path
) -> Path:
    """The real capture with every answer moved 500 ms past the slowest one.

    Three sessions give few turns, and on a busy machine their latencies spread by
    seconds, so a fixed shift of 500 ms is not always detectable between two separate
    runs. Moved past the slowest answer, every answer of the copy is slower than every
    answer of the original, which every bootstrap resample tells apart.
    """
    turns = pq.read_table(real_capture_path / "turns").to_pandas()
    extra_ms = float(turns["response_latency_ms"].max()) + 500.0
    return delay_responses(
        real_capture_path, tmp_path_factory.mktemp("real") / "delayed", extra_ms
    )
