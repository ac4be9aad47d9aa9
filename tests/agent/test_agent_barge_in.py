"""Barge-in: a user who talks over the agent's reply, end to end and in TurnTaker."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import trio

from tests.agent._harness import WAIT_S, Heard, running_agent, speaker
from voicesim.agent import AgentConfig, TurnRecord, read_timeline
from voicesim.agent._listener import SpeechEnded
from voicesim.agent._replies import ReplyChooser
from voicesim.agent._turns import (
    ReplyLane,
    StartReply,
    StopReply,
    TurnAction,
    TurnDone,
    TurnTaker,
)
from voicesim.media import load_fixtures

FRAME_NS = 20_000_000
MS = 1_000_000


async def _records(path: Path, count: int) -> list[TurnRecord]:
    """The first ``count`` timeline records, once the agent has written them."""
    with trio.fail_after(WAIT_S):
        while True:
            records = read_timeline(path) if path.exists() else []
            if len(records) >= count:
                return records
            await trio.sleep(0.05)


def _first_run(heard: list[Heard], after_ns: int) -> list[Heard]:
    """The agent's frames from its first audible one after ``after_ns`` to a pause.

    A stopped reply and the next reply are separated by at least end_silence, far
    longer than the 20 ms between frames of one talk spurt.
    """
    start = next(
        i for i, h in enumerate(heard) if h.audible and h.arrival_ns > after_ns
    )
    run = [heard[start]]
    for item in heard[start + 1 :]:
        if item.arrival_ns - run[-1].arrival_ns > 300 * MS:
            break
        run.append(item)
    return run


def _one_voice(heard: list[Heard]) -> bool:
    """Whether the frames are one talk spurt after another, never two interleaved.

    The agent has one stream per connection; a reply whose frames overlapped another
    talk spurt's would show as RTP timestamps that stop increasing.
    """
    stamps = [h.rtp_timestamp for h in heard]
    return all(a < b for a, b in itertools.pairwise(stamps))


async def _talk_over_reply(
    tmp_path: Path, policy: str
) -> tuple[list[Heard], int, list[TurnRecord]]:
    """Say a long utterance, talk over its echo; return what the user heard.

    Returns the frames heard from the agent's first reply on, the reply clip's
    length in frames, and the two turns' timeline records.
    """
    fixtures = load_fixtures()
    long = fixtures.get("news-weather")
    utterance = long.frames[long.first_voiced_frame : long.last_voiced_frame + 1]
    # 800 ms of speech: well past the 300 ms threshold, and a short second echo.
    other = fixtures.get("timer-twenty")
    cut_in = other.frames[other.first_voiced_frame : other.first_voiced_frame + 40]
    timeline = tmp_path / "timeline.jsonl"
    config = AgentConfig(
        stt="none",
        reply="echo",
        think="50ms",
        barge_in=policy,
        timeline_path=timeline,
    )
    async with running_agent(config) as world, speaker(world, "user-1") as user:
        speech = await user.say(utterance)
        speech_end_ns = speech.intended_ns(len(utterance) - 1)
        # The user starts talking as soon as the answer becomes audible.
        await user.audible_after(speech_end_ns)
        await user.say(cut_in)
        records = await _records(timeline, 2)
        channel = world.agent.channel_agent(user.guild_id)
        assert channel is not None
        stopped = channel.stats.replies_stopped
        heard = _first_run(user.heard, speech_end_ns)

    assert stopped == (1 if policy == "stop" else 0)
    return heard, len(utterance), sorted(records, key=lambda r: r.turn)


async def test_talking_over_the_reply_stops_it_and_marks_the_turn(
    tmp_path: Path,
) -> None:
    """With policy stop, the reply talked over ends early and its turn is barge_in."""
    heard, clip_frames, (first, second) = await _talk_over_reply(tmp_path, "stop")

    # About threshold / 20 ms frames of reply plus the silence tail, not the clip.
    assert len(heard) < clip_frames // 4, (len(heard), clip_frames)
    assert _one_voice(heard)
    assert first.barge_in
    assert first.outcome == "interrupted"
    assert first.reply_first_frame_ns is not None and first.reply_end_ns is not None
    sent = (first.reply_end_ns - first.reply_first_frame_ns) // FRAME_NS + 1
    assert sent < clip_frames // 4
    # The interruption is a turn of its own, answered in full.
    assert second.outcome == "answered"
    assert not second.barge_in


async def test_policy_none_plays_the_reply_to_its_end_but_marks_the_turn(
    tmp_path: Path,
) -> None:
    """With policy none, the reply talked over plays in full and is still barge_in."""
    heard, clip_frames, (first, second) = await _talk_over_reply(tmp_path, "none")

    # The first reply's frames run on without a pause (the second reply follows).
    assert len(heard) >= clip_frames * 9 // 10, (len(heard), clip_frames)
    # The second reply waits for the first one's closing silence frames.
    assert _one_voice(heard)
    assert first.barge_in
    assert first.outcome == "answered"
    assert first.reply_first_frame_ns is not None and first.reply_end_ns is not None
    sent = (first.reply_end_ns - first.reply_first_frame_ns) // FRAME_NS + 1
    assert sent >= clip_frames * 9 // 10
    assert second.outcome == "answered"
    assert not second.barge_in


# -- TurnTaker, without a network -----------------------------------------------------

#: The agent's reply in the unit tests: 2 s of (fake) Opus frames.
REPLY = tuple(bytes([i % 256]) for i in range(100))


def _taker(user_id: int, policy: str, lane: ReplyLane) -> TurnTaker:
    config = AgentConfig(stt="none", reply="echo", think="100ms", barge_in=policy)
    return TurnTaker(
        user_id=user_id,
        config=config,
        chooser=ReplyChooser(mode="echo"),
        rng=np.random.default_rng(0),
        lane=lane,
    )


def _answer(taker: TurnTaker, start_ns: int) -> tuple[int, int]:
    """Run one turn up to its reply's first frame; return (turn, reply start)."""
    turn = taker.speech_started(start_ns)
    end_ns = start_ns + len(REPLY) * FRAME_NS
    taker.speech_ended(
        SpeechEnded(
            start_ns=start_ns,
            end_ns=end_ns,
            detected_ns=end_ns + 700 * MS,
            cut=False,
            frames=REPLY,
        )
    )
    actions = taker.transcript_ready(turn, "", end_ns + 800 * MS)
    (reply,) = [a for a in actions if isinstance(a, StartReply)]
    taker.reply_started(turn, reply.at_ns)
    return turn, reply.at_ns


