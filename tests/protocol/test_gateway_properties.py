from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from voicesim._exceptions import RemoteProtocolError
from voicesim.protocol._gateway import (
    GatewayHeartbeat,
    GatewayHeartbeatAck,
    GatewayHello,
    GatewayIdentify,
    GatewayInvalidSession,
    GatewayPayload,
    GatewayReconnect,
    GatewayResume,
    UpdateVoiceState,
    decode_gateway_payload,
    encode_gateway_payload,
)
from voicesim.protocol._gateway_events import VoiceServerUpdate, VoiceStateUpdate

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=8,
)
snowflake_ints = st.integers(0, 2**64 - 1)
typed_messages = st.one_of(
    st.builds(GatewayHello, heartbeat_interval=st.integers(1, 2**40)),
    st.builds(GatewayHeartbeat, seq=st.none() | st.integers()),
    st.just(GatewayHeartbeatAck()),
    st.builds(
        GatewayIdentify,
        token=st.text(),
        intents=st.integers(0, 2**40),
        properties=st.dictionaries(st.text(), st.text()),
        compress=st.none() | st.booleans(),
        large_threshold=st.none() | st.integers(0, 250),
        shard=st.none() | st.tuples(st.integers(0, 100), st.integers(1, 100)),
        presence=st.none() | st.dictionaries(st.text(), json_values, max_size=3),
    ),
    st.builds(
        GatewayResume, token=st.text(), session_id=st.text(), seq=st.integers(0, 2**40)
    ),
    st.builds(
        UpdateVoiceState,
        guild_id=snowflake_ints,
        channel_id=st.none() | snowflake_ints,
        self_mute=st.booleans(),
        self_deaf=st.booleans(),
    ),
    st.builds(GatewayInvalidSession, resumable=st.booleans()),
    st.just(GatewayReconnect()),
)


@given(typed_messages)
def test_gateway_typed_message_round_trips(message: Any) -> None:
    """to_payload, encode, decode and from_payload give back an equal message."""
    payload = decode_gateway_payload(encode_gateway_payload(message.to_payload()))
    assert payload.op == message.op
    assert type(message).from_payload(payload.d) == message


@given(
    st.builds(
        GatewayPayload,
        op=st.integers(),
        d=json_values,
        s=st.none() | st.integers(),
        t=st.none() | st.text(),
    )
)
def test_gateway_payload_round_trips(payload: GatewayPayload) -> None:
    """Any envelope with JSON data survives encode and decode."""
    assert decode_gateway_payload(encode_gateway_payload(payload)) == payload


@given(
    st.builds(
        VoiceServerUpdate,
        token=st.text(),
        guild_id=snowflake_ints,
        endpoint=st.none() | st.text(),
    )
    | st.builds(
        VoiceStateUpdate,
        guild_id=st.none() | snowflake_ints,
        channel_id=st.none() | snowflake_ints,
        user_id=snowflake_ints,
        session_id=st.text(),
        deaf=st.booleans(),
        mute=st.booleans(),
        self_deaf=st.booleans(),
        self_mute=st.booleans(),
        self_video=st.booleans(),
        suppress=st.booleans(),
    ),
    st.integers(0, 2**40),
)
def test_voice_join_dispatch_round_trips(event: Any, s: int) -> None:
    """The two voice join dispatches survive encode and decode, with their s and t."""
    payload = decode_gateway_payload(encode_gateway_payload(event.to_payload(s=s)))
    assert (payload.op, payload.s, payload.t) == (0, s, event.t)
    assert type(event).from_payload(payload.d) == event


@given(st.text() | st.binary())
def test_decode_gateway_payload_arbitrary_input_only_raises_remote_error(
    data: str | bytes,
) -> None:
    """Any input either decodes or raises RemoteProtocolError."""
    with contextlib.suppress(RemoteProtocolError):
        decode_gateway_payload(data)


GATEWAY_FIELDS = [
    "heartbeat_interval", "token", "intents", "properties", "compress",
    "large_threshold", "shard", "presence", "session_id", "seq", "guild_id",
    "channel_id", "self_mute", "self_deaf", "endpoint", "user_id", "deaf", "mute",
]  # fmt: skip
_TYPED = [
    GatewayHello,
    GatewayHeartbeat,
    GatewayHeartbeatAck,
    GatewayIdentify,
    GatewayResume,
    UpdateVoiceState,
    GatewayInvalidSession,
    GatewayReconnect,
    VoiceServerUpdate,
    VoiceStateUpdate,
]


@given(
    st.sampled_from(_TYPED),
    st.dictionaries(st.sampled_from(GATEWAY_FIELDS), json_values, max_size=8)
    | json_values,
)
def test_gateway_from_payload_only_raises_remote_error(cls: Any, d: object) -> None:
    """Every typed class either reads a d or raises RemoteProtocolError."""
    with contextlib.suppress(RemoteProtocolError):
        cls.from_payload(d)
