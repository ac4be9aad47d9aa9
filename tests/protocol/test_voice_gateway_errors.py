from __future__ import annotations

import json
from typing import Any

import pytest

from voicesim._exceptions import LocalProtocolError, RemoteProtocolError
from voicesim.protocol._voice_gateway import (
    ClientsConnect,
    DaveMlsAnnounceCommitTransition,
    DaveMlsCommitWelcome,
    DaveMlsExternalSender,
    DaveMlsKeyPackage,
    DaveMlsProposals,
    DaveMlsWelcome,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Identify,
    Ready,
    SelectProtocol,
    SessionDescription,
    Speaking,
    UnknownVoiceMessage,
    VoiceMessage,
    decode_voice_message,
    encode_voice_message,
)

KEY = bytes(range(100, 132))


def mistyped(cls: Any, *args: Any, **fields: Any) -> Any:
    """Build a value with attributes of the wrong type, as a careless caller might."""
    return cls(*args, **fields)


def _session_description(**fields: Any) -> str:
    d: dict[str, Any] = {"mode": "m", "secret_key": list(KEY)}
    d.update(fields)
    return json.dumps({"op": 4, "d": d})


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        ("", r"voice text frame: not valid JSON"),
        ("{", r"not valid JSON"),
        ('{"op":8,"d":{"heartbeat_interval":NaN}}', r"not valid JSON.*NaN"),
        pytest.param("[" * 100_000, r"nested too deeply", id="deeply-nested-frame"),
        ("[1]", r"must be a JSON object, got list"),
        ('"op"', r"must be a JSON object, got str"),
        ('{"d":{}}', r"field 'op' must be an integer, got nothing"),
        ('{"op":"0","d":{}}', r"field 'op' must be an integer, got str"),
        ('{"op":true,"d":{}}', r"field 'op' must be an integer, got bool"),
        (
            '{"op":6,"d":{"t":1},"seq":"1"}',
            r"voice op 6 \(HEARTBEAT_ACK\): field 'seq'",
        ),
        ('{"op":0,"d":[]}', r"voice op 0 \(IDENTIFY\): d must be an object, got list"),
        ('{"op":3,"d":17}', r"voice op 3 \(HEARTBEAT\): d must be an object, got int"),
        ('{"op":9,"d":5}', r"voice op 9 \(RESUMED\): d must be an object"),
        (
            '{"op":0,"d":{"server_id":"1","user_id":"2","session_id":"s"}}',
            r"voice op 0 \(IDENTIFY\): field 'token' must be a string, got nothing",
        ),
        (
            '{"op":0,"d":{"server_id":"1a","user_id":"2","session_id":"s","token":"t"}}',
            r"IDENTIFY\): field 'server_id' must be a snowflake",
        ),
        (
            '{"op":0,"d":{"server_id":"1","user_id":"2","session_id":"s","token":"t",'
            '"max_dave_protocol_version":"1"}}',
            r"field 'max_dave_protocol_version' must be an integer, got str",
        ),
        (
            '{"op":1,"d":{"protocol":"udp","data":{"address":"a","port":70000,"mode":"m"}}}',
            r"SELECT_PROTOCOL\): field 'data': field 'port' must be an integer in \[0, 65535\]",
        ),
        (
            '{"op":1,"d":{"protocol":"udp"}}',
            r"SELECT_PROTOCOL\): field 'data' must be an object",
        ),
        (
            '{"op":2,"d":{"ssrc":-1,"ip":"a","port":1,"modes":[]}}',
            r"READY\): field 'ssrc' must be an integer in \[0, 4294967295\]",
        ),
        (
            '{"op":2,"d":{"ssrc":1,"ip":"a","port":1,"modes":"m"}}',
            r"READY\): field 'modes' must be a list of strings",
        ),
        (
            '{"op":3,"d":{"t":1.5}}',
            r"HEARTBEAT\): field 't' must be an integer, got float",
        ),
        (
            '{"op":3,"d":{"t":true}}',
            r"HEARTBEAT\): field 't' must be an integer, got bool",
        ),
        (
            _session_description(secret_key=list(KEY[:31])),
            r"field 'secret_key' must be a list of 32",
        ),
        (
            _session_description(secret_key=[256] * 32),
            r"field 'secret_key' must be a list of 32",
        ),
        (
            _session_description(secret_key=KEY.hex()),
            r"field 'secret_key' must be a list of 32",
        ),
        (
            _session_description(dave_protocol_version=-1),
            r"'dave_protocol_version' must be an integer >= 0, got int -1",
        ),
        (
            _session_description(mode=None),
            r"SESSION_DESCRIPTION\): field 'mode' must be a string, got null",
        ),
        ('{"op":5,"d":{"speaking":1}}', r"SPEAKING\): field 'ssrc' must be an integer"),
        ('{"op":5,"d":{"speaking":true,"ssrc":1}}', r"SPEAKING\): field 'speaking'"),
        (
            '{"op":5,"d":{"speaking":1,"ssrc":1,"user_id":"x"}}',
            r"SPEAKING\): field 'user_id'",
        ),
        (
            '{"op":8,"d":{"heartbeat_interval":0}}',
            r"HELLO\): field 'heartbeat_interval'",
        ),
        pytest.param(
            '{"op":8,"d":{"heartbeat_interval":1' + "0" * 400 + "}}",
            r"HELLO\): field 'heartbeat_interval' must be a finite positive number",
            id="interval-beyond-float",
        ),
        (
            '{"op":8,"d":{"heartbeat_interval":1e400}}',
            r"HELLO\): field 'heartbeat_interval' must be a finite positive number",
        ),
        pytest.param(
            '{"op":13,"d":{"user_id":"' + "1" * 5000 + '"}}',
            r"CLIENT_DISCONNECT\): field 'user_id' must be a snowflake",
            id="5000-digit-snowflake",
        ),
        pytest.param(
            '{"op":0,"d":' + "[" * 990 + "]" * 990 + "}",
            r"nested too deeply|IDENTIFY\): d must be an object, got list",
            id="deeply-nested-d",
        ),
        (
            '{"op":8,"d":{"heartbeat_interval":"41250"}}',
            r"HELLO\): field 'heartbeat_interval'",
        ),
        ('{"op":11,"d":{"user_ids":"1"}}', r"CLIENTS_CONNECT\): field 'user_ids'"),
        ('{"op":11,"d":{"user_ids":["1",-2]}}', r"CLIENTS_CONNECT\): field 'user_ids'"),
        (
            '{"op":13,"d":{"user_id":"18446744073709551616"}}',
            r"CLIENT_DISCONNECT\): field 'user_id'",
        ),
        (
            '{"op":21,"d":{"protocol_version":1}}',
            r"DAVE_PREPARE_TRANSITION\): field 'transition_id'",
        ),
        (
            '{"op":22,"d":{"transition_id":65536}}',
            r"DAVE_EXECUTE_TRANSITION\): field 'transition_id'",
        ),
        (
            '{"op":24,"d":{"protocol_version":1,"epoch":-1}}',
            r"DAVE_PREPARE_EPOCH\): field 'epoch'",
        ),
        (
            '{"op":25,"d":null}',
            r"voice op 25 \(DAVE_MLS_EXTERNAL_SENDER\): must arrive in a binary",
        ),
        ('{"op":30,"d":{}}', r"DAVE_MLS_WELCOME\): must arrive in a binary frame"),
    ],
)
def test_decode_voice_message_rejects_malformed_text(wire: str, match: str) -> None:
    """Malformed text frames raise RemoteProtocolError naming the op and the field."""
    for from_server in (True, False):
        with pytest.raises(RemoteProtocolError, match=match):
            decode_voice_message(wire, from_server=from_server)


