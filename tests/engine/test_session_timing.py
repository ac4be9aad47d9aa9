"""Turn-taking and reconnects in trio's virtual time: think time, timeouts, backoff.

These tests run the real :class:`VoiceSession` (its join, turn loop, answer tracking,
timeouts and records) under ``trio.testing.MockClock`` with autojump, so seconds of
think time and timeouts pass instantly and exactly. Only the network is replaced,
because it cannot run in virtual time: a real socket's wait would let the clock
jump past every deadline. The control plane becomes :class:`FakeControl` (login,
join, leave) and the voice connection :class:`FakeConnection`, which implements the
few members a session uses (``run``, ``speak``, ``stop_speaking``, ``close``,
``stats``, ``outbound``, ``dave_protocol_version``) and plays a scripted agent: real Opus reply frames handed
to the session's frame callback at chosen virtual times, and transcript messages.
The session reads the same virtual clock, in nanoseconds, through ``now_ns``. The
reconnect test runs the real :meth:`VoiceConnection.run` loop with only its one
WebSocket attempt (``_connect_once``) replaced, for the same reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import numpy as np
import pytest
import trio
import trio.testing

from voicesim._exceptions import VoiceConnectionClosed
from voicesim.engine._session import SessionPlan, SessionRecorder, VoiceSession
from voicesim.media import Fixture, load_fixtures
from voicesim.protocol import TransportCipher, choose_mode
from voicesim.voice import (
    Bot,
    ChatMessage,
    ConnectionStats,
    MediaClock,
    ReceivedFrame,
    VoiceConnection,
    VoiceCredentials,
)
from voicesim.voice._connection import _Reconnect

AGENT_ID = 900
USER_ID = 100
FRAME_NS = 20_000_000
MODES = ("aead_aes256_gcm_rtpsize", "aead_xchacha20_poly1305_rtpsize")


def virtual_ns() -> int:
    """trio's (mock) clock in nanoseconds: the session's ``now_ns`` in these tests."""
    return round(trio.current_time() * 1e9)


@attrs.frozen(kw_only=True)
class Answer:
    """What the scripted agent does after an utterance: wait ``delay``, speak ``frames``."""

    delay: float
    frames: int
    transcript: bool = True
    #: how long after speech end the transcript is posted
    transcript_delay: float = 0.0


@attrs.define(eq=False)
class Script:
    """The scripted agent's answers, one per turn (``None``: say nothing)."""

    answers: list[Answer | None]
    reply: tuple[bytes, ...]
    #: What the user says; the agent hears its speech end at its last voiced frame.
    utterance: Fixture
    #: When given, the session's utterances in turn (``utterance`` otherwise).
    fixtures: tuple[Fixture, ...] = ()
    messages: trio.MemorySendChannel[ChatMessage] | None = None
    speak_times: list[float] = attrs.Factory(list)


@attrs.define(eq=False)
class FakeSpeech:
    """An utterance in virtual time: frame ``i`` is intended at ``t0 + i * 20 ms``."""

    t0_ns: int
    count: int

    def intended_ns(self, index: int) -> int:
        return self.t0_ns + index * FRAME_NS

    async def wait(self) -> None:
        await trio.sleep_until(self.intended_ns(self.count) / 1e9)


class FakeConnection:
    """The voice connection's interface to a session, with a scripted agent behind it."""

    script: Script
    ready: bool = True

    def __init__(
        self, credentials: VoiceCredentials, *, on_frame: Callable[..., None], **_: Any
    ) -> None:
        self.credentials = credentials
        self.stats = ConnectionStats()
        self.outbound = None
        self.dave_protocol_version = 0
        self._on_frame = on_frame
        self._nursery: trio.Nursery | None = None
        self._turn = 0
        self.closed = False

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.ready:
                task_status.started()
            await trio.sleep_forever()

    async def speak(self, frames: Sequence[bytes]) -> FakeSpeech:
        # The media clock's lead: the first frame goes out 2 ms after scheduling.
        speech = FakeSpeech(t0_ns=virtual_ns() + 2_000_000, count=len(frames))
        self.script.speak_times.append(trio.current_time())
        answers = self.script.answers
        answer = answers[self._turn] if self._turn < len(answers) else None
        self._turn += 1
        said = next(
            (f for f in self.script.fixtures if f.frames == tuple(frames)),
            self.script.utterance,
        )
        assert self._nursery is not None
        self._nursery.start_soon(self._answer, speech, answer, said)
        return speech

    async def _answer(
        self, speech: FakeSpeech, answer: Answer | None, said: Fixture
    ) -> None:
        # Everything is timed from the utterance's speech end, its last voiced frame.
        end_ns = speech.intended_ns(said.last_voiced_frame)
        await trio.sleep_until(end_ns / 1e9)
        if answer is None:
            return
        if answer.transcript and self.script.messages is not None:
            self._nursery.start_soon(self._post, said, answer.transcript_delay)  # type: ignore[union-attr]
        await trio.sleep_until((end_ns + round(answer.delay * 1e9)) / 1e9)
        reply = self.script.reply
        for seq in range(answer.frames):
            self._on_frame(
                ReceivedFrame(
                    ssrc=7,
                    user_id=AGENT_ID,
                    seq=seq,
                    rtp_timestamp=seq * 960,
                    payload=reply[seq % len(reply)],
                    arrival_ns=virtual_ns(),
                    size=60,
                )
            )
            await trio.sleep(0.02)

    async def _post(self, said: Fixture, delay: float) -> None:
        await trio.sleep(delay)
        assert self.script.messages is not None
        await self.script.messages.send(
            ChatMessage(
                channel_id=self.credentials.channel_id,
                author_id=AGENT_ID,
                content=f"<@{USER_ID}> {said.transcript.lower()}",
                mention_ids=(USER_ID,),
                arrival_ns=virtual_ns(),
            )
        )

    async def stop_speaking(self) -> None:
        return None

    async def close(self) -> None:
        self.closed = True


