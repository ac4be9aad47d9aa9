"""Real swarms under faults: a dropped voice socket, a silent agent, a Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import trio

from tests.engine._swarm_harness import (
    command_env,
    run_swarm,
    swarm_command,
    swarm_world,
    wait_for,
)
from voicesim.agent import AgentConfig
from voicesim.analysis import load
from voicesim.engine import SwarmConfig

pytestmark = pytest.mark.slow


async def test_session_resumes_after_its_voice_socket_drops_mid_turn(
    tmp_path: Path,
) -> None:
    """A voice WebSocket closed with 4015 while the user speaks is resumed and later turns are answered."""
    config = SwarmConfig(
        sessions=2,
        duration=20.0,
        ramp=0.5,
        think="300ms",
        turn_timeout=10.0,
        capture=tmp_path / "capture",
        seed=3,
        quiet=True,
    )
    agent = AgentConfig(stt_workers=1, think="100ms")
    async with swarm_world(agent, sessions=2) as w, trio.open_nursery() as nursery:
        info = w.info
        user_id = next(u.id for u in info.users if u.id != info.agent_user_id)
        key = (info.guilds[0].id, user_id)
        hub = w.emulator.hub
        drops: list[int] = []

        def speaking() -> bool:
            session = hub.sessions.get(key)
            return session is not None and session.speaking == 1

        async def drop_during_second_utterance() -> None:
            # Speaking goes up at each utterance and down after it; the drop comes
            # once the second utterance has started, with the first answered.
            await wait_for(speaking, timeout=30)
            await wait_for(lambda: not speaking(), timeout=30)
            await wait_for(speaking, timeout=30)
            await trio.sleep(0.5)
            drops.append(w.emulator.drop_voice_connection(user_id))

        nursery.start_soon(drop_during_second_utterance)
        result = await run_swarm(w, config)
        nursery.cancel_scope.cancel()

    assert drops == [1]
    assert result.exit_code == 0
    capture = load(result.capture_path)
    sessions = capture.sessions.set_index("session")
    turns = capture.turns
    dropped = sessions.loc[0]
    assert int(dropped["user_id"]) == user_id
    assert dropped["outcome"] == "completed", dropped["reason"]
    assert dropped["resumes"] == 1
    assert dropped["reconnects"] == 0
    assert sessions.loc[1, "resumes"] == 0

    mine = turns[turns["session"] == 0].sort_values("turn")
    # The turn that was cut into (turn 1) and every later one were answered.
    assert len(mine) >= 3, mine[["turn", "outcome"]]
    assert (mine["outcome"] == "answered").all(), mine["outcome"].tolist()
    assert mine["response_latency_ms"].notna().all()


async def test_turn_times_out_with_a_reason_when_the_agent_stays_silent(
    tmp_path: Path,
) -> None:
    """An agent that answers after a minute leaves every turn a ``timeout`` with its reason."""
    config = SwarmConfig(
        sessions=2,
        duration=10.0,
        ramp=0.5,
        think="200ms",
        turn_timeout=1.5,
        capture=tmp_path / "capture",
        seed=4,
        quiet=True,
    )
    # Calibration mode answers exactly the delay after speech end, far beyond both
    # the turn timeout and the run, and posts no transcript.
    agent = AgentConfig(calibration_delay="60s", stt="none")
    async with swarm_world(agent, sessions=2) as w:
        result = await run_swarm(w, config)

    capture = load(result.capture_path)
    turns = capture.turns
    assert len(turns) >= 2
    assert (turns["outcome"] == "timeout").all(), turns["outcome"].tolist()
    assert turns["response_latency_ms"].isna().all()
    assert turns["response_start_ns"].isna().all()
    assert turns["reason"].notna().all()
    assert turns["reason"].str.contains("1.5 s").all(), turns["reason"].tolist()
    # The sessions themselves were fine: a silent agent is a measurement.
    assert (capture.sessions["outcome"] == "completed").all()
    assert result.summary["turns"]["timeouts"] == len(turns)
    assert result.exit_code == 0


def test_ctrl_c_leaves_a_readable_capture_and_exits_130(tmp_path: Path) -> None:
    """SIGINT a few seconds into ``voicesim swarm`` exits 130 with a capture that loads."""
    capture_dir = tmp_path / "capture"
    process = subprocess.Popen(
        swarm_command(capture_dir, "--sessions", "2", "--duration", "60s"),
        cwd=tmp_path,
        env=command_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        # run.json appears once the embedded target is up and the swarm has begun;
        # a first flushed chunk of turns means sessions are mid-conversation.
        turns_dir = capture_dir / "turns"
        deadline = time.monotonic() + 120
        while not (turns_dir.is_dir() and any(turns_dir.glob("part-*.parquet"))):
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "no turn was written within 120 s"
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 130, output.decode(errors="replace")
    capture = load(capture_dir)
    assert capture.run["exit_code"] == 130
    assert len(capture.sessions) == 2
    assert len(capture.turns) >= 1
    assert capture.turns["response_latency_ms"].notna().any()
