"""How many concurrently speaking sessions one voicesim process sustains.

Run from the repository root::

    python benchmarks/swarm_capacity.py
    python benchmarks/swarm_capacity.py --steps 250 500 1000 --seconds 10 --tls

Every session is a real voice connection: a :class:`voicesim.voice.VoiceConnection`
(voice gateway over WebSocket, IP discovery, Select Protocol, AES-GCM transport
encryption) whose frames go out through this process's one
:class:`~voicesim.voice.MediaClock`, speaking fixture utterances from
``voicesim.media.load_fixtures()`` back to back for as long as the run lasts. The
emulator runs in a CHILD process (this script, re-invoked with ``--emulator-child``),
so its CPU is not counted as voicesim's; its world is ``World.sized_for(sessions=N)``,
one session per guild, so its relay only decrypts and forwards nothing.

The voice join bypasses discord.py: logging in hundreds of discord.py clients costs
minutes, and the control plane is not what is measured. Each session logs in with
the small main-gateway client of the emulator tests (``tests/emulator/_peers.py``,
``GatewayPeer``), sends op 4 and hands the two voice dispatches to
``VoiceConnection``. The voice gateway is plain ``ws://`` unless ``--tls`` is given
(the emulator serves plain voice on request, for local use only).

The session count goes up in steps. At each step the missing sessions join (at most
``--join-concurrency`` at a time), everyone settles for ``--settle`` seconds, and then
for ``--seconds`` seconds the script measures, over that window only:

- send lateness (actual minus intended send time of every frame, from the streams'
  own histograms, reset at the start of the window): p50, p99, max;
- ``send_errors`` (frames the socket refused) and frames sent per session per second;
- CPU of this process (process CPU time / wall time) and CPU per session, plus the
  emulator child's CPU and the whole machine's busy share, for context.

A step passes when p99 is at most ``--p99-ms`` (2 ms), no frame was refused and every
session joined; the run stops at the first failing step, or when ``--max-runtime``
runs out. These machines have 2 cores shared with other work, so the load average is
printed before and after; compare runs side by side, not against old figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from voicesim._histogram import LatenessHistogram
from voicesim.emulator import (
    Emulator,
    EmulatorConfig,
    EmulatorInfo,
    World,
    emulator_ssl_context,
)
from voicesim.media import load_fixtures
from voicesim.voice import MediaClock, OutboundStream, VoiceConnection
from voicesim.voice._control import VoiceCredentials

# The test suite's small gateway client; the repository root makes ``tests`` importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.emulator._peers import GatewayPeer

DEFAULT_STEPS = (100, 250, 500, 750, 1000, 1500, 2000)
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the emulator child --------------------------------------------------------------


def _raise_nofile(wanted: int) -> None:
    # Each session holds a UDP socket and two WebSockets here, and two sockets in the
    # emulator.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


async def _serve_emulator(config: EmulatorConfig, counters_file: Path) -> None:
    async with Emulator(config) as emulator:
        # The parent reads the relay's counters from this file to see whether the
        # emulator kept up with what was sent.
        while True:
            snapshot = emulator.counters
            tmp = counters_file.with_suffix(".tmp")
            tmp.write_text(
                json.dumps(
                    {
                        "relayed_packets": snapshot.relayed_packets,
                        "dropped": dict(snapshot.dropped),
                        "voice_sessions": snapshot.voice_sessions,
                    }
                )
            )
            tmp.replace(counters_file)
            await trio.sleep(0.5)


def _emulator_child(args: argparse.Namespace) -> int:
    _raise_nofile(4 * args.sessions + 256)
    config = EmulatorConfig(
        world=World.sized_for(sessions=args.sessions),
        state_file=Path(args.state_file),
        plain_voice=not args.tls,
    )
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        trio.run(_serve_emulator, config, Path(args.state_file).with_name("counters"))
    except* KeyboardInterrupt:
        # The parent's SIGINT (or SIGTERM) is how the child is told to stop.
        pass
    return 0


# -- measuring -----------------------------------------------------------------------


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _thread_cpu(native_id: int) -> float:
    """CPU seconds used so far by thread ``native_id`` of this process."""
    text = Path(f"/proc/self/task/{native_id}/stat").read_text()
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _clock_thread_id() -> int:
    for thread in threading.enumerate():
        if thread.name == "voicesim-media-clock" and thread.native_id is not None:
            return thread.native_id
    raise RuntimeError("the media clock thread is not running")


def _machine_times() -> tuple[int, int]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


@attrs.define
class StepResult:
    sessions: int
    joined: int
    join_failures: int
    session_failures: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    frames: int
    send_errors: int
    fps_per_session: float
    cpu_percent: float
    clock_cpu_percent: float
    cpu_per_session: float
    us_per_frame: float
    emulator_cpu_percent: float
    machine_busy_percent: float
    relayed_per_s: float
    relay_dropped: int
    ticks_behind_max: int
    join_seconds: float

    def passed(self, p99_bound_ms: float) -> bool:
        return (
            self.joined == self.sessions
            and self.session_failures == 0
            and self.send_errors == 0
            and self.frames > 0
            and self.p99_ms <= p99_bound_ms
        )


_HEADER = (
    f"{'sessions':>8} {'joined':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
    f"{'errors':>6} {'fps/s':>6} {'CPU%':>6} {'clock%':>6} {'CPU%/s':>7} {'us/frm':>7} "
    f"{'emu%':>5} {'box%':>5} {'relay/s':>8} {'join s':>6}  verdict"
)


def _row(r: StepResult, ok: bool) -> str:
    return (
        f"{r.sessions:>8} {r.joined:>6} {r.p50_ms:>7.3f} {r.p99_ms:>7.3f} "
        f"{r.max_ms:>7.2f} {r.send_errors:>6} {r.fps_per_session:>6.1f} "
        f"{r.cpu_percent:>6.1f} {r.clock_cpu_percent:>6.1f} {r.cpu_per_session:>7.4f} {r.us_per_frame:>7.2f} "
        f"{r.emulator_cpu_percent:>5.0f} {r.machine_busy_percent:>5.0f} "
        f"{r.relayed_per_s:>8.0f} {r.join_seconds:>6.1f}  {'pass' if ok else 'FAIL'}"
    )


# -- the swarm -----------------------------------------------------------------------


class Swarm:
    """The sessions of this process, joined step by step, all speaking all the time."""

    def __init__(
        self,
        info: EmulatorInfo,
        clock: MediaClock,
        nursery: trio.Nursery,
        *,
        join_concurrency: int,
    ) -> None:
        self.info = info
        self.clock = clock
        self.nursery = nursery
        self.limiter = trio.CapacityLimiter(join_concurrency)
        self.ssl_context = emulator_ssl_context(info) if info.voice_tls else None
        self.utterances = [
            tuple(u.frames[u.first_voiced_frame : u.last_voiced_frame + 1])
            for u in load_fixtures().utterances
        ]
        self.connections: list[VoiceConnection] = []
        self.join_failures = 0
        self.session_failures = 0
        self.started = 0
        # user i (from 0) and the voice channel of the guild it alone belongs to
        agent = info.agent_user_id
        users = [u for u in info.users if u.id != agent]
        by_member = {m: g for g in info.guilds for m in g.member_ids if m != agent}
        self.seats = [(u.name, by_member[u.id]) for u in users]

    async def grow_to(self, count: int, timeout: float) -> None:
        """Join sessions until ``count`` are speaking (or have failed to join)."""
        with trio.move_on_after(timeout):
            async with trio.open_nursery() as joins:
                while self.started < min(count, len(self.seats)):
                    joins.start_soon(self._join, self.started)
                    self.started += 1

    async def _join(self, index: int) -> None:
        async with self.limiter:
            try:
                with trio.fail_after(30):
                    await self.nursery.start(self._session, index)
            except Exception as exc:  # counted, and the first one shown
                if self.join_failures == 0:
                    print(f"  first join failure: {exc!r}", flush=True)
                self.join_failures += 1

    async def _session(self, index: int, *, task_status: trio.TaskStatus[None]) -> None:
        name, guild = self.seats[index]
        frames = self.utterances[index % len(self.utterances)]
        started = False
        try:
            async with GatewayPeer.connect(self.info, name) as peer:
                grant = await peer.join_voice(guild.id, guild.voice_channels[0].id)
                credentials = VoiceCredentials(
                    user_id=grant.user_id,
                    guild_id=grant.guild_id,
                    channel_id=grant.channel_id,
                    session_id=grant.session_id,
                    token=grant.token,
                    endpoint=grant.endpoint,
                )
                connection = VoiceConnection(
                    credentials,
                    clock=self.clock,
                    on_frame=lambda frame: None,
                    ssl_context=self.ssl_context,
                )
                async with trio.open_nursery() as inner:
                    inner.start_soon(connection.run)
                    await connection.wait_ready()
                    self.connections.append(connection)
                    started = True
                    task_status.started()
                    while True:
                        speech = await connection.speak(frames)
                        await speech.wait()
        except Exception:
            if not started:
                raise
            self.session_failures += 1

    def streams(self) -> list[OutboundStream]:
        return [c.outbound for c in self.connections if c.outbound is not None]


def _read_counters(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return {"relayed_packets": 0, "dropped": {}}


async def _measure_step(
    swarm: Swarm,
    sessions: int,
    seconds: float,
    child_pid: int,
    counters_file: Path,
    join_seconds: float,
) -> StepResult:
    streams = swarm.streams()
    for stream in streams:
        # Swapped, not cleared: the clock thread may be recording into the old one
        # this very moment, and a frame landing there is simply not counted.
        stream.lateness = LatenessHistogram()
    errors_before = sum(s.send_errors for s in streams)
    frames_before = sum(s.frames_sent for s in streams)
    failures_before = swarm.session_failures
    swarm.clock.ticks_behind_max = 0
    relay_before = _read_counters(counters_file)
    busy0, total0 = _machine_times()
    wall0 = time.perf_counter()
    cpu0 = time.process_time()
    child0 = _process_cpu(child_pid)
    clock_thread = _clock_thread_id()
    clock0 = _thread_cpu(clock_thread)

    await trio.sleep(seconds)

    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    child = _process_cpu(child_pid) - child0
    clock_cpu = _thread_cpu(clock_thread) - clock0
    busy1, total1 = _machine_times()
    relay_after = _read_counters(counters_file)
    pooled = LatenessHistogram.pooled(s.lateness for s in streams)
    frames = sum(s.frames_sent for s in streams) - frames_before
    joined = len(streams)
    cpu_percent = 100 * cpu / wall
    dropped = sum(relay_after["dropped"].values()) - sum(
        relay_before["dropped"].values()
    )
    return StepResult(
        sessions=sessions,
        joined=joined,
        join_failures=swarm.join_failures,
        session_failures=swarm.session_failures - failures_before,
        p50_ms=pooled.percentile_ms(50) if pooled.total else math.nan,
        p99_ms=pooled.percentile_ms(99) if pooled.total else math.nan,
        max_ms=pooled.max_ns / 1e6,
        frames=frames,
        send_errors=sum(s.send_errors for s in streams) - errors_before,
        fps_per_session=frames / wall / max(joined, 1),
        cpu_percent=cpu_percent,
        clock_cpu_percent=100 * clock_cpu / wall,
        cpu_per_session=cpu_percent / max(joined, 1),
        us_per_frame=1e6 * cpu / max(frames, 1),
        emulator_cpu_percent=100 * child / wall,
        machine_busy_percent=100 * (busy1 - busy0) / max(total1 - total0, 1),
        relayed_per_s=(relay_after["relayed_packets"] - relay_before["relayed_packets"])
        / wall,
        relay_dropped=dropped,
        ticks_behind_max=swarm.clock.ticks_behind_max,
        join_seconds=join_seconds,
    )


async def _run(args: argparse.Namespace, info: EmulatorInfo, child: int) -> int:
    deadline = time.monotonic() + args.max_runtime
    counters_file = Path(args.state_dir) / "counters"
    clock = MediaClock()
    clock.start()
    best: StepResult | None = None
    try:
        async with trio.open_nursery() as nursery:
            swarm = Swarm(info, clock, nursery, join_concurrency=args.join_concurrency)
            print(_HEADER, flush=True)
            for sessions in args.steps:
                remaining = deadline - time.monotonic()
                if remaining < args.seconds + args.settle + 5:
                    print(f"stopping: --max-runtime {args.max_runtime:.0f} s reached")
                    break
                join_start = time.monotonic()
                await swarm.grow_to(
                    sessions, timeout=remaining - args.seconds - args.settle
                )
                join_seconds = time.monotonic() - join_start
                await trio.sleep(args.settle)
                result = await _measure_step(
                    swarm, sessions, args.seconds, child, counters_file, join_seconds
                )
                ok = result.passed(args.p99_ms)
                print(_row(result, ok), flush=True)
                if result.relay_dropped or result.ticks_behind_max:
                    print(
                        f"{'':>8} clock ticks behind (max) {result.ticks_behind_max}, "
                        f"relay dropped {result.relay_dropped}",
                        flush=True,
                    )
                if not ok:
                    break
                best = result
            nursery.cancel_scope.cancel()
    finally:
        clock.stop()

    if best is None:
        print("no step passed")
        return 1
    print(
        f"largest passing step: {best.sessions} sessions, p99 {best.p99_ms:.3f} ms, "
        f"CPU {best.cpu_percent:.1f} % of a core = {best.cpu_per_session:.4f} % "
        f"per session ({best.us_per_frame:.2f} us of CPU per frame sent)"
    )
    return 0


def _start_child(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], Path]:
    state_file = Path(args.state_dir) / "emulator.json"
    command = [
        sys.executable,
        __file__,
        "--emulator-child",
        "--sessions",
        str(max(args.steps)),
        "--state-file",
        str(state_file),
    ]
    if args.tls:
        command.append("--tls")
    child = subprocess.Popen(command)
    return child, state_file


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, nargs="+", default=list(DEFAULT_STEPS))
    p.add_argument("--seconds", type=float, default=15.0, help="measured per step")
    p.add_argument("--settle", type=float, default=3.0, help="after joins, unmeasured")
    p.add_argument("--p99-ms", type=float, default=2.0)
    p.add_argument("--join-concurrency", type=int, default=32)
    p.add_argument("--max-runtime", type=float, default=420.0, help="seconds, total")
    p.add_argument("--tls", action="store_true", help="wss:// voice gateway")
    p.add_argument(
        "--switch-interval",
        type=float,
        help="sys.setswitchinterval for this process (default: leave Python's 5 ms)",
    )
    # The child mode: run the emulator and nothing else.
    p.add_argument("--emulator-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--sessions", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--state-file", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.emulator_child:
        return _emulator_child(args)

    args.steps = sorted(set(args.steps))
    _raise_nofile(3 * max(args.steps) + 256)
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    print(
        f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
        f"{os.cpu_count()} cores; switch interval {sys.getswitchinterval() * 1e3} ms; "
        f"voice gateway {'wss' if args.tls else 'ws'}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="voicesim-capacity-") as state_dir:
        args.state_dir = state_dir
        child, state_file = _start_child(args)
        try:
            give_up = time.monotonic() + 60
            while not state_file.exists():
                if child.poll() is not None or time.monotonic() > give_up:
                    print("the emulator child did not start", file=sys.stderr)
                    return 1
                time.sleep(0.1)
            info = EmulatorInfo.load(state_file)
            code = trio.run(_run, args, info, child.pid)
        finally:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    print(
        f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
        flush=True,
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
