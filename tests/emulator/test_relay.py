"""The UDP relay: discovery, keepalives, per-hop re-encryption, and what it drops."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import trio

from tests.emulator._channel import granted, in_voice
from tests.emulator._peers import VoicePeer, opus_test_frames
from voicesim.emulator import Emulator, EmulatorInfo
from voicesim.protocol._discovery import build_discovery_request, build_keepalive
from voicesim.protocol._transport import seal_rtp
from voicesim.protocol._voice_gateway import Identify, Ready, Speaking

AES = "aead_aes256_gcm_rtpsize"
XCHACHA = "aead_xchacha20_poly1305_rtpsize"


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition on the emulator's state (its counters move as packets land)."""
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.005)


@asynccontextmanager
async def members(info: EmulatorInfo, *modes: str) -> AsyncIterator[list[VoicePeer]]:
    """bot-1, bot-2... in the first guild's voice channel, one per mode, each seeing all."""
    async with AsyncExitStack() as stack:
        peers = [
            await stack.enter_async_context(in_voice(info, f"bot-{i + 1}", mode=mode))
            for i, mode in enumerate(modes)
        ]
        yield peers


def nonce_of(datagram: bytes) -> int:
    value: int = struct.unpack(">I", datagram[-4:])[0]
    return value


async def test_discovery_reply_is_74_bytes_with_the_senders_address(
    emulator: Emulator,
) -> None:
    """A discovery request for one's own SSRC gets the 74-byte reply naming its address."""
    info = emulator.info
    async with (
        granted(info, "bot-1") as (_, grant),
        VoicePeer.connect(info, grant, handshake=False) as peer,
    ):
        await peer.send(
            Identify(
                server_id=str(grant.guild_id),
                user_id=str(grant.user_id),
                session_id=grant.session_id,
                token=grant.token,
            )
        )
        ready = await peer.wait_for(Ready)
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
            await sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            await sock.sendto(
                build_discovery_request(ready.ssrc), (ready.ip, ready.port)
            )
            with trio.fail_after(10):
                reply = await sock.recv(2048)
    assert len(reply) == 74
    kind, length, ssrc = struct.unpack_from(">HHI", reply)
    assert (kind, length, ssrc) == (2, 70, ready.ssrc)
    assert reply[8:72].rstrip(b"\x00") == b"127.0.0.1"
    assert struct.unpack_from(">H", reply, 72)[0] == port
    assert emulator.counters.discovery_replies == 1


async def test_frames_are_reencrypted_for_each_member_and_never_echoed(
    emulator: Emulator,
) -> None:
    """Each receiver gets every frame under its own key and counter, SSRC and seq kept."""
    info = emulator.info
    frames = opus_test_frames(20)
    async with members(info, XCHACHA, AES, XCHACHA) as (alice, bob, carol):
        await alice.speak(1)
        await bob.wait_for(Speaking, lambda m: m.ssrc == alice.ssrc)
        await carol.wait_for(Speaking, lambda m: m.ssrc == alice.ssrc)
        sent = [await alice.send_frame(f) for f in frames]

        for receiver in (bob, carol):
            assert await receiver.wait_frames(alice.ssrc, len(frames)) == frames
            got = [p for p in receiver.received if p.ssrc == alice.ssrc]
            assert [(p.seq, p.rtp_timestamp) for p in got] == [
                struct.unpack_from(">HI", d, 2) for d in sent
            ]
            # The relay's own counter towards this receiver, from 1.
            assert [nonce_of(d) for d in receiver.raw_received] == list(range(1, 21))
        # Same plaintext, different keys: the ciphertexts differ per hop.
        assert bob.raw_received[0] != carol.raw_received[0] != sent[0]

        await bob.speak(1)
        await carol.wait_for(Speaking, lambda m: m.ssrc == bob.ssrc)
        for frame in frames[:5]:
            await bob.send_frame(frame)
        assert await alice.wait_frames(bob.ssrc, 5) == frames[:5]
        assert await carol.wait_frames(bob.ssrc, 5) == frames[:5]
        assert [nonce_of(d) for d in carol.raw_received[20:]] == list(range(21, 26))
        await until(lambda: emulator.counters.relayed_packets == 25)

        assert [p for p in alice.received if p.ssrc == alice.ssrc] == []
        assert [p for p in bob.received if p.ssrc == bob.ssrc] == []
    counters = emulator.counters
    assert counters.forwarded_packets == 20 * 2 + 5 * 2
    assert counters.dropped_total == 0


async def test_audio_before_speaking_is_dropped_and_counted(emulator: Emulator) -> None:
    """An SSRC that never sent op 5 is not relayed; after op 5 its audio flows."""
    info = emulator.info
    frames = opus_test_frames(6)
    async with members(info, AES, AES) as (alice, bob):
        for frame in frames[:3]:
            await alice.send_frame(frame)
        await until(lambda: emulator.counters.dropped.get("not_speaking") == 3)

        await alice.speak(1)
        await bob.wait_for(Speaking, lambda m: m.ssrc == alice.ssrc)
        for frame in frames[3:]:
            await alice.send_frame(frame)
        assert await bob.wait_frames(alice.ssrc, 3) == frames[3:]
        await until(lambda: emulator.counters.relayed_packets == 3)
        assert [p.payload for p in bob.received] == frames[3:]