def _overlap(taker: TurnTaker, start_ns: int, voiced_ms: list[int]) -> list[TurnAction]:
    """The user speaks from ``start_ns``, voiced up to each of ``voiced_ms`` in turn."""
    taker.speech_started(start_ns)
    actions: list[TurnAction] = []
    for ms in voiced_ms:
        actions += taker.user_voiced(start_ns + ms * MS)
    return actions


def _record(actions: list[TurnAction], turn: int) -> TurnRecord:
    (done,) = [a for a in actions if isinstance(a, TurnDone) and a.record.turn == turn]
    return done.record


def test_turn_taker_lets_a_cough_shorter_than_the_threshold_pass() -> None:
    """200 ms of speech over the reply is below the 300 ms threshold: no stop."""
    taker = _taker(1, "stop", ReplyLane())
    turn, reply_ns = _answer(taker, 0)

    actions = _overlap(taker, reply_ns + 500 * MS, [20, 100, 200])
    ended = taker.reply_ended(turn, reply_ns + (len(REPLY) - 1) * FRAME_NS)

    assert actions == []
    record = _record(ended, turn)
    assert record.outcome == "answered"
    assert not record.barge_in


def test_turn_taker_stops_the_reply_once_the_overlap_passes_the_threshold() -> None:
    """Speech over the reply stops it on the frame that reaches 300 ms, once."""
    taker = _taker(1, "stop", ReplyLane())
    turn, reply_ns = _answer(taker, 0)
    onset_ns = reply_ns + 500 * MS

    before = _overlap(taker, onset_ns, [20, 100, 280])
    crossing = taker.user_voiced(onset_ns + 300 * MS)
    after = taker.user_voiced(onset_ns + 400 * MS)
    ended = taker.reply_ended(turn, onset_ns + 300 * MS)

    assert before == []
    assert crossing == [StopReply(user_id=1, turn=turn, at_ns=onset_ns + 300 * MS)]
    assert after == []
    record = _record(ended, turn)
    assert record.outcome == "interrupted"
    assert record.barge_in


