"""A swarm driven from your own code: a load sweep that finds where the agent slows.

Run it from the repository root (or anywhere voicesim is installed)::

    python examples/custom_swarm.py                  # 2, 4 and 8 sessions, 30 s each
    python examples/custom_swarm.py --steps 1 16 --duration 60

Each step is a whole swarm against the embedded default target (the local Discord
emulator and the reference agent, started in a child process), with one capture
directory per step under ``--out``. The script prints the p50 and p95 response
latency of each step, and stops early at the first step whose p95 is over
``--budget-ms``: the knee of the agent's latency curve, the figure a team wants
before a release. Its exit code is 0 when every step stayed within the budget.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import trio

from voicesim import Swarm, SwarmConfig


async def sweep(steps: list[int], duration: float, budget_ms: float, out: Path) -> int:
    for sessions in steps:
        config = SwarmConfig(
            sessions=sessions,
            duration=duration,
            ramp=min(5.0, duration / 4),
            seed=sessions,
            quiet=True,
            capture=out / f"sessions-{sessions}",
            thresholds=[f"response_latency: p(95) < {budget_ms:g}ms"],
        )
        result = await Swarm(config).run()

        latency = result.summary["response_latency_ms"]
        print(
            f"{sessions:4d} sessions: response latency "
            f"p50 {_ms(latency['p50'])}, p95 {_ms(latency['p95'])} "
            f"({result.summary['turns']['answered']} turns answered); "
            f"capture {result.capture_path}"
        )
        if result.exit_code != 0:
            for verdict in result.verdicts:
                if not verdict.passed:
                    print(f"  over budget: {verdict.describe()}")
            return result.exit_code
    return 0


def _ms(value: float | None) -> str:
    return "    - ms" if value is None else f"{value:5.0f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds a step")
    parser.add_argument("--budget-ms", type=float, default=2500.0)
    parser.add_argument("--out", type=Path, default=Path("sweep"))
    args = parser.parse_args()
    return trio.run(sweep, args.steps, args.duration, args.budget_ms, args.out)


if __name__ == "__main__":
    sys.exit(main())
