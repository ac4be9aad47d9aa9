"""Every plot helper returns a labelled Figure, with data and without."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from voicesim import analysis
from voicesim.analysis import Capture, load

PLOTS: list[tuple[str, Callable[[Capture], Figure]]] = [
    ("plot_latency_cdf", analysis.plot_latency_cdf),
    ("plot_latency_over_time", analysis.plot_latency_over_time),
    ("plot_jitter_loss", analysis.plot_jitter_loss),
    ("plot_send_lateness", analysis.plot_send_lateness),
    ("plot_session_heatmap", analysis.plot_session_heatmap),
]


def titles(figure: Figure) -> str:
    """All titles of a figure, its own and its axes'."""
    own = figure.get_suptitle()
    return " ".join([own, *(ax.get_title() for ax in figure.axes)]).strip()


@pytest.mark.parametrize(("name", "plot"), PLOTS)
def test_plot_returns_labelled_figure(
    capture_path: Path, name: str, plot: Callable[[Capture], Figure]
) -> None:
    """The figure has a title, labelled axes with units, and drawn data."""
    capture = load(capture_path)
    figure = plot(capture)

    assert isinstance(figure, Figure)
    assert titles(figure)
    assert all(ax.get_ylabel() for ax in figure.axes)
    assert any(
        "(s" in ax.get_xlabel() or "ms" in ax.get_xlabel() or ax.get_xlabel() == "turn"
        for ax in figure.axes
    )
    main = figure.axes[0]
    assert main.lines or main.collections or main.images or main.patches
    assert "no " not in " ".join(t.get_text() for ax in figure.axes for t in ax.texts)
    # The method on Capture draws the same figure.
    assert titles(getattr(capture, name)()) == titles(figure)


def test_latency_cdf_uses_log_axis_and_overlays_captures(
    capture_path: Path, slower_capture_path: Path
) -> None:
    """The CDF's time axis is logarithmic and one line is drawn per capture and metric."""
    figure = analysis.plot_latency_cdf(
        {"base": load(capture_path), "slower": load(slower_capture_path)},
        columns=("response_latency_ms",),
    )
    ax = figure.axes[0]
    assert ax.get_xscale() == "log" and "ms" in ax.get_xlabel()
    labels = [
        line.get_label() for line in ax.lines if not line.get_label().startswith("_")
    ]
    assert [label.split(":")[0] for label in labels] == ["base", "slower"]


def test_latency_over_time_has_active_sessions_axis(capture_path: Path) -> None:
    """A twin axis shows active sessions, peaking at the number that ran together."""
    figure = analysis.plot_latency_over_time(load(capture_path))
    twin = figure.axes[1]
    assert twin.get_ylabel() == "active sessions"
    assert max(twin.lines[0].get_ydata()) == 20


@pytest.mark.parametrize(("name", "plot"), PLOTS)
def test_plot_of_empty_capture_says_no_data(
    tmp_path: Path, name: str, plot: Callable[[Capture], Figure]
) -> None:
    """A capture without rows gives a figure that says so instead of failing."""
    from voicesim.engine._capture import CaptureWriter

    CaptureWriter(directory=tmp_path / "c").close({}, [], 0)
    figure = plot(load(tmp_path / "c"))
    texts = " ".join(t.get_text() for ax in figure.axes for t in ax.texts)
    assert "no " in texts and "in this capture" in texts
    figure.savefig(tmp_path / f"{name}.png")
