"""One speaker's bad input costs that speaker only."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from tests.agent._harness import WAIT_S, running_agent, speaker
from voicesim.agent import AgentConfig, read_timeline
from voicesim.media import load_fixtures


async def test_garbage_and_endless_speech_are_cut_and_others_still_answered(
    tmp_path: Path,
) -> None:
    """Garbage Opus and speech past max_utterance cost their speaker, not a neighbour."""
    fixtures = load_fixtures()
    # Random bytes, then speech with no end: voiced parts of fixtures back to back.
    garbage = [os.urandom(60) for _ in range(50)]
    endless: list[bytes] = []
    for fixture_id in ("table-italian", "email-boss"):
        fixture = fixtures.get(fixture_id)
        endless += fixture.frames[
            fixture.first_voiced_frame : fixture.last_voiced_frame
        ]
    polite = fixtures.get("timer-twenty")
    timeline = tmp_path / "timeline.jsonl"
    config = AgentConfig(
        stt="none", think="50ms", max_utterance="2s", timeline_path=timeline
    )

    async with (
        running_agent(config, sessions=2, per_channel=2) as world,
        speaker(world, "user-1") as rude,
        speaker(world, "user-2") as neighbour,
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rude.say, [*garbage, *endless])
            await trio.sleep(0.5)
            speech = await neighbour.say(polite.frames)
        await neighbour.audible_after(speech.intended_ns(polite.last_voiced_frame))

        with trio.fail_after(WAIT_S):
            while True:
                records = read_timeline(timeline) if timeline.exists() else []
                users = {r.user_id for r in records if r.outcome == "answered"}
                if {rude.bot.user_id, neighbour.bot.user_id} <= users:
                    break
                await trio.sleep(0.1)
        channel = world.agent.channel_agent(rude.guild_id)
        assert channel is not None
        assert channel.stats.feed_errors == 0

    cut = [r for r in records if r.user_id == rude.bot.user_id]
    assert cut and all(r.cut for r in cut)
    speaking_ns = len(endless) * 20_000_000
    for record in cut:
        # Cut at the frame that reached max_utterance, long before the speech ended.
        assert record.speech_end_ns is not None
        assert record.speech_end_ns - record.speech_start_ns < speaking_ns // 2
    answered = [r for r in records if r.user_id == neighbour.bot.user_id]
    assert [r.cut for r in answered] == [False]
    assert answered[0].outcome == "answered"
