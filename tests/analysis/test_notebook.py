"""The example notebook runs from top to bottom against a capture and shows its plots."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[2] / "examples" / "analyse_capture.ipynb"
KERNEL_NAME = "voicesim-test-python3"


def kernel_manager(tmp_path: Path) -> KernelManager:
    """A kernel manager that starts ipykernel under this very interpreter.

    The notebook asks for ``python3``; on a fresh machine no such kernel spec may be
    installed, or one may point at another Python. A private spec naming
    ``sys.executable`` runs the kernel where voicesim was installed, with no manual
    ``ipykernel install`` step.
    """
    spec_dir = tmp_path / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "voicesim tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    specs.ensure_native_kernel = False
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


def outputs(cell: Any) -> list[Any]:
    """The outputs of one executed code cell."""
    return list(cell.get("outputs", []))


def cell_with(notebook: Any, source: str) -> Any:
    """The first code cell whose source contains ``source``."""
    for cell in notebook.cells:
        if cell.cell_type == "code" and source in cell.source:
            return cell
    raise AssertionError(f"no code cell contains {source!r}")


def test_committed_notebook_is_clean_nbformat_4() -> None:
    """The committed notebook is valid nbformat 4 and carries no stored outputs."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)

    nbformat.validate(notebook)
    assert notebook.nbformat == 4
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code
    assert all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
def test_notebook_runs_against_a_real_capture(
    tmp_path: Path,
    real_capture_path: Path,
    delayed_real_capture_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every cell runs without error, the summary prints and the figures are PNGs."""
    # The capture is one a real swarm left (conftest.py's ``real_run``), with packets
    # and audio; the run under study is a copy whose answers all come later than the
    # baseline's slowest.
    monkeypatch.setenv("VOICESIM_CAPTURE", str(delayed_real_capture_path))
    monkeypatch.setenv("VOICESIM_BASELINE", str(real_capture_path))
    monkeypatch.setenv("MPLBACKEND", "agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)

    client = NotebookClient(
        notebook,
        km=kernel_manager(tmp_path),
        timeout=60,
        allow_errors=False,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()

    errors = [o for c in notebook.cells for o in outputs(c) if o.output_type == "error"]
    assert not errors
    summary = cell_with(notebook, "analysis.summary_rows(summary)")
    table = "".join(o["data"].get("text/plain", "") for o in outputs(summary))
    assert "response latency (ms)" in table and "WER (pooled)" in table
    for call in (
        "capture.plot_latency_cdf()",
        "capture.plot_latency_over_time()",
        "capture.plot_jitter_loss()",
        "capture.plot_send_lateness()",
        "capture.plot_session_heatmap()",
    ):
        images = [o for o in outputs(cell_with(notebook, call)) if "data" in o]
        assert any("image/png" in o["data"] for o in images), call
    # The real capture has packets, so the cell deriving gaps from them shows them.
    gaps = outputs(cell_with(notebook, "gap between packets"))
    assert any(
        "gap between packets" in o.get("data", {}).get("text/plain", "") for o in gaps
    )
    wer = "".join(o.get("text", "") for o in outputs(cell_with(notebook, "pooled WER")))
    assert "pooled WER" in wer and "words" in wer
    # Every answer of the run under study is slower than any of its baseline's.
    compared = "".join(
        o.get("text", "") for o in outputs(cell_with(notebook, "analysis.compare("))
    )
    assert "worse beyond 10% tolerance: response_latency" in compared
