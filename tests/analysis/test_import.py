"""The analysis package imports without trio or discord.py and exports what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import voicesim.analysis

ROOT = Path(__file__).resolve().parents[2]


def test_analysis_imports_without_trio_or_discord() -> None:
    """Importing voicesim.analysis (and using it) loads neither trio nor discord.py."""
    code = (
        "import sys, voicesim.analysis as a\n"
        "a.parse_threshold('response_latency: p(95) < 1s')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('trio', 'discord', 'davey'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == ""


def test_analysis_exports_every_public_name() -> None:
    """__all__ lists exactly the public names, and each exists."""
    public = {name for name in dir(voicesim.analysis) if not name.startswith("_")}
    assert set(voicesim.analysis.__all__) == public - {"annotations"}
    assert len(voicesim.analysis.__all__) == len(set(voicesim.analysis.__all__))
