"""Hypothesis throws malformed and forged input at one running emulator.

Why the test is shaped like this: hypothesis runs each example as a fresh call of the
decorated function, and pytest-trio would give each call its own trio run, so an
emulator started by a fixture could not outlive one example. Instead the trio test
starts the emulator and the legitimate peers itself, then runs the ``@given`` function
in a worker thread (``trio.to_thread``); each example hands its attacks back to the
test's trio loop with ``trio.from_thread.run``. So one emulator serves the whole
hypothesis run, examples stay independent inputs that hypothesis can shrink, and after
every example the test checks that the legitimate listener got every frame so far.
"""

from __future__ import annotations

import json
import logging
import struct
from contextlib import AsyncExitStack
from typing import Any

import attrs
import pytest
import trio
import trio_websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.emulator._channel import granted, in_voice
from tests.emulator._peers import VoiceGrant, VoicePeer, opus_test_frames
from voicesim.emulator import (
    Emulator,
    EmulatorConfig,
    EmulatorInfo,
    World,
    emulator_ssl_context,
)
from voicesim.protocol._gateway import GatewayIdentify, decode_gateway_payload
from voicesim.protocol._voice_gateway import (
    Heartbeat,
    HeartbeatAck,
    Identify,
    decode_voice_message,
    encode_voice_message,
)

EXAMPLES = 30
FRAMES_PER_EXAMPLE = 2
_DISCOVERY_PREFIX = b"\x00\x01\x00\x46"
# Over both gateways' payload limits (4 KiB and 1 MiB), under the WebSocket
# library's own.
HUGE = (1 << 20) + 100
# What the emulator may close an abusive connection with: the voice and main gateway
# close codes for bad input (an oversized payload is a decode error, 4002).
ALLOWED_CLOSES = {
    4001,
    4002,
    4003,
    4004,
    4005,
    4006,
    4008,
    4011,
    4012,
    4013,
    4014,
    4016,
    4020,
}

# -- strategies --------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["0", "1", "123456789012345678", "udp", "Bot x"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "guild_id",
                    "channel_id",
                    "user_id",
                    "user_ids",
                    "server_id",
                    "session_id",
                    "token",
                    "seq",
                    "seq_ack",
                    "t",
                    "ssrc",
                    "speaking",
                    "protocol",
                    "data",
                    "mode",
                    "address",
                    "port",
                    "intents",
                    "properties",
                    "query",
                    "limit",
                    "nonce",
                    "transition_id",
                ]
            )
            | st.text(max_size=8),
            inner,
            max_size=5,
        )
    ),
    max_leaves=12,
)

json_messages = st.builds(
    lambda op, d, extra: json.dumps({"op": op, "d": d, **extra}),
    st.integers(-3, 40) | st.sampled_from([None, "1", 1.5, True, 2**64]),
    json_values,
    st.dictionaries(st.sampled_from(["seq", "s", "t"]), json_values, max_size=2),
)

ws_frames = st.one_of(
    json_messages,
    st.text(max_size=200),
    st.binary(max_size=200),
    st.builds(
        lambda op, rest: bytes([op]) + rest,
        st.integers(0, 255),
        st.binary(max_size=100),
    ),
    st.integers(1, 3000).map(lambda n: "[" * n),
    st.just("x" * HUGE),
)


@attrs.frozen
class WsAttack:
    target: str  # "voice", "voice_identified", "gateway", "gateway_identified"
    frames: list[str | bytes]


@attrs.frozen
class UdpAttack:
    source: str  # "forger" or "speaker"
    datagram: bytes


def _rtp_like(ssrc_choice: st.SearchStrategy[int]) -> st.SearchStrategy[bytes]:
    return st.builds(
        lambda first, second, seq, ts, ssrc, body: (
            struct.pack(">BBHII", first, second, seq, ts, ssrc) + body
        ),
        st.sampled_from([0x80, 0x90, 0xA0, 0x8F, 0x00, 0xFF]),
        st.sampled_from([0x78, 0xF8, 0xC8, 0x00]) | st.integers(0, 255),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFFFFFF),
        ssrc_choice,
        st.binary(max_size=300),
    )


