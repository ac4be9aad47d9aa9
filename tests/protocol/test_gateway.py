from __future__ import annotations

import json
from typing import Any

import pytest

from voicesim._exceptions import LocalProtocolError, RemoteProtocolError
from voicesim.protocol._gateway import (
    GatewayDispatch,
    GatewayHeartbeat,
    GatewayHeartbeatAck,
    GatewayHello,
    GatewayIdentify,
    GatewayInvalidSession,
    GatewayOp,
    GatewayPayload,
    GatewayReconnect,
    GatewayResume,
    UpdateVoiceState,
    decode_gateway_payload,
    encode_gateway_payload,
    parse_snowflake,
)
from voicesim.protocol._gateway_events import VoiceServerUpdate, VoiceStateUpdate

GUILD_ID = 41771983423143937
CHANNEL_ID = 127121515262115840
USER_ID = 80351110224678912


def mistyped(cls: Any, **fields: Any) -> Any:
    """Build a value with attributes of the wrong type, as a careless caller might."""
    return cls(**fields)


DPY_PROPERTIES = {"os": "linux", "browser": "discord.py", "device": "discord.py"}

# (typed message, the JSON the wire carries). Each typed class appears at least once.
VECTORS: list[tuple[Any, str]] = [
    (
        GatewayHello(heartbeat_interval=41250),
        '{"op":10,"d":{"heartbeat_interval":41250}}',
    ),
    (GatewayHeartbeat(seq=251), '{"op":1,"d":251}'),
    (GatewayHeartbeat(), '{"op":1,"d":null}'),
    (GatewayHeartbeatAck(), '{"op":11,"d":null}'),
    (
        GatewayIdentify(
            token="bot-token",
            intents=129,
            properties=DPY_PROPERTIES,
            compress=True,
            large_threshold=250,
        ),
        '{"op":2,"d":{"token":"bot-token","properties":{"os":"linux","browser":'
        '"discord.py","device":"discord.py"},"compress":true,"large_threshold":250,'
        '"intents":129}}',
    ),
    (
        GatewayIdentify(
            token="t",
            intents=0,
            properties={"os": "linux"},
            shard=(1, 4),
            presence={"status": "online", "afk": False, "since": 0, "activities": []},
        ),
        '{"op":2,"d":{"token":"t","properties":{"os":"linux"},"intents":0,'
        '"shard":[1,4],"presence":{"status":"online","afk":false,"since":0,'
        '"activities":[]}}}',
    ),
    (
        GatewayResume(token="bot-token", session_id="sess", seq=1337),
        '{"op":6,"d":{"token":"bot-token","session_id":"sess","seq":1337}}',
    ),
    (
        UpdateVoiceState(guild_id=GUILD_ID, channel_id=CHANNEL_ID, self_deaf=True),
        '{"op":4,"d":{"guild_id":41771983423143937,"channel_id":127121515262115840,'
        '"self_mute":false,"self_deaf":true}}',
    ),
    (
        UpdateVoiceState(guild_id=GUILD_ID, channel_id=None),
        '{"op":4,"d":{"guild_id":41771983423143937,"channel_id":null,'
        '"self_mute":false,"self_deaf":false}}',
    ),
    (GatewayInvalidSession(resumable=False), '{"op":9,"d":false}'),
    (GatewayInvalidSession(resumable=True), '{"op":9,"d":true}'),
    (GatewayReconnect(), '{"op":7,"d":null}'),
]


def _id(vector: tuple[Any, str]) -> str:
    return type(vector[0]).__name__


@pytest.mark.parametrize("vector", VECTORS, ids=_id)
def test_gateway_message_encodes_to_vector(vector: tuple[Any, str]) -> None:
    """Each typed message encodes to the documented JSON object."""
    message, wire = vector
    assert json.loads(encode_gateway_payload(message.to_payload())) == json.loads(wire)


