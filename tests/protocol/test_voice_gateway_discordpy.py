"""Interop with the installed discord.py's voice websocket code.

discord.py's ``DiscordVoiceWebSocket`` builds its payloads inside coroutines that only
await the socket's ``send_str``/``send_bytes``. With a socket whose sends just record,
those coroutines finish on their first step, so they run here without an event loop:
what discord.py would send is decoded by voicesim, and what voicesim's server side
encodes is fed to discord.py's own receive handlers.
"""

from __future__ import annotations

import types
from collections.abc import Coroutine
from typing import Any

import davey
import pytest
from discord import utils
from discord.enums import SpeakingState
from discord.gateway import DiscordVoiceWebSocket, VoiceKeepAliveHandler
from discord.voice_state import VoiceConnectionState

from voicesim.protocol._voice_gateway import (
    DaveExecuteTransition,
    DaveMlsAnnounceCommitTransition,
    DaveMlsExternalSender,
    DaveMlsInvalidCommitWelcome,
    DaveMlsKeyPackage,
    DaveMlsProposals,
    DaveMlsWelcome,
    DavePrepareTransition,
    DaveTransitionReady,
    Heartbeat,
    HeartbeatAck,
    Identify,
    Resume,
    SelectProtocol,
    SessionDescription,
    Speaking,
    UnknownVoiceMessage,
    VoiceMessage,
    decode_voice_message,
    encode_voice_message,
)

GUILD_ID = 41771983423143937
USER_ID = 104694319306248192
SSRC = 0xDEADBEEF
KEY = bytes(range(32))


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends, and return its result."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise AssertionError("the coroutine waited on something; the fakes are incomplete")


class RecordingSocket:
    """Stands in for aiohttp's websocket: keeps every frame discord.py sends."""

    def __init__(self) -> None:
        self.sent: list[str | bytes] = []

    async def send_str(self, data: str) -> None:
        self.sent.append(data)

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)


class RecordingDaveSession:
    """Stands in for davey.DaveSession; records what discord.py hands it."""

    def __init__(self, *, fail: bool = False) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail = fail

    def set_external_sender(self, data: bytes) -> None:
        self.calls.append(("set_external_sender", bytes(data)))

    def process_proposals(self, operation_type: Any, data: bytes) -> None:
        self.calls.append(("process_proposals", operation_type, bytes(data)))

    def process_commit(self, data: bytes) -> None:
        self.calls.append(("process_commit", bytes(data)))
        if self.fail:
            raise ValueError("commit does not apply")

    def process_welcome(self, data: bytes) -> None:
        self.calls.append(("process_welcome", bytes(data)))


class FakeConnectionState:
    """The parts of discord.py's VoiceConnectionState the websocket reads.

    The DAVE transition and recovery methods are discord.py's own.
    """

    _execute_transition = VoiceConnectionState._execute_transition
    _recover_from_invalid_commit = VoiceConnectionState._recover_from_invalid_commit

    def __init__(self, ws: DiscordVoiceWebSocket) -> None:
        self.server_id = GUILD_ID
        self.user = types.SimpleNamespace(id=USER_ID)
        self.session_id = "d2b6c5a9f0e14c0b"
        self.token = "voice-token"
        self.max_dave_protocol_version = davey.DAVE_PROTOCOL_VERSION
        self.ssrc = SSRC
        self.mode = ""
        self.secret_key: list[int] = []
        self.dave_session = RecordingDaveSession()
        self.dave_protocol_version = 1
        self.dave_pending_transitions: dict[int, int] = {}
        self.dave_downgraded = False
        self.reinits = 0
        self.voice_client = types.SimpleNamespace(ws=ws)

    async def reinit_dave_session(self) -> None:
        self.reinits += 1


@pytest.fixture
def socket() -> RecordingSocket:
    return RecordingSocket()


@pytest.fixture
def ws(socket: RecordingSocket) -> DiscordVoiceWebSocket:
    aiohttp_socket: Any = socket
    loop: Any = None
    ws = DiscordVoiceWebSocket(aiohttp_socket, loop=loop)
    state: Any = FakeConnectionState(ws)
    ws._connection = state
    ws.seq_ack = 41
    return ws


