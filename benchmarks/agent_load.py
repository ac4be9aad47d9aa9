"""How the reference agent's response latency grows from one session to many.

Run it as ``python benchmarks/agent_load.py`` (about three minutes with the defaults),
or shorter with, for example, ``--duration 20 --sessions 1 4``. For each session
count it runs the real command-line swarm,

    python -m voicesim swarm --sessions N --duration D --seed S --quiet --capture DIR \\
        --agent-arg=--stt=pocketsphinx

which starts the embedded emulator and the reference agent in a child process (so
the agent's CPU is not the generator's) and talks to it over loopback. Each
synthetic user speaks a fixture utterance, waits for the answer, thinks and speaks
again, so the number of turns grows with the duration; at least tens of turns per
session count make a median worth reading. The agent transcribes every utterance
with pocketsphinx before it answers, so its CPU, and with it the latency, grows with
the number of sessions speaking at once: this is the knee a swarm is meant to find,
measured here on whatever machine runs it (the shared 2-core machines, for now).

The capture goes to a temporary directory and is read back with
``voicesim.analysis.load(path).summary()``. For each count the table shows the turns
counted, answered and timed out, the median and p95 of response latency (speech end
to the agent's first audible frame) and of transcript latency, and the pooled word
error rate; then the ratios of the largest count's p50 and p95 to the smallest's.

Runs of different counts cannot share a moment, so the machine's own load is shown
beside each: the CPU the run used (the swarm and its children: emulator, agent and
transcription workers, as a share of one core) and how busy the whole machine was
over the same time (from ``/proc/stat``, 100 % per core), and the difference: work
that was not this run's, on a machine shared with others. ``--repeats`` runs the
counts again in rotated order, so drift shows up as disagreement between repeats.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs

# Run from a checkout without installing: the repository root holds the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voicesim import analysis

# Start-up, ramp, the last turns' answers and the child's shutdown, beyond --duration.
_OVERHEAD_ALLOWANCE = 240.0


@attrs.frozen
class RunResult:
    sessions: int
    exit_code: int
    wall_s: float
    tree_cpu_s: float
    machine_busy: float  # share of all cores, 0..1
    summary: dict[str, Any]
    problems: tuple[str, ...]

    def latency(self, metric: str, stat: str) -> float | None:
        value = self.summary.get(metric, {}).get(stat)
        return None if value is None else float(value)


def _machine_times() -> tuple[int, int]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_swarm(
    args: argparse.Namespace, sessions: int, workdir: Path, repeat: int
) -> RunResult:
    capture = workdir / f"capture-{sessions}-{repeat}"
    command = [
        sys.executable,
        "-m",
        "voicesim",
        "swarm",
        "--sessions",
        str(sessions),
        "--duration",
        f"{args.duration}s",
        "--seed",
        str(args.seed),
        "--quiet",
        "--capture",
        str(capture),
        "--agent-arg=--stt=pocketsphinx",
    ]
    if args.ramp is not None:
        command += ["--ramp", f"{args.ramp}s"]
    print(f"$ {' '.join(command[1:])}", flush=True)

    busy0, total0 = _machine_times()
    cpu0 = _children_cpu()
    wall0 = time.monotonic()
    # The swarm's working directory is the temporary one, so nothing lands in the
    # caller's; its output goes to ours, where errors stay visible.
    completed = subprocess.run(
        command,
        cwd=workdir,
        timeout=args.duration + _OVERHEAD_ALLOWANCE,
        check=False,
    )
    wall = time.monotonic() - wall0
    # Counts the swarm and every descendant it waited for: the embedded target's
    # process and, through it, the transcription workers.
    tree_cpu = _children_cpu() - cpu0
    busy1, total1 = _machine_times()

    loaded = analysis.load(capture)
    problems = tuple(loaded.incomplete) + tuple(loaded.warnings)
    return RunResult(
        sessions=sessions,
        exit_code=completed.returncode,
        wall_s=wall,
        tree_cpu_s=tree_cpu,
        machine_busy=(busy1 - busy0) / max(total1 - total0, 1),
        summary=loaded.summary(),
        problems=problems,
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def report(results: list[RunResult]) -> str:
    cores = os.cpu_count() or 1
    lines = [
        f"{'sessions':>8} {'turns':>6} {'answered':>8} {'timeouts':>8} "
        f"{'resp p50':>9} {'resp p95':>9} {'text p50':>9} {'text p95':>9} "
        f"{'WER':>6} {'run CPU%':>9} {'box busy%':>10} {'others%':>8}",
        "-" * 113,
    ]
    for r in results:
        turns = r.summary["turns"]
        wer = r.summary.get("wer", {}).get("wer")
        lines.append(
            f"{r.sessions:>8} {turns['total']:>6} {turns['answered']:>8} "
            f"{turns['timeouts']:>8} "
            f"{_ms(r.latency('response_latency_ms', 'p50')):>9} "
            f"{_ms(r.latency('response_latency_ms', 'p95')):>9} "
            f"{_ms(r.latency('transcript_latency_ms', 'p50')):>9} "
            f"{_ms(r.latency('transcript_latency_ms', 'p95')):>9} "
            f"{'-' if wer is None else f'{100 * wer:.1f}%':>6} "
            f"{100 * r.tree_cpu_s / r.wall_s:>9.0f} "
            f"{100 * cores * r.machine_busy:>10.0f} "
            f"{max(0.0, 100 * (cores * r.machine_busy - r.tree_cpu_s / r.wall_s)):>8.0f}"
        )
    lines.append(
        f"(latencies in ms; run CPU% is the swarm and its children over the run's "
        f"wall time, box busy% the whole machine's, others% the difference, all "
        f"100 per core, {cores} cores)"
    )
    for r in results:
        if r.exit_code != 0:
            lines.append(f"  {r.sessions} sessions: the swarm exited {r.exit_code}")
        for problem in r.problems:
            lines.append(f"  {r.sessions} sessions: capture: {problem}")
    return "\n".join(lines)


def ratios(results: list[RunResult], low: int, high: int) -> str:
    lines = []
    for metric, label in (
        ("response_latency_ms", "response latency"),
        ("transcript_latency_ms", "transcript latency"),
    ):
        figures = []
        for stat in ("p50", "p95"):
            lows = [r.latency(metric, stat) for r in results if r.sessions == low]
            highs = [r.latency(metric, stat) for r in results if r.sessions == high]
            lows_ok = [v for v in lows if v is not None]
            highs_ok = [v for v in highs if v is not None]
            if not lows_ok or not highs_ok or statistics.median(lows_ok) <= 0:
                figures.append(f"{stat} -")
                continue
            ratio = statistics.median(highs_ok) / statistics.median(lows_ok)
            figures.append(f"{stat} x{ratio:.2f}")
        lines.append(f"{label}, {high} vs {low} sessions: {', '.join(figures)}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sessions",
        type=int,
        nargs="+",
        default=[1, 16],
        help="concurrent session counts to run (default 1 16)",
    )
    parser.add_argument(
        "--duration",
        type=int,
        default=60,
        help="seconds each swarm keeps talking (default 60)",
    )
    parser.add_argument(
        "--ramp",
        type=float,
        help="seconds over which the sessions start (default: the swarm's)",
    )
    parser.add_argument("--seed", type=int, default=1, help="swarm seed (default 1)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run every count this many times, in rotated order (default 1)",
    )
    args = parser.parse_args()
    counts = sorted(set(args.sessions))

    print(
        f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
        f"{os.cpu_count()} cores",
        flush=True,
    )
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="voicesim-agent-load-") as workdir:
        for repeat in range(args.repeats):
            # Rotate, so that no count always runs first on a machine that drifts.
            shift = repeat % len(counts)
            for sessions in counts[shift:] + counts[:shift]:
                results.append(run_swarm(args, sessions, Path(workdir), repeat))
    print()
    print(report(results))
    if len(counts) > 1:
        print(ratios(results, counts[0], counts[-1]))
    print(
        f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
        flush=True,
    )


if __name__ == "__main__":
    main()
