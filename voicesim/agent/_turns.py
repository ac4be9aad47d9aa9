"""Turn-taking for one speaker: when to answer, what to post, when to stop talking.

Sans-I/O: every method takes the times it needs and returns the actions the voice
connection must carry out; nothing here reads a clock, sleeps or sends.
"""

from __future__ import annotations

import attrs
import numpy as np

from voicesim.agent._config import AgentConfig
from voicesim.agent._listener import SpeechEnded
from voicesim.agent._replies import Reply, ReplyChooser
from voicesim.agent._timeline import TurnRecord
from voicesim.media import FRAME_MS

__all__ = [
    "PostTranscript",
    "ReplyLane",
    "StartReply",
    "StopReply",
    "TurnAction",
    "TurnDone",
    "TurnTaker",
]


@attrs.frozen(kw_only=True)
class PostTranscript:
    """Post ``text`` to the voice channel's text chat: what the agent heard."""

    user_id: int
    turn: int
    text: str
    speech_start_ns: int
    speech_end_ns: int


@attrs.frozen(kw_only=True)
class StartReply:
    """Send ``frames`` as the agent's speech, the first one at ``at_ns``.

    ``at_ns`` may already have passed (the agent fell behind); send at once then.
    When the first frame goes out, call ``reply_started``; when the last one has
    gone or the reply was stopped, call ``reply_ended``.
    """

    user_id: int
    turn: int
    reply_id: str
    frames: tuple[bytes, ...] = attrs.field(repr=lambda f: f"<{len(f)} frames>")
    at_ns: int


@attrs.frozen(kw_only=True)
class StopReply:
    """Stop sending the reply of ``turn`` (the user talked over it), from ``at_ns``."""

    user_id: int
    turn: int
    at_ns: int


@attrs.frozen(kw_only=True)
class TurnDone:
    """The turn is over; ``record`` goes to the timeline."""

    record: TurnRecord


TurnAction = PostTranscript | StartReply | StopReply | TurnDone

#: The five silence frames that end every talk spurt, a stopped reply's too.
_SPURT_END_NS = 5 * FRAME_MS * 1_000_000
#: A stop takes effect at the stream's next frame; its silence frames start after it.
_STOP_DELAY_NS = 2 * FRAME_MS * 1_000_000


@attrs.define
class ReplyLane:
    """The agent's one outgoing stream on a voice connection.

    Replies on one connection cannot overlap (the agent has one voice), so speakers
    sharing a channel share a lane and a reply due while another plays waits for it,
    and for the silence frames that end it: on the one stream, the next reply's
    frames would otherwise interleave with them.
    """

    busy_until_ns: int = 0

    def reserve(self, at_ns: int, duration_ns: int) -> int:
        """Book ``duration_ns`` from ``at_ns`` or when the lane frees; return the start."""
        start = max(at_ns, self.busy_until_ns)
        self.busy_until_ns = start + duration_ns + _SPURT_END_NS
        return start

    def cut_short(self, booked_until_ns: int, stopped_ns: int) -> None:
        """A reply booked until ``booked_until_ns`` stopped early at ``stopped_ns``."""
        # Only the latest booking can give its time back; an earlier one is followed
        # by replies already scheduled after it.
        if self.busy_until_ns == booked_until_ns:
            self.busy_until_ns = max(stopped_ns, 0) + _STOP_DELAY_NS + _SPURT_END_NS


@attrs.define
class _Turn:
    index: int
    speech_start_ns: int
    speech_end_ns: int | None = None
    detected_ns: int | None = None
    cut: bool = False
    frames: tuple[bytes, ...] = ()
    transcript: str | None = None
    transcript_ready_ns: int | None = None
    think_ns: int | None = None
    reply: Reply | None = None
    reply_at_ns: int | None = None
    booked_until_ns: int | None = None
    reply_first_frame_ns: int | None = None
    barge_in: bool = False
    stopped: bool = False

    def reply_window(self) -> tuple[int, int] | None:
        # The reply plays from its first frame (or its scheduled start, until the
        # connection reports the first frame) for its length.
        if self.reply is None or self.reply_at_ns is None or self.stopped:
            return None
        start = self.reply_first_frame_ns
        if start is None:
            start = self.reply_at_ns
        return start, start + self.reply.duration_ns


