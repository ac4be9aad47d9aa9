"""Plots of a capture, each returned as a matplotlib Figure.

The figures are built with ``matplotlib.figure.Figure`` directly, never through
pyplot: nothing is drawn on a GUI backend, no global figure list grows (a report or a
loop over many captures leaks nothing), and saving renders through Agg. In a notebook
with ``%matplotlib inline`` a returned Figure displays itself.

Times on the x axes are seconds since the run's start (``Capture.elapsed_s``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from voicesim._capture_format import FAILED_TURN_OUTCOMES
from voicesim._stats import active_sessions, finite_values, pooled_lateness

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from voicesim.analysis._capture import Capture

__all__ = [
    "plot_jitter_loss",
    "plot_latency_cdf",
    "plot_latency_over_time",
    "plot_send_lateness",
    "plot_session_heatmap",
]

_LABELS = {
    "response_latency_ms": "response latency",
    "transcript_latency_ms": "transcript latency",
    "jitter_ms": "jitter",
    "barge_in_stop_ms": "barge-in stop time",
    "join_time_ms": "join time",
}
_FAILED = "tab:red"


def _figure(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=kwargs.pop("figsize", (9.0, 4.8)), layout="constrained")
    axes = figure.subplots(nrows, ncols, squeeze=False, **kwargs)
    return figure, list(axes.ravel())


def _log_ms_axis(ax: Axes) -> None:
    """A log x axis labelled 1, 2, 5, 10, ... in plain numbers, not 10^n.

    Latencies span less than a decade in a healthy run, and matplotlib's default
    log ticks then label only one power of ten, or minor ticks as ``6 x 10^2``.
    """
    ax.set_xscale("log")
    low, high = ax.dataLim.intervalx
    decades = np.log10(high / low) if low > 0 and high > low else 0.0
    subs = (1.0, 2.0, 3.0, 5.0, 7.0) if decades < 1.5 else (1.0, 2.0, 5.0)
    ax.xaxis.set_major_locator(
        LogLocator(base=10, subs=subs if decades < 4 else (1.0,))
    )
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _legend_below(figure: Figure, handles: Sequence[Any]) -> None:
    """One legend under the plot, so it never hides data points or markers."""
    if handles:
        figure.legend(
            handles=list(handles),
            loc="outside lower center",
            ncols=min(5, len(handles)),
            fontsize=8,
            frameon=False,
        )


def _no_data(ax: Axes, what: str) -> None:
    ax.text(
        0.5,
        0.5,
        f"no {what} in this capture",
        ha="center",
        va="center",
        transform=ax.transAxes,
        color="gray",
    )


def plot_latency_cdf(
    captures: Capture | Mapping[str, Capture],
    *,
    columns: Sequence[str] = ("response_latency_ms", "transcript_latency_ms"),
) -> Figure:
    """Empirical CDF of latencies over all turns, on a log time axis.

    Pass one capture, or ``{"baseline": a, "candidate": b}`` to overlay several.
    Dotted lines mark the median and p95; the legend gives each curve's p50 and p95,
    and a percentile threshold of the run (``response_latency: p(95) < 1500ms``) is
    drawn as a diamond at its limit, so a reader sees at once which side it falls.
    """
    named = captures if isinstance(captures, Mapping) else {"": captures}
    figure, (ax,) = _figure()
    plotted = False
    for label, capture in named.items():
        for column in columns:
            values = np.sort(finite_values(capture.turns, column))
            values = values[values > 0]
            if values.size == 0:
                continue
            fraction = np.arange(1, values.size + 1) / values.size
            p50, p95 = np.quantile(values, [0.5, 0.95])
            name = f"{_LABELS.get(column, column)} (n={values.size}, p50 {p50:.0f} ms, p95 {p95:.0f} ms)"
            ax.step(
                values,
                fraction,
                where="post",
                label=f"{label}: {name}" if label else name,
            )
            plotted = True
    ax.set_xlabel("latency after speech end (ms, log scale)")
    ax.set_ylabel("fraction of turns at or below")
    ax.set_ylim(0, 1.02)
    ax.set_title("Latency CDF")
    if not plotted:
        _no_data(ax, "latencies")
        return figure
    _log_ms_axis(ax)
    for level, text in ((0.5, "median"), (0.95, "p95")):
        ax.axhline(level, color="gray", linestyle=":", linewidth=1)
        ax.text(
            1.0,
            level,
            f" {text}",
            transform=ax.get_yaxis_transform(),
            va="center",
            fontsize=8,
        )
    handles, labels = ax.get_legend_handles_labels()
    for handle, label in _threshold_marks(ax, named.values(), columns):
        handles.append(handle)
        labels.append(label)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(handles, labels, loc="lower right", fontsize=8)
    return figure


def _threshold_marks(
    ax: Axes, captures: Iterable[Capture], columns: Sequence[str]
) -> list[tuple[Any, str]]:
    """Draw the runs' percentile thresholds on a CDF; returns (handle, label) pairs.

    The markers carry a private label, so the lines' labels stay the curves' own.
    """
    marks: list[tuple[Any, str]] = []
    metrics = {column.removesuffix("_ms"): column for column in columns}
    seen: set[str] = set()
    for capture in captures:
        for verdict in capture.verdicts:
            t = verdict.threshold
            if t.metric not in metrics or t.percentile is None or t.text in seen:
                continue
            seen.add(t.text)
            (mark,) = ax.plot(
                [t.value],
                [t.percentile / 100],
                marker="D",
                markersize=7,
                linestyle="none",
                color="tab:green" if verdict.passed else _FAILED,
                label="_threshold",
            )
            result = "pass" if verdict.passed else "FAIL"
            marks.append((mark, f"threshold {t.text}: {result}"))
    return marks


def _time_bins(
    elapsed: np.ndarray[Any, Any], bin_s: float | None
) -> np.ndarray[Any, Any]:
    span = float(elapsed.max() - elapsed.min()) if elapsed.size else 0.0
    if bin_s is None:
        # About ten turns a bin, so a bin's median and p95 mean something, and
        # between 5 and 30 bins whatever the run's size.
        bins = min(30, max(5, elapsed.size // 10))
        bin_s = _nice_seconds(span / bins)
    start = float(np.floor(elapsed.min() / bin_s) * bin_s) if elapsed.size else 0.0
    return start + bin_s * np.arange(int(span // bin_s) + 2)


def _nice_seconds(seconds: float) -> float:
    """The first of 1, 2, 5, 10, 15, 30, 60, 120, 300, ... seconds at or above."""
    for nice in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if seconds <= nice:
            return float(nice)
    return float(np.ceil(seconds / 3600) * 3600)


def plot_latency_over_time(capture: Capture, *, window: int | None = None) -> Figure:
    """Response latency of every turn over the run, against the number of active sessions.

    Unanswered turns (timeouts, errors) are red crosses along the top edge. The line is
    a rolling median over ``window`` turns (default: a twentieth of them, at least 5).
    """
    figure, (ax,) = _figure()
    turns = capture.turns
    ax.set_title("Response latency over time, and active sessions")
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("response latency (ms)")
    answered = turns[turns["response_latency_ms"].notna()].sort_values("speech_end_ns")
    handles: list[Any] = []
    if len(answered):
        t = capture.elapsed_s(answered["speech_end_ns"].to_numpy(dtype=np.float64))
        latency = answered["response_latency_ms"].to_numpy(dtype=np.float64)
        handles.append(ax.scatter(t, latency, s=8, alpha=0.5, label="turn"))
        size = window or max(5, len(answered) // 20)
        median = pd.Series(latency).rolling(size, center=True, min_periods=1).median()
        (line,) = ax.plot(
            t,
            median,
            color="black",
            linewidth=1.5,
            label=f"rolling median ({size} turns)",
        )
        handles.append(line)
    failed = turns[turns["outcome"].isin(list(FAILED_TURN_OUTCOMES))]
    if len(failed):
        t = capture.elapsed_s(failed["speech_end_ns"].to_numpy(dtype=np.float64))
        handles.append(
            ax.scatter(
                t,
                np.full(len(t), 0.97),
                transform=ax.get_xaxis_transform(),
                marker="x",
                color=_FAILED,
                label=f"unanswered ({len(failed)})",
            )
        )
    if not handles:
        _no_data(ax, "turns")
    ax.set_ylim(bottom=0)

    times, counts = active_sessions(capture.sessions)
    if times.size:
        twin = ax.twinx()
        (step,) = twin.step(
            capture.elapsed_s(times.astype(np.float64)),
            counts,
            where="post",
            color="tab:green",
            alpha=0.8,
            label="active sessions",
        )
        twin.set_ylabel("active sessions")
        twin.set_ylim(0, max(1, int(counts.max())) * 1.1)
        twin.yaxis.set_major_locator(MaxNLocator(integer=True))
        handles.append(step)
    _legend_below(figure, handles)
    ax.grid(True, alpha=0.3)
    return figure


def plot_jitter_loss(capture: Capture, *, bin_s: float | None = None) -> Figure:
    """Jitter of the agent's stream per turn, and pooled packet loss per time bin."""
    figure, (top, bottom) = _figure(2, 1, sharex=True, figsize=(9.0, 6.0))
    turns = capture.turns.sort_values("speech_end_ns")
    top.set_title("Jitter and packet loss of the agent's stream over time")
    top.set_ylabel("jitter (ms)")
    bottom.set_ylabel("packet loss (%)")
    bottom.set_xlabel("time since start (s)")
    if len(turns) == 0:
        _no_data(top, "turns")
        _no_data(bottom, "turns")
        return figure

    t = capture.elapsed_s(turns["speech_end_ns"].to_numpy(dtype=np.float64))
    edges = _time_bins(t, bin_s)
    which = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, len(edges) - 2)
    centres = (edges[:-1] + edges[1:]) / 2
    width = float(edges[1] - edges[0])

    jitter = turns["jitter_ms"].to_numpy(dtype=np.float64, na_value=np.nan)
    has_jitter = np.isfinite(jitter)
    handles: list[Any] = []
    if has_jitter.any():
        handles.append(
            top.scatter(t[has_jitter], jitter[has_jitter], s=8, alpha=0.4, label="turn")
        )
        grouped = pd.Series(jitter[has_jitter]).groupby(which[has_jitter])
        for stat, q, style in (("median", 0.5, "-"), ("p95", 0.95, "--")):
            values = grouped.quantile(q)
            (line,) = top.plot(
                centres[values.index],
                values.to_numpy(),
                color="black",
                linestyle=style,
                marker="o",
                markersize=3,
                label=f"{stat} per {width:g} s",
            )
            handles.append(line)
        top.set_ylim(bottom=0)
    else:
        _no_data(top, "jitter measurements")

    received = np.bincount(
        which,
        weights=turns["packets_received"].to_numpy(dtype=np.float64),
        minlength=len(centres),
    )
    lost = np.bincount(
        which,
        weights=turns["packets_lost"].to_numpy(dtype=np.float64),
        minlength=len(centres),
    )
    expected = received + lost
    with np.errstate(invalid="ignore", divide="ignore"):
        loss = np.where(expected > 0, 100.0 * lost / expected, np.nan)
    if np.isfinite(loss).any():
        handles.append(
            bottom.bar(
                centres,
                np.nan_to_num(loss),
                width=width * 0.9,
                color="tab:orange",
                label=f"lost / expected per {width:g} s",
            )
        )
        # The whole run's loss pools packets, not bins: a quiet bin weighs little.
        overall = 100.0 * lost.sum() / expected.sum()
        handles.append(
            bottom.axhline(
                overall,
                color="tab:red",
                linestyle="--",
                linewidth=1,
                label=f"whole run {overall:.2f} %",
            )
        )
    else:
        _no_data(bottom, "packet counts")
    _legend_below(figure, handles)
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
    return figure


