"""The swarm: many voice sessions against one agent, measured into a capture.

:class:`Swarm` is the Python API behind ``python -m voicesim swarm``::

    result = trio.run(Swarm(SwarmConfig(sessions=20, duration=60.0)).run)
    print(result.summary["response_latency_ms"]["p95"], result.capture_path)

The closed profile starts ``sessions`` sessions spread evenly over ``ramp`` seconds;
each speaks turns until ``duration`` has passed since the swarm started, then leaves.
A session that cannot join or loses its connection is recorded with its reason and
the others go on.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import trio

from voicesim import _stats
from voicesim._exceptions import ConfigError
from voicesim._histogram import LatenessHistogram
from voicesim._thresholds import Verdict, evaluate, parse_threshold
from voicesim.engine._capture import CaptureWriter
from voicesim.engine._config import SwarmConfig
from voicesim.engine._progress import ProgressDisplay, ProgressState
from voicesim.engine._session import SessionPlan, SessionRecorder, VoiceSession
from voicesim.engine._target import TargetSpec, resolve_target
from voicesim.media import load_fixtures
from voicesim.voice import ControlPlane, MediaClock, Target

__all__ = ["Swarm", "SwarmResult"]

log = logging.getLogger("voicesim.engine.swarm")

EXIT_OK = 0
EXIT_RUN_FAILED = 3
EXIT_FAILED_THRESHOLD = 99
EXIT_INTERRUPTED = 130


@attrs.frozen(kw_only=True)
class SwarmResult:
    """What a finished swarm hands back."""

    summary: dict[str, Any]
    verdicts: tuple[Verdict, ...]
    capture_path: Path
    exit_code: int


class _Recorder(SessionRecorder):
    def __init__(
        self, capture: CaptureWriter, progress: ProgressState, exporter: Any
    ) -> None:
        self.capture = capture
        self.progress = progress
        self.exporter = exporter
        self.lateness = LatenessHistogram()
        self.latencies: list[float] = []

    def turn(self, record: dict[str, Any]) -> None:
        self.capture.add_turn(record)
        self.progress.turn_done(record)
        if self.exporter is not None:
            self.exporter.turn_done(record)

    def session(self, record: dict[str, Any]) -> None:
        histogram = record.pop("lateness_histogram", None)
        if isinstance(histogram, LatenessHistogram):
            self.lateness.merge(histogram)
            record.update(histogram.session_columns())
        self.capture.add_session(record)
        self.progress.session_ended(record)
        if self.exporter is not None:
            self.exporter.session_ended(record["outcome"], record["reason"])

    def packet(self, record: dict[str, Any]) -> None:
        self.capture.add_packet(record)

    def audio(self, session: int, pcm: np.ndarray) -> None:
        self.capture.write_audio(session, pcm)

    def status(self, session: int, state: str) -> None:
        self.progress.session_state(session, state)
        if self.exporter is not None and state == "joined":
            self.exporter.session_started()


class Swarm:
    """Runs one swarm from a :class:`SwarmConfig`; use :meth:`run` under trio."""

    def __init__(
        self,
        config: SwarmConfig,
        *,
        target: TargetSpec | None = None,
        show_progress: bool | None = None,
    ) -> None:
        self.config = config
        self._target = target
        self._show_progress = (
            (not config.quiet) if show_progress is None else show_progress
        )
        self._thresholds = [parse_threshold(text) for text in config.thresholds]
        #: The capture directory, once the run has made it (also when interrupted).
        self.capture_path: Path | None = None
        #: The port the Prometheus exporter listens on, once it does.
        self.metrics_port: int | None = None

    async def run(self) -> SwarmResult:
        config = self.config
        fixtures = load_fixtures(config.fixtures)
        if not fixtures.utterances:
            raise ConfigError("fixtures", "the fixture set has no utterances")

        async with resolve_target(config, self._target) as target:
            return await self._run(target, fixtures.utterances)

    async def _run(
        self, target: TargetSpec, utterances: tuple[Any, ...]
    ) -> SwarmResult:
        config = self.config
        sessions = min(config.sessions, len(target.placements), len(target.tokens))
        if sessions < config.sessions:
            raise ConfigError(
                "sessions",
                f"wanted {config.sessions} sessions but the target offers "
                f"{len(target.tokens)} tokens and {len(target.placements)} channels",
            )

        capture = CaptureWriter.create(config.capture, config=config.public_dict())
        self.capture_path = capture.path
        progress = ProgressState(sessions=sessions)
        exporter = None
        if config.metrics_port is not None:
            from voicesim.engine._prometheus import PrometheusExporter

            exporter = PrometheusExporter()
            self.metrics_port = exporter.start(config.metrics_port)
            # With port 0 the OS chose it, and this line is the only way to learn it.
            where = f"http://127.0.0.1:{self.metrics_port}/metrics"
            log.info("Prometheus metrics on %s", where)
            if self._show_progress:
                print(f"voicesim: Prometheus metrics on {where}", file=sys.stderr)
        recorder = _Recorder(capture, progress, exporter)
        rng = np.random.default_rng(config.seed)
        think = config.think_distribution()

        clock = MediaClock()
        if exporter is not None:
            exporter.follow_lateness(clock.lateness_so_far)
        clock.start()
        exit_code = EXIT_RUN_FAILED
        summary: dict[str, Any] = {}
        verdicts: list[Verdict] = []
        interrupted = False
        try:
            voice_target = Target(
                api_base=target.api_base,
                gateway_url=target.gateway_url,
                ca_file=target.ca_file,
                guild_ready_timeout=0.2 if target.local else 2.0,
            )
            ssl_context = None if target.plain_voice else voice_target.ssl_context()
            async with (
                ControlPlane(voice_target) as control,
                trio.open_nursery() as nursery,
            ):
                start = trio.current_time()
                end = start + config.duration
                display = ProgressDisplay(progress, enabled=self._show_progress)
                nursery.start_soon(display.run)
                nursery.start_soon(_flush_periodically, capture, clock, progress)
                async with trio.open_nursery() as session_nursery:
                    for index in range(sessions):
                        guild_id, channel_id = target.placements[
                            index // config.per_channel
                        ]
                        plan = SessionPlan(
                            index=index,
                            token=target.tokens[index],
                            guild_id=guild_id,
                            channel_id=channel_id,
                            agent_user_id=target.agent_user_id,
                            fixtures=utterances,
                            start_at=start + config.ramp * index / max(sessions, 1),
                            end_at=end,
                            turn_timeout=config.turn_timeout,
                            join_timeout=config.join_timeout,
                            max_dave_protocol_version=1 if config.client_dave else 0,
                        )
                        session = VoiceSession(
                            plan,
                            control=control,
                            clock=clock,
                            ssl_context=ssl_context,
                            recorder=recorder,
                            think=lambda: float(think.sample(rng)),
                            capture_packets=config.capture_packets,
                            capture_audio=config.capture_audio,
                        )
                        session_nursery.start_soon(session.run)
                display.stop()
                nursery.cancel_scope.cancel()
        except BaseException as exc:
            if not _is_interrupt(exc):
                raise
            interrupted = True
            # The nurseries deliver Ctrl-C wrapped in exception groups; callers (and
            # trio.run's caller, the command) expect KeyboardInterrupt itself.
            raise KeyboardInterrupt from exc
        finally:
            clock.stop()
            with trio.CancelScope(shield=True):
                capture.flush()
                summary, verdicts, exit_code = self._conclude(
                    capture, recorder, interrupted=interrupted
                )
                # How the generator itself fared, next to its send lateness: a run
                # paced without raised priority on a busy machine is looser.
                summary["media_clock"] = {
                    "scheduling": clock.scheduling,
                    "ticks_behind_max": clock.ticks_behind_max,
                }
                capture.close(
                    summary=summary,
                    thresholds=[v.to_dict() for v in verdicts],
                    exit_code=exit_code,
                )
                if exporter is not None:
                    exporter.stop()
                if self._show_progress:
                    display.print_summary(summary, capture.path, verdicts)
        return SwarmResult(
            summary=summary,
            verdicts=tuple(verdicts),
            capture_path=capture.path,
            exit_code=exit_code,
        )

    def _conclude(
        self, capture: CaptureWriter, recorder: _Recorder, *, interrupted: bool
    ) -> tuple[dict[str, Any], list[Verdict], int]:
        turns, sessions = capture.frames()
        summary = _stats.summarize(turns, sessions, None)
        verdicts = evaluate(self._thresholds, turns, sessions) if len(turns) else []
        if interrupted:
            return summary, verdicts, EXIT_INTERRUPTED
        joined = int((sessions["joined_ns"].notna()).sum()) if len(sessions) else 0
        if joined == 0:
            return summary, verdicts, EXIT_RUN_FAILED
        if any(not v.passed for v in verdicts):
            return summary, verdicts, EXIT_FAILED_THRESHOLD
        return summary, verdicts, EXIT_OK


def _is_interrupt(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(KeyboardInterrupt) is not None
    return isinstance(exc, KeyboardInterrupt)


async def _flush_periodically(
    capture: CaptureWriter, clock: MediaClock, progress: ProgressState
) -> None:
    while True:
        await trio.sleep(1.0)
        capture.maybe_flush(time.perf_counter_ns())
        lateness = clock.lateness_so_far()
        if lateness.total:
            progress.send_lateness_p99_ms = lateness.percentile_ms(99)