class FakeControl:
    """Login, join and leave answered at once: the control plane's part of a session."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.left = 0

    async def login(self, token: str, *, timeout: float) -> Bot:
        send_messages, messages = trio.open_memory_channel[ChatMessage](100)
        _, states = trio.open_memory_channel[dict[str, Any]](1)
        self.script.messages = send_messages
        return Bot(
            user_id=USER_ID,
            name="user-1",
            client=None,
            messages=messages,
            voice_states=states,
        )

    async def join(
        self, bot: Bot, guild_id: int, channel_id: int, *, timeout: float
    ) -> tuple[VoiceCredentials, trio.MemoryReceiveChannel[VoiceCredentials | None]]:
        _, updates = trio.open_memory_channel[VoiceCredentials | None](1)
        credentials = VoiceCredentials(
            user_id=bot.user_id,
            guild_id=guild_id,
            channel_id=channel_id,
            session_id="s",
            token="t",
            endpoint="voice.invalid:443",
        )
        return credentials, updates

    async def leave(self, bot: Bot, guild_id: int) -> None:
        self.left += 1


class TimedRecorder(SessionRecorder):
    """Keeps every record with the virtual time it was handed over."""

    def __init__(self) -> None:
        self.turns: list[tuple[float, dict[str, Any]]] = []
        self.sessions: list[dict[str, Any]] = []
        self.states: list[tuple[float, str]] = []

    def turn(self, record: dict[str, Any]) -> None:
        self.turns.append((trio.current_time(), record))

    def session(self, record: dict[str, Any]) -> None:
        self.sessions.append(record)

    def packet(self, record: dict[str, Any]) -> None:
        raise AssertionError("packets were not asked for")

    def audio(self, session: int, pcm: np.ndarray) -> None:
        raise AssertionError("audio was not asked for")

    def status(self, session: int, state: str) -> None:
        self.states.append((trio.current_time(), state))


@pytest.fixture
def utterance() -> Fixture:
    return load_fixtures().get("timer-twenty")


@pytest.fixture
def reply() -> tuple[bytes, ...]:
    fixture = load_fixtures().replies[0]
    return fixture.frames[fixture.first_voiced_frame :]


async def run_session(
    monkeypatch: pytest.MonkeyPatch,
    script: Script,
    *,
    end_at: float,
    think: Callable[[], float],
    turn_timeout: float = 5.0,
    join_timeout: float = 10.0,
    ready: bool = True,
    cancel_after: float | None = None,
) -> TimedRecorder:
    """Run one real session against the fakes until it ends; return its records."""

    class Connection(FakeConnection):
        pass

    Connection.script = script
    Connection.ready = ready
    monkeypatch.setattr("voicesim.engine._session.VoiceConnection", Connection)
    recorder = TimedRecorder()
    start = trio.current_time()
    plan = SessionPlan(
        index=0,
        token="token",
        guild_id=1,
        channel_id=2,
        agent_user_id=AGENT_ID,
        fixtures=script.fixtures or (script.utterance,),
        start_at=start + 1.0,
        end_at=start + end_at,
        turn_timeout=turn_timeout,
        join_timeout=join_timeout,
    )
    session = VoiceSession(
        plan,
        control=FakeControl(script),  # type: ignore[arg-type]
        clock=MediaClock(),
        ssl_context=None,
        recorder=recorder,
        think=think,
        now_ns=virtual_ns,
    )
    with trio.move_on_after(cancel_after if cancel_after is not None else math.inf):
        await session.run()
    return recorder


def turn_records(recorder: TimedRecorder) -> list[dict[str, Any]]:
    return [record for _, record in recorder.turns]


async def test_next_turn_starts_after_the_drawn_think_time(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    utterance: Fixture,
    reply: tuple[bytes, ...],
) -> None:
    """After each answered turn the session waits exactly the think time it drew."""
    draws = [1.25, 0.5, 2.0, 0.75, 3.0]
    drawn: list[float] = []

    def think() -> float:
        drawn.append(draws[len(drawn)])
        return drawn[-1]

    script = Script(
        answers=[Answer(delay=0.4, frames=10)] * len(draws),
        reply=reply,
        utterance=utterance,
    )
    recorder = await run_session(
        monkeypatch, script, end_at=20.0, think=think, turn_timeout=5.0
    )

    records = turn_records(recorder)
    assert [r["outcome"] for r in records] == ["answered"] * len(records)
    assert len(records) == len(script.speak_times) >= 3
    assert len(drawn) == len(records) - 1
    for (done_at, _), next_speak, pause in zip(
        recorder.turns, script.speak_times[1:], drawn, strict=False
    ):
        assert next_speak - done_at == pytest.approx(pause, abs=1e-6)
    for record in records:
        assert record["response_latency_ms"] == pytest.approx(400.0, abs=1e-3)
        # Ten frames: the answer lasts from frame 0 to frame 9.
        assert record["answer_duration_ms"] == pytest.approx(180.0, abs=1e-3)
        assert record["transcript_text"] == utterance.transcript.lower()
    # No turn starts once the session's end has passed.
    assert script.speak_times[-1] < 20.0
    assert recorder.sessions[0]["turns"] == len(records)
    assert recorder.sessions[0]["outcome"] == "completed"


async def test_answer_is_done_once_the_agent_has_been_quiet_for_600_ms(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    utterance: Fixture,
    reply: tuple[bytes, ...],
) -> None:
    """A turn ends 600 ms after the last audible frame, on the next 100 ms check."""
    script = Script(
        answers=[Answer(delay=0.3, frames=25)], reply=reply, utterance=utterance
    )
    recorder = await run_session(
        monkeypatch, script, end_at=2.0, think=lambda: 1.0, turn_timeout=5.0
    )

    ((done_at, record),) = recorder.turns
    last_frame_s = record["response_end_ns"] / 1e9
    assert record["outcome"] == "answered"
    assert 0.6 <= done_at - last_frame_s <= 0.7 + 1e-6


async def test_turn_times_out_at_turn_timeout_after_speech_end(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    utterance: Fixture,
    reply: tuple[bytes, ...],
) -> None:
    """With no audible answer the turn ends turn_timeout after speech end as a timeout."""
    # The agent posts its transcript and then says nothing, twice.
    silent = Answer(delay=0.0, frames=0)
    script = Script(answers=[silent, silent], reply=reply, utterance=utterance)
    recorder = await run_session(
        monkeypatch, script, end_at=8.0, think=lambda: 0.5, turn_timeout=3.0
    )

    assert len(recorder.turns) == 2
    for done_at, record in recorder.turns:
        assert record["outcome"] == "timeout"
        assert record["reason"] == "no audible answer within 3 s"
        assert record["response_latency_ms"] is None
        assert done_at - record["speech_end_ns"] / 1e9 == pytest.approx(3.0, abs=1e-6)
    # The second utterance starts after the first one's timeout plus think time.
    assert script.speak_times[1] - recorder.turns[0][0] == pytest.approx(0.5)


async def test_turn_in_flight_when_the_run_ends_is_recorded_as_cancelled(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    utterance: Fixture,
    reply: tuple[bytes, ...],
) -> None:
    """A run cancelled mid-turn still leaves that turn's row, and the session's."""
    silent = Answer(delay=0.0, frames=0)
    script = Script(answers=[silent], reply=reply, utterance=utterance)
    recorder = await run_session(
        monkeypatch,
        script,
        end_at=60.0,
        think=lambda: 0.5,
        turn_timeout=30.0,
        cancel_after=6.0,
    )

    [record] = turn_records(recorder)
    assert record["outcome"] == "cancelled"
    assert record["reason"] == "the run ended during the turn"
    assert record["response_latency_ms"] is None
    [session] = recorder.sessions
    assert session["outcome"] == "cancelled"


async def test_transcript_after_its_turn_gave_up_is_late_not_the_next_turns(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    reply: tuple[bytes, ...],
) -> None:
    """A transcript posted after its turn timed out is not scored against the next."""
    fixtures = load_fixtures()
    first, second = fixtures.get("timer-twenty"), fixtures.get("green-tea")
    # Turn 0: no audible answer, and its transcript comes 6 s after speech end,
    # after the turn gave up (at 3 s) and after turn 1's speech ended, while turn 1
    # still waits for its own transcript (1 s after its speech end).
    slow = Answer(delay=0.0, frames=0, transcript_delay=6.0)
    prompt = Answer(delay=0.5, frames=20, transcript_delay=1.0)
    script = Script(
        answers=[slow, prompt],
        reply=reply,
        utterance=first,
        fixtures=(first, second),
    )
    recorder = await run_session(
        monkeypatch, script, end_at=9.0, think=lambda: 0.2, turn_timeout=3.0
    )

    gave_up, answered = turn_records(recorder)
    assert gave_up["outcome"] == "timeout"
    assert gave_up["transcript_text"] is None
    assert answered["outcome"] == "answered"
    assert answered["transcript_text"] == second.transcript.lower()
    assert answered["word_errors"] == 0
    [session] = recorder.sessions
    assert session["late_transcripts"] == 1


async def test_answer_still_playing_at_turn_timeout_is_cut(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    utterance: Fixture,
    reply: tuple[bytes, ...],
) -> None:
    """An answer that starts but outlasts the turn timeout is ``cut`` with its latency kept."""
    script = Script(
        answers=[Answer(delay=0.5, frames=500)], reply=reply, utterance=utterance
    )
    recorder = await run_session(
        monkeypatch, script, end_at=2.0, think=lambda: 1.0, turn_timeout=2.0
    )

    ((done_at, record),) = recorder.turns
    assert record["outcome"] == "cut"
    assert record["reason"] == "the answer had not ended within 2 s"
    assert record["response_latency_ms"] == pytest.approx(500.0, abs=1e-3)
    assert done_at - record["speech_end_ns"] / 1e9 == pytest.approx(2.0, abs=1e-6)


async def test_voice_connection_not_ready_within_join_timeout_fails_the_session(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    utterance: Fixture,
    reply: tuple[bytes, ...],
) -> None:
    """A connection that never becomes ready fails the session at join_timeout."""
    script = Script(answers=[], reply=reply, utterance=utterance)
    recorder = await run_session(
        monkeypatch,
        script,
        end_at=60.0,
        think=lambda: 1.0,
        join_timeout=7.0,
        ready=False,
    )

    (record,) = recorder.sessions
    assert record["outcome"] == "failed"
    assert record["reason"] == (
        "VoiceTimeout: the voice connection was not ready within 7 s"
    )
    assert record["joined_ns"] is None
    assert (record["left_ns"] - record["join_requested_ns"]) / 1e9 == pytest.approx(
        7.0, abs=1e-6
    )
    assert recorder.turns == []
    assert script.speak_times == []


async def test_unreachable_voice_gateway_is_retried_with_backoff_then_given_up(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a drop, a gateway that refuses every attempt is retried after 0.5, 1, 2, 4 and 8 s."""
    attempts: list[tuple[float, bool]] = []

    async def connect_once(
        self: VoiceConnection, nursery: trio.Nursery, *, resume: bool
    ) -> None:
        # The WebSocket is the one part replaced: the first attempt serves a session
        # for ten seconds and drops, every later one is refused before it connects.
        attempts.append((trio.current_time(), resume))
        if len(attempts) == 1:
            self._cipher = TransportCipher(choose_mode(MODES), bytes(32))
            await trio.sleep(10)
            raise _Reconnect(1006, "connection dropped")
        raise _Reconnect(1006, "cannot connect: refused", reached=False)

    monkeypatch.setattr(VoiceConnection, "_connect_once", connect_once)
    connection = VoiceConnection(
        VoiceCredentials(
            user_id=USER_ID,
            guild_id=1,
            channel_id=2,
            session_id="s",
            token="t",
            endpoint="voice.invalid:443",
        ),
        clock=MediaClock(),
        on_frame=lambda frame: None,
        ssl_context=None,
    )
    with pytest.raises(VoiceConnectionClosed) as closed:
        await connection.run()

    assert [at for at, _ in attempts] == pytest.approx(
        [0.0, 10.0, 10.5, 11.5, 13.5, 17.5, 25.5]
    )
    assert [resume for _, resume in attempts] == [False] + [True] * 6
    assert closed.value.code == 1006
    assert connection.stats.resumes == 6