# Why turn-taking works this way.
#
# A turn is one utterance and its answer. Its times are the record voicesim lines up
# against what the synthetic user measured: the utterance's first and last voiced
# frame, the moment the end was detected (end_silence later), the transcript, the
# think time drawn, the time the reply was scheduled and the time its first frame
# really left. Each gap is one stage of a real agent, so a swarm can tell which
# stage grows under load.
#
# Turns overlap. A user may speak again while the previous utterance is still being
# transcribed, or while the agent answers; each utterance opens its own turn and the
# turns finish independently, so a slow transcription delays only its own answer.
# Answers never overlap, though: the agent has one voice per connection, so replies
# are booked on a ReplyLane and one that is due while another plays starts after it.
#
# The think time is drawn when the transcript is ready, from the configured
# distribution with the agent's seeded generator, and the reply is scheduled at
# transcript time plus think time. Scheduling an absolute time (instead of sleeping
# and then sending) lets the voice connection's media clock start the reply on a
# frame boundary it already keeps, and keeps the agent's own scheduling delay out of
# the answer when it is not overloaded.
#
# Calibration mode replaces transcription and thinking by one fixed delay counted
# from the last voiced frame. The reply then starts at a time known in advance, so
# the swarm's measured latency minus that delay is what voicesim itself adds:
# transport, pacing and measurement.
#
# Barge-in: when the user talks while the agent's reply to them plays, the overlap
# is the time from the later of the two starts to the user's latest voiced frame.
# Once it passes barge_in_threshold the user has plainly taken the floor (300 ms
# rejects a cough or an "mm-hm"), and with policy "stop" the agent stops talking at
# once; with "none" it finishes but the turn is marked, so a swarm can measure how
# often it talks over people. Overlap is judged on each voiced frame as it arrives,
# so the decision needs no timer and happens on the frame that crosses the line.
# A user's speech counts only against replies to that user: in a shared channel one
# person's chatter does not silence the answer to another.
@attrs.define
class TurnTaker:
    """The turn-taking state machine of one speaker."""

    user_id: int
    config: AgentConfig
    chooser: ReplyChooser
    rng: np.random.Generator
    lane: ReplyLane = attrs.field(factory=ReplyLane)
    guild_id: int | None = None

    _turns: dict[int, _Turn] = attrs.field(factory=dict, init=False)
    _next_index: int = attrs.field(default=0, init=False)
    _speaking: _Turn | None = attrs.field(default=None, init=False)

    @property
    def open_turns(self) -> tuple[int, ...]:
        """Indexes of the turns not yet done, oldest first."""
        return tuple(self._turns)

    def speech_started(self, start_ns: int) -> int:
        """The user started an utterance; return the index of its turn."""
        turn = _Turn(index=self._next_index, speech_start_ns=start_ns)
        self._next_index += 1
        self._turns[turn.index] = turn
        self._speaking = turn
        return turn.index

    def user_voiced(self, last_voiced_ns: int) -> list[TurnAction]:
        """The user's current utterance was voiced up to ``last_voiced_ns``."""
        current = self._speaking
        if current is None:
            return []

        actions: list[TurnAction] = []
        for turn in self._turns.values():
            window = turn.reply_window()
            if turn is current or window is None:
                continue
            start, end = window
            overlap_start = max(current.speech_start_ns, start)
            overlap = min(last_voiced_ns, end) - overlap_start
            if overlap < round(self.config.barge_in_threshold * 1e9):
                continue

            turn.barge_in = True
            if self.config.barge_in == "stop":
                turn.stopped = True
                assert turn.booked_until_ns is not None
                self.lane.cut_short(turn.booked_until_ns, last_voiced_ns)
                actions.append(
                    StopReply(
                        user_id=self.user_id, turn=turn.index, at_ns=last_voiced_ns
                    )
                )
        return actions

    def speech_ended(self, ended: SpeechEnded) -> list[TurnAction]:
        """The current utterance ended (or was cut); in calibration mode, answer."""
        turn = self._speaking
        if turn is None:
            return []
        self._speaking = None
        turn.speech_end_ns = ended.end_ns
        turn.detected_ns = ended.detected_ns
        turn.cut = ended.cut
        turn.frames = ended.frames

        if self.config.calibration_delay is None:
            return []
        at_ns = ended.end_ns + round(self.config.calibration_delay * 1e9)
        return [self._schedule_reply(turn, at_ns)]

    def transcript_ready(self, turn: int, text: str, at_ns: int) -> list[TurnAction]:
        """The transcript of ``turn`` arrived at ``at_ns``: post it, think, answer."""
        state = self._turns.get(turn)
        if state is None or state.speech_end_ns is None or state.reply is not None:
            return []
        state.transcript = text
        state.transcript_ready_ns = at_ns

        actions: list[TurnAction] = []
        # Discord refuses empty messages; the agent still answers what it heard.
        if text:
            actions.append(
                PostTranscript(
                    user_id=self.user_id,
                    turn=turn,
                    text=text,
                    speech_start_ns=state.speech_start_ns,
                    speech_end_ns=state.speech_end_ns,
                )
            )
        think_ns = round(self.config.think.sample(self.rng) * 1e9)
        state.think_ns = think_ns
        actions.append(self._schedule_reply(state, at_ns + think_ns))
        return actions

    def transcript_failed(self, turn: int, error: str, at_ns: int) -> list[TurnAction]:
        """Transcription of ``turn`` failed at ``at_ns``: the turn ends unanswered."""
        state = self._turns.get(turn)
        if state is None or state.reply is not None:
            return []
        state.transcript_ready_ns = at_ns
        return [self._done(state, outcome="stt_error", end_ns=None, error=error)]

    def reply_started(self, turn: int, first_frame_ns: int) -> None:
        """The first frame of the reply to ``turn`` was sent at ``first_frame_ns``."""
        state = self._turns.get(turn)
        if state is not None and state.reply_first_frame_ns is None:
            state.reply_first_frame_ns = first_frame_ns

    def reply_ended(self, turn: int, last_frame_ns: int) -> list[TurnAction]:
        """The reply to ``turn`` has been sent to its end, or stopped."""
        state = self._turns.get(turn)
        if state is None or state.reply is None:
            return []
        outcome = "interrupted" if state.stopped else "answered"
        return [self._done(state, outcome=outcome, end_ns=last_frame_ns)]

    def close(self, at_ns: int) -> list[TurnAction]:
        """The speaker left or the agent stops: end every open turn as abandoned."""
        self._speaking = None
        return [
            self._done(turn, outcome="abandoned", end_ns=None)
            for turn in list(self._turns.values())
        ]

    def _schedule_reply(self, turn: _Turn, at_ns: int) -> StartReply:
        reply = self.chooser.choose(
            user_id=self.user_id, turn=turn.index, utterance=turn.frames
        )
        turn.reply = reply
        turn.reply_at_ns = self.lane.reserve(at_ns, reply.duration_ns)
        turn.booked_until_ns = self.lane.busy_until_ns
        # The utterance's frames were needed only to choose an echo reply.
        turn.frames = ()
        return StartReply(
            user_id=self.user_id,
            turn=turn.index,
            reply_id=reply.id,
            frames=reply.frames,
            at_ns=turn.reply_at_ns,
        )

    def _done(
        self, turn: _Turn, *, outcome: str, end_ns: int | None, error: str | None = None
    ) -> TurnDone:
        del self._turns[turn.index]
        if self._speaking is turn:
            self._speaking = None
        record = TurnRecord(
            guild_id=self.guild_id,
            user_id=self.user_id,
            turn=turn.index,
            speech_start_ns=turn.speech_start_ns,
            speech_end_ns=turn.speech_end_ns,
            detected_ns=turn.detected_ns,
            cut=turn.cut,
            transcript=turn.transcript,
            transcript_ready_ns=turn.transcript_ready_ns,
            think_ns=turn.think_ns,
            reply_id=turn.reply.id if turn.reply is not None else None,
            reply_at_ns=turn.reply_at_ns,
            reply_first_frame_ns=turn.reply_first_frame_ns,
            reply_end_ns=end_ns,
            barge_in=turn.barge_in,
            outcome=outcome,
            error=error,
        )
        return TurnDone(record=record)
