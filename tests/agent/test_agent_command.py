"""``python -m voicesim agent`` run as a user runs it: in its own process, until Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import trio

from voicesim.emulator import Emulator, EmulatorConfig, World
from voicesim.emulator._registry import GatewaySession

#: Bound on the agent process starting (imports, login, join) and on any wait.
WAIT_S = 30.0
#: Bound on the agent leaving and exiting after SIGINT: its leave is bounded by 5 s.
EXIT_S = 10.0
#: The command's documented exit code for Ctrl-C (SIGINT).
EXIT_INTERRUPTED = 130


async def _drain(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
    async for chunk in stream:
        into += chunk


async def test_agent_command_joins_its_channel_and_leaves_cleanly_on_sigint(
    tmp_path: Path,
) -> None:
    """The agent joins the channel it is given; SIGINT makes it leave and exit 130."""
    state_file = tmp_path / "emulator.json"
    config = EmulatorConfig(world=World.sized_for(sessions=1), state_file=state_file)
    async with Emulator(config) as emulator:
        info = emulator.info
        agent_id = info.agent_user_id
        assert agent_id is not None
        guild = info.guilds[0]
        guild_id, channel_id = guild.id, guild.voice_channels[0].id
        registry = emulator.registry
        # The emulator removes its state file when it stops.
        state = json.loads(state_file.read_text(encoding="utf-8"))
        secrets = [user["token"] for user in state["users"]]

        # Records, for each time the agent's voice state is taken away, whether its
        # gateway session was still live: a clean leave is an op 4 sent before the
        # gateway closes, not the emulator tidying up after a vanished client.
        leaves: list[bool] = []
        leave_voice = registry.leave_voice

        def watched_leave(session: GatewaySession, guild_id: int) -> None:
            if session.user.id == agent_id:
                leaves.append(not session.ended)
            leave_voice(session, guild_id)

        registry.leave_voice = watched_leave  # type: ignore[method-assign]

        out, err = bytearray(), bytearray()
        command = [
            sys.executable,
            "-m",
            "voicesim",
            "agent",
            "--emulator-state",
            str(state_file),
            "--channel",
            f"{guild_id}:{channel_id}",
            "--stt",
            "none",
        ]
        process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path
        )
        try:
            async with trio.open_nursery() as nursery:
                assert process.stdout is not None and process.stderr is not None
                nursery.start_soon(_drain, process.stdout, out)
                nursery.start_soon(_drain, process.stderr, err)

                with trio.fail_after(WAIT_S):
                    while (joined := registry.voice_state(guild_id, agent_id)) is None:
                        assert process.returncode is None, err.decode()
                        await trio.sleep(0.05)
                assert joined.channel_id == channel_id
                secrets.append(joined.token)
                # Joined for good once its voice session has chosen a transport mode
                # (Select Protocol done, so audio can flow).
                with trio.fail_after(WAIT_S):
                    while True:
                        session = emulator.hub.sessions.get((guild_id, agent_id))
                        if session is not None and session.mode is not None:
                            break
                        await trio.sleep(0.05)

                process.send_signal(signal.SIGINT)
                with trio.fail_after(EXIT_S):
                    code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

        assert code == EXIT_INTERRUPTED, err.decode()
        assert registry.voice_state(guild_id, agent_id) is None
        assert (guild_id, agent_id) not in emulator.hub.sessions
        assert leaves == [True]

    output = out.decode() + err.decode()
    assert output, "the agent logs its start and its leave"
    for secret in secrets:
        assert secret not in output


async def test_agent_command_refuses_a_bad_setting_in_one_line_naming_it() -> None:
    """``--end-silence banana`` exits 2 with one line on stderr naming end_silence."""
    result = await trio.run_process(
        [sys.executable, "-m", "voicesim", "agent", "--end-silence", "banana"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )

    assert result.returncode == 2
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert "end_silence" in lines[0]
    assert "banana" in lines[0]
