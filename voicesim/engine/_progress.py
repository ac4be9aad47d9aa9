"""Live progress of a swarm and the summary table at its end.

The engine updates a :class:`ProgressState` as sessions change state and turns end;
:class:`ProgressDisplay` reads it four times a second and redraws one rich ``Live``
panel on stderr, so a terminal shows the run without scrolling. Where stderr is not
a terminal (CI logs, a pipe) a redraw would be noise, so the display writes one plain
status line every ten seconds instead; with ``quiet`` it writes nothing.

Numbers shown live are for watching a run, not for judging it: latency percentiles
cover the most recent answers only, so a knee shows up as it happens. The verdict
comes from the capture at the end, through :func:`render_summary`.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

__all__ = ["ProgressDisplay", "ProgressState", "render_progress", "render_summary"]

#: How many recent answers the live latency and jitter percentiles cover.
RECENT_TURNS = 1000

_IN_CHANNEL = frozenset({"joined", "speaking", "listening"})
_FAILED = frozenset({"failed", "lost", "error"})


@attrs.define
class ProgressState:
    """What the live display shows; the engine updates it from its trio thread.

    ``send_lateness_p99_ms`` is set by the engine from the media clock whenever it
    likes; everything else follows from the three ``session_*``/``turn_done`` calls.
    """

    sessions: int = 0
    duration_s: float | None = None
    states: dict[int, str] = attrs.Factory(dict)
    sessions_ended: int = 0
    sessions_failed: int = 0
    turns: int = 0
    turn_outcomes: collections.Counter[str] = attrs.Factory(collections.Counter)
    latencies_ms: collections.deque[float] = attrs.Factory(
        lambda: collections.deque(maxlen=RECENT_TURNS)
    )
    jitters_ms: collections.deque[float] = attrs.Factory(
        lambda: collections.deque(maxlen=RECENT_TURNS)
    )
    packets_received: int = 0
    packets_lost: int = 0
    send_lateness_p99_ms: float | None = None
    errors: collections.Counter[str] = attrs.Factory(collections.Counter)

    def session_state(self, session: int, state: str) -> None:
        """Session ``session`` is now ``joining``, ``joined``, ``speaking``, ..."""
        self.states[session] = state

    def session_ended(self, record: Mapping[str, Any]) -> None:
        """A session left; ``record`` is its ``sessions`` row."""
        self.sessions_ended += 1
        outcome = str(record.get("outcome") or "")
        session = record.get("session")
        if isinstance(session, int):
            self.states[session] = outcome or "ended"
        if outcome in _FAILED:
            self.sessions_failed += 1
            self.errors[_reason(record.get("reason")) or outcome] += 1

    def turn_done(self, record: Mapping[str, Any]) -> None:
        """A turn ended; ``record`` is its ``turns`` row."""
        self.turns += 1
        outcome = str(record.get("outcome") or "unknown")
        self.turn_outcomes[outcome] += 1
        if outcome != "answered":
            self.errors[f"turn {outcome}"] += 1
        latency = _finite(record.get("response_latency_ms"))
        if latency is not None:
            self.latencies_ms.append(latency)
        jitter = _finite(record.get("jitter_ms"))
        if jitter is not None:
            self.jitters_ms.append(jitter)
        self.packets_received += _count(record.get("packets_received"))
        self.packets_lost += _count(record.get("packets_lost"))

    def count(self, *states: str) -> int:
        return sum(1 for state in self.states.values() if state in states)

    @property
    def joined(self) -> int:
        return sum(1 for state in self.states.values() if state in _IN_CHANNEL)

    @property
    def loss_percent(self) -> float | None:
        expected = self.packets_received + self.packets_lost
        return 100.0 * self.packets_lost / expected if expected else None


def _reason(reason: object) -> str:
    # Reasons read "VoiceTimeout: no answer from 10.0.0.5 ..."; the part before the
    # colon groups them, the rest would make every reason unique.
    return str(reason or "").split(":", 1)[0].strip()


def _finite(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def _count(value: object) -> int:
    number = _finite(value)
    return int(number) if number is not None else 0


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def _ms(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if abs(value) >= 1000:
        return f"{value / 1000:.2f} s"
    if abs(value) >= 100:
        return f"{value:.0f} ms"
    return f"{value:.1f} ms" if abs(value) >= 10 else f"{value:.2f} ms"


def _elapsed(seconds: float, duration: float | None) -> str:
    shown = f"{seconds:.0f}s"
    return f"{shown}/{duration:.0f}s" if duration else shown


def _errors(state: ProgressState) -> str:
    if not state.errors:
        return "none"
    return ", ".join(f"{reason} {n}" for reason, n in state.errors.most_common(5))


def render_progress(state: ProgressState, *, elapsed_s: float) -> RenderableType:
    """The live panel for ``state``, ``elapsed_s`` seconds into the run."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    loss = state.loss_percent
    grid.add_row("elapsed", _elapsed(elapsed_s, state.duration_s))
    grid.add_row(
        "sessions",
        f"{state.joined}/{state.sessions} joined, {state.count('speaking')} speaking, "
        f"{state.count('joining')} joining, {state.sessions_failed} failed, "
        f"{state.sessions_ended} ended",
    )
    grid.add_row(
        "turns",
        f"{state.turns} done, {state.turn_outcomes.get('answered', 0)} answered, "
        f"{state.turn_outcomes.get('timeout', 0)} timed out",
    )
    grid.add_row(
        "response latency",
        f"p50 {_ms(_percentile(state.latencies_ms, 50))}   "
        f"p95 {_ms(_percentile(state.latencies_ms, 95))}   "
        f"(last {len(state.latencies_ms)} answers)",
    )
    grid.add_row(
        "agent stream",
        f"jitter p50 {_ms(_percentile(state.jitters_ms, 50))}   "
        f"loss {'-' if loss is None else f'{loss:.2f} %'}",
    )
    grid.add_row("send lateness", f"p99 {_ms(state.send_lateness_p99_ms)}")
    grid.add_row("errors", Text(_errors(state), style="red" if state.errors else ""))
    return Group(Text("voicesim swarm", style="bold cyan"), grid)


