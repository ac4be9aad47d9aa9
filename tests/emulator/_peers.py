"""Small trio clients for the emulator tests, built on voicesim.protocol.

:class:`GatewayPeer` logs a bot in over the main gateway and asks to join voice;
:class:`VoicePeer` runs the voice side: the voice gateway over wss (trusting the
emulator's CA), IP discovery, Select Protocol, and then sends or receives RTP. They are
deliberately plain, so a test failure points at the emulator, not at a client.
"""

from __future__ import annotations

import json
import math
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
import trio_websocket

from voicesim.emulator import EmulatorInfo, emulator_ssl_context
from voicesim.protocol._discovery import (
    build_discovery_request,
    parse_discovery_response,
)
from voicesim.protocol._gateway import (
    GatewayIdentify,
    GatewayPayload,
    UpdateVoiceState,
    decode_gateway_payload,
    encode_gateway_payload,
)
from voicesim.protocol._transport import (
    NonceCounter,
    ReceivedRtp,
    TransportCipher,
    open_rtp,
    seal_rtp,
)
from voicesim.protocol._voice_gateway import (
    Hello,
    Identify,
    Ready,
    SelectProtocol,
    SessionDescription,
    Speaking,
    VoiceMessage,
    decode_voice_message,
    encode_voice_message,
)

# GUILDS, GUILD_VOICE_STATES, GUILD_MESSAGES, MESSAGE_CONTENT
DEFAULT_INTENTS = 1 | 1 << 7 | 1 << 9 | 1 << 15
TIMEOUT = 10.0


@attrs.frozen(kw_only=True)
class VoiceGrant:
    """What the two voice dispatches hand a client."""

    guild_id: int
    channel_id: int
    user_id: int
    session_id: str
    token: str
    endpoint: str


