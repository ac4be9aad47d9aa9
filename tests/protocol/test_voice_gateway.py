from __future__ import annotations

import json
from typing import Any

import pytest

from voicesim.protocol._voice_gateway import (
    PROPOSALS_APPEND,
    PROPOSALS_REVOKE,
    ClientDisconnect,
    ClientsConnect,
    DaveExecuteTransition,
    DaveMlsAnnounceCommitTransition,
    DaveMlsCommitWelcome,
    DaveMlsExternalSender,
    DaveMlsInvalidCommitWelcome,
    DaveMlsKeyPackage,
    DaveMlsProposals,
    DaveMlsWelcome,
    DavePrepareEpoch,
    DavePrepareTransition,
    DaveTransitionReady,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Identify,
    Ready,
    Resume,
    Resumed,
    SelectProtocol,
    SessionDescription,
    Speaking,
    SpeakingFlags,
    UnknownVoiceMessage,
    VoiceMessage,
    VoiceOp,
    decode_voice_message,
    encode_voice_message,
)

KEY = bytes(range(100, 132))


KEY_JSON = ",".join(str(b) for b in KEY)

# (message, seq, the JSON text the wire carries). Every JSON opcode with a class
# appears at least once, in the shapes discord.py, discord.js and real servers use.
JSON_VECTORS: list[tuple[VoiceMessage, int | None, str]] = [
    (
        Identify(
            server_id="41771983423143937",
            user_id="104694319306248192",
            session_id="my_session_id",
            token="my_token",
            max_dave_protocol_version=1,
        ),
        None,
        '{"op":0,"d":{"server_id":"41771983423143937","user_id":"104694319306248192",'
        '"session_id":"my_session_id","token":"my_token","max_dave_protocol_version":1}}',
    ),
    (
        SelectProtocol(address="127.0.0.1", port=1337, mode="aead_aes256_gcm_rtpsize"),
        None,
        '{"op":1,"d":{"protocol":"udp","data":{"address":"127.0.0.1","port":1337,'
        '"mode":"aead_aes256_gcm_rtpsize"}}}',
    ),
    (
        Ready(
            ssrc=1,
            ip="127.0.0.1",
            port=1234,
            modes=("aead_aes256_gcm_rtpsize", "aead_xchacha20_poly1305_rtpsize"),
        ),
        1,
        '{"op":2,"d":{"ssrc":1,"ip":"127.0.0.1","port":1234,"modes":'
        '["aead_aes256_gcm_rtpsize","aead_xchacha20_poly1305_rtpsize"]},"seq":1}',
    ),
    (
        Heartbeat(t=1501184119561, seq_ack=10),
        None,
        '{"op":3,"d":{"t":1501184119561,"seq_ack":10}}',
    ),
    (
        SessionDescription(
            mode="aead_xchacha20_poly1305_rtpsize",
            secret_key=KEY,
            dave_protocol_version=1,
            media_session_id="abc123",
        ),
        2,
        '{"op":4,"d":{"mode":"aead_xchacha20_poly1305_rtpsize","secret_key":['
        + KEY_JSON
        + '],"dave_protocol_version":1,"audio_codec":"opus","media_session_id":"abc123"},'
        '"seq":2}',
    ),
    (
        Speaking(speaking=SpeakingFlags.MICROPHONE, ssrc=1),
        None,
        '{"op":5,"d":{"speaking":1,"delay":0,"ssrc":1}}',
    ),
    (
        Speaking(speaking=5, ssrc=2, delay=None, user_id="80351110224678912"),
        3,
        '{"op":5,"d":{"speaking":5,"ssrc":2,"user_id":"80351110224678912"},"seq":3}',
    ),
    (HeartbeatAck(t=1501184119561), None, '{"op":6,"d":{"t":1501184119561}}'),
    (
        Resume(server_id="41771983423143937", session_id="s", token="tok", seq_ack=10),
        None,
        '{"op":7,"d":{"server_id":"41771983423143937","session_id":"s","token":"tok",'
        '"seq_ack":10}}',
    ),
    (
        Hello(heartbeat_interval=13750),
        None,
        '{"op":8,"d":{"v":8,"heartbeat_interval":13750}}',
    ),
    (
        Hello(heartbeat_interval=41250.5, v=8),
        None,
        '{"op":8,"d":{"v":8,"heartbeat_interval":41250.5}}',
    ),
    (Resumed(), None, '{"op":9,"d":null}'),
    (
        ClientsConnect(user_ids=("1", "18446744073709551615")),
        4,
        '{"op":11,"d":{"user_ids":["1","18446744073709551615"]},"seq":4}',
    ),
    (ClientDisconnect(user_id="99"), 5, '{"op":13,"d":{"user_id":"99"},"seq":5}'),
    (
        DavePrepareTransition(protocol_version=0, transition_id=7),
        6,
        '{"op":21,"d":{"protocol_version":0,"transition_id":7},"seq":6}',
    ),
    (
        DaveExecuteTransition(transition_id=7),
        7,
        '{"op":22,"d":{"transition_id":7},"seq":7}',
    ),
    (DaveTransitionReady(transition_id=7), None, '{"op":23,"d":{"transition_id":7}}'),
    (
        DavePrepareEpoch(protocol_version=1, epoch=1),
        8,
        '{"op":24,"d":{"protocol_version":1,"epoch":1},"seq":8}',
    ),
    (
        DaveMlsInvalidCommitWelcome(transition_id=65535),
        None,
        '{"op":31,"d":{"transition_id":65535}}',
    ),
    (
        UnknownVoiceMessage(op=VoiceOp.CLIENT_FLAGS, d={"user_id": "5", "flags": 2}),
        9,
        '{"op":18,"d":{"user_id":"5","flags":2},"seq":9}',
    ),
    (
        UnknownVoiceMessage(op=20, d={"user_id": "5", "platform": 0}),
        None,
        '{"op":20,"d":{"user_id":"5","platform":0}}',
    ),
    (UnknownVoiceMessage(op=99, d=[1, "x", None]), None, '{"op":99,"d":[1,"x",null]}'),
]


