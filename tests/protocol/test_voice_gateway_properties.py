from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from voicesim._exceptions import RemoteProtocolError
from voicesim.protocol._voice_gateway import (
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
    UnknownVoiceMessage,
    VoiceMessage,
    VoiceOp,
    decode_voice_message,
    encode_voice_message,
)

snowflakes = st.one_of(
    st.integers(0, 2**64 - 1).map(str),
    # Leading zeros are kept as sent, so they must round-trip too.
    st.from_regex(r"\A[0-9]{1,20}\Z").filter(lambda s: int(s) < 2**64),
)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
any_int = st.integers(-(2**70), 2**70)
non_negative = st.integers(0, 2**70)
text = st.text()
blobs = st.binary(max_size=64)

JSON_MESSAGES: dict[type[Any], st.SearchStrategy[VoiceMessage]] = {
    Identify: st.builds(
        Identify,
        server_id=snowflakes,
        user_id=snowflakes,
        session_id=text,
        token=text,
        max_dave_protocol_version=non_negative,
    ),
    SelectProtocol: st.builds(
        SelectProtocol, protocol=text, address=text, port=u16, mode=text
    ),
    Ready: st.builds(
        Ready, ssrc=u32, ip=text, port=u16, modes=st.lists(text).map(tuple)
    ),
    Heartbeat: st.builds(Heartbeat, t=any_int, seq_ack=any_int),
    SessionDescription: st.builds(
        SessionDescription,
        mode=text,
        secret_key=st.binary(min_size=32, max_size=32),
        dave_protocol_version=non_negative,
        audio_codec=text,
        media_session_id=text,
    ),
    Speaking: st.builds(
        Speaking,
        speaking=non_negative,
        ssrc=u32,
        delay=st.none() | non_negative,
        user_id=st.none() | snowflakes,
    ),
    HeartbeatAck: st.builds(HeartbeatAck, t=any_int),
    Resume: st.builds(
        Resume, server_id=snowflakes, session_id=text, token=text, seq_ack=any_int
    ),
    Hello: st.builds(
        Hello,
        heartbeat_interval=st.floats(min_value=1e-3, max_value=1e12)
        | st.integers(1, 10**9),
        v=non_negative,
    ),
    Resumed: st.just(Resumed()),
    ClientsConnect: st.builds(ClientsConnect, user_ids=st.lists(snowflakes).map(tuple)),
    ClientDisconnect: st.builds(ClientDisconnect, user_id=snowflakes),
    DavePrepareTransition: st.builds(
        DavePrepareTransition, protocol_version=non_negative, transition_id=u16
    ),
    DaveExecuteTransition: st.builds(DaveExecuteTransition, transition_id=u16),
    DaveTransitionReady: st.builds(DaveTransitionReady, transition_id=u16),
    DavePrepareEpoch: st.builds(
        DavePrepareEpoch, protocol_version=non_negative, epoch=non_negative
    ),
    DaveMlsInvalidCommitWelcome: st.builds(
        DaveMlsInvalidCommitWelcome, transition_id=u16
    ),
}
SERVER_BINARY: dict[type[Any], st.SearchStrategy[VoiceMessage]] = {
    DaveMlsExternalSender: st.builds(DaveMlsExternalSender, data=blobs),
    DaveMlsProposals: st.builds(
        DaveMlsProposals, operation_type=st.sampled_from([0, 1]), data=blobs
    ),
    DaveMlsAnnounceCommitTransition: st.builds(
        DaveMlsAnnounceCommitTransition, transition_id=u16, data=blobs
    ),
    DaveMlsWelcome: st.builds(DaveMlsWelcome, transition_id=u16, data=blobs),
}
CLIENT_BINARY: dict[type[Any], st.SearchStrategy[VoiceMessage]] = {
    DaveMlsKeyPackage: st.builds(DaveMlsKeyPackage, data=blobs),
    DaveMlsCommitWelcome: st.builds(DaveMlsCommitWelcome, data=blobs),
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | any_int
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=8,
)
_CLASS_OPS = {cls.op for cls in (*JSON_MESSAGES, *SERVER_BINARY, *CLIENT_BINARY)}
unknown_json = st.builds(
    UnknownVoiceMessage,
    op=st.integers(-(2**40), 2**40).filter(lambda op: op not in _CLASS_OPS),
    d=json_values,
)
unknown_binary = st.builds(
    UnknownVoiceMessage,
    op=st.integers(0, 255).filter(lambda op: op not in _CLASS_OPS),
    d=blobs,
)


def test_strategies_cover_every_message_class() -> None:
    """The round-trip properties below draw every class with an op."""
    assert len(_CLASS_OPS) == len(JSON_MESSAGES) + len(SERVER_BINARY) + len(
        CLIENT_BINARY
    )
    classless = {12, 14, 15, 16, 18, 20}
    assert set(VoiceOp) - classless == _CLASS_OPS


