"""The custom-swarm example in ``examples/`` runs as its docstring says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import voicesim.analysis as va

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_swarm.py"


def test_custom_swarm_example_runs_a_step_and_writes_its_capture(
    tmp_path: Path,
) -> None:
    """One short step within budget: exit 0, a line of figures, a readable capture."""
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "--steps",
            "1",
            "--duration",
            "8",
            "--budget-ms",
            "60000",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "1 sessions: response latency p50" in result.stdout
    capture = va.load(tmp_path / "sessions-1")
    assert len(capture.sessions) == 1
    assert capture.turns["response_latency_ms"].notna().any()