def _vector_id(vector: tuple[VoiceMessage, int | None, str]) -> str:
    return f"op{vector[0].op}-{type(vector[0]).__name__}"


@pytest.mark.parametrize("vector", JSON_VECTORS, ids=_vector_id)
def test_encode_voice_message_json_vector(
    vector: tuple[VoiceMessage, int | None, str],
) -> None:
    """Each JSON message encodes to the documented object, seq at the top level."""
    message, seq, wire = vector
    encoded = encode_voice_message(message, seq=seq)
    assert isinstance(encoded, str)
    assert json.loads(encoded) == json.loads(wire)


@pytest.mark.parametrize("from_server", [True, False])
@pytest.mark.parametrize("vector", JSON_VECTORS, ids=_vector_id)
def test_decode_voice_message_json_vector(
    vector: tuple[VoiceMessage, int | None, str], from_server: bool
) -> None:
    """Each documented JSON text decodes to its message and seq, from either side."""
    message, seq, wire = vector
    assert decode_voice_message(wire, from_server=from_server) == (message, seq)


# (message, seq, frame bytes): server frames carry [u16 seq][op], client frames [op].
BINARY_VECTORS: list[tuple[VoiceMessage, int | None, bytes]] = [
    (DaveMlsExternalSender(data=b"\x01\x02"), 258, bytes.fromhex("0102190102")),
    (DaveMlsKeyPackage(data=b"kp"), None, b"\x1a" + b"kp"),
    (
        DaveMlsProposals(operation_type=PROPOSALS_APPEND, data=b"\xaa\xbb"),
        0,
        bytes.fromhex("00001b00aabb"),
    ),
    (
        DaveMlsProposals(operation_type=PROPOSALS_REVOKE, data=b""),
        65535,
        bytes.fromhex("ffff1b01"),
    ),
    (DaveMlsCommitWelcome(data=b"commit+welcome"), None, b"\x1c" + b"commit+welcome"),
    (
        DaveMlsAnnounceCommitTransition(transition_id=0x1234, data=b"\xcc"),
        7,
        bytes.fromhex("00071d1234cc"),
    ),
    (DaveMlsWelcome(transition_id=1, data=b"w"), 8, bytes.fromhex("00081e0001") + b"w"),
    (UnknownVoiceMessage(op=40, d=b"\x00\x01"), 9, bytes.fromhex("0009280001")),
    (UnknownVoiceMessage(op=200, d=b""), None, bytes.fromhex("c8")),
]


@pytest.mark.parametrize("vector", BINARY_VECTORS, ids=_vector_id)
def test_encode_voice_message_binary_vector(
    vector: tuple[VoiceMessage, int | None, bytes],
) -> None:
    """Binary messages encode to the documented header followed by the payload."""
    message, seq, wire = vector
    assert encode_voice_message(message, seq=seq) == wire


@pytest.mark.parametrize("vector", BINARY_VECTORS, ids=_vector_id)
def test_decode_voice_message_binary_vector(
    vector: tuple[VoiceMessage, int | None, bytes],
) -> None:
    """Binary frames decode to their message; the header layout follows the sender."""
    message, seq, wire = vector
    assert decode_voice_message(wire, from_server=seq is not None) == (message, seq)