def plot_send_lateness(capture: Capture) -> Figure:
    """How late voicesim sent its frames: pooled distribution, and each session's p99.

    Left: the fraction of all frames at least x ms late (log-log). Right: every
    session's own p99 against the time it joined, with the pooled p99 as a line.
    """
    figure, (left, right) = _figure(1, 2, figsize=(10.0, 4.5))
    pooled = pooled_lateness(capture.sessions, capture.lateness_edges_ms)
    figure.suptitle(f"Send lateness ({pooled.count} frames)")
    left.set_xlabel("lateness (ms, log scale)")
    left.set_ylabel("fraction of frames at least this late")
    right.set_xlabel("session joined at (s since start)")
    right.set_ylabel("session p99 lateness (ms)")
    if pooled.count == 0:
        _no_data(left, "send lateness")
        _no_data(right, "send lateness")
        return figure

    edges = np.asarray(capture.lateness_edges_ms)
    cumulative = np.cumsum(pooled.counts)
    at_least = 1.0 - cumulative[1 : len(edges)] / pooled.count
    shown = at_least > 0
    handles: list[Any] = []
    if shown.any():
        (curve,) = left.step(
            edges[1:][shown],
            at_least[shown],
            where="post",
            label="all frames (pooled over sessions)",
        )
        handles.append(curve)
        _log_ms_axis(left)
        left.set_yscale("log")
    for q, colour in ((0.5, "tab:green"), (0.99, "tab:red")):
        value = pooled.quantile(q)
        if value is not None and value > 0:
            handles.append(
                left.axvline(
                    value,
                    color=colour,
                    linestyle="--",
                    linewidth=1,
                    label=f"pooled p{round(q * 100)} {value:.2f} ms",
                )
            )
    left.grid(True, which="both", alpha=0.3)

    sessions = capture.sessions[capture.sessions["send_lateness_p99_ms"].notna()]
    joined = sessions["joined_ns"].to_numpy(dtype=np.float64, na_value=np.nan)
    p99 = sessions["send_lateness_p99_ms"].to_numpy(dtype=np.float64)
    keep = np.isfinite(joined)
    if keep.any():
        handles.append(
            right.scatter(
                capture.elapsed_s(joined[keep]),
                p99[keep],
                s=10,
                alpha=0.6,
                label="one session's own p99",
            )
        )
        pooled_p99 = pooled.quantile(0.99)
        if pooled_p99 is not None:
            # Same colour and style as the left panel's p99: one legend entry.
            right.axhline(pooled_p99, color="tab:red", linestyle="--", linewidth=1)
        # From zero: a spread of 1.5 to 1.8 ms must not look like a factor of ten.
        right.set_ylim(bottom=0)
    else:
        _no_data(right, "per-session lateness")
    right.grid(True, alpha=0.3)
    _legend_below(figure, handles)
    return figure


