"""DAVE end to end: voicesim's voice client against the emulator and real libraries."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio

from tests.emulator._dpy import DpyBot
from tests.emulator._peers import VoicePeer
from tests.voice._dave_support import (
    Member,
    dave_emulator,
    opus_test_frames,
    wait_until,
)
from voicesim._exceptions import VoiceConnectionClosed
from voicesim.emulator import DaveMode
from voicesim.protocol import (
    DAVE_REQUIRED_REASON,
    has_dave_trailer,
    parse_dave_frame,
)
from voicesim.voice import MediaClock

SILENCE = b"\xf8\xff\xfe"
FRAMES = 40


def _all_in_group(members: list[Member], user_ids: set[int]) -> Callable[[], bool]:
    def check() -> bool:
        for member in members:
            dave = member.voice.dave
            if dave is None or not dave.ready:
                return False
            if dave.group_user_ids() != user_ids:
                return False
        return True

    return check


def _assert_relayed_e2ee(member: Member, ssrc: int, plain: list[bytes]) -> None:
    """What the relay delivered for ``ssrc`` was DAVE ciphertext of ``plain``."""
    raw = [p for p in member.raw[ssrc] if p != SILENCE]
    assert len(raw) >= len(plain)
    for sealed, frame in zip(raw, plain, strict=False):
        assert has_dave_trailer(sealed) and sealed.endswith(b"\xfa\xfa")
        assert sealed != frame
        parsed = parse_dave_frame(sealed)
        assert len(parsed.ciphertext) == len(frame)


@pytest.fixture
def clock() -> object:
    media_clock = MediaClock()
    media_clock.start()
    yield media_clock
    media_clock.stop()


async def test_three_members_with_discordpy_decode_each_other(
    clock: MediaClock,
) -> None:
    """Two voicesim clients and a discord.py bot in one DAVE group all hear each other."""
    speech = opus_test_frames(3 * FRAMES)
    frames_a, frames_b, frames_d = (
        speech[:FRAMES],
        speech[FRAMES : 2 * FRAMES],
        speech[2 * FRAMES :],
    )
    async with dave_emulator() as emu, trio.open_nursery() as nursery:
        info = emu.info
        guild = info.guilds[0]
        channel = guild.voice_channels[0]
        async with (
            Member.join(nursery, info, clock, "bot-1") as a,
            Member.join(nursery, info, clock, "bot-2") as b,
        ):
            await wait_until(_all_in_group([a, b], {a.user_id, b.user_id}))

            bot = DpyBot(info, "bot-3", guild.id, channel.id, frames_d, listen=True)
            bot.users_by_ssrc.update({a.voice.ssrc: a.user_id, b.voice.ssrc: b.user_id})
            bot.start()
            await bot.wait(bot.joined)
            d = info.user("bot-3").id
            everyone = {a.user_id, b.user_id, d}
            group = emu.group()
            await wait_until(_all_in_group([a, b], everyone))
            # The discord.py bot is in the group once its op 23 closed the transition.
            await wait_until(lambda: not group.pending_transitions)
            assert {u for u in group.leaves if u is not None} == everyone
            for member in (a, b):
                await wait_until(lambda m=member: bot.ssrc in m.voice.users_by_ssrc)
            codes = {a.voice.dave.voice_privacy_code, b.voice.dave.voice_privacy_code}  # type: ignore[union-attr]
            assert len(codes) == 1 and None not in codes

            bot.go.set()
            speech_a = await a.voice.speak(frames_a)
            speech_b = await b.voice.speak(frames_b)
            await speech_a.wait()
            await speech_b.wait()
            for member in (a, b):
                await wait_until(lambda m=member: len(m.speech_from(d)) >= FRAMES)

            def bot_heard(user_id: int) -> list[bytes]:
                return [f for f in bot.heard[user_id] if f != SILENCE]

            await wait_until(lambda: len(bot_heard(a.user_id)) >= FRAMES)
            await wait_until(lambda: len(bot_heard(b.user_id)) >= FRAMES)
            bot.release.set()
            await bot.wait(bot.finished)
            await bot.join_thread()

            # discord.py's own DAVE session opens what the voicesim clients sent.
            assert bot_heard(a.user_id) == frames_a
            assert bot_heard(b.user_id) == frames_b
            assert bot.undecodable == 0

            assert a.speech_from(b.user_id) == frames_b
            assert a.speech_from(d) == frames_d
            assert b.speech_from(a.user_id) == frames_a
            assert b.speech_from(d) == frames_d

            _assert_relayed_e2ee(a, b.voice.ssrc, frames_b)
            _assert_relayed_e2ee(b, a.voice.ssrc, frames_a)
            assert bot.ssrc is not None
            _assert_relayed_e2ee(a, bot.ssrc, frames_d)
            _assert_relayed_e2ee(b, bot.ssrc, frames_d)
            for member in (a, b):
                assert member.voice.stats.dave_decrypt_failures == 0
                assert member.voice.dave.stats.encrypted_frames >= FRAMES  # type: ignore[union-attr]
        nursery.cancel_scope.cancel()
    assert emu.group().stats.invalid_commits == 0


async def test_dave_required_refuses_client_without_dave(clock: MediaClock) -> None:
    """With DAVE required, a client offering version 0 is closed with 4017."""
    async with dave_emulator(DaveMode.REQUIRED) as emu, trio.open_nursery() as nursery:
        info = emu.info
        async with Member.join(
            nursery, info, clock, "bot-1", max_dave_protocol_version=0
        ) as plain:
            await wait_until(lambda: plain.closed is not None)
            assert isinstance(plain.closed, VoiceConnectionClosed)
            assert plain.closed.code == 4017
            assert plain.closed.reason == DAVE_REQUIRED_REASON
            assert plain.closed.reason == "E2EE/DAVE protocol required"
            assert not plain.voice.ready
        async with Member.join(nursery, info, clock, "bot-2") as e2ee:
            assert e2ee.closed is None
            assert e2ee.voice.dave_protocol_version == 1
            assert e2ee.voice.dave is not None
        nursery.cancel_scope.cancel()


async def test_malformed_mls_from_one_client_leaves_others_group_working(
    clock: MediaClock,
) -> None:
    """Garbage op 26 and op 28 get their sender closed; the others' group still works."""
    speech = opus_test_frames(2 * FRAMES)
    async with dave_emulator() as emu, trio.open_nursery() as nursery:
        info = emu.info
        guild = info.guilds[0]
        channel = guild.voice_channels[0]
        async with (
            Member.join(nursery, info, clock, "bot-1") as a,
            Member.join(nursery, info, clock, "bot-2") as b,
        ):
            pair = {a.user_id, b.user_id}
            await wait_until(_all_in_group([a, b], pair))
            group = emu.group()
            epoch = group.epoch

            from tests.emulator._peers import GatewayPeer

            # A raw peer that negotiates DAVE and then sends junk commits.
            async with GatewayPeer.connect(info, "bot-3") as gateway:
                grant = await gateway.join_voice(guild.id, channel.id)
                async with VoicePeer.connect(
                    info, grant, max_dave_protocol_version=1
                ) as junk:
                    for _ in range(group.max_invalid_commits):
                        await junk.send_raw(bytes([28]) + b"\x00\x01garbage commit")
                    closed = await junk.wait_closed()
                    assert closed.code == 4020
            assert group.stats.invalid_commits == group.max_invalid_commits

            # And one whose key package is garbage.
            async with GatewayPeer.connect(info, "bot-4") as gateway:
                grant = await gateway.join_voice(guild.id, channel.id)
                async with VoicePeer.connect(
                    info, grant, max_dave_protocol_version=1
                ) as junk:
                    await junk.send_raw(bytes([26]) + b"\x00\x01\x00\x02not a key")
                    closed = await junk.wait_closed()
                    assert closed.code == 4002
            assert group.stats.invalid_key_packages == 1

            assert group.epoch == epoch
            await wait_until(_all_in_group([a, b], pair))
            said = await a.voice.speak(speech[:FRAMES])
            answer = await b.voice.speak(speech[FRAMES:])
            await said.wait()
            await answer.wait()
            await wait_until(lambda: len(b.speech_from(a.user_id)) >= FRAMES)
            await wait_until(lambda: len(a.speech_from(b.user_id)) >= FRAMES)
            assert b.speech_from(a.user_id) == speech[:FRAMES]
            assert a.speech_from(b.user_id) == speech[FRAMES:]
            assert a.voice.stats.dave_decrypt_failures == 0
            assert b.voice.stats.dave_decrypt_failures == 0
        nursery.cancel_scope.cancel()