def test_turn_taker_counts_overlap_only_from_the_reply_start() -> None:
    """Speech already going when the reply starts overlaps it only from that start."""
    taker = _taker(1, "stop", ReplyLane())
    turn, reply_ns = _answer(taker, 0)

    # Started 1 s before the reply: 1.2 s of speech, of which 200 ms overlap.
    actions = _overlap(taker, reply_ns - 1000 * MS, [500, 1000, 1200])
    crossing = taker.user_voiced(reply_ns + 300 * MS)

    assert actions == []
    assert crossing == [StopReply(user_id=1, turn=turn, at_ns=reply_ns + 300 * MS)]


def test_turn_taker_with_policy_none_marks_but_never_stops() -> None:
    """Policy none: a long overlap stops nothing, and the answered turn is barge_in."""
    taker = _taker(1, "none", ReplyLane())
    turn, reply_ns = _answer(taker, 0)

    actions = _overlap(taker, reply_ns + 200 * MS, list(range(20, 1500, 20)))
    ended = taker.reply_ended(turn, reply_ns + (len(REPLY) - 1) * FRAME_NS)

    assert actions == []
    record = _record(ended, turn)
    assert record.outcome == "answered"
    assert record.barge_in


def test_turn_taker_ignores_another_users_speech_over_a_reply() -> None:
    """In a shared channel, one user's long speech does not stop the reply to another."""
    lane = ReplyLane()
    answered = _taker(1, "stop", lane)
    chatty = _taker(2, "stop", lane)
    turn, reply_ns = _answer(answered, 0)

    actions = _overlap(chatty, reply_ns + 100 * MS, list(range(20, 1500, 20)))
    ended = answered.reply_ended(turn, reply_ns + (len(REPLY) - 1) * FRAME_NS)

    assert actions == []
    record = _record(ended, turn)
    assert record.outcome == "answered"
    assert not record.barge_in


def test_reply_lane_starts_a_queued_reply_after_the_closing_silence() -> None:
    """A reply due while another plays waits for it and its five silence frames."""
    lane = ReplyLane()
    first = _taker(1, "stop", lane)
    second = _taker(2, "stop", lane)
    _, first_ns = _answer(first, 0)

    # Due 200 ms into the first reply, which still has 1.8 s to play.
    _, second_ns = _answer(second, 200 * MS)

    assert second_ns == first_ns + (len(REPLY) + 5) * FRAME_NS


def test_reply_lane_frees_early_when_the_reply_before_is_stopped() -> None:
    """A stopped reply gives its time back, less its stop and closing silence."""
    lane = ReplyLane()
    first = _taker(1, "stop", lane)
    second = _taker(2, "stop", lane)
    _, first_ns = _answer(first, 0)
    stop_ns = first_ns + 400 * MS
    (stop,) = _overlap(first, first_ns, [20, 200, 400])
    assert stop == StopReply(user_id=1, turn=0, at_ns=stop_ns)

    _, second_ns = _answer(second, 200 * MS)

    # The stop takes up to two frames to act, then five silence frames end the spurt.
    assert second_ns == stop_ns + (2 + 5) * FRAME_NS
