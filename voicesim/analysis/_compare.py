"""Is a change in latency real? Two captures compared with a cluster bootstrap.

For each key metric the median and the p95 of the baseline and the new capture are
compared. Their difference gets a confidence interval from a bootstrap, and the
verdict follows from the interval, not from the point estimates: "worse" when the whole
interval lies above zero, "better" when it lies below, otherwise "no detectable
change". A worse metric whose relative shift also exceeds the tolerance is a
regression, and ``Comparison.exit_code`` is then 99.

The bootstrap resamples sessions, not turns. Turns inside a session are dependent (a
slow agent slows every turn of the conversation it is in), so resampling turns one by
one would pretend to more independent evidence than a run holds and give intervals
that are too narrow. Each replicate draws as many sessions as the capture has, with
replacement, and computes the statistic over all turns of the drawn sessions, which
amounts to a quantile weighted by how often each session was drawn; that is computed
for many replicates at once on the sorted values.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
import numpy.typing as npt
import pandas as pd

if TYPE_CHECKING:
    from voicesim.analysis._capture import Capture

__all__ = ["COMPARED_METRICS", "Comparison", "Shift", "compare"]

#: (metric, table, column) compared; all are times where lower is better.
COMPARED_METRICS = (
    ("response_latency", "turns", "response_latency_ms"),
    ("transcript_latency", "turns", "transcript_latency_ms"),
    ("jitter", "turns", "jitter_ms"),
    ("barge_in_stop", "turns", "barge_in_stop_ms"),
    ("join_time", "sessions", "join_time_ms"),
)
STATISTICS = (("median", 0.5), ("p95", 0.95))
#: Fewer values or sessions than this on either side give "not enough data".
MIN_VALUES = 5
MIN_SESSIONS = 2

WORSE, BETTER, SAME, TOO_FEW = (
    "worse",
    "better",
    "no detectable change",
    "not enough data",
)


@attrs.frozen(kw_only=True)
class Shift:
    """How one statistic of one metric moved from the baseline to the new capture."""

    metric: str
    statistic: str  # "median" or "p95"
    base: float | None  # ms
    new: float | None  # ms
    difference: float | None  # new - base, ms
    relative: float | None  # new / base - 1
    ci_low: float | None  # confidence interval of the difference, ms
    ci_high: float | None
    n_base: int
    n_new: int
    verdict: str  # worse, better, no detectable change, not enough data
    beyond_tolerance: bool  # worse, and by more than the tolerance


@attrs.frozen(kw_only=True)
class Comparison:
    """The shifts of every compared metric, and what they add up to."""

    base: str
    new: str
    tolerance: float
    confidence: float
    shifts: tuple[Shift, ...]

    @property
    def regressions(self) -> tuple[Shift, ...]:
        """Shifts that are detectably worse by more than the tolerance."""
        return tuple(s for s in self.shifts if s.beyond_tolerance)

    @property
    def worse(self) -> bool:
        """True when anything regressed beyond the tolerance."""
        return bool(self.regressions)

    @property
    def exit_code(self) -> int:
        """99 when something regressed beyond the tolerance, else 0."""
        return 99 if self.worse else 0

    def to_frame(self) -> pd.DataFrame:
        """One row per shift."""
        return pd.DataFrame([attrs.asdict(s) for s in self.shifts])

    def format(self) -> str:
        """A plain-text table and a closing line saying whether anything regressed."""
        level = f"{self.confidence * 100:g}%"
        lines = [
            f"compare {self.base} -> {self.new} "
            f"({level} confidence, tolerance {self.tolerance * 100:g}%)",
            f"{'metric':<20} {'stat':<7} {'base ms':>9} {'new ms':>9} {'change':>8} "
            f"{level + ' CI of difference (ms)':>28}  verdict",
        ]
        for s in self.shifts:
            interval = (
                f"[{s.ci_low:+.1f}, {s.ci_high:+.1f}]"
                if s.ci_low is not None and s.ci_high is not None
                else "-"
            )
            change = f"{s.relative * 100:+.1f}%" if s.relative is not None else "-"
            verdict = s.verdict + (" (beyond tolerance)" if s.beyond_tolerance else "")
            lines.append(
                f"{s.metric:<20} {s.statistic:<7} {_ms(s.base):>9} {_ms(s.new):>9} "
                f"{change:>8} {interval:>28}  {verdict}"
            )
        if self.regressions:
            names = ", ".join(f"{s.metric} {s.statistic}" for s in self.regressions)
            lines.append(f"worse beyond {self.tolerance * 100:g}% tolerance: {names}")
        else:
            lines.append(f"no regression beyond {self.tolerance * 100:g}% tolerance")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _sample(
    frame: pd.DataFrame, column: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp], int]:
    """Sorted finite values, the session code of each, and the number of sessions."""
    if len(frame) == 0 or column not in frame.columns:
        return np.empty(0), np.empty(0, dtype=np.intp), 0
    values = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
    keep = np.isfinite(values)
    _, codes = np.unique(frame["session"].to_numpy()[keep], return_inverse=True)
    order = np.argsort(values[keep], kind="stable")
    codes = codes.astype(np.intp)[order]
    return values[keep][order], codes, int(codes.max()) + 1 if codes.size else 0


def _quantiles(
    values: npt.NDArray[np.float64],
    cumulative: npt.NDArray[Any],
    qs: tuple[float, ...],
) -> npt.NDArray[np.float64]:
    # Inverted-CDF quantile of each row's weighted sample: the first sorted value
    # whose cumulative weight reaches q of the row's total.
    total = cumulative[:, -1:]
    return np.stack(
        [values[np.argmax(cumulative >= q * total, axis=1)] for q in qs], axis=1
    )


def _bootstrap(
    values: npt.NDArray[np.float64],
    codes: npt.NDArray[np.intp],
    sessions: int,
    qs: tuple[float, ...],
    n_boot: int,
    rng: np.random.Generator,
) -> npt.NDArray[np.float64]:
    out = np.empty((n_boot, len(qs)))
    # Keep each block of replicates near two million weights in memory.
    block = max(1, 2_000_000 // max(values.size, sessions))
    for start in range(0, n_boot, block):
        rows = min(block, n_boot - start)
        drawn = rng.integers(0, sessions, size=(rows, sessions))
        flat = (drawn + (np.arange(rows) * sessions)[:, None]).ravel()
        times_drawn = np.bincount(flat, minlength=rows * sessions).reshape(
            rows, sessions
        )
        cumulative = np.cumsum(times_drawn[:, codes], axis=1)
        out[start : start + rows] = _quantiles(values, cumulative, qs)
    return out


def _compare_metric(
    metric: str,
    base: tuple[npt.NDArray[np.float64], npt.NDArray[np.intp], int],
    new: tuple[npt.NDArray[np.float64], npt.NDArray[np.intp], int],
    *,
    tolerance: float,
    confidence: float,
    n_boot: int,
    rng: np.random.Generator,
) -> list[Shift]:
    qs = tuple(q for _, q in STATISTICS)
    enough = all(s[0].size >= MIN_VALUES and s[2] >= MIN_SESSIONS for s in (base, new))
    points = {}
    for side, (values, _, _) in (("base", base), ("new", new)):
        points[side] = (
            _quantiles(values, np.arange(1, values.size + 1)[None, :], qs)[0]
            if values.size
            else None
        )
    if enough:
        differences = _bootstrap(*new, qs, n_boot, rng) - _bootstrap(
            *base, qs, n_boot, rng
        )
        alpha = (1.0 - confidence) / 2.0
        low, high = np.quantile(differences, [alpha, 1.0 - alpha], axis=0)

    shifts = []
    for j, (statistic, _) in enumerate(STATISTICS):
        b = float(points["base"][j]) if points["base"] is not None else None
        n = float(points["new"][j]) if points["new"] is not None else None
        relative = None
        if b is not None and n is not None:
            relative = n / b - 1.0 if b > 0 else (float("inf") if n > 0 else 0.0)
        ci: tuple[float | None, float | None]
        if enough:
            ci = (float(low[j]), float(high[j]))
            verdict = WORSE if low[j] > 0 else BETTER if high[j] < 0 else SAME
        else:
            ci, verdict = (None, None), TOO_FEW
        shifts.append(
            Shift(
                metric=metric,
                statistic=statistic,
                base=b,
                new=n,
                difference=None if b is None or n is None else n - b,
                relative=relative,
                ci_low=ci[0],
                ci_high=ci[1],
                n_base=int(base[0].size),
                n_new=int(new[0].size),
                verdict=verdict,
                beyond_tolerance=verdict == WORSE
                and relative is not None
                and relative > tolerance,
            )
        )
    return shifts


def compare(
    base: Capture | str | Path,
    new: Capture | str | Path,
    *,
    tolerance: float = 0.10,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int | None = 0,
) -> Comparison:
    """Compare the key latencies of two captures (objects or paths).

    ``tolerance`` is the relative worsening (0.10 = 10 %) accepted before a detectable
    change counts as a regression; ``seed`` makes the bootstrap repeatable.
    """
    from voicesim.analysis._capture import load

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence!r}")
    if tolerance < 0.0:
        raise ValueError(f"tolerance must not be negative, not {tolerance!r}")
    if n_boot < 100:
        raise ValueError(f"n_boot must be at least 100, not {n_boot!r}")
    base_capture = base if not isinstance(base, str | Path) else load(base)
    new_capture = new if not isinstance(new, str | Path) else load(new)

    rng = np.random.default_rng(seed)
    shifts: list[Shift] = []
    for metric, table, column in COMPARED_METRICS:
        samples = [
            _sample(getattr(c, table), column) for c in (base_capture, new_capture)
        ]
        if samples[0][0].size == 0 and samples[1][0].size == 0:
            continue  # measured by neither run: nothing to say
        shifts += _compare_metric(
            metric,
            samples[0],
            samples[1],
            tolerance=tolerance,
            confidence=confidence,
            n_boot=n_boot,
            rng=rng,
        )
    return Comparison(
        base=base_capture.name,
        new=new_capture.name,
        tolerance=tolerance,
        confidence=confidence,
        shifts=tuple(shifts),
    )
