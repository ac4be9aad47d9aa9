"""The reference agent end to end: transcripts, spoken replies, calibration, bad input."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.agent._harness import WAIT_S, running_agent, speaker
from voicesim.agent import AgentConfig, TurnRecord, read_timeline
from voicesim.engine._measure import word_errors
from voicesim.media import load_fixtures


async def _records(path: Path, count: int) -> list[TurnRecord]:
    """The first ``count`` timeline records, once the agent has written them."""
    with trio.fail_after(WAIT_S):
        while True:
            records = read_timeline(path) if path.exists() else []
            if len(records) >= count:
                return records
            await trio.sleep(0.05)


async def test_agent_posts_transcript_and_speaks_an_audible_reply(
    tmp_path: Path,
) -> None:
    """A spoken fixture gets a transcript mentioning the speaker and an audible reply."""
    fixture = load_fixtures().get("lights-kitchen")
    timeline = tmp_path / "timeline.jsonl"
    config = AgentConfig(stt_workers=1, think="100ms", timeline_path=timeline)
    async with running_agent(config) as world, speaker(world, "user-1") as user:
        speech = await user.say(fixture.frames)
        speech_end_ns = speech.intended_ns(fixture.last_voiced_frame)

        message = await user.next_message()
        reply_ns = await user.audible_after(speech_end_ns)
        records = await _records(timeline, 1)

    assert message.content.startswith(f"<@{user.bot.user_id}> ")
    errors, words = word_errors(fixture.transcript, message.content)
    assert errors <= words // 4, message.content
    assert message.arrival_ns > speech_end_ns
    assert reply_ns > message.arrival_ns
    (record,) = records
    assert record.user_id == user.bot.user_id
    assert record.outcome == "answered"
    assert record.transcript is not None and record.transcript in message.content
    assert record.reply_first_frame_ns is not None
    assert record.reply_at_ns is not None
    assert record.reply_first_frame_ns >= record.reply_at_ns


async def test_calibration_reply_starts_the_fixed_delay_after_speech_end(
    tmp_path: Path,
) -> None:
    """In calibration mode the reply is due exactly the delay after the speech ends."""
    fixture = load_fixtures().get("timer-twenty")
    timeline = tmp_path / "timeline.jsonl"
    config = AgentConfig(calibration_delay="900ms", timeline_path=timeline)
    async with running_agent(config) as world, speaker(world, "user-1") as user:
        for _ in range(2):
            speech = await user.say(fixture.frames)
            end_ns = speech.intended_ns(fixture.last_voiced_frame)
            await user.audible_after(end_ns)
        records = await _records(timeline, 2)

    for record in records:
        assert record.outcome == "answered"
        assert record.transcript is None
        assert record.speech_end_ns is not None and record.detected_ns is not None
        assert record.reply_at_ns is not None and record.reply_first_frame_ns is not None
        assert record.reply_at_ns - record.speech_end_ns == 900_000_000
        assert record.speech_end_ns < record.detected_ns < record.reply_at_ns
        # The media clock starts the reply on the first millisecond at or after
        # its time.
        assert record.reply_at_ns <= record.reply_first_frame_ns
