"""DAVE across libraries: voicesim's voice client and @discordjs/voice in one group."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import trio

from tests.emulator._node import NodePeer, skip_without_node
from tests.voice._dave_support import (
    Member,
    dave_emulator,
    opus_test_frames,
    wait_until,
)
from voicesim.protocol import has_dave_trailer, parse_dave_frame
from voicesim.voice import MediaClock

pytestmark = [pytest.mark.node, skip_without_node]

SILENCE = b"\xf8\xff\xfe"
FRAMES = 40


@pytest.fixture
def clock() -> Iterator[MediaClock]:
    media_clock = MediaClock()
    media_clock.start()
    yield media_clock
    media_clock.stop()


def _in_group(member: Member, user_ids: set[int]) -> bool:
    dave = member.voice.dave
    return dave is not None and dave.ready and dave.group_user_ids() == user_ids


def _node_in_group(status: dict[str, Any], user_ids: set[int]) -> bool:
    dave = status["dave"]
    return (
        dave is not None
        and dave["ready"]
        and dave["pending_transitions"] == 0
        and {int(u) for u in dave["user_ids"]} == user_ids
    )


def _node_maps(peer: NodePeer, member: Member) -> bool:
    return peer.speakers.get(member.voice.ssrc) == str(member.user_id)


def _member_heard(member: Member, user_id: int) -> bool:
    return len(member.speech_from(user_id)) >= FRAMES


def _node_heard(peer: NodePeer, user_id: int) -> bool:
    return len(_speech(peer.packets[str(user_id)])) >= FRAMES


def _speech(packets: list[bytes]) -> list[bytes]:
    return [p for p in packets if p != SILENCE]


def _assert_relayed_e2ee(member: Member, ssrc: int, plain: list[bytes]) -> None:
    """What the relay delivered for ``ssrc`` was DAVE ciphertext of ``plain``."""
    raw = [p for p in member.raw[ssrc] if p != SILENCE]
    assert len(raw) >= len(plain)
    for sealed, frame in zip(raw, plain, strict=False):
        assert has_dave_trailer(sealed) and sealed.endswith(b"\xfa\xfa")
        assert sealed != frame
        assert len(parse_dave_frame(sealed).ciphertext) == len(frame)


async def test_three_members_with_discordjs_decode_each_other(
    clock: MediaClock,
) -> None:
    """Two voicesim clients and an @discordjs/voice bot in one DAVE group hear each other."""
    speech = opus_test_frames(3 * FRAMES)
    frames_a, frames_b, frames_c = (
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
            NodePeer.start(info, "bot-3") as c,
        ):
            joined = await c.join(guild.id, channel.id, dave=True, self_deaf=False)
            assert joined["dave_protocol_version"] == 1
            c_id, c_ssrc = int(c.user_id), joined["ssrc"]
            everyone = {a.user_id, b.user_id, c_id}
            for member in (a, b):
                await wait_until(partial(_in_group, member, everyone))
            status = await c.poll_status(lambda s: _node_in_group(s, everyone))
            group = emu.group()
            await wait_until(lambda: not group.pending_transitions)
            codes = {
                a.voice.dave.voice_privacy_code,  # type: ignore[union-attr]
                b.voice.dave.voice_privacy_code,  # type: ignore[union-attr]
                status["dave"]["privacy_code"],
            }
            assert len(codes) == 1 and None not in codes

            # @discordjs/voice drops packets from SSRCs it has not mapped, and the
            # relay's first packet can overtake the op 5 that maps it; so register
            # the SSRCs first with speaking 0, as discord.py does after connecting.
            await c.subscribe(a.user_id)
            await c.subscribe(b.user_id)
            for member in (a, b):
                await member.voice.stop_speaking()
                await c.wait_until(partial(_node_maps, c, member))

            # The other way needs no help: @discordjs/voice sends its op 5 back to
            # back with its first packet, and the voicesim clients hold the frames
            # of an SSRC no op 5 has named yet until one does.
            speech_a = await a.voice.speak(frames_a)
            speech_b = await b.voice.speak(frames_b)
            played = await c.play(frames_c)
            assert played["frames"] == FRAMES
            await speech_a.wait()
            await speech_b.wait()
            for member in (a, b):
                await wait_until(partial(_member_heard, member, c_id))
            for sender in (a, b):
                await c.wait_until(partial(_node_heard, c, sender.user_id))

            assert a.speech_from(b.user_id) == frames_b
            assert a.speech_from(c_id) == frames_c
            assert b.speech_from(a.user_id) == frames_a
            assert b.speech_from(c_id) == frames_c
            assert _speech(c.packets[str(a.user_id)]) == frames_a
            assert _speech(c.packets[str(b.user_id)]) == frames_b

            # The relay only ever carried DAVE ciphertext, whoever sent it.
            _assert_relayed_e2ee(a, b.voice.ssrc, frames_b)
            _assert_relayed_e2ee(a, c_ssrc, frames_c)
            _assert_relayed_e2ee(b, a.voice.ssrc, frames_a)
            _assert_relayed_e2ee(b, c_ssrc, frames_c)
            for member in (a, b):
                assert member.voice.stats.dave_decrypt_failures == 0
                assert member.voice.stats.dave_unnamed_dropped == 0
            status = await c.status()
            assert status["dave"]["encrypted_frames"] >= FRAMES
            assert status["dave"]["encrypt_failures"] == 0
            for sender in (a, b):
                assert status["decrypted"][str(sender.user_id)]["successes"] >= FRAMES
            assert not c.errors()
        nursery.cancel_scope.cancel()
    assert emu.group().stats.invalid_commits == 0