@pytest.mark.parametrize("vector", VECTORS, ids=_id)
def test_gateway_message_decodes_from_vector(vector: tuple[Any, str]) -> None:
    """Each documented JSON object decodes to its typed message."""
    message, wire = vector
    payload = decode_gateway_payload(wire)
    assert payload.op == message.op
    assert type(message).from_payload(payload.d) == message


def test_gateway_op_values() -> None:
    """The opcodes are Discord's main gateway numbers."""
    assert {op.name: op.value for op in GatewayOp} == {
        "DISPATCH": 0, "HEARTBEAT": 1, "IDENTIFY": 2, "PRESENCE_UPDATE": 3,
        "VOICE_STATE_UPDATE": 4, "RESUME": 6, "RECONNECT": 7,
        "REQUEST_GUILD_MEMBERS": 8, "INVALID_SESSION": 9, "HELLO": 10,
        "HEARTBEAT_ACK": 11,
    }  # fmt: skip


def test_decode_gateway_payload_server_envelope() -> None:
    """A server envelope keeps s and t; null s and t become None."""
    hello = '{"t":null,"s":null,"op":10,"d":{"heartbeat_interval":41250}}'
    assert decode_gateway_payload(hello) == GatewayPayload(
        op=10, d={"heartbeat_interval": 41250}
    )
    ready = b'{"t":"READY","s":1,"op":0,"d":{"v":10}}'
    payload = decode_gateway_payload(ready)
    assert payload == GatewayPayload(op=0, d={"v": 10}, s=1, t="READY")
    assert GatewayDispatch.from_envelope(payload) == GatewayDispatch(
        t="READY", s=1, d={"v": 10}
    )


def test_gateway_dispatch_encodes_with_s_and_t() -> None:
    """A dispatch goes out with op 0, its sequence number and its event name."""
    wire = encode_gateway_payload(GatewayDispatch(t="RESUMED", s=7, d={}).to_payload())
    assert json.loads(wire) == {"op": 0, "d": {}, "s": 7, "t": "RESUMED"}


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (
            GatewayPayload(op=1, d=None),
            r"gateway op 0 \(DISPATCH\): got a message with op 1",
        ),
        (GatewayPayload(op=0, d={}, s=1), r"field 't' is missing"),
        (GatewayPayload(op=0, d={}, t="READY"), r"field 's' is missing"),
    ],
)
def test_gateway_dispatch_from_envelope_rejects(
    payload: GatewayPayload, match: str
) -> None:
    """A dispatch without its name or number, or with another op, is the peer's error."""
    with pytest.raises(RemoteProtocolError, match=match):
        GatewayDispatch.from_envelope(payload)


def test_voice_server_update_vector() -> None:
    """VOICE_SERVER_UPDATE goes out with a string guild id and decodes either way."""
    event = VoiceServerUpdate(
        token="my_token",
        guild_id=GUILD_ID,
        endpoint="sweetwater-12345.discord.media:2048",
    )
    wire = encode_gateway_payload(event.to_payload(s=5))
    assert json.loads(wire) == {
        "op": 0,
        "s": 5,
        "t": "VOICE_SERVER_UPDATE",
        "d": {
            "token": "my_token",
            "guild_id": "41771983423143937",
            "endpoint": "sweetwater-12345.discord.media:2048",
        },
    }
    assert VoiceServerUpdate.from_payload(decode_gateway_payload(wire).d) == event
    gone = {"token": "t", "guild_id": GUILD_ID, "endpoint": None}
    assert VoiceServerUpdate.from_payload(gone).endpoint is None
    with pytest.raises(
        RemoteProtocolError, match=r"VOICE_SERVER_UPDATE: field 'endpoint'"
    ):
        VoiceServerUpdate.from_payload({"token": "t", "guild_id": "1"})


