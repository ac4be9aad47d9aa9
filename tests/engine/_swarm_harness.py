"""Real swarms for the engine's tests: an in-process emulator and reference agent.

:func:`swarm_world` runs the emulator and the agent in this process (through
``tests.agent._harness.running_agent``) so that a test can reach them while the
swarm runs: inject faults into the emulator, read the agent's timeline. The swarm
itself is the public :class:`voicesim.engine.Swarm`, pointed at the emulator with a
:class:`TargetSpec` built from its info, exactly as ``--emulator-state`` would.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import trio

from tests.agent._harness import World_, running_agent
from voicesim.agent import AgentConfig
from voicesim.emulator import EmulatorInfo
from voicesim.engine import Swarm, SwarmConfig, SwarmResult, TargetSpec

__all__ = [
    "command_env",
    "run_swarm",
    "swarm_command",
    "swarm_world",
    "target_of",
    "wait_for",
]


def target_of(info: EmulatorInfo) -> TargetSpec:
    """The swarm's view of a running emulator: every non-agent user, every guild."""
    agent = info.agent_user_id
    return TargetSpec(
        api_base=info.api_base,
        gateway_url=info.gateway_url,
        ca_file=info.ca_file,
        tokens=tuple(u.token for u in info.users if u.id != agent),
        placements=tuple(
            (g.id, g.voice_channels[0].id) for g in info.guilds if g.voice_channels
        ),
        agent_user_id=agent,
        plain_voice=not info.voice_tls,
        local=True,
    )


@contextlib.asynccontextmanager
async def swarm_world(config: AgentConfig, *, sessions: int) -> AsyncIterator[World_]:
    """An emulator sized for ``sessions`` with the reference agent in every channel."""
    async with running_agent(config, sessions=sessions) as world:
        yield world


async def run_swarm(world: World_, config: SwarmConfig) -> SwarmResult:
    """Run one swarm against ``world`` through the public Python API."""
    swarm = Swarm(config, target=target_of(world.info), show_progress=False)
    return await swarm.run()


def swarm_command(capture: Path, *args: str) -> list[str]:
    """The command line a user types, with the capture directory given."""
    return [
        sys.executable,
        "-m",
        "voicesim",
        "swarm",
        "--quiet",
        "--capture",
        str(capture),
        *args,
    ]


def command_env() -> dict[str, str]:
    """The environment for a ``voicesim`` child: no VOICESIM_* settings leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICESIM_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def wait_for(
    predicate: Callable[[], bool], *, timeout: float, step: float = 0.05
) -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(step)
