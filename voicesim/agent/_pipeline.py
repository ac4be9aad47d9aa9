"""The agent's per-speaker pipeline in trio: listener, transcription, turn-taking.

Everything the reference agent does between "a frame arrived" and "send these
frames at this time", without touching the network. The voice connection (in
``voicesim.voice``) owns sockets and the media clock; it implements
:class:`AgentOutput` and calls :meth:`SpeakerPipeline.feed` for each received frame
and :meth:`SpeakerPipeline.reply_started` / :meth:`~SpeakerPipeline.reply_ended` as
it sends a reply. That is the whole contract.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import attrs
import numpy as np
import trio

from voicesim.agent._config import AgentConfig
from voicesim.agent._listener import (
    SpeakerListener,
    SpeechAudio,
    SpeechEnded,
    SpeechStarted,
)
from voicesim.agent._replies import ReplyChooser
from voicesim.agent._stt import (
    NullStt,
    SttPool,
    Transcriber,
    TranscriptionError,
    TranscriptStream,
)
from voicesim.agent._timeline import Timeline
from voicesim.agent._turns import (
    PostTranscript,
    ReplyLane,
    StartReply,
    StopReply,
    TurnAction,
    TurnDone,
    TurnTaker,
)
from voicesim.media import FixtureSet

__all__ = ["AgentCore", "AgentOutput", "SpeakerPipeline", "open_agent_core"]

logger = logging.getLogger("voicesim.agent")

ClockNs = Callable[[], int]


class AgentOutput(Protocol):
    """What the voice connection does for the agent, one per connection or speaker."""

    async def post_transcript(self, action: PostTranscript) -> None:
        """Post the transcript to the voice channel's text chat."""

    def start_reply(self, action: StartReply) -> None:
        """Schedule the reply's frames on the media clock; must not block."""

    def stop_reply(self, action: StopReply) -> None:
        """Stop the reply now (send the silence frames that end a talk spurt)."""


@attrs.define(eq=False)
class SpeakerPipeline:
    """One speaker's way through the agent. Make them with :meth:`AgentCore.open_speaker`."""

    user_id: int
    listener: SpeakerListener
    turns: TurnTaker
    _core: AgentCore
    _output: AgentOutput
    # The transcription of each utterance still being spoken; None when the
    # transcriber refused to open one (that turn fails when the speech ends).
    _streams: dict[int, TranscriptStream | None] = attrs.field(factory=dict, init=False)
    _refusals: dict[int, str] = attrs.field(factory=dict, init=False)
    _listening: int | None = attrs.field(default=None, init=False)
    _wake: trio.Event = attrs.field(factory=trio.Event, init=False)
    _scope: trio.CancelScope = attrs.field(factory=trio.CancelScope, init=False)
    _closed: bool = attrs.field(default=False, init=False)

    def feed(self, payload: bytes, arrival_ns: int) -> None:
        """Take one received Opus frame (decrypted, DAVE removed) and its arrival time."""
        if self._closed:
            return
        self._handle(self.listener.feed(payload, arrival_ns))
        voiced = self.listener.last_voiced_ns
        if voiced is None:
            return
        if self._listening is not None:
            self._execute(self.turns.user_voiced(voiced))
        # Speech is on, so the watcher must wait for its end (if it is not already).
        self._wake.set()

    def reply_started(self, turn: int, first_frame_ns: int) -> None:
        """The first frame of the reply to ``turn`` was sent at ``first_frame_ns``."""
        self.turns.reply_started(turn, first_frame_ns)

    def reply_ended(self, turn: int, last_frame_ns: int) -> None:
        """The reply to ``turn`` finished or was stopped; its last frame left then."""
        self._execute(self.turns.reply_ended(turn, last_frame_ns))

    def close(self) -> None:
        """The speaker left: abandon open turns and free their transcription."""
        if self._closed:
            return
        self._closed = True
        self._scope.cancel()
        for stream in self._streams.values():
            if stream is not None:
                stream.abort()
        self._streams.clear()
        self._execute(self.turns.close(self._core.clock_ns()))

    async def _watch(self) -> None:
        # Clients stop sending when their user stops talking, so the end of speech
        # usually comes from this timer, not from a frame. It wakes at the listener's
        # deadline; a frame that arrives first moves the deadline, and the stale
        # wake-up then finds nothing to do.
        with self._scope:
            while True:
                deadline = self.listener.deadline_ns()
                if deadline is None:
                    await self._wake.wait()
                    self._wake = trio.Event()
                    continue
                delay_s = (deadline - self._core.clock_ns()) / 1e9
                await trio.sleep(max(delay_s, 0.0))
                self._handle(self.listener.tick(self._core.clock_ns()))

    def _handle(self, events: list[SpeechStarted | SpeechAudio | SpeechEnded]) -> None:
        for event in events:
            if isinstance(event, SpeechStarted):
                self._listening = turn = self.turns.speech_started(event.start_ns)
                if not self._core.config.calibrating:
                    self._streams[turn] = self._open_stream(turn)
            elif isinstance(event, SpeechAudio):
                if self._listening is not None:
                    stream = self._streams.get(self._listening)
                    if stream is not None:
                        stream.feed(event.pcm)
            else:
                ended, self._listening = self._listening, None
                self._execute(self.turns.speech_ended(event))
                if ended is not None and ended in self._streams:
                    self._finish_stream(ended, self._streams.pop(ended))

    def _open_stream(self, turn: int) -> TranscriptStream | None:
        try:
            return self._core.transcriber.open_stream()
        except TranscriptionError as exc:
            self._refusals[turn] = str(exc)
            return None

    def _finish_stream(self, turn: int, stream: TranscriptStream | None) -> None:
        if stream is not None:
            self._core.nursery.start_soon(self._transcribe, turn, stream)
            return
        error = self._refusals.pop(turn, "no transcription stream")
        self._execute(self.turns.transcript_failed(turn, error, self._core.clock_ns()))

    async def _transcribe(self, turn: int, stream: TranscriptStream) -> None:
        try:
            text = await stream.finish()
        except TranscriptionError as exc:
            if self._closed:
                return
            logger.warning("user %s turn %d: %s", self.user_id, turn, exc)
            now = self._core.clock_ns()
            self._execute(self.turns.transcript_failed(turn, str(exc), now))
            return
        if not self._closed:
            now = self._core.clock_ns()
            self._execute(self.turns.transcript_ready(turn, text, now))

    def _execute(self, actions: list[TurnAction]) -> None:
        for action in actions:
            if isinstance(action, PostTranscript):
                self._core.nursery.start_soon(self._post, action)
            elif isinstance(action, StartReply):
                self._output.start_reply(action)
            elif isinstance(action, StopReply):
                self._output.stop_reply(action)
            elif isinstance(action, TurnDone):
                self._core.timeline.append(action.record)

    async def _post(self, action: PostTranscript) -> None:
        # A chat message that cannot be posted must not stop the agent listening;
        # the swarm sees the missing transcript as a timeout.
        try:
            await self._output.post_transcript(action)
        except Exception:
            logger.exception(
                "user %s turn %d: posting the transcript failed",
                self.user_id,
                action.turn,
            )


