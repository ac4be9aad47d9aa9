"""One synthetic user's session: join, speak turns, measure the agent, leave.

Turn-taking
-----------
A session speaks an utterance, waits until the agent's answer has ended (or the turn
times out), thinks for a drawn time, and speaks the next. Turns inside a session are
therefore dependent, as a person's are: a slow agent slows its own sessions. What is
measured never depends on that waiting. The speech end of a turn is the *intended*
send time of the utterance's last voiced frame, fixed by the media clock before the
first frame goes out, so a late generator cannot shorten the latency it reports;
the response starts at the arrival of the agent's first audible frame after it.

Each session walks the fixture list from its own offset, so sessions speaking at the
same time say different sentences and a transcript identifies its turn.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import numpy as np
import trio

from voicesim._exceptions import VoiceSimError, VoiceTimeout
from voicesim._histogram import LatenessHistogram
from voicesim.engine._measure import ResponseTracker, StreamStats, word_errors
from voicesim.media import AUDIBLE_DBFS, Fixture, OpusDecoder, level_dbfs
from voicesim.protocol import SILENCE_FRAME
from voicesim.voice import (
    Bot,
    ChatMessage,
    ControlPlane,
    MediaClock,
    OutboundStream,
    ReceivedFrame,
    Speech,
    VoiceConnection,
    VoiceCredentials,
)

__all__ = ["SessionPlan", "SessionRecorder", "VoiceSession"]

log = logging.getLogger("voicesim.engine.session")


@attrs.frozen(kw_only=True)
class SessionPlan:
    """Where and how one session runs."""

    index: int
    token: str = attrs.field(repr=False)
    guild_id: int
    channel_id: int
    agent_user_id: int | None
    fixtures: tuple[Fixture, ...]
    start_at: float  # trio clock time at which the session starts
    end_at: float  # trio clock time after which no new turn starts
    turn_timeout: float
    join_timeout: float
    transcript_grace: float = 2.0
    max_dave_protocol_version: int = 0


class SessionRecorder:
    """Where a session's records go; the swarm implements it."""

    def turn(self, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def session(self, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def packet(self, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def audio(self, session: int, pcm: np.ndarray) -> None:
        raise NotImplementedError

    def status(self, session: int, state: str) -> None:
        raise NotImplementedError


@attrs.define(eq=False)
class _Turn:
    index: int
    fixture: Fixture
    speech_start_ns: int
    speech_end_ns: int
    tracker: ResponseTracker
    stats: StreamStats
    transcript: ChatMessage | None = None
    answered: trio.Event = attrs.Factory(trio.Event)


class VoiceSession:
    """Runs one :class:`SessionPlan` against the agent."""

    def __init__(
        self,
        plan: SessionPlan,
        *,
        control: ControlPlane,
        clock: MediaClock,
        ssl_context: Any,
        recorder: SessionRecorder,
        think: Callable[[], float],
        capture_packets: bool = False,
        capture_audio: bool = False,
        now_ns: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        self.plan = plan
        self._control = control
        self._clock = clock
        self._ssl_context = ssl_context
        self._recorder = recorder
        self._think = think
        self._capture_packets = capture_packets
        self._capture_audio = capture_audio
        # The clock of every time the session records; it must be the one the media
        # clock's intended times and the receive loop's arrival times are on. Tests
        # of the turn logic in virtual time hand in trio's clock in nanoseconds.
        self._now_ns = now_ns
        self._decoder = OpusDecoder()
        # One stream-statistics object for the whole session, reset at each turn, so
        # packets lost across a turn boundary are still noticed by sequence number.
        self._stats = StreamStats()
        self._after_silence = True
        self._turn: _Turn | None = None
        self._pending_turns: list[_Turn] = []
        # Turns recorded without a transcript, newest last: a transcript the agent
        # posts after the turn gave up on it belongs to one of them, not to the
        # turn being spoken now.
        self._given_up: collections.deque[_Turn] = collections.deque(maxlen=4)
        self.late_transcripts = 0
        self._streams: dict[int, OutboundStream] = {}
        self._first_frame_ns: int | None = None
        self._audio: list[np.ndarray] = []
        self.user_id: int | None = None
        self.connection: VoiceConnection | None = None

    # -- receive side: runs in the connection's receive loop ----------------------

    def _on_frame(self, frame: ReceivedFrame) -> None:
        agent = self.plan.agent_user_id
        if agent is not None and frame.user_id is not None and frame.user_id != agent:
            return
        if self._capture_packets:
            self._recorder.packet(
                {
                    "session": self.plan.index,
                    "ssrc": frame.ssrc,
                    "seq": frame.seq,
                    "rtp_timestamp": frame.rtp_timestamp,
                    "arrival_ns": frame.arrival_ns,
                    "bytes": frame.size,
                }
            )
        # Every packet of the agent's stream counts for loss and jitter, between
        # turns too, so a packet lost across a turn boundary is still noticed. The
        # first packet after silence starts a talk spurt: its timestamp gap is the
        # pause, not network jitter.
        silent = frame.payload == SILENCE_FRAME
        self._stats.add(
            frame.seq,
            frame.rtp_timestamp,
            frame.arrival_ns,
            new_spurt=self._after_silence,
        )
        self._after_silence = silent
        turn = self._turn
        if turn is None:
            return

        if silent:
            audible = False
        else:
            try:
                pcm = self._decoder.decode(frame.payload)
            except VoiceSimError:
                return
            audible = level_dbfs(pcm) > AUDIBLE_DBFS
            if self._capture_audio:
                self._audio.append(pcm)
        turn.tracker.add(frame.arrival_ns, audible)
        if turn.tracker.answer_done(frame.arrival_ns):
            turn.answered.set()

    # -- the session ---------------------------------------------------------------

    async def run(self) -> None:
        plan = self.plan
        record: dict[str, Any] = {
            "session": plan.index,
            "user_id": None,
            "guild_id": plan.guild_id,
            "channel_id": plan.channel_id,
            "join_requested_ns": None,
            "joined_ns": None,
            "left_ns": None,
            "outcome": "error",
            "reason": "",
            "frames_sent": 0,
            "send_errors": 0,
            "turns": 0,
            "resumes": 0,
            "reconnects": 0,
            "decrypt_failures": 0,
            "late_transcripts": 0,
            "dave_decrypt_failures": 0,
            "dave_protocol_version": None,
            "dave_longest_gap_ms": None,
            "dave_recoveries": 0,
            "lateness_histogram": None,
            "first_frame_ns": None,
            "join_time_ms": None,
        }
        await trio.sleep_until(plan.start_at)
        self._recorder.status(plan.index, "joining")
        record["join_requested_ns"] = self._now_ns()
        try:
            await self._run(record)
            record["outcome"] = "completed"
        except BaseException as exc:
            if _ended_by_the_run(exc):
                record["outcome"] = "cancelled"
                record["reason"] = "the run ended before the session did"
                raise
            if not isinstance(exc, Exception):
                raise
            # One session's failure is a measurement, not the swarm's end: it is
            # recorded with its reason and the other sessions go on.
            error = _leaf_error(exc)
            record["reason"] = type(error).__name__ + ": " + str(error)
            if isinstance(error, VoiceSimError | trio.TooSlowError | OSError):
                record["outcome"] = "failed" if record["joined_ns"] is None else "lost"
                log.info("session %s ended: %s", plan.index, record["reason"])
            else:
                record["outcome"] = "error"
                log.error("session %s hit a bug", plan.index, exc_info=exc)
        finally:
            record["left_ns"] = self._now_ns()
            record["late_transcripts"] = self.late_transcripts
            connection = self.connection
            if connection is not None:
                stats = connection.stats
                record["resumes"] = stats.resumes
                record["reconnects"] = stats.reconnects
                record["decrypt_failures"] = stats.decrypt_failures
                record["dave_decrypt_failures"] = stats.dave_decrypt_failures
                record["dave_recoveries"] = stats.dave_recoveries
                if record["joined_ns"] is not None:
                    version = connection.dave_protocol_version
                    record["dave_protocol_version"] = version
                    if version:
                        record["dave_longest_gap_ms"] = stats.dave_longest_gap_ns / 1e6
            # A resume or reconnect opens a new outbound stream; the session's
            # figures are those of every stream it spoke on.
            streams = list(self._streams.values())
            if streams:
                record["frames_sent"] = sum(s.frames_sent for s in streams)
                record["send_errors"] = sum(s.send_errors for s in streams)
                record["lateness_histogram"] = LatenessHistogram.pooled(
                    s.lateness for s in streams
                )
            first = self._first_frame_ns
            record["first_frame_ns"] = first
            if first is not None and record["join_requested_ns"] is not None:
                record["join_time_ms"] = (first - record["join_requested_ns"]) / 1e6
            self._recorder.session(record)
            if self._capture_audio and self._audio:
                self._recorder.audio(plan.index, np.concatenate(self._audio))
            self._recorder.status(plan.index, record["outcome"])

    async def _run(self, record: dict[str, Any]) -> None:
        plan = self.plan
        bot = await self._control.login(plan.token, timeout=plan.join_timeout)
        self.user_id = bot.user_id
        record["user_id"] = bot.user_id
        credentials, updates = await self._control.join(
            bot, plan.guild_id, plan.channel_id, timeout=plan.join_timeout
        )

        async def rejoin() -> VoiceCredentials:
            await self._control.leave(bot, plan.guild_id)
            fresh, _ = await self._control.join(
                bot, plan.guild_id, plan.channel_id, timeout=plan.join_timeout
            )
            return fresh

        connection = VoiceConnection(
            credentials,
            clock=self._clock,
            on_frame=self._on_frame,
            ssl_context=self._ssl_context,
            rejoin=rejoin,
            max_dave_protocol_version=plan.max_dave_protocol_version,
        )
        self.connection = connection
        async with trio.open_nursery() as nursery:
            with trio.move_on_after(plan.join_timeout) as join_scope:
                await nursery.start(connection.run)
            if join_scope.cancelled_caught:
                raise VoiceTimeout(
                    f"the voice connection was not ready within {plan.join_timeout:g} s"
                )
            record["joined_ns"] = self._now_ns()
            nursery.start_soon(self._read_messages, bot)
            nursery.start_soon(self._follow_server_updates, updates, connection)
            self._recorder.status(plan.index, "joined")
            try:
                record["turns"] = await self._turns(connection)
            finally:
                await connection.close()
                with trio.move_on_after(5) as leave_scope:
                    leave_scope.shield = True
                    await self._control.leave(bot, plan.guild_id)
                nursery.cancel_scope.cancel()

    async def _follow_server_updates(
        self,
        updates: trio.MemoryReceiveChannel[VoiceCredentials | None],
        connection: VoiceConnection,
    ) -> None:
        async for credentials in updates:
            if credentials is not None:
                # A move or a new voice server: the connection picks the new
                # credentials up on its next (re)connect.
                connection.credentials = credentials

    async def _read_messages(self, bot: Bot) -> None:
        async for message in bot.messages:
            if message.author_id != self.plan.agent_user_id:
                continue
            if self.user_id is not None and self.user_id not in message.mention_ids:
                continue
            self._on_transcript(message)

    def _on_transcript(self, message: ChatMessage) -> None:
        # A transcript is credited to a turn still waiting for one whose speech
        # ended before it arrived: the earliest, unless its words plainly belong to
        # another of them. Every utterance of a session is a different sentence, so
        # a transcript that arrives after its turn timed out matches that turn far
        # better than the next one, and is counted as late instead of being scored
        # against the wrong sentence. One that matches nothing (the agent credited
        # someone else's words to this user) goes to the earliest waiting turn,
        # where its word errors show the misattribution.
        waiting = [
            turn
            for turn in self._pending_turns
            if turn.transcript is None and turn.speech_end_ns <= message.arrival_ns
        ]
        candidates = [*waiting, *self._given_up]
        if not candidates:
            return
        text = _strip_mentions(message.content)

        def error_rate(turn: _Turn) -> float:
            errors, words = word_errors(turn.fixture.transcript, text)
            return errors / max(words, 1)

        # min() keeps the first of equals, so ties go to the earliest waiting turn.
        best = min(candidates, key=error_rate)
        if best in waiting:
            best.transcript = message
        else:
            self._given_up.remove(best)
            self.late_transcripts += 1

    async def _turns(self, connection: VoiceConnection) -> int:
        plan = self.plan
        count = 0
        fixtures = plan.fixtures
        while trio.current_time() < plan.end_at:
            fixture = fixtures[(plan.index + count) % len(fixtures)]
            await self._one_turn(connection, count, fixture)
            count += 1
            if trio.current_time() >= plan.end_at:
                break
            await trio.sleep(self._think())
        return count

    async def _one_turn(
        self, connection: VoiceConnection, index: int, fixture: Fixture
    ) -> None:
        plan = self.plan
        self._recorder.status(plan.index, "speaking")
        speech = await connection.speak(fixture.frames)
        stream = connection.outbound
        if stream is not None:
            self._streams.setdefault(id(stream), stream)
        if self._first_frame_ns is None:
            self._first_frame_ns = speech.t0_ns
        turn = _Turn(
            index=index,
            fixture=fixture,
            speech_start_ns=speech.intended_ns(fixture.first_voiced_frame),
            speech_end_ns=speech.intended_ns(fixture.last_voiced_frame),
            tracker=ResponseTracker(speech.intended_ns(fixture.last_voiced_frame)),
            stats=self._stats,
        )
        self._stats.reset()
        self._turn = turn
        self._pending_turns.append(turn)
        try:
            outcome, reason = await self._finish_turn(connection, speech, turn)
        except BaseException as exc:
            # A turn cut off by the session's failure, the end of the run or Ctrl-C
            # still gets its row, with what was measured so far: a capture that
            # silently lost the turns in flight would flatter the agent.
            ended = _ended_by_the_run(exc)
            error = _leaf_error(exc)
            self._recorder.turn(
                self._turn_record(
                    turn,
                    "cancelled" if ended else "error",
                    "the run ended during the turn"
                    if ended
                    else f"{type(error).__name__}: {error}",
                )
            )
            raise
        finally:
            self._turn = None
            self._pending_turns.remove(turn)
        if turn.transcript is None:
            self._given_up.append(turn)
        self._recorder.turn(self._turn_record(turn, outcome, reason))

    async def _finish_turn(
        self, connection: VoiceConnection, speech: Speech, turn: _Turn
    ) -> tuple[str, str | None]:
        """Wait out the utterance and the answer; return the outcome and why."""
        plan = self.plan
        await speech.wait()
        await connection.stop_speaking()
        self._recorder.status(plan.index, "listening")

        outcome = "answered"
        deadline_ns = turn.speech_end_ns + int(plan.turn_timeout * 1e9)
        with trio.move_on_after(max(0.0, (deadline_ns - self._now_ns()) / 1e9)):
            while not turn.answered.is_set():
                # The tracker decides "done" on frame arrival; a stream that simply
                # stops needs a clock tick to be noticed.
                with trio.move_on_after(0.1):
                    await turn.answered.wait()
                if turn.tracker.answer_done(self._now_ns()):
                    turn.answered.set()
        reason: str | None = None
        if not turn.answered.is_set():
            if turn.tracker.response_start_ns is None:
                outcome = "timeout"
                reason = f"no audible answer within {plan.turn_timeout:g} s"
            else:
                outcome = "cut"
                reason = f"the answer had not ended within {plan.turn_timeout:g} s"

        if turn.transcript is None and plan.agent_user_id is not None:
            with trio.move_on_after(plan.transcript_grace):
                while turn.transcript is None:
                    await trio.sleep(0.05)

        return outcome, reason

    def _turn_record(
        self, turn: _Turn, outcome: str, reason: str | None = None
    ) -> dict[str, Any]:
        tracker = turn.tracker
        stats = turn.stats
        start = tracker.response_start_ns
        transcript = turn.transcript
        errors: int | None = None
        words: int | None = None
        if transcript is not None:
            errors, words = word_errors(
                turn.fixture.transcript, _strip_mentions(transcript.content)
            )

        def ms(later: int | None, earlier: int) -> float | None:
            return None if later is None else (later - earlier) / 1e6

        return {
            "session": self.plan.index,
            "turn": turn.index,
            "fixture": turn.fixture.id,
            "reference_text": turn.fixture.transcript,
            "speech_start_ns": turn.speech_start_ns,
            "speech_end_ns": turn.speech_end_ns,
            "response_start_ns": start,
            "response_end_ns": tracker.response_end_ns,
            "response_latency_ms": ms(start, turn.speech_end_ns),
            "transcript_text": None
            if transcript is None
            else _strip_mentions(transcript.content),
            "transcript_ns": None if transcript is None else transcript.arrival_ns,
            "transcript_latency_ms": None
            if transcript is None
            else ms(transcript.arrival_ns, turn.speech_end_ns),
            "word_errors": errors,
            "reference_words": words,
            "jitter_ms": stats.jitter_ms,
            "packets_received": stats.received,
            "packets_lost": stats.lost,
            "packets_reordered": stats.reordered,
            "packets_duplicated": stats.duplicated,
            "barge_in": False,
            "barge_in_stop_ms": None,
            "answer_duration_ms": ms(tracker.response_end_ns, start or 0)
            if start is not None
            else None,
            "outcome": outcome,
            "reason": reason,
        }


def _ended_by_the_run(exc: BaseException) -> bool:
    """Whether ``exc`` is cancellation or Ctrl-C, bare or in nurseries' groups."""
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split((trio.Cancelled, KeyboardInterrupt))
        return rest is None
    return isinstance(exc, trio.Cancelled | KeyboardInterrupt)


def _leaf_error(exc: BaseException) -> BaseException:
    """The first exception inside nested exception groups: the one that says why."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _strip_mentions(content: str) -> str:
    """Remove ``<@123>`` mentions, which are not part of what was said."""
    words = [w for w in content.split() if not (w.startswith("<@") and w.endswith(">"))]
    return " ".join(words)


SessionFactory = Callable[[SessionPlan], Awaitable[None]]