async def test_audio_just_before_speaking_is_held_and_relayed_in_order(
    emulator: Emulator,
) -> None:
    """Packets that beat their op 5 to the emulator are relayed once it lands, in order."""
    info = emulator.info
    frames = opus_test_frames(5)
    async with members(info, AES, AES) as (alice, bob):
        # @discordjs/voice sends op 5 and its first packet back to back; here the
        # packets win the race on purpose.
        for frame in frames[:2]:
            await alice.send_frame(frame)
        member = emulator.relay.members[alice.ssrc]
        await until(lambda: len(member.held) == 2)

        await alice.speak(1)
        for frame in frames[2:]:
            await alice.send_frame(frame)
        assert await bob.wait_frames(alice.ssrc, 5) == frames
        assert [p.seq for p in bob.received] == [1, 2, 3, 4, 5]
        await until(lambda: emulator.counters.relayed_packets == 5)
    assert emulator.counters.dropped_total == 0


async def test_forged_and_broken_datagrams_are_dropped_and_counted(
    emulator: Emulator,
) -> None:
    """Bad tags, foreign addresses, unknown SSRCs and junk are counted, never relayed."""
    info = emulator.info
    frames = opus_test_frames(4)
    async with members(info, XCHACHA, AES) as (alice, bob):
        await alice.speak(1)
        await bob.wait_for(Speaking, lambda m: m.ssrc == alice.ssrc)
        assert alice.cipher is not None
        relay = (info.udp_host, info.udp_port)

        await alice.send_frame(frames[0])
        assert await bob.wait_frames(alice.ssrc, 1) == frames[:1]

        # Alice's own socket: a flipped ciphertext bit, junk, a keepalive, RTCP.
        good = seal_rtp(alice.cipher, 500, 960 * 500, alice.ssrc, frames[1], 900)
        tampered = bytearray(good)
        tampered[14] ^= 0x01
        await alice.sock.send(bytes(tampered))
        await alice.sock.send(b"\x80\x78" + b"\x00" * 3)
        await alice.sock.send(b"hello relay")
        await alice.sock.send(build_keepalive(7))
        await alice.sock.send(b"\x80\xc8" + bytes(40))

        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as forger:
            await forger.bind(("127.0.0.1", 0))
            # A correctly sealed packet from an address that did no discovery for it.
            await forger.sendto(good, relay)
            # An SSRC nobody holds, and discovery for it and for Alice's SSRC.
            await forger.sendto(
                seal_rtp(alice.cipher, 1, 960, 12345, frames[1], 901), relay
            )
            await forger.sendto(build_discovery_request(12345), relay)
            await forger.sendto(build_discovery_request(alice.ssrc), relay)

            expected = {
                "auth_failed": 1,
                "malformed": 2,
                "rtcp": 1,
                "wrong_address": 1,
                "unknown_ssrc": 1,
                "discovery_unknown_ssrc": 1,
                "discovery_conflict": 1,
            }
            await until(lambda: dict(emulator.counters.dropped) == expected)
        assert emulator.counters.keepalives == 1

        # Alice is unharmed: her next frames still reach Bob, and nothing else did.
        for frame in frames[2:]:
            await alice.send_frame(frame)
        await bob.wait_frames(alice.ssrc, 3)
        assert [p.payload for p in bob.received] == [frames[0], *frames[2:]]
        assert alice.received == []
    assert emulator.counters.discovery_replies == 2


async def test_audio_before_select_protocol_is_dropped_as_no_session(
    emulator: Emulator,
) -> None:
    """A member that did discovery but has no key yet cannot inject audio."""
    info = emulator.info
    async with (
        in_voice(info, "bot-2") as listener,
        granted(info, "bot-1") as (_, grant),
        VoicePeer.connect(info, grant, handshake=False) as early,
    ):
        await early.send(
            Identify(
                server_id=str(grant.guild_id),
                user_id=str(grant.user_id),
                session_id=grant.session_id,
                token=grant.token,
            )
        )
        ready = await early.wait_for(Ready)
        await early.sock.bind(("127.0.0.1", 0))
        await early.sock.connect((ready.ip, ready.port))
        await early.sock.send(build_discovery_request(ready.ssrc))
        with trio.fail_after(10):
            await early.sock.recv(2048)
        assert listener.cipher is not None
        await early.sock.send(
            seal_rtp(listener.cipher, 1, 960, ready.ssrc, b"\xf8\xff\xfe", 0)
        )
        await until(lambda: emulator.counters.dropped.get("no_session") == 1)
        assert listener.received == []