@given(
    message=st.one_of(*JSON_MESSAGES.values(), unknown_json),
    seq=st.none() | non_negative,
    from_server=st.booleans(),
)
def test_voice_json_message_round_trips(
    message: VoiceMessage, seq: int | None, from_server: bool
) -> None:
    """Encoding a JSON message and decoding it gives back an equal message and seq."""
    encoded = encode_voice_message(message, seq=seq)
    assert isinstance(encoded, str)
    assert decode_voice_message(encoded, from_server=from_server) == (message, seq)


@given(message=st.one_of(*SERVER_BINARY.values(), unknown_binary), seq=u16)
def test_voice_server_binary_message_round_trips(
    message: VoiceMessage, seq: int
) -> None:
    """A server binary message survives encode and decode with its 16-bit seq."""
    encoded = encode_voice_message(message, seq=seq)
    assert isinstance(encoded, bytes)
    assert encoded[:3] == seq.to_bytes(2, "big") + bytes([message.op])
    assert decode_voice_message(encoded, from_server=True) == (message, seq)


@given(message=st.one_of(*CLIENT_BINARY.values(), unknown_binary))
def test_voice_client_binary_message_round_trips(message: VoiceMessage) -> None:
    """A client binary message survives encode and decode with no seq."""
    encoded = encode_voice_message(message)
    assert isinstance(encoded, bytes)
    assert encoded[0] == message.op
    assert decode_voice_message(encoded, from_server=False) == (message, None)


def _decode_or_reject(data: str | bytes, from_server: bool) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_voice_message(data, from_server=from_server)


@given(data=st.text(), from_server=st.booleans())
def test_decode_voice_message_arbitrary_text_only_raises_remote_error(
    data: str, from_server: bool
) -> None:
    """Any text frame either decodes or raises RemoteProtocolError."""
    _decode_or_reject(data, from_server)


@given(data=st.binary(), from_server=st.booleans())
def test_decode_voice_message_arbitrary_bytes_only_raises_remote_error(
    data: bytes, from_server: bool
) -> None:
    """Any binary frame either decodes or raises RemoteProtocolError."""
    _decode_or_reject(data, from_server)


# Frames that look almost right: a real op, and a d built from the wire's field names
# with values of any JSON type, so every field check meets wrong types and gaps.
WIRE_FIELDS = [
    "server_id", "user_id", "session_id", "token", "max_dave_protocol_version",
    "protocol", "data", "address", "port", "mode", "ssrc", "ip", "modes", "t",
    "seq_ack", "secret_key", "dave_protocol_version", "audio_codec",
    "media_session_id", "speaking", "delay", "heartbeat_interval", "v", "user_ids",
    "protocol_version", "transition_id", "epoch",
]  # fmt: skip
field_values = st.recursive(
    json_values | st.lists(st.integers(-1, 256), min_size=31, max_size=33),
    lambda children: st.dictionaries(
        st.sampled_from(WIRE_FIELDS), children, max_size=6
    ),
    max_leaves=10,
)
plausible_frames = st.fixed_dictionaries(
    {
        "op": st.sampled_from([int(op) for op in VoiceOp]),
        "d": st.dictionaries(st.sampled_from(WIRE_FIELDS), field_values, max_size=8)
        | json_values,
    },
    optional={"seq": st.integers(0, 2**40) | json_values},
)


@st.composite
def mutated_frames(draw: st.DrawFn) -> dict[str, Any]:
    """A valid JSON message with one field of d (or of d's "data") removed or replaced."""
    message = draw(st.one_of(*JSON_MESSAGES.values()))
    frame: dict[str, Any] = json.loads(str(encode_voice_message(message)))
    target = frame["d"]
    if (
        isinstance(target, dict)
        and isinstance(target.get("data"), dict)
        and draw(st.booleans())
    ):
        target = target["data"]
    if isinstance(target, dict) and target:
        key = draw(st.sampled_from(sorted(target)))
        if draw(st.booleans()):
            del target[key]
        else:
            target[key] = draw(field_values)
    else:
        frame["d"] = draw(field_values)
    return frame


@given(frame=plausible_frames | mutated_frames(), from_server=st.booleans())
def test_decode_voice_message_near_miss_json_only_raises_remote_error(
    frame: dict[str, Any], from_server: bool
) -> None:
    """Frames with real ops and mistyped or missing fields decode or raise RemoteProtocolError."""
    _decode_or_reject(json.dumps(frame), from_server)


@given(
    op=st.sampled_from([int(op) for op in VoiceOp]),
    payload=st.binary(max_size=8),
    seq=u16,
    from_server=st.booleans(),
)
def test_decode_voice_message_near_miss_binary_only_raises_remote_error(
    op: int, payload: bytes, seq: int, from_server: bool
) -> None:
    """Binary frames with every known op and short payloads decode or raise RemoteProtocolError."""
    header = seq.to_bytes(2, "big") + bytes([op]) if from_server else bytes([op])
    _decode_or_reject(header + payload, from_server)