def status_line(state: ProgressState, *, elapsed_s: float) -> str:
    """The same numbers as one plain line, for logs."""
    loss = state.loss_percent
    return (
        f"voicesim {_elapsed(elapsed_s, state.duration_s)}: "
        f"sessions {state.joined}/{state.sessions} joined, "
        f"{state.count('speaking')} speaking, {state.sessions_failed} failed; "
        f"turns {state.turns}; "
        f"latency p50 {_ms(_percentile(state.latencies_ms, 50))} "
        f"p95 {_ms(_percentile(state.latencies_ms, 95))}; "
        f"jitter p50 {_ms(_percentile(state.jitters_ms, 50))}; "
        f"loss {'-' if loss is None else f'{loss:.2f} %'}; "
        f"send lateness p99 {_ms(state.send_lateness_p99_ms)}; "
        f"errors: {_errors(state)}"
    )


class _Verdict(Protocol):
    @property
    def passed(self) -> bool: ...

    def describe(self) -> str: ...


class ProgressDisplay:
    """Shows a :class:`ProgressState` while the swarm runs.

    Run :meth:`run` in a nursery and :meth:`stop` it at the end; or call
    :meth:`refresh` yourself with the elapsed time.
    """

    def __init__(
        self,
        state: ProgressState,
        *,
        enabled: bool = True,
        console: Console | None = None,
        summary_console: Console | None = None,
        refresh_per_second: float = 4.0,
        status_interval_s: float = 10.0,
    ) -> None:
        self.state = state
        self.console = console if console is not None else Console(stderr=True)
        self.summary_console = (
            summary_console if summary_console is not None else Console()
        )
        self.enabled = enabled
        self.live_mode = enabled and self.console.is_terminal
        self.refresh_per_second = refresh_per_second
        self.status_interval_s = status_interval_s
        self._live: Live | None = None
        self._last_line_s: float | None = None
        self._stopped = False

    def refresh(self, *, elapsed_s: float) -> None:
        """Redraw the panel, or write a status line if one is due."""
        if not self.enabled or self._stopped:
            return
        if self.live_mode:
            panel = render_progress(self.state, elapsed_s=elapsed_s)
            if self._live is None:
                # auto_refresh off: redraws happen only here, in the trio thread that
                # owns the state, so no second thread reads it mid-update. Output
                # printed while live goes above the panel instead of through it.
                self._live = Live(
                    panel,
                    console=self.console,
                    auto_refresh=False,
                    redirect_stdout=True,
                    redirect_stderr=True,
                )
                self._live.start()
            self._live.update(panel, refresh=True)
            return
        if (
            self._last_line_s is None
            or elapsed_s - self._last_line_s >= self.status_interval_s
        ):
            self._last_line_s = elapsed_s
            self.console.print(
                status_line(self.state, elapsed_s=elapsed_s),
                markup=False,
                highlight=False,
                soft_wrap=True,
            )

    async def run(self) -> None:
        """Refresh at ``refresh_per_second`` until cancelled or stopped."""
        if not self.enabled:
            return
        start = trio.current_time()
        try:
            while not self._stopped:
                self.refresh(elapsed_s=trio.current_time() - start)
                await trio.sleep(1.0 / self.refresh_per_second)
        finally:
            self.stop()

    def stop(self) -> None:
        """Leave the last panel on screen and stop redrawing; safe to call twice."""
        self._stopped = True
        if self._live is not None:
            self._live.stop()
            self._live = None

    def print_summary(
        self,
        summary: Mapping[str, Any],
        capture_path: Path | str | None = None,
        verdicts: Sequence[_Verdict] = (),
    ) -> None:
        """Print the summary table, the threshold verdicts and where the capture is."""
        console = self.summary_console
        console.print(render_summary(summary))
        for verdict in verdicts:
            style = "green" if verdict.passed else "bold red"
            console.print(Text(verdict.describe(), style=style))
        if capture_path is not None:
            console.print(Text(f"capture: {capture_path}"))