def test_voice_state_update_vector() -> None:
    """VOICE_STATE_UPDATE carries string ids and the flags discord.py reads."""
    event = VoiceStateUpdate(
        guild_id=GUILD_ID,
        channel_id=CHANNEL_ID,
        user_id=USER_ID,
        session_id="90326bd25d71d39b9ef95b299e3872ff",
        self_mute=True,
    )
    wire = encode_gateway_payload(event.to_payload(s=6))
    assert json.loads(wire) == {
        "op": 0,
        "s": 6,
        "t": "VOICE_STATE_UPDATE",
        "d": {
            "guild_id": "41771983423143937",
            "channel_id": "127121515262115840",
            "user_id": "80351110224678912",
            "session_id": "90326bd25d71d39b9ef95b299e3872ff",
            "deaf": False,
            "mute": False,
            "self_deaf": False,
            "self_mute": True,
            "self_video": False,
            "suppress": False,
            "request_to_speak_timestamp": None,
        },
    }
    assert VoiceStateUpdate.from_payload(decode_gateway_payload(wire).d) == event
    left = {"channel_id": None, "user_id": USER_ID, "session_id": "s"}
    assert VoiceStateUpdate.from_payload(left) == VoiceStateUpdate(
        guild_id=None, channel_id=None, user_id=USER_ID, session_id="s"
    )


def test_update_voice_state_accepts_discordjs_strings() -> None:
    """discord.js sends op 4 with string ids; they decode to the same integers."""
    wire = (
        '{"op":4,"d":{"guild_id":"41771983423143937","channel_id":"127121515262115840",'
        '"self_deaf":false,"self_mute":true}}'
    )
    assert UpdateVoiceState.from_payload(
        decode_gateway_payload(wire).d
    ) == UpdateVoiceState(guild_id=GUILD_ID, channel_id=CHANNEL_ID, self_mute=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0),
        ("41771983423143937", GUILD_ID),
        (GUILD_ID, GUILD_ID),
        ("007", 7),
        (2**64 - 1, 2**64 - 1),
    ],
)
def test_parse_snowflake_accepts_strings_and_ints(value: object, expected: int) -> None:
    """A snowflake may arrive as a decimal string or a JSON integer."""
    assert parse_snowflake(value, field="guild_id") == expected


@pytest.mark.parametrize(
    "value",
    [
        *("", "12a", "-1", " 1", "+1", "1.0", "١٢٣", "18446744073709551616"),
        *(-1, 2**64, True, 1.0, None, [1]),
        pytest.param("1" * 5000, id="5000-digits"),
    ],
)
def test_parse_snowflake_rejects(value: object) -> None:
    """Anything else is the peer's error and names the field."""
    with pytest.raises(RemoteProtocolError, match=r"'channel_id' must be a snowflake"):
        parse_snowflake(value, field="channel_id")


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        ("", r"gateway message: not valid JSON"),
        (b"\xff\xfe\x00", r"not valid JSON"),
        ("[]", r"must be a JSON object, got list"),
        ('{"d":null}', r"field 'op' must be an integer, got nothing"),
        ('{"op":"10"}', r"field 'op' must be an integer, got str"),
        ('{"op":0,"s":"1","t":"READY"}', r"gateway op 0 \(DISPATCH\): field 's'"),
        ('{"op":0,"s":1,"t":5}', r"gateway op 0 \(DISPATCH\): field 't'"),
        ('{"op":1,"d":Infinity}', r"not valid JSON"),
    ],
)
def test_decode_gateway_payload_rejects(wire: str | bytes, match: str) -> None:
    """Bad JSON or a bad envelope raises RemoteProtocolError."""
    with pytest.raises(RemoteProtocolError, match=match):
        decode_gateway_payload(wire)


