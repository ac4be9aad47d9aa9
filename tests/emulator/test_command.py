"""``python -m voicesim emulator`` run as a user runs it, in a child process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import trio

from tests.emulator._http_client import http


async def test_emulator_command_writes_state_serves_and_stops_on_ctrl_c(
    tmp_path: Path,
) -> None:
    """It writes a usable state file, never prints a token, and Ctrl-C ends it cleanly."""
    state_file = tmp_path / "emulator.json"
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "voicesim",
            "emulator",
            "--state-file",
            str(state_file),
            "--guilds",
            "2",
            "--users",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        with trio.fail_after(30):
            while not state_file.exists():
                assert process.poll() is None, "the emulator exited early"
                await trio.sleep(0.05)
            while True:
                try:
                    state = json.loads(state_file.read_text())
                    break
                except json.JSONDecodeError:  # caught mid-write
                    await trio.sleep(0.05)

        assert len(state["users"]) == 3
        assert len(state["guilds"]) == 2
        assert state["voice_endpoint"].startswith("localhost:")
        assert Path(state["ca_file"]).is_file()
        token = state["users"][0]["token"]
        reply = await http(state["api_base"] + "/users/@me", token=f"Bot {token}")
        assert reply.status == 200
        assert reply.json()["id"] == str(state["users"][0]["id"])
    finally:
        process.send_signal(signal.SIGINT)
        with trio.fail_after(20):
            code = await process.wait()
    assert process.stdout is not None
    output = (await process.stdout.receive_some(1 << 20)).decode()

    assert code == 0, output
    assert "Traceback" not in output
    assert str(state_file) in output
    for user in state["users"]:
        assert user["token"] not in output