def test_decode_voice_message_accepts_bytearray_and_memoryview() -> None:
    """A binary frame handed over as bytearray or memoryview decodes like bytes."""
    frame = bytes.fromhex("0102190102")
    expected = (DaveMlsExternalSender(data=b"\x01\x02"), 258)
    for wrapped in (bytearray(frame), memoryview(frame)):
        buffer: Any = wrapped
        assert decode_voice_message(buffer, from_server=True) == expected


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        # discord.js and older servers: integer ids, absent optional fields.
        (
            '{"op":0,"d":{"server_id":41771983423143937,"user_id":1,"session_id":"s",'
            '"token":"t"}}',
            Identify(
                server_id="41771983423143937", user_id="1", session_id="s", token="t"
            ),
        ),
        (
            '{"op":5,"d":{"speaking":1,"ssrc":3,"user_id":80351110224678912}}',
            Speaking(speaking=1, ssrc=3, delay=None, user_id="80351110224678912"),
        ),
        (
            '{"op":11,"d":{"user_ids":[1,"2",18446744073709551615]}}',
            ClientsConnect(user_ids=("1", "2", "18446744073709551615")),
        ),
        ('{"op":13,"d":{"user_id":7}}', ClientDisconnect(user_id="7")),
        # A Heartbeat with nothing seen yet may leave seq_ack out.
        ('{"op":3,"d":{"t":5}}', Heartbeat(t=5, seq_ack=-1)),
        (
            '{"op":7,"d":{"server_id":"1","session_id":"s","token":"t"}}',
            Resume(server_id="1", session_id="s", token="t", seq_ack=-1),
        ),
        # Fields real servers add are ignored; missing optional ones take defaults.
        (
            '{"op":2,"d":{"ssrc":9,"ip":"10.0.0.1","port":50000,"modes":["m"],'
            '"experiments":["x"],"streams":[],"heartbeat_interval":1}}',
            Ready(ssrc=9, ip="10.0.0.1", port=50000, modes=("m",)),
        ),
        (
            '{"op":4,"d":{"mode":"m","secret_key":[' + KEY_JSON + "],"
            '"video_codec":"H264","media_session_id":null}}',
            SessionDescription(mode="m", secret_key=KEY),
        ),
        (
            '{"op":8,"d":{"heartbeat_interval":41250.25}}',
            Hello(heartbeat_interval=41250.25),
        ),
        ('{"op":9}', Resumed()),
        ('{"op":9,"d":{}}', Resumed()),
        (
            '{"op":12,"d":{"audio_ssrc":5}}',
            UnknownVoiceMessage(op=12, d={"audio_ssrc": 5}),
        ),
        ('{"op":15,"seq":null}', UnknownVoiceMessage(op=15, d=None)),
    ],
)
def test_decode_voice_message_is_liberal(wire: str, expected: VoiceMessage) -> None:
    """Integer snowflakes, absent optional fields and extra fields are all accepted."""
    assert decode_voice_message(wire, from_server=True) == (expected, None)


def test_voice_op_values_match_reference_table() -> None:
    """The opcode numbers are those of reference section 2.3."""
    assert {op.name: op.value for op in VoiceOp} == {
        "IDENTIFY": 0, "SELECT_PROTOCOL": 1, "READY": 2, "HEARTBEAT": 3,
        "SESSION_DESCRIPTION": 4, "SPEAKING": 5, "HEARTBEAT_ACK": 6, "RESUME": 7,
        "HELLO": 8, "RESUMED": 9, "CLIENTS_CONNECT": 11, "VIDEO": 12,
        "CLIENT_DISCONNECT": 13, "SESSION_UPDATE": 14, "MEDIA_SINK_WANTS": 15,
        "VOICE_BACKEND_VERSION": 16, "CLIENT_FLAGS": 18, "CLIENT_PLATFORM": 20,
        "DAVE_PREPARE_TRANSITION": 21, "DAVE_EXECUTE_TRANSITION": 22,
        "DAVE_TRANSITION_READY": 23, "DAVE_PREPARE_EPOCH": 24,
        "DAVE_MLS_EXTERNAL_SENDER": 25, "DAVE_MLS_KEY_PACKAGE": 26,
        "DAVE_MLS_PROPOSALS": 27, "DAVE_MLS_COMMIT_WELCOME": 28,
        "DAVE_MLS_ANNOUNCE_COMMIT_TRANSITION": 29, "DAVE_MLS_WELCOME": 30,
        "DAVE_MLS_INVALID_COMMIT_WELCOME": 31,
    }  # fmt: skip


def test_vectors_cover_every_message_class() -> None:
    """Every opcode with a message class has a byte or JSON vector above."""
    covered = {v[0].op for v in JSON_VECTORS} | {v[0].op for v in BINARY_VECTORS}
    classless = {
        VoiceOp.VIDEO,
        VoiceOp.SESSION_UPDATE,
        VoiceOp.MEDIA_SINK_WANTS,
        VoiceOp.VOICE_BACKEND_VERSION,
        VoiceOp.CLIENT_PLATFORM,
    }
    assert set(VoiceOp) - classless <= covered
