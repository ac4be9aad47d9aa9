"""Real swarms end to end: the Python API, the command, and what they measure."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.engine._swarm_harness import (
    command_env,
    run_swarm,
    swarm_command,
    swarm_world,
)
from voicesim.agent import AgentConfig, read_timeline
from voicesim.analysis import load
from voicesim.engine import SwarmConfig

pytestmark = pytest.mark.slow

#: One 20 ms frame: the resolution of every time the swarm and the agent take.
FRAME_MS = 20.0


async def test_swarm_api_measures_every_turn_of_every_session(tmp_path: Path) -> None:
    """Four sessions against the reference agent all join and every turn is answered."""
    capture_dir = tmp_path / "capture"
    config = SwarmConfig(
        sessions=4,
        duration=15.0,
        ramp=2.0,
        think="500ms",
        turn_timeout=10.0,
        capture=capture_dir,
        seed=1,
        quiet=True,
    )
    async with swarm_world(AgentConfig(stt_workers=1, think="100ms"), sessions=4) as w:
        result = await run_swarm(w, config)

    assert result.exit_code == 0
    assert result.capture_path == capture_dir
    capture = load(capture_dir)
    sessions = capture.sessions
    turns = capture.turns

    assert sorted(sessions["session"]) == [0, 1, 2, 3]
    assert (sessions["outcome"] == "completed").all(), sessions["reason"].tolist()
    assert sessions["joined_ns"].notna().all()
    assert (sessions["frames_sent"] > 0).all()
    users = {u.id for u in w.info.users if u.id != w.info.agent_user_id}
    assert set(sessions["user_id"].astype(int)) <= users
    assert sessions["user_id"].nunique() == 4

    # Every turn a session started has its row, numbered from 0 without gaps.
    for row in sessions.itertuples():
        numbers = sorted(turns.loc[turns["session"] == row.session, "turn"])
        assert row.turns >= 1
        assert numbers == list(range(row.turns))
    assert (turns["outcome"] == "answered").all(), turns["outcome"].tolist()
    assert turns["response_latency_ms"].notna().all()
    assert (turns["response_latency_ms"] > 0).all()
    assert (turns["response_start_ns"] > turns["speech_end_ns"]).all()
    assert (turns["speech_end_ns"] > turns["speech_start_ns"]).all()
    assert turns["transcript_text"].notna().all()
    assert (turns["packets_received"] > 0).all()

    run = json.loads((capture_dir / "run.json").read_text())
    assert run["exit_code"] == 0
    assert run["summary"]["turns"]["total"] == len(turns)
    assert run["summary"]["sessions"]["total"] == 4
    assert run["summary"]["response_latency_ms"]["count"] == len(turns)
    assert result.summary == run["summary"]


def test_swarm_command_writes_a_readable_capture(tmp_path: Path) -> None:
    """``python -m voicesim swarm`` against its embedded target exits 0 with every turn measured."""
    capture_dir = tmp_path / "capture"
    done = subprocess.run(
        swarm_command(capture_dir, "--sessions", "3", "--duration", "15s"),
        cwd=tmp_path,
        env=command_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=180,
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, output

    capture = load(capture_dir)
    assert capture.complete
    assert len(capture.sessions) == 3
    assert (capture.sessions["outcome"] == "completed").all()
    assert len(capture.turns) >= 3
    assert (capture.turns["outcome"] == "answered").all()
    assert capture.turns["response_latency_ms"].notna().all()
    assert capture.run["exit_code"] == 0


async def test_response_latency_matches_the_agents_own_timeline(
    tmp_path: Path,
) -> None:
    """Measured latency equals the calibration agent's own speech end to first frame, within a frame."""
    timeline = tmp_path / "timeline.jsonl"
    agent = AgentConfig(
        calibration_delay="600ms",
        end_silence="400ms",
        stt="none",
        timeline_path=timeline,
    )
    config = SwarmConfig(
        sessions=3,
        duration=12.0,
        ramp=1.0,
        think="300ms",
        turn_timeout=8.0,
        capture=tmp_path / "capture",
        seed=2,
        quiet=True,
    )
    async with swarm_world(agent, sessions=3) as w:
        result = await run_swarm(w, config)
    assert result.exit_code == 0

    capture = load(result.capture_path)
    user_of = dict(
        zip(
            capture.sessions["session"],
            capture.sessions["user_id"].astype(int),
            strict=True,
        )
    )
    records = [r for r in read_timeline(timeline) if r.outcome == "answered"]
    turns = capture.turns
    assert len(turns) >= 6
    assert (turns["outcome"] == "answered").all()

    for turn in turns.itertuples():
        # The agent's turn for this utterance is the one of the same user whose
        # detected speech end lies inside the utterance (plus transit time).
        mine = [
            r
            for r in records
            if r.user_id == user_of[turn.session]
            and r.speech_end_ns is not None
            and turn.speech_start_ns < r.speech_end_ns < turn.speech_end_ns + 100e6
        ]
        assert len(mine) == 1, (turn.session, turn.turn, mine)
        (record,) = mine
        assert record.speech_end_ns is not None
        assert record.reply_first_frame_ns is not None
        agent_ms = (record.reply_first_frame_ns - record.speech_end_ns) / 1e6
        assert abs(turn.response_latency_ms - agent_ms) <= FRAME_MS, (
            turn.response_latency_ms,
            agent_ms,
        )