def udp_attacks(ssrcs: list[int]) -> st.SearchStrategy[UdpAttack]:
    ssrc = st.sampled_from(ssrcs) | st.integers(0, 0xFFFFFFFF)
    datagrams = st.one_of(
        st.binary(max_size=1500),
        st.binary(min_size=8, max_size=8),
        _rtp_like(ssrc),
        st.builds(
            lambda s, rest: _DISCOVERY_PREFIX + struct.pack(">I", s) + rest,
            ssrc,
            st.binary(min_size=66, max_size=66),
        ),
        st.binary(min_size=2049, max_size=3000).map(lambda b: b"\x80\x78" + b),
    )

    def shape(source: str, datagram: bytes) -> UdpAttack:
        if source == "speaker" and datagram.startswith(_DISCOVERY_PREFIX):
            # A discovery from the speaker's own address would be answered (rightly),
            # and the answer would land in the speaker's RTP receive loop.
            datagram = b"\xff" + datagram[1:]
        return UdpAttack(source, datagram)

    return st.builds(shape, st.sampled_from(["forger", "speaker"]), datagrams)


def attacks(ssrcs: list[int]) -> st.SearchStrategy[list[WsAttack | UdpAttack]]:
    ws = st.builds(
        WsAttack,
        st.sampled_from(["voice", "voice_identified", "gateway", "gateway_identified"]),
        st.lists(ws_frames, min_size=1, max_size=4),
    )
    return st.lists(st.one_of(ws, udp_attacks(ssrcs)), min_size=1, max_size=6)


# -- carrying out an attack ----------------------------------------------------------


@attrs.define
class Arena:
    """The running emulator, its legitimate members, and what the attacks did."""

    emulator: Emulator
    speaker: VoicePeer
    listener: VoicePeer
    voice_grant: VoiceGrant
    forger: trio.socket.SocketType
    frames: list[bytes]
    sent: list[bytes] = attrs.Factory(list)
    nonce: int = 10**12
    server_closes: int = 0

    @property
    def info(self) -> EmulatorInfo:
        return self.emulator.info


async def _outcome(ws: trio_websocket.WebSocketConnection, probe: Any) -> int | None:
    """Send a heartbeat after the junk: None if it is acknowledged, else the close code."""
    is_voice, nonce, frame = probe
    try:
        await ws.send_message(frame)
        with trio.fail_after(10):
            while True:
                message = await ws.get_message()
                if is_voice:
                    decoded, _ = decode_voice_message(message, from_server=True)
                    if isinstance(decoded, HeartbeatAck) and decoded.t == nonce:
                        return None
                elif decode_gateway_payload(message).op == 11:
                    return None
    except trio_websocket.ConnectionClosed as exc:
        assert exc.reason is not None
        return exc.reason.code


async def _ws_attack(arena: Arena, attack: WsAttack) -> None:
    info = arena.info
    is_voice = attack.target.startswith("voice")
    arena.nonce += 1
    if is_voice:
        url = f"wss://{info.voice_endpoint}/?v=8"
        context = emulator_ssl_context(info)
        probe_frame = encode_voice_message(Heartbeat(t=arena.nonce, seq_ack=-1))
    else:
        url, context = info.gateway_url, None
        probe_frame = json.dumps({"op": 1, "d": None})

    async with trio_websocket.open_websocket_url(url, ssl_context=context) as ws:
        await ws.get_message()  # Hello
        if attack.target == "voice_identified":
            grant = arena.voice_grant
            await ws.send_message(
                encode_voice_message(
                    Identify(
                        server_id=str(grant.guild_id),
                        user_id=str(grant.user_id),
                        session_id=grant.session_id,
                        token=grant.token,
                    )
                )
            )
        elif attack.target == "gateway_identified":
            identify = GatewayIdentify(
                token=info.user("bot-4").token, intents=1 | 1 << 7, properties={}
            )
            await ws.send_message(json.dumps({"op": 2, "d": identify.to_payload().d}))
        code: int | None = None
        for frame in attack.frames:
            try:
                await ws.send_message(frame)
            except trio_websocket.ConnectionClosed as exc:
                assert exc.reason is not None
                code = exc.reason.code
                break
        if code is None:
            code = await _outcome(ws, (is_voice, arena.nonce, probe_frame))
    if code is not None:
        assert code in ALLOWED_CLOSES, (code, attack)
        arena.server_closes += 1


