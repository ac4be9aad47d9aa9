"""``python -m voicesim swarm --dave on``: the default swarm, end-to-end encrypted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import voicesim.analysis as va


def test_swarm_with_dave_on_measures_through_e2ee_and_reports_failures(
    tmp_path: Path,
) -> None:
    """Every session speaks DAVE; the summary shows the decrypt failures (none)."""
    capture = tmp_path / "capture"
    summary_file = tmp_path / "summary.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "voicesim",
            "swarm",
            "--dave",
            "on",
            "--sessions",
            "2",
            "--duration",
            "12s",
            "--ramp",
            "1s",
            "--capture",
            str(capture),
            "--summary-json",
            str(summary_file),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr

    # The summary table a person sees names the DAVE figures.
    assert "DAVE decrypt" in result.stdout
    assert "DAVE longest gap" in result.stdout

    loaded = va.load(capture)
    sessions = loaded.sessions
    assert list(sessions["dave_protocol_version"]) == [1, 1]
    assert sessions["dave_decrypt_failures"].sum() == 0
    turns = loaded.turns
    assert len(turns) >= 2
    assert turns["response_latency_ms"].notna().all()

    summary = json.loads(summary_file.read_text())["summary"]
    dave = summary["sessions"]["dave"]
    assert dave["sessions"] == 2
    assert dave["decrypt_failures"] == 0