def plot_session_heatmap(capture: Capture, *, max_sessions: int = 200) -> Figure:
    """One row per session, one column per turn, coloured by response latency.

    Grey cells have no latency; red crosses mark turns that timed out or failed. With
    more than ``max_sessions`` sessions, evenly spaced ones are shown.
    """
    turns = capture.turns
    # A strip for a handful of sessions, full height from about thirty on.
    rows = min(max_sessions, turns["session"].nunique())
    figure, (ax,) = _figure(figsize=(9.0, min(5.5, max(2.8, 2.2 + 0.12 * rows))))
    ax.set_xlabel("turn")
    ax.set_ylabel("session")
    if len(turns) == 0:
        ax.set_title("Response latency per session and turn")
        _no_data(ax, "turns")
        return figure

    latency = turns.pivot_table(
        index="session",
        columns="turn",
        values="response_latency_ms",
        aggfunc="first",
        dropna=False,
    )
    all_sessions = sorted(turns["session"].unique())
    # Column j is turn j, so the default integer ticks name the turns.
    latency = latency.reindex(
        index=all_sessions, columns=range(int(turns["turn"].max()) + 1)
    )
    title = "Response latency per session and turn"
    if len(all_sessions) > max_sessions:
        rows = np.linspace(0, len(all_sessions) - 1, max_sessions).round().astype(int)
        latency = latency.iloc[np.unique(rows)]
        title += f" ({len(latency)} of {len(all_sessions)} sessions)"
    ax.set_title(title)

    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgray")
    matrix = np.ma.masked_invalid(latency.to_numpy(dtype=np.float64, na_value=np.nan))
    # Colours span the 2nd to 98th percentile of all turns, so one extreme turn
    # does not wash every other cell into one colour; the bar's arrows say so.
    values = matrix.compressed()
    robust = values.size >= 50
    vmin, vmax = (
        (
            float(np.percentile(values, 2 if robust else 0)),
            float(np.percentile(values, 98 if robust else 100)),
        )
        if values.size
        else (None, None)
    )
    image = ax.imshow(
        matrix,
        aspect="auto",
        interpolation="nearest",
        cmap=cmap,
        origin="lower",
        vmin=vmin,
        vmax=vmax if vmax is None or vmin is None or vmax > vmin else None,
    )
    figure.colorbar(
        image,
        ax=ax,
        label="response latency (ms)",
        extend="both" if robust else "neither",
    )
    handles: list[Any] = []
    if matrix.mask.any() if np.ndim(matrix.mask) else False:
        handles.append(
            Patch(
                color="lightgray", label="no latency (unanswered or turn not reached)"
            )
        )

    row_of = {session: i for i, session in enumerate(latency.index)}
    failed = turns[
        turns["outcome"].isin(list(FAILED_TURN_OUTCOMES))
        & turns["session"].isin(row_of)
    ]
    if len(failed):
        handles.append(
            ax.scatter(
                failed["turn"].to_numpy(),
                [row_of[s] for s in failed["session"]],
                marker="x",
                color=_FAILED,
                s=20,
                label=f"timeout or error ({len(failed)})",
            )
        )
    _legend_below(figure, handles)
    step = max(1, -(-len(latency.index) // 10))
    ticks = list(range(0, len(latency.index), step))
    ax.set_yticks(ticks, [str(latency.index[i]) for i in ticks])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure
