"""Real swarms run as a user runs them, watched from outside, for the analysis tests.

``python -m voicesim swarm`` is started as a subprocess against the embedded target.
While it runs, its Prometheus endpoint is scraped over HTTP and the embedded target's
state file is read: the target writes it into the swarm's temporary directory (the
``TMPDIR`` given here), and it holds the bot tokens, so the tests can assert that no
token reaches a capture, a report or the terminal.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prometheus_client.parser import text_string_to_metric_families

#: Generous: a run of 15 s takes about 25 s here, more when the cores are shared.
RUN_TIMEOUT_S = 240.0
POLL_S = 0.25


@attrs.frozen(kw_only=True)
class SwarmRun:
    """What one finished (or killed) swarm left behind, and what was seen during it."""

    directory: Path
    capture: Path
    returncode: int
    stdout: str
    stderr: str
    tokens: tuple[str, ...] = attrs.field(repr=False)
    target_pid: int | None
    scrapes: tuple[str, ...] = attrs.field(repr=False)
    #: after a kill: whether the orphaned target stopped by itself
    target_stopped_itself: bool | None = None


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def swarm_environment(tmpdir: Path) -> dict[str, str]:
    """This environment without VOICESIM_* settings, with ``TMPDIR`` set to ``tmpdir``.

    Dropping VOICESIM_* keeps a developer's own settings out of the run; ``TMPDIR`` is
    where the swarm makes the embedded target's directory, so the test can find the
    state file in it.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICESIM_")}
    env["TMPDIR"] = str(tmpdir)
    env["MPLBACKEND"] = "agg"
    return env


def run_voicesim(
    argv: Sequence[str], *, cwd: Path, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m voicesim ARGV`` to the end, capturing its output."""
    tmpdir = cwd / "tmp"
    tmpdir.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "voicesim", *argv],
        cwd=cwd,
        env=swarm_environment(tmpdir),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def target_state(tmpdir: Path) -> dict[str, Any] | None:
    """The embedded target's state file once its agent is ready, else None."""
    for path in tmpdir.glob("voicesim-target-*/emulator.json"):
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # being written or already removed
        if isinstance(state, dict) and state.get("agent_ready"):
            return state
    return None


def scrape(port: int) -> str | None:
    """The text of ``/metrics`` on ``port``, or None when nothing serves it."""
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/metrics", timeout=2.0
        ) as response:
            return bytes(response.read()).decode("utf-8")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def samples(text: str) -> dict[str, float]:
    """Sample name -> value summed over its label sets, from the Prometheus text."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "le" in sample.labels:
                continue  # buckets are cumulative: summing them means nothing
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def declared_names(text: str) -> set[str]:
    """Every series name a scrape declares, including labelled ones with no sample yet.

    A counter with a label (``errors_total{reason}``) has no sample until its first
    event, but its HELP and TYPE lines are served from the start, and a dashboard
    query on it is valid from the start.
    """
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "gauge": ("",),
    }
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def _tokens(state: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(user["token"]) for user in state.get("users", []))


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a swarm still running after a failure, in order: SIGINT, then a kill."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_gone(pid: int, timeout: float) -> bool:
    """Wait for a process that is not our child to disappear (or become a zombie)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return True
        time.sleep(0.1)
    return False


def stop_orphaned_target(pid: int) -> None:
    """Stop an embedded target whose swarm was killed, as the swarm would have."""
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    if not _wait_gone(pid, 15.0):
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 5.0)


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def run_swarm(
    directory: Path,
    argv: Sequence[str],
    *,
    metrics_port: int | None = None,
    kill_after_first_chunk: bool = False,
) -> SwarmRun:
    """Run ``python -m voicesim swarm ARGV --capture DIRECTORY/capture`` from outside.

    Scrapes ``metrics_port`` while the swarm runs. With ``kill_after_first_chunk``
    the swarm is sent SIGKILL as soon as its first turns chunk is on disk, and the
    embedded target it leaves behind must notice and stop by itself; it is
    stopped here if it does not.
    """
    tmpdir = directory / "tmp"
    tmpdir.mkdir(parents=True)
    capture = directory / "capture"
    stdout_path, stderr_path = directory / "stdout.txt", directory / "stderr.txt"
    command = [sys.executable, "-m", "voicesim", "swarm", *argv]
    command += ["--capture", str(capture)]
    if metrics_port is not None:
        command += ["--metrics-port", str(metrics_port)]

    # Files, not pipes: nobody reads a pipe while the loop below polls.
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        process = subprocess.Popen(
            command,
            cwd=directory,
            env=swarm_environment(tmpdir),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    tokens: tuple[str, ...] = ()
    target_pid: int | None = None
    stopped_itself: bool | None = None
    scrapes: list[str] = []
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"the swarm did not end within {RUN_TIMEOUT_S} s")
            if not tokens and (state := target_state(tmpdir)) is not None:
                tokens, target_pid = _tokens(state), int(state["pid"])
            if metrics_port is not None and (text := scrape(metrics_port)):
                scrapes.append(text)
            if (
                kill_after_first_chunk
                and tokens
                and any((capture / "turns").glob("part-*.parquet"))
            ):
                process.kill()
                process.wait()
                break
            time.sleep(POLL_S)
    finally:
        _stop(process)
        if kill_after_first_chunk and target_pid is not None:
            stopped_itself = _wait_gone(target_pid, 20.0)
            stop_orphaned_target(target_pid)

    return SwarmRun(
        directory=directory,
        capture=capture,
        returncode=process.returncode,
        stdout=_read(stdout_path),
        stderr=_read(stderr_path),
        tokens=tokens,
        target_pid=target_pid,
        scrapes=tuple(scrapes),
        target_stopped_itself=stopped_itself,
    )


def delay_responses(source: Path, destination: Path, extra_ms: float) -> Path:
    """Copy a capture, making every answer arrive ``extra_ms`` later.

    The latency and the arrival times it derives from move together, so the copy is
    a capture a slower agent could have produced.
    """
    shutil.copytree(source, destination)
    extra_ns = round(extra_ms * 1e6)
    shifts = {
        "response_latency_ms": extra_ms,
        "response_start_ns": extra_ns,
        "response_end_ns": extra_ns,
    }
    for part in sorted((destination / "turns").glob("part-*.parquet")):
        table = pq.read_table(part)
        for name, shift in shifts.items():
            index = table.schema.get_field_index(name)
            field = table.schema.field(index)
            moved = pc.add(table.column(index), pa.scalar(shift, type=field.type))
            table = table.set_column(index, field, moved)
        pq.write_table(table, part)
    return destination