def fake_state(ws: DiscordVoiceWebSocket) -> FakeConnectionState:
    state: Any = ws._connection
    assert isinstance(state, FakeConnectionState)
    return state


def server_binary(message: VoiceMessage, seq: int) -> bytes:
    frame = encode_voice_message(message, seq=seq)
    assert isinstance(frame, bytes)
    return frame


def only_sent(socket: RecordingSocket, *, from_server: bool = False) -> VoiceMessage:
    """Decode the one frame discord.py sent."""
    assert len(socket.sent) == 1
    message, seq = decode_voice_message(socket.sent[0], from_server=from_server)
    assert seq is None
    return message


def test_discordpy_identify_decodes(
    ws: DiscordVoiceWebSocket, socket: RecordingSocket
) -> None:
    """discord.py's voice Identify decodes with its ids as strings and DAVE version 1."""
    run_sync(ws.identify())
    assert only_sent(socket) == Identify(
        server_id=str(GUILD_ID),
        user_id=str(USER_ID),
        session_id="d2b6c5a9f0e14c0b",
        token="voice-token",
        max_dave_protocol_version=davey.DAVE_PROTOCOL_VERSION,
    )


def test_discordpy_resume_decodes(
    ws: DiscordVoiceWebSocket, socket: RecordingSocket
) -> None:
    """discord.py's voice Resume carries the last seq it saw as seq_ack."""
    run_sync(ws.resume())
    assert only_sent(socket) == Resume(
        server_id=str(GUILD_ID),
        session_id="d2b6c5a9f0e14c0b",
        token="voice-token",
        seq_ack=41,
    )


def test_discordpy_select_protocol_decodes(
    ws: DiscordVoiceWebSocket, socket: RecordingSocket
) -> None:
    """discord.py's Select Protocol nests address, port and mode under data."""
    run_sync(
        ws.select_protocol("203.0.113.7", 50123, "aead_xchacha20_poly1305_rtpsize")
    )
    assert only_sent(socket) == SelectProtocol(
        address="203.0.113.7", port=50123, mode="aead_xchacha20_poly1305_rtpsize"
    )


@pytest.mark.parametrize("state", [SpeakingState.none, SpeakingState.voice])
def test_discordpy_speaking_decodes(
    ws: DiscordVoiceWebSocket, socket: RecordingSocket, state: SpeakingState
) -> None:
    """discord.py's Speaking is the client form: a bitmask, delay 0 and the SSRC."""
    run_sync(ws.speak(state))
    assert only_sent(socket) == Speaking(speaking=int(state), ssrc=SSRC, delay=0)


def test_discordpy_heartbeat_decodes(ws: DiscordVoiceWebSocket) -> None:
    """discord.py's v8 heartbeat is a millisecond nonce plus seq_ack."""
    handler: Any = types.SimpleNamespace(ws=ws)
    payload = VoiceKeepAliveHandler.get_payload(handler)
    message, _ = decode_voice_message(utils._to_json(payload), from_server=False)
    assert message == Heartbeat(t=payload["d"]["t"], seq_ack=41)


def test_discordpy_client_connect_decodes_as_unknown(
    ws: DiscordVoiceWebSocket, socket: RecordingSocket
) -> None:
    """discord.py's unused op 12 decodes as an unknown message, not an error."""
    run_sync(ws.client_connect())
    assert only_sent(socket) == UnknownVoiceMessage(op=12, d={"audio_ssrc": SSRC})


def test_discordpy_key_package_decodes(
    ws: DiscordVoiceWebSocket, socket: RecordingSocket
) -> None:
    """discord.py's binary key package is [op 26][key package] with no seq."""
    run_sync(ws.send_binary(DiscordVoiceWebSocket.MLS_KEY_PACKAGE, b"\x00\x01kp"))
    assert only_sent(socket) == DaveMlsKeyPackage(data=b"\x00\x01kp")


