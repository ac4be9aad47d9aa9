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
        for turn in range(2):
            speech = await user.say(fixture.frames)
            end_ns = speech.intended_ns(fixture.last_voiced_frame)
            await user.audible_after(end_ns)
            # The next utterance waits for the whole answer, as a polite user does.
            records = await _records(timeline, turn + 1)

    for record in records:
        assert record.outcome == "answered"
        assert record.transcript is None
        assert record.speech_end_ns is not None and record.detected_ns is not None
        assert (
            record.reply_at_ns is not None and record.reply_first_frame_ns is not None
        )
        assert record.reply_at_ns - record.speech_end_ns == 900_000_000
        assert record.speech_end_ns < record.detected_ns < record.reply_at_ns
        # The media clock starts the reply on the first millisecond at or after
        # its time.
        assert record.reply_at_ns <= record.reply_first_frame_ns


async def test_two_speakers_in_two_guilds_get_every_turn_transcribed(
    tmp_path: Path,
) -> None:
    """Two guilds speaking at once: every turn has a transcript; pooled WER <= 20 %."""
    fixtures = load_fixtures()
    scripts = {
        "user-1": [fixtures.get("play-music"), fixtures.get("cook-rice")],
        "user-2": [fixtures.get("call-mother"), fixtures.get("timer-twenty")],
    }
    timeline = tmp_path / "timeline.jsonl"
    config = AgentConfig(stt_workers=2, think="50ms", timeline_path=timeline)
    heard: dict[str, list[str]] = {name: [] for name in scripts}

    async with running_agent(config, sessions=2) as world:

        async def converse(name: str, guild: int) -> None:
            async with speaker(world, name, guild) as user:
                for fixture in scripts[name]:
                    await user.say(fixture.frames)
                    message = await user.next_message()
                    # The agent mentions the speaker; the mention was not said.
                    mention = f"<@{user.bot.user_id}>"
                    assert message.content.startswith(mention)
                    heard[name].append(message.content.removeprefix(mention))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(converse, "user-1", 0)
            nursery.start_soon(converse, "user-2", 1)

    errors = words = 0
    for name, script in scripts.items():
        assert len(heard[name]) == len(script)
        for fixture, content in zip(script, heard[name], strict=True):
            e, w = word_errors(fixture.transcript, content)
            errors += e
            words += w
    assert errors / words <= 0.20, heard