@pytest.mark.parametrize(
    ("cls", "d", "match"),
    [
        (
            GatewayHello,
            {"heartbeat_interval": 0},
            r"op 10 \(HELLO\): field 'heartbeat_interval'",
        ),
        (GatewayHello, None, r"op 10 \(HELLO\): d must be an object, got null"),
        (GatewayHeartbeat, "5", r"op 1 \(HEARTBEAT\): d must be an integer or null"),
        (GatewayHeartbeatAck, 5, r"op 11 \(HEARTBEAT_ACK\): d must be an object"),
        (
            GatewayIdentify,
            {"token": "t", "properties": {}},
            r"IDENTIFY\): field 'intents'",
        ),
        (
            GatewayIdentify,
            {"token": "t", "intents": 1, "properties": []},
            r"field 'properties'",
        ),
        (
            GatewayIdentify,
            {"token": "t", "intents": 1, "properties": {}, "shard": [0]},
            r"IDENTIFY\): field 'shard' must be a pair",
        ),
        (
            GatewayResume,
            {"token": "t", "session_id": "s", "seq": None},
            r"RESUME\): field 'seq'",
        ),
        (
            UpdateVoiceState,
            {"guild_id": "1", "self_mute": False, "self_deaf": False},
            r"VOICE_STATE_UPDATE\): field 'channel_id' .* got nothing",
        ),
        (
            UpdateVoiceState,
            {
                "guild_id": "x",
                "channel_id": None,
                "self_mute": False,
                "self_deaf": False,
            },
            r"VOICE_STATE_UPDATE\): field 'guild_id'",
        ),
        (
            UpdateVoiceState,
            {"guild_id": 1, "channel_id": None, "self_mute": 0, "self_deaf": False},
            r"VOICE_STATE_UPDATE\): field 'self_mute' must be a boolean",
        ),
        (GatewayInvalidSession, None, r"op 9 \(INVALID_SESSION\): d must be a boolean"),
        (GatewayReconnect, [1], r"op 7 \(RECONNECT\): d must be an object"),
        (
            VoiceStateUpdate,
            {"channel_id": None, "user_id": 1},
            r"VOICE_STATE_UPDATE: field 'session_id'",
        ),
    ],
)
def test_gateway_from_payload_rejects(cls: Any, d: object, match: str) -> None:
    """Malformed d raises RemoteProtocolError naming the op and the field."""
    with pytest.raises(RemoteProtocolError, match=match):
        cls.from_payload(d)


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (
            GatewayHello(heartbeat_interval=0),
            r"'heartbeat_interval' must be an integer >= 1, got int 0",
        ),
        (mistyped(GatewayHeartbeat, seq="1"), r"'seq' must be an integer"),
        (
            mistyped(UpdateVoiceState, guild_id="1", channel_id=None),
            r"'guild_id' must be a snowflake integer, got str",
        ),
        (
            UpdateVoiceState(guild_id=-1, channel_id=None),
            r"'guild_id' must be a snowflake in",
        ),
        (
            UpdateVoiceState(guild_id=1, channel_id=2**64),
            r"'channel_id' must be a snowflake in",
        ),
        (
            GatewayIdentify(token="t", intents=-1, properties={}),
            r"'intents' must be an integer >= 0, got int -1",
        ),
        (
            mistyped(GatewayIdentify, token="t", intents=1, properties={}, shard=(1,)),
            r"'shard' must be a pair",
        ),
        (
            mistyped(GatewayInvalidSession, resumable=1),
            r"'resumable' must be a boolean",
        ),
        (mistyped(GatewayDispatch, t="X", s=None, d={}), r"'s' must be an integer"),
    ],
)
def test_gateway_to_payload_rejects(message: Any, match: str) -> None:
    """Building a payload from bad attributes raises LocalProtocolError."""
    with pytest.raises(LocalProtocolError, match=match):
        encode_gateway_payload(message.to_payload())


@pytest.mark.parametrize(
    "payload",
    [
        mistyped(GatewayPayload, op="1"),
        GatewayPayload(op=1, d=object()),
        GatewayPayload(op=1, d=float("nan")),
        GatewayPayload(op=0, s=True, t="X"),
        mistyped(GatewayPayload, op=0, s=1, t=b"X"),
    ],
)
def test_encode_gateway_payload_rejects(payload: GatewayPayload) -> None:
    """An envelope with a mistyped field or unserialisable d is our error."""
    with pytest.raises(LocalProtocolError):
        encode_gateway_payload(payload)