async def test_leave_and_join_mid_conversation_keep_audio_flowing(
    clock: MediaClock,
) -> None:
    """A joiner and a leaver mid-speech make new epochs; speech keeps decoding."""
    # Four seconds of speech from each of a and b, so both epoch changes happen
    # while they talk.
    speech = opus_test_frames(400)
    frames_a, frames_b = speech[:200], speech[200:]
    async with dave_emulator() as emu, trio.open_nursery() as nursery:
        info = emu.info
        async with (
            Member.join(nursery, info, clock, "bot-1") as a,
            Member.join(nursery, info, clock, "bot-2") as b,
        ):
            await wait_until(_all_in_group([a, b], {a.user_id, b.user_id}))
            group = emu.group()
            said_a = await a.voice.speak(frames_a)
            said_b = await b.voice.speak(frames_b)
            await wait_until(lambda: len(b.speech_from(a.user_id)) >= 25)

            async with Member.join(nursery, info, clock, "bot-3") as c:
                everyone = {a.user_id, b.user_id, c.user_id}
                await wait_until(_all_in_group([a, b, c], everyone))
                joined_epoch = group.epoch
                heard_before = len(c.speech_from(a.user_id))
                await wait_until(
                    lambda: len(c.speech_from(a.user_id)) >= heard_before + 25
                )

                await b.leave()
                remaining = {a.user_id, c.user_id}
                await wait_until(_all_in_group([a, c], remaining))
                assert group.epoch > joined_epoch
                await said_a.wait()
                await said_b.wait()
                await wait_until(lambda: c.speech_from(a.user_id)[-1:] == frames_a[-1:])

                # What the joiner heard of a is a's speech from some frame on, in
                # order and exact: a suffix of what a said, nothing garbled.
                heard = c.speech_from(a.user_id)
                assert heard == frames_a[len(frames_a) - len(heard) :]
                # The one who stayed heard the leaver until it left, exactly.
                from_b = a.speech_from(b.user_id)
                assert from_b == frames_b[: len(from_b)]
                assert len(from_b) >= 25

                # The gap, as each listener measured it: the longest time its
                # incoming stream went without decodable audio because of DAVE.
                for member in (a, c):
                    stats = member.voice.stats
                    arrivals = member.arrivals[a.user_id if member is c else b.user_id]
                    assert stats.dave_longest_gap_ns >= 0
                    if stats.dave_decrypt_failures == 0:
                        assert stats.dave_longest_gap_ns == 0
                    else:
                        # A gap is bounded by the stream's own arrivals.
                        assert stats.dave_longest_gap_ns <= arrivals[-1] - arrivals[0]
        nursery.cancel_scope.cancel()
    assert group.stats.invalid_commits == 0
