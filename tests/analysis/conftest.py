"""Synthetic captures shared by the analysis tests (written once per test session)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

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