@attrs.define(eq=False)
class AgentCore:
    """What all speakers of one agent share. Make it with :func:`open_agent_core`."""

    config: AgentConfig
    transcriber: Transcriber
    chooser: ReplyChooser
    timeline: Timeline
    nursery: trio.Nursery
    clock_ns: ClockNs = time.perf_counter_ns
    rng: np.random.Generator = attrs.field(init=False)

    @rng.default
    def _seeded(self) -> np.random.Generator:
        return np.random.default_rng(self.config.seed)

    def open_speaker(
        self,
        *,
        user_id: int,
        output: AgentOutput,
        lane: ReplyLane | None = None,
        guild_id: int | None = None,
    ) -> SpeakerPipeline:
        """Start listening to one speaker (one SSRC).

        Give speakers of one voice connection the same ``lane``, so the agent's
        replies on that connection take turns. Call ``close()`` when they leave.
        """
        pipeline = SpeakerPipeline(
            user_id=user_id,
            listener=SpeakerListener(
                config=self.config, keep_frames=self.config.reply == "echo"
            ),
            turns=TurnTaker(
                user_id=user_id,
                config=self.config,
                chooser=self.chooser,
                rng=self.rng,
                lane=lane if lane is not None else ReplyLane(),
                guild_id=guild_id,
            ),
            core=self,
            output=output,
        )
        self.nursery.start_soon(pipeline._watch)
        return pipeline


@contextlib.asynccontextmanager
async def open_agent_core(
    config: AgentConfig,
    *,
    fixtures: FixtureSet | None = None,
    transcriber: Transcriber | None = None,
    clock_ns: ClockNs = time.perf_counter_ns,
) -> AsyncIterator[AgentCore]:
    """Start the agent's shared parts: transcription workers, replies, timeline.

    ``fixtures`` defaults to :func:`voicesim.media.load_fixtures` (needed for
    ``reply = "fixtures"``); ``transcriber`` defaults to what ``config.stt`` says
    (no workers are started in calibration mode); ``clock_ns`` must count the same
    nanoseconds as the arrival times passed to ``feed``.

    Raises:
        FixtureError: the default fixtures cannot be loaded.
        ConfigError: ``reply = "fixtures"`` and there is no reply fixture.
        TranscriptionError: the transcription workers cannot start.
    """
    chooser = ReplyChooser.from_config(config, fixtures)
    async with contextlib.AsyncExitStack() as stack:
        if transcriber is None:
            if config.stt == "none" or config.calibrating:
                transcriber = await stack.enter_async_context(NullStt())
            else:
                transcriber = await stack.enter_async_context(
                    SttPool(
                        config.stt_workers,
                        streams_per_worker=config.stt_streams_per_worker,
                    )
                )
        timeline = stack.enter_context(Timeline(config.timeline_path))
        nursery = await stack.enter_async_context(trio.open_nursery())
        yield AgentCore(
            config=config,
            transcriber=transcriber,
            chooser=chooser,
            timeline=timeline,
            nursery=nursery,
            clock_ns=clock_ns,
        )
        # The speakers' timers run forever; leaving the block stops them.
        nursery.cancel_scope.cancel()