def test_discordpy_reads_session_description(
    ws: DiscordVoiceWebSocket, socket: RecordingSocket
) -> None:
    """discord.py takes mode, key and DAVE version from our op 4, then sends Speaking 0."""
    state = fake_state(ws)
    frame = encode_voice_message(
        SessionDescription(mode="aead_xchacha20_poly1305_rtpsize", secret_key=KEY),
        seq=3,
    )
    run_sync(ws.received_message(utils._from_json(frame)))
    assert state.mode == "aead_xchacha20_poly1305_rtpsize"
    assert bytes(state.secret_key) == KEY
    assert state.dave_protocol_version == 0
    assert ws.seq_ack == 3
    assert only_sent(socket) == Speaking(speaking=0, ssrc=SSRC, delay=0)


def test_discordpy_reads_dave_transitions(
    ws: DiscordVoiceWebSocket, socket: RecordingSocket
) -> None:
    """discord.py answers our op 21 with op 23 and applies it on our op 22."""
    state = fake_state(ws)
    prepare = encode_voice_message(
        DavePrepareTransition(protocol_version=1, transition_id=9), seq=10
    )
    run_sync(ws.received_message(utils._from_json(prepare)))
    assert only_sent(socket) == DaveTransitionReady(transition_id=9)
    assert state.dave_pending_transitions == {9: 1}

    execute = encode_voice_message(DaveExecuteTransition(transition_id=9), seq=11)
    run_sync(ws.received_message(utils._from_json(execute)))
    assert state.dave_pending_transitions == {}
    assert ws.seq_ack == 11


def test_discordpy_reads_heartbeat_ack(ws: DiscordVoiceWebSocket) -> None:
    """A v8 Heartbeat ACK without seq leaves discord.py's seq_ack alone."""
    run_sync(
        ws.received_message(utils._from_json(encode_voice_message(HeartbeatAck(t=5))))
    )
    assert ws.seq_ack == 41


@pytest.mark.parametrize(
    ("message", "expected_call"),
    [
        (DaveMlsExternalSender(data=b"ext"), ("set_external_sender", b"ext")),
        (
            DaveMlsProposals(operation_type=0, data=b"props"),
            ("process_proposals", davey.ProposalsOperationType.append, b"props"),
        ),
        (
            DaveMlsProposals(operation_type=1, data=b"refs"),
            ("process_proposals", davey.ProposalsOperationType.revoke, b"refs"),
        ),
    ],
)
def test_discordpy_reads_server_binary_frames(
    ws: DiscordVoiceWebSocket,
    socket: RecordingSocket,
    message: VoiceMessage,
    expected_call: tuple[Any, ...],
) -> None:
    """discord.py finds the seq, op and fields of our binary frames where we put them."""
    run_sync(ws.received_binary_message(server_binary(message, 0xBEEF)))
    assert ws.seq_ack == 0xBEEF
    assert fake_state(ws).dave_session.calls == [expected_call]
    assert socket.sent == []


@pytest.mark.parametrize(
    ("message", "method"),
    [
        (
            DaveMlsAnnounceCommitTransition(transition_id=0x0102, data=b"commit"),
            "process_commit",
        ),
        (DaveMlsWelcome(transition_id=0x0102, data=b"welcome"), "process_welcome"),
    ],
)
def test_discordpy_reads_transition_binary_frames(
    ws: DiscordVoiceWebSocket, socket: RecordingSocket, message: Any, method: str
) -> None:
    """discord.py reads our u16 transition id and answers with op 23 for it."""
    run_sync(ws.received_binary_message(server_binary(message, 7)))
    assert fake_state(ws).dave_session.calls == [(method, message.data)]
    assert only_sent(socket) == DaveTransitionReady(transition_id=0x0102)


def test_discordpy_invalid_commit_sends_op_31(
    ws: DiscordVoiceWebSocket, socket: RecordingSocket
) -> None:
    """A commit discord.py cannot apply makes it send op 31, which we decode."""
    fake_state(ws).dave_session = RecordingDaveSession(fail=True)
    bad_commit = DaveMlsAnnounceCommitTransition(transition_id=5, data=b"bad")
    run_sync(ws.received_binary_message(server_binary(bad_commit, 1)))
    assert only_sent(socket) == DaveMlsInvalidCommitWelcome(transition_id=5)
    assert fake_state(ws).reinits == 1