async def _udp_attack(arena: Arena, attack: UdpAttack) -> None:
    relay = (arena.info.udp_host, arena.info.udp_port)
    if attack.source == "speaker":
        await arena.speaker.sock.send(attack.datagram)
    else:
        await arena.forger.sendto(attack.datagram, relay)


async def run_example(arena: Arena, batch: list[WsAttack | UdpAttack]) -> None:
    """Throw one example's attacks, then prove the channel still works and counts add up."""
    before = arena.emulator.counters
    udp = 0
    for attack in batch:
        if isinstance(attack, UdpAttack):
            udp += 1
            await _udp_attack(arena, attack)
        else:
            await _ws_attack(arena, attack)

    # The same socket carries the junk first and the frames after, so once the
    # listener has the frames the relay has classified every datagram before them.
    for _ in range(FRAMES_PER_EXAMPLE):
        frame = arena.frames[len(arena.sent) % len(arena.frames)]
        await arena.speaker.send_frame(frame)
        arena.sent.append(frame)
    got = await arena.listener.wait_frames(arena.speaker.ssrc, len(arena.sent))
    assert got == arena.sent
    assert [p.ssrc for p in arena.listener.received] == [arena.speaker.ssrc] * len(
        arena.sent
    )
    assert arena.speaker.received == []

    after = arena.emulator.counters
    assert after.relayed_packets - before.relayed_packets == FRAMES_PER_EXAMPLE
    assert after.discovery_replies == before.discovery_replies
    classified = (after.dropped_total - before.dropped_total) + (
        after.keepalives - before.keepalives
    )
    assert classified == udp, (dict(after.dropped), batch)


async def test_malformed_and_forged_input_is_dropped_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Junk datagrams and frames never crash the emulator nor reach a legitimate member."""
    caplog.set_level(logging.WARNING, logger="voicesim")
    config = EmulatorConfig(
        world=World.default(guilds=1, users=4),
        state_file=None,
        max_concurrency=1_000_000,
        session_start_limit=1_000_000,
    )
    async with AsyncExitStack() as stack:
        emu = await stack.enter_async_context(Emulator(config))
        info = emu.info
        speaker = await stack.enter_async_context(in_voice(info, "bot-1"))
        listener = await stack.enter_async_context(in_voice(info, "bot-2"))
        _, grant = await stack.enter_async_context(granted(info, "bot-3"))
        forger = stack.enter_context(
            trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        )
        await forger.bind(("127.0.0.1", 0))
        await speaker.speak(1)
        await listener.wait_until(
            lambda: any(
                getattr(m, "ssrc", None) == speaker.ssrc for m, _ in listener.messages
            )
        )
        arena = Arena(
            emulator=emu,
            speaker=speaker,
            listener=listener,
            voice_grant=grant,
            forger=forger,
            frames=opus_test_frames(10),
        )

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(batch=attacks([speaker.ssrc, listener.ssrc]))
        def throw(batch: list[WsAttack | UdpAttack]) -> None:
            trio.from_thread.run(run_example, arena, batch)

        await trio.to_thread.run_sync(throw)

        # Still a working Discord: a newcomer logs in and joins, and the books balance.
        async with in_voice(info, "bot-4") as newcomer:
            assert newcomer.cipher is not None
        counters = emu.counters
        assert counters.relayed_packets == len(arena.sent)
        assert sum(counters.protocol_errors.values()) >= arena.server_closes
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