class GatewayPeer:
    """A main gateway client that records every dispatch."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, user_id: int) -> None:
        self.ws = ws
        self.user_id = user_id
        self.dispatches: list[GatewayPayload] = []
        self.others: list[GatewayPayload] = []
        self._changed = trio.Condition()
        self.closed: trio_websocket.CloseReason | None = None

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        info: EmulatorInfo,
        user_name: str,
        *,
        intents: int = DEFAULT_INTENTS,
        identify: bool = True,
    ) -> AsyncIterator[GatewayPeer]:
        user = info.user(user_name)
        async with trio_websocket.open_websocket_url(info.gateway_url) as ws:
            peer = cls(ws, user.id)
            hello = decode_gateway_payload(await ws.get_message())
            assert hello.op == 10
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer._read)
                if identify:
                    await peer.send(
                        GatewayIdentify(
                            token=user.token, intents=intents, properties={}
                        ).to_payload()
                    )
                    await peer.wait_for("READY")
                yield peer
                nursery.cancel_scope.cancel()

    async def send(self, payload: GatewayPayload) -> None:
        await self.ws.send_message(encode_gateway_payload(payload))

    async def _read(self) -> None:
        while True:
            try:
                message = await self.ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                self.closed = exc.reason
                async with self._changed:
                    self._changed.notify_all()
                return
            payload = decode_gateway_payload(message)
            async with self._changed:
                if payload.op == 0:
                    self.dispatches.append(payload)
                else:
                    self.others.append(payload)
                self._changed.notify_all()

    async def wait_until(self, check: Callable[[], Any]) -> Any:
        with trio.fail_after(TIMEOUT):
            async with self._changed:
                while not (result := check()):
                    if self.closed is not None:
                        raise AssertionError(f"gateway closed: {self.closed}")
                    await self._changed.wait()
                return result

    async def wait_for(
        self,
        event: str,
        where: Callable[[Any], bool] = lambda d: True,
        *,
        after: int = 0,
    ) -> Any:
        def find() -> Any:
            for payload in self.dispatches[after:]:
                if payload.t == event and where(payload.d):
                    return payload.d
            return None

        return await self.wait_until(find)

    async def wait_closed(self) -> trio_websocket.CloseReason:
        with trio.fail_after(TIMEOUT):
            async with self._changed:
                while self.closed is None:
                    await self._changed.wait()
                return self.closed

    async def join_voice(self, guild_id: int, channel_id: int) -> VoiceGrant:
        mark = len(self.dispatches)
        await self.send(
            UpdateVoiceState(guild_id=guild_id, channel_id=channel_id).to_payload()
        )
        me = str(self.user_id)
        state = await self.wait_for(
            "VOICE_STATE_UPDATE",
            lambda d: d["user_id"] == me and d["channel_id"] == str(channel_id),
            after=mark,
        )
        server = await self.wait_for("VOICE_SERVER_UPDATE", after=mark)
        return VoiceGrant(
            guild_id=guild_id,
            channel_id=channel_id,
            user_id=self.user_id,
            session_id=state["session_id"],
            token=server["token"],
            endpoint=server["endpoint"],
        )


class VoicePeer:
    """One voice connection: handshake, then send and receive Opus frames."""

    def __init__(
        self, ws: trio_websocket.WebSocketConnection, grant: VoiceGrant
    ) -> None:
        self.ws = ws
        self.grant = grant
        self.messages: list[tuple[VoiceMessage, int | None]] = []
        self.seq_ack = -1
        self.ssrc = 0
        self.cipher: TransportCipher | None = None
        self.sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        self.received: list[ReceivedRtp] = []
        # The datagrams as they arrived, for tests that look at nonces or headers.
        self.raw_received: list[bytes] = []
        self.closed: trio_websocket.CloseReason | None = None
        self._changed = trio.Condition()
        self._nonce = NonceCounter(0)
        self._seq = 0

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        info: EmulatorInfo,
        grant: VoiceGrant,
        *,
        mode: str = "aead_aes256_gcm_rtpsize",
        max_dave_protocol_version: int = 0,
        handshake: bool = True,
    ) -> AsyncIterator[VoicePeer]:
        context: ssl.SSLContext | None = (
            emulator_ssl_context(info) if info.voice_tls else None
        )
        scheme = "wss" if info.voice_tls else "ws"
        url = f"{scheme}://{grant.endpoint}/?v=8"
        async with trio_websocket.open_websocket_url(url, ssl_context=context) as ws:
            peer = cls(ws, grant)
            with peer.sock:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(peer._read)
                    await peer.wait_for(Hello)
                    if handshake:
                        await peer.handshake(nursery, mode, max_dave_protocol_version)
                    yield peer
                    nursery.cancel_scope.cancel()

    async def handshake(
        self, nursery: trio.Nursery, mode: str, max_dave_protocol_version: int
    ) -> None:
        grant = self.grant
        await self.send(
            Identify(
                server_id=str(grant.guild_id),
                user_id=str(grant.user_id),
                session_id=grant.session_id,
                token=grant.token,
                max_dave_protocol_version=max_dave_protocol_version,
            )
        )
        ready = await self.wait_for(Ready)
        self.ssrc = ready.ssrc

        await self.sock.bind(("127.0.0.1", 0))
        await self.sock.sendto(
            build_discovery_request(ready.ssrc), (ready.ip, ready.port)
        )
        with trio.fail_after(TIMEOUT):
            data = await self.sock.recv(2048)
        _, address, port = parse_discovery_response(data)
        await self.sock.connect((ready.ip, ready.port))

        await self.send(SelectProtocol(address=address, port=port, mode=mode))
        description = await self.wait_for(SessionDescription)
        self.cipher = TransportCipher(description.mode, description.secret_key)
        nursery.start_soon(self._receive_udp)

    async def send(self, message: VoiceMessage) -> None:
        await self.ws.send_message(encode_voice_message(message))

    async def send_raw(self, frame: str | bytes) -> None:
        await self.ws.send_message(frame)

    async def speak(self, speaking: int = 1) -> None:
        await self.send(Speaking(speaking=speaking, ssrc=self.ssrc, delay=0))

    async def send_frame(self, payload: bytes) -> bytes:
        """Seal and send one Opus frame; returns the datagram."""
        assert self.cipher is not None
        self._seq += 1
        packet = seal_rtp(
            self.cipher,
            self._seq & 0xFFFF,
            (self._seq * 960) & 0xFFFFFFFF,
            self.ssrc,
            payload,
            self._nonce.next(),
        )
        await self.sock.send(packet)
        return packet

    async def _read(self) -> None:
        while True:
            try:
                frame = await self.ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                self.closed = exc.reason
                async with self._changed:
                    self._changed.notify_all()
                return
            message, seq = decode_voice_message(frame, from_server=True)
            async with self._changed:
                if seq is not None:
                    self.seq_ack = seq
                self.messages.append((message, seq))
                self._changed.notify_all()

    async def _receive_udp(self) -> None:
        assert self.cipher is not None
        while True:
            data = await self.sock.recv(2048)
            packet = open_rtp(self.cipher, data)
            async with self._changed:
                self.raw_received.append(data)
                self.received.append(packet)
                self._changed.notify_all()

    async def wait_until(
        self, check: Callable[[], Any], timeout: float = TIMEOUT
    ) -> Any:
        with trio.fail_after(timeout):
            async with self._changed:
                while not (result := check()):
                    if self.closed is not None:
                        raise AssertionError(f"voice gateway closed: {self.closed}")
                    await self._changed.wait()
                return result

    async def wait_for(
        self, kind: type[Any], where: Callable[[Any], bool] = lambda m: True
    ) -> Any:
        def find() -> Any:
            for message, _ in self.messages:
                if isinstance(message, kind) and where(message):
                    return message
            return None

        return await self.wait_until(find)

    async def wait_closed(self) -> trio_websocket.CloseReason:
        with trio.fail_after(TIMEOUT):
            async with self._changed:
                while self.closed is None:
                    await self._changed.wait()
                return self.closed

    async def wait_frames(
        self, ssrc: int, count: int, timeout: float = TIMEOUT
    ) -> list[bytes]:
        """The payloads of the first ``count`` packets received from ``ssrc``."""

        def enough() -> list[bytes] | None:
            got = [p.payload for p in self.received if p.ssrc == ssrc]
            return got[:count] if len(got) >= count else None

        result: list[bytes] = await self.wait_until(enough, timeout)
        return result


def opus_test_frames(count: int) -> list[bytes]:
    """``count`` distinct Opus frames: a fixture's speech, or a synthetic sweep."""
    try:
        from voicesim.media import load_fixtures

        fixture = load_fixtures().utterances[0]
        frames = list(fixture.frames[fixture.first_voiced_frame :])
        if len(frames) >= count:
            return frames[:count]
    except Exception:
        pass
    import numpy as np

    from voicesim.media import encode_pcm

    t = np.arange(count * 960) / 48000
    tone = 0.3 * np.sin(2 * math.pi * (200 + 400 * t) * t)
    pcm = (np.stack([tone, tone], axis=1) * 32767).astype(np.int16)
    return list(encode_pcm(pcm, 48000))[:count]


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
