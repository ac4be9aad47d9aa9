"""A real @discordjs/voice bot in a Node child process, driven from trio.

``tests/node/peer.mjs`` is the bot; this module starts it, speaks its line protocol
(one JSON request per line on stdin, one reply per request and unsolicited events on
stdout) and keeps what it reports: the Opus packets its receiver handed on, per user
and in order, and the SSRCs it mapped. The child runs under ``trio.run_process`` in a
nursery, so whatever way a test ends, the process is killed and reaped.

When Node or the npm packages are missing the tests skip, except in CI (``CI=true``),
where the Node peers are installed and their absence is a failure.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from voicesim.emulator import EmulatorInfo

__all__ = ["NODE_DIR", "NodePeer", "node_problem", "require_node", "skip_without_node"]

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
PEER_SCRIPT = NODE_DIR / "peer.mjs"
TIMEOUT = 20.0
_STDERR_KEPT = 20_000
_PACKAGES = ("@discordjs/voice", "@snazzah/davey", "ws")


def node_problem() -> str | None:
    """Why the Node peers cannot run here, or None when they can."""
    if shutil.which("node") is None:
        return "Node.js not found: install Node.js to run the @discordjs/voice peers"
    modules = NODE_DIR / "node_modules"
    missing = [name for name in _PACKAGES if not (modules / name).is_dir()]
    if missing:
        return (
            f"Node.js peers not installed: {modules} lacks {', '.join(missing)}; "
            "run `npm ci --prefix tests/node`"
        )
    return None


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


_PROBLEM = node_problem()
# Skips at collection, with the reason shown; in CI nothing is skipped, and
# :func:`require_node` fails the test instead.
skip_without_node = pytest.mark.skipif(
    _PROBLEM is not None and not in_ci(), reason=_PROBLEM or ""
)


def require_node() -> str:
    """The ``node`` executable; skips the test without Node peers, or fails in CI."""
    problem = node_problem()
    if problem is not None:
        if in_ci():
            pytest.fail(f"{problem} (CI=true, so the Node peers must be present)")
        pytest.skip(problem)
    node = shutil.which("node")
    assert node is not None
    return node


class NodePeer:
    """One @discordjs/voice bot; see the module docstring."""

    def __init__(self, process: trio.Process, user_name: str) -> None:
        self.process = process
        self.user_name = user_name
        self.user_id = ""
        # Opus packets from each user's receive stream, in the order they arrived.
        self.packets: dict[str, list[bytes]] = defaultdict(list)
        # The user behind each SSRC, from the receiver's op 5 map.
        self.speakers: dict[int, str] = {}
        self.events: list[dict[str, Any]] = []
        self.stderr = bytearray()
        self._replies: dict[int, dict[str, Any]] = {}
        self._next_id = 0
        self._changed = trio.Condition()
        self._send_lock = trio.Lock()
        self._stdout_closed = False

    @classmethod
    @asynccontextmanager
    async def start(cls, info: EmulatorInfo, user_name: str) -> AsyncIterator[NodePeer]:
        """Start the bot and log it in over the emulator's main gateway."""
        node = require_node()
        env = dict(os.environ)
        if info.ca_file is not None:
            # The voice gateway is wss:// with the emulator's own CA; Node must trust it.
            env["NODE_EXTRA_CA_CERTS"] = str(info.ca_file)
        command = [node, str(PEER_SCRIPT)]
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=NODE_DIR,
                    env=env,
                    check=False,
                )
            )
            peer = cls(process, user_name)
            nursery.start_soon(peer._read_stdout)
            nursery.start_soon(peer._read_stderr)
            try:
                await peer.wait_event(lambda e: e.get("event") == "started")
                login = await peer.request(
                    "login", state=info.to_json(), user=user_name
                )
                peer.user_id = login["user_id"]
                yield peer
                await peer._quit()
            finally:
                # Cancelling run_process kills the child if it is still there.
                nursery.cancel_scope.cancel()

    # -- requests ------------------------------------------------------------------------

    async def request(
        self, cmd: str, *, timeout: float = TIMEOUT, **args: Any
    ) -> dict[str, Any]:
        """Send one request and return its reply; a failed one raises AssertionError."""
        self._next_id += 1
        request_id = self._next_id
        line = json.dumps({"id": request_id, "cmd": cmd, **args}) + "\n"
        assert self.process.stdin is not None
        async with self._send_lock:
            await self.process.stdin.send_all(line.encode())
        reply: dict[str, Any] = await self.wait_until(
            lambda: self._replies.pop(request_id, None), timeout
        )
        if not reply["ok"]:
            raise AssertionError(
                f"node peer {cmd} failed: {reply['error']}{self._tail()}"
            )
        return reply

    async def join(
        self,
        guild_id: int,
        channel_id: int,
        *,
        dave: bool,
        self_deaf: bool = True,
        debug: bool = False,
    ) -> dict[str, Any]:
        """Join through ``joinVoiceChannel``; returns the SSRC, mode and DAVE version."""
        return await self.request(
            "join",
            guild_id=str(guild_id),
            channel_id=str(channel_id),
            dave=dave,
            self_deaf=self_deaf,
            debug=debug,
        )

    async def subscribe(self, user_id: int) -> None:
        """Subscribe the receiver to ``user_id``; its packets land in :attr:`packets`."""
        await self.request("subscribe", user_id=str(user_id))

    async def play(self, frames: list[bytes]) -> dict[str, Any]:
        """Play ``frames`` as one Opus AudioResource; returns once the player is idle."""
        encoded = [base64.b64encode(frame).decode() for frame in frames]
        return await self.request("play", frames=encoded)

    async def status(self) -> dict[str, Any]:
        return await self.request("status")

    async def _quit(self) -> None:
        with trio.move_on_after(5):
            await self.request("quit")
            await self.process.wait()

    # -- waiting -------------------------------------------------------------------------

    async def wait_until(
        self, check: Callable[[], Any], timeout: float = TIMEOUT
    ) -> Any:
        """Wait for ``check`` to return something true, or fail if the process ended."""
        with trio.fail_after(timeout):
            async with self._changed:
                while not (result := check()):
                    if self._stdout_closed:
                        raise AssertionError(
                            f"node peer exited ({self.process.returncode}){self._tail()}"
                        )
                    await self._changed.wait()
                return result

    async def wait_event(
        self, where: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((e for e in self.events if where(e)), None)

        event: dict[str, Any] = await self.wait_until(find, timeout)
        return event

    async def wait_packets(
        self, user_id: int, count: int, timeout: float = TIMEOUT
    ) -> list[bytes]:
        """The first ``count`` packets received from ``user_id``."""

        def enough() -> list[bytes] | None:
            got = self.packets[str(user_id)]
            return got[:count] if len(got) >= count else None

        packets: list[bytes] = await self.wait_until(enough, timeout)
        return packets

    async def poll_status(
        self, check: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        """Ask for the status until ``check`` holds; the state lives in Node."""
        with trio.fail_after(timeout):
            while not check(status := await self.status()):
                await trio.sleep(0.05)
        return status

    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") in ("error", "fatal")]

    def _tail(self) -> str:
        text = self.stderr.decode(errors="replace").strip()
        return f"\n--- node stderr ---\n{text[-4000:]}" if text else ""

    # -- reading -------------------------------------------------------------------------

    async def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        try:
            async for chunk in self.process.stdout:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                async with self._changed:
                    for line in lines:
                        if line.strip():
                            self._handle(json.loads(line))
                    self._changed.notify_all()
        finally:
            self._stdout_closed = True
            async with self._changed:
                self._changed.notify_all()

    def _handle(self, message: dict[str, Any]) -> None:
        if "id" in message:
            self._replies[message["id"]] = message
            return
        event = message.get("event")
        if event == "packet":
            self.packets[message["user_id"]].append(base64.b64decode(message["data"]))
            return
        if event == "speaking":
            self.speakers[int(message["ssrc"])] = message["user_id"]
        self.events.append(message)

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        async for chunk in self.process.stderr:
            self.stderr += chunk
            del self.stderr[:-_STDERR_KEPT]