#: (summary key, label) of the distributions, in table order.
_TRENDS = (
    ("response_latency_ms", "response latency"),
    ("transcript_latency_ms", "transcript latency"),
    ("jitter_ms", "jitter"),
    ("send_lateness_ms", "send lateness"),
    ("join_time_ms", "join time"),
    ("barge_in_stop_ms", "barge-in stop"),
)
_STATS = ("mean", "p50", "p95", "p99", "max")


def _get(mapping: object, *path: str) -> Any:
    for key in path:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def _int_text(value: object) -> str:
    number = _finite(value)
    return "-" if number is None else f"{number:,.0f}"


def _percent_text(value: object) -> str:
    number = _finite(value)
    return "-" if number is None else f"{100 * number:.2f} %"


def render_summary(summary: Mapping[str, Any]) -> Table:
    """The end-of-run table from ``voicesim._stats.summarize``'s dict.

    Every key is optional: a missing distribution is a row of dashes, unknown
    extra distributions (dicts with percentiles under a ``*_ms`` key) get rows too.
    """
    table = Table(title="voicesim summary", title_justify="left")
    table.add_column("metric")
    table.add_column("n", justify="right")
    for stat in _STATS:
        table.add_column(stat, justify="right")

    keys = [key for key, _ in _TRENDS]
    keys += [
        key
        for key, value in summary.items()
        if key.endswith("_ms") and key not in keys and isinstance(value, Mapping)
    ]
    labels = dict(_TRENDS)
    for key in keys:
        entry = summary.get(key)
        entry = entry if isinstance(entry, Mapping) else {}
        label = labels.get(key, key.removesuffix("_ms").replace("_", " "))
        table.add_row(
            label,
            _int_text(entry.get("count")),
            *(_ms(_finite(entry.get(stat))) for stat in _STATS),
        )

    blank = ("",) * (len(_STATS) - 1)
    table.add_row(
        "WER (pooled)",
        _int_text(_get(summary, "wer", "reference_words")),
        _percent_text(_get(summary, "wer", "wer")),
        *blank,
    )
    received = _finite(_get(summary, "packets", "received"))
    lost = _finite(_get(summary, "packets", "lost"))
    expected = None if received is None else received + (lost or 0)
    table.add_row(
        "packet loss (pooled)",
        _int_text(expected),
        _percent_text(_get(summary, "packets", "loss_rate")),
        *blank,
    )

    e2ee = _finite(_get(summary, "sessions", "dave", "sessions"))
    if e2ee:
        # Shown only when DAVE was in use: on loopback the failures should be zero,
        # and a non-zero count is the first sign of a broken key exchange.
        table.add_row(
            "DAVE decrypt failures",
            _int_text(e2ee),
            _int_text(_get(summary, "sessions", "dave", "decrypt_failures")),
            *blank,
        )
        table.add_row(
            "DAVE longest gap",
            _int_text(e2ee),
            _ms(_finite(_get(summary, "sessions", "dave", "longest_gap_ms"))),
            *blank,
        )

    parts = []
    if (sessions := _finite(_get(summary, "sessions", "total"))) is not None:
        failed = _int_text(_get(summary, "sessions", "failed"))
        parts.append(f"sessions {sessions:.0f} ({failed} failed)")
    if (turns := _finite(_get(summary, "turns", "total"))) is not None:
        answered = _int_text(_get(summary, "turns", "answered"))
        timeouts = _int_text(_get(summary, "turns", "timeouts"))
        parts.append(f"turns {turns:.0f} ({answered} answered, {timeouts} timed out)")
    if (duration := _finite(summary.get("duration_s"))) is not None:
        parts.append(f"duration {duration:.1f} s")
    if parts:
        table.caption = "; ".join(parts)
        table.caption_justify = "left"
    return table