@pytest.mark.parametrize(
    ("frame", "from_server", "match"),
    [
        (b"", True, r"0 bytes is shorter than the 3-byte server header"),
        (b"\x00\x01", True, r"2 bytes is shorter than the 3-byte server header"),
        (b"", False, r"empty"),
        (
            bytes.fromhex("00011b"),
            True,
            r"op 27 \(DAVE_MLS_PROPOSALS\): payload is empty",
        ),
        (bytes.fromhex("00011b02"), True, r"field 'operation_type' must be 0 .* got 2"),
        (
            bytes.fromhex("00011d01"),
            True,
            r"op 29 .*1 bytes is too short .*'transition_id'",
        ),
        (
            bytes.fromhex("00011e"),
            True,
            r"op 30 .*0 bytes is too short .*'transition_id'",
        ),
        (bytes.fromhex("0001007b7d"), True, r"op 0 \(IDENTIFY\): must arrive as JSON"),
        (
            bytes.fromhex("17"),
            False,
            r"op 23 \(DAVE_TRANSITION_READY\): must arrive as JSON",
        ),
        # Direction: the key package and the commit come from clients only, the rest
        # from the server only.
        (
            bytes.fromhex("00011a00"),
            True,
            r"op 26 .*client to server, but this frame came server",
        ),
        (bytes.fromhex("1c00"), True, r"shorter than the 3-byte"),
        (bytes.fromhex("00001c00"), True, r"op 28 .*sent client to server"),
        (
            bytes.fromhex("1900"),
            False,
            r"op 25 .*sent server to client, but this frame came client",
        ),
        (bytes.fromhex("1e0001"), False, r"op 30 .*sent server to client"),
    ],
)
def test_decode_voice_message_rejects_malformed_binary(
    frame: bytes, from_server: bool, match: str
) -> None:
    """Short or misplaced binary frames raise RemoteProtocolError naming the op."""
    with pytest.raises(RemoteProtocolError, match=match):
        decode_voice_message(frame, from_server=from_server)


@pytest.mark.parametrize(
    ("message", "seq", "match"),
    [
        (
            SessionDescription(mode="m", secret_key=bytes(31)),
            None,
            r"op 4 \(SESSION_DESCRIPTION\): 'secret_key' must be 32 bytes",
        ),
        (
            mistyped(SessionDescription, mode="m", secret_key=list(KEY)),
            None,
            r"'secret_key' must be 32 bytes",
        ),
        (
            DaveMlsWelcome(transition_id=1, data=b""),
            None,
            r"server binary frame needs a seq",
        ),
        (
            DaveMlsExternalSender(data=b""),
            65536,
            r"seq must be an integer in \[0, 65535\]",
        ),
        (
            DaveMlsExternalSender(data=b""),
            -1,
            r"seq must be an integer in \[0, 65535\]",
        ),
        (DaveMlsKeyPackage(data=b"kp"), 1, r"client binary frame carries no seq"),
        (mistyped(DaveMlsCommitWelcome, data="text"), None, r"'data' must be bytes"),
        (
            DaveMlsProposals(operation_type=2, data=b""),
            1,
            r"'operation_type' must be an integer",
        ),
        (
            DaveMlsAnnounceCommitTransition(transition_id=65536, data=b""),
            1,
            r"'transition_id' must be an integer in \[0, 65535\]",
        ),
        (
            mistyped(Identify, server_id=1, user_id="2", session_id="s", token="t"),
            None,
            r"'server_id' must be a snowflake string",
        ),
        (
            Identify(server_id="1", user_id="x", session_id="s", token="t"),
            None,
            r"'user_id' must be a snowflake",
        ),
        (
            mistyped(Identify, server_id="1", user_id="2", session_id=None, token="t"),
            None,
            r"'session_id' must be a string",
        ),
        (
            Ready(ssrc=2**32, ip="a", port=1, modes=()),
            None,
            r"'ssrc' must be an integer in",
        ),
        (
            mistyped(Ready, ssrc=1, ip="a", port=1, modes=("m", 1)),
            None,
            r"'modes' must be a list of strings",
        ),
        (
            SelectProtocol(address="a", port=-1, mode="m"),
            None,
            r"'port' must be an integer in",
        ),
        (
            Speaking(speaking=1, ssrc=1, user_id="u"),
            None,
            r"'user_id' must be a snowflake",
        ),
        (
            mistyped(ClientsConnect, user_ids=(1,)),
            None,
            r"'user_ids' must be a sequence of snowflake strings",
        ),
        (
            Hello(heartbeat_interval=0),
            None,
            r"'heartbeat_interval' must be a finite positive",
        ),
        (
            Hello(heartbeat_interval=float("inf")),
            None,
            r"'heartbeat_interval' must be a finite",
        ),
        (
            Hello(heartbeat_interval=float("nan")),
            None,
            r"'heartbeat_interval' must be a finite",
        ),
        (Heartbeat(t=1, seq_ack=True), None, r"'seq_ack' must be an integer, got bool"),
        (HeartbeatAck(t=1), True, r"seq must be an integer, got bool"),
        (
            UnknownVoiceMessage(op=0, d={}),
            None,
            r"op 0 \(IDENTIFY\): has a message class",
        ),
        (UnknownVoiceMessage(op=27, d=b""), 1, r"op 27 .*has a message class"),
        (
            UnknownVoiceMessage(op=99, d=object()),
            None,
            r"voice op 99: cannot be encoded as JSON",
        ),
        (
            UnknownVoiceMessage(op=99, d=float("nan")),
            None,
            r"cannot be encoded as JSON",
        ),
        (UnknownVoiceMessage(op=256, d=b""), None, r"op must fit in one byte"),
        (mistyped(UnknownVoiceMessage, op="9", d=None), None, r"op must be an integer"),
    ],
)
def test_encode_voice_message_rejects_invalid(
    message: VoiceMessage, seq: int | None, match: str
) -> None:
    """Invalid messages raise LocalProtocolError naming the op and attribute."""
    with pytest.raises(LocalProtocolError, match=match):
        encode_voice_message(message, seq=seq)


def test_encode_voice_message_rejects_other_types() -> None:
    """Encoding something that is not a message is a programming error."""
    with pytest.raises(TypeError):
        encode_voice_message(mistyped(dict, op=0, d={}))


def test_decode_voice_message_rejects_other_types() -> None:
    """Passing something that is not a frame is a programming error, not the peer's."""
    not_a_frame: Any = 123
    with pytest.raises(TypeError):
        decode_voice_message(not_a_frame, from_server=True)
