"""Voice gateway v8 framing: messages to websocket frames and back.

A text frame holds ``{"op": N, "d": ..., "seq": S}``; the server adds the top-level
``seq`` to the messages it would replay after a resume. A binary frame from the server
is ``[u16 big-endian seq][u8 op][payload]`` and one from a client is
``[u8 op][payload]``: only DAVE's MLS messages (ops 25-30) travel in binary frames.

:func:`decode_voice_message` is the single entry for everything a peer sends. It
returns an :class:`UnknownVoiceMessage` for an op it has no class for and raises
:class:`RemoteProtocolError` for anything malformed, never another exception, so a
connection can close with 4002 (failed to decode) on a bad frame and keep going on an
unexpected one.

The message classes live in ``_voice_messages`` and ``_dave_messages`` and the close
codes in ``_close_codes``; this module re-exports them all.
"""

from __future__ import annotations

import struct
from typing import Any, Final, TypeAlias

from .._exceptions import LocalProtocolError, RemoteProtocolError
from ._close_codes import (
    DAVE_REQUIRED_REASON,
    NORMAL_CLOSURE,
    CloseAction,
    VoiceCloseCode,
    close_action,
    close_code_description,
)
from ._dave_messages import (
    PROPOSALS_APPEND,
    PROPOSALS_REVOKE,
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
)
from ._fields import MISSING, describe, dump_json, load_json
from ._voice_messages import (
    ClientDisconnect,
    ClientsConnect,
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
)
from ._voice_ops import U16_MAX, SpeakingFlags, VoiceOp, voice_where

__all__ = [
    "DAVE_REQUIRED_REASON",
    "NORMAL_CLOSURE",
    "PROPOSALS_APPEND",
    "PROPOSALS_REVOKE",
    "ClientDisconnect",
    "ClientsConnect",
    "CloseAction",
    "DaveExecuteTransition",
    "DaveMlsAnnounceCommitTransition",
    "DaveMlsCommitWelcome",
    "DaveMlsExternalSender",
    "DaveMlsInvalidCommitWelcome",
    "DaveMlsKeyPackage",
    "DaveMlsProposals",
    "DaveMlsWelcome",
    "DavePrepareEpoch",
    "DavePrepareTransition",
    "DaveTransitionReady",
    "Heartbeat",
    "HeartbeatAck",
    "Hello",
    "Identify",
    "Ready",
    "Resume",
    "Resumed",
    "SelectProtocol",
    "SessionDescription",
    "Speaking",
    "SpeakingFlags",
    "UnknownVoiceMessage",
    "VoiceCloseCode",
    "VoiceMessage",
    "VoiceOp",
    "close_action",
    "close_code_description",
    "decode_voice_message",
    "encode_voice_message",
]

JsonVoiceMessage: TypeAlias = (
    Identify
    | SelectProtocol
    | Ready
    | Heartbeat
    | SessionDescription
    | Speaking
    | HeartbeatAck
    | Resume
    | Hello
    | Resumed
    | ClientsConnect
    | ClientDisconnect
    | DavePrepareTransition
    | DaveExecuteTransition
    | DaveTransitionReady
    | DavePrepareEpoch
    | DaveMlsInvalidCommitWelcome
)
BinaryVoiceMessage: TypeAlias = (
    DaveMlsExternalSender
    | DaveMlsKeyPackage
    | DaveMlsProposals
    | DaveMlsCommitWelcome
    | DaveMlsAnnounceCommitTransition
    | DaveMlsWelcome
)
VoiceMessage: TypeAlias = JsonVoiceMessage | BinaryVoiceMessage | UnknownVoiceMessage

_JSON_CLASSES: Final[dict[int, type[JsonVoiceMessage]]] = {
    cls.op: cls
    for cls in (
        Identify,
        SelectProtocol,
        Ready,
        Heartbeat,
        SessionDescription,
        Speaking,
        HeartbeatAck,
        Resume,
        Hello,
        Resumed,
        ClientsConnect,
        ClientDisconnect,
        DavePrepareTransition,
        DaveExecuteTransition,
        DaveTransitionReady,
        DavePrepareEpoch,
        DaveMlsInvalidCommitWelcome,
    )
}
_BINARY_CLASSES: Final[dict[int, type[BinaryVoiceMessage]]] = {
    cls.op: cls
    for cls in (
        DaveMlsExternalSender,
        DaveMlsKeyPackage,
        DaveMlsProposals,
        DaveMlsCommitWelcome,
        DaveMlsAnnounceCommitTransition,
        DaveMlsWelcome,
    )
}

_SERVER_HEADER = struct.Struct(">HB")
_BYTES = (bytes, bytearray, memoryview)


def _direction(from_server: bool) -> str:
    return "server to client" if from_server else "client to server"


def encode_voice_message(msg: VoiceMessage, *, seq: int | None = None) -> str | bytes:
    """Encode one message as the websocket frame that carries it.

    JSON messages become a ``str`` for a text frame, with a top-level ``"seq"`` when
    ``seq`` is given. Binary messages become ``bytes``: the server-to-client ones (25,
    27, 29, 30) need ``seq`` for their header, the client-to-server ones (26, 28) must
    not have one. An :class:`UnknownVoiceMessage` whose ``d`` is bytes goes out as a
    binary frame, in the server layout when ``seq`` is given and the client layout
    otherwise. Raises :class:`LocalProtocolError` for anything that cannot be sent.
    """
    if isinstance(msg, UnknownVoiceMessage):
        return _encode_unknown(msg, seq)

    if isinstance(msg, JsonVoiceMessage):
        return _encode_json(msg.op, msg.to_d(), seq)
    if not isinstance(msg, BinaryVoiceMessage):
        raise TypeError(f"not a voice gateway message: {msg!r}")

    where = voice_where(msg.op)
    if msg.from_server:
        if seq is None:
            raise LocalProtocolError(f"{where}: a server binary frame needs a seq")
        return _server_header(where, seq, msg.op) + msg.to_payload()
    if seq is not None:
        raise LocalProtocolError(f"{where}: a client binary frame carries no seq")
    return bytes([msg.op]) + msg.to_payload()


def _server_header(where: str, seq: object, op: int) -> bytes:
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= U16_MAX:
        raise LocalProtocolError(
            f"{where}: binary frame seq must be an integer in [0, 65535], "
            f"got {describe(seq)}"
        )
    return _SERVER_HEADER.pack(seq, op)


def _encode_json(op: int, d: Any, seq: object) -> str:
    where = voice_where(op)
    frame: dict[str, Any] = {"op": op, "d": d}
    if seq is not None:
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise LocalProtocolError(
                f"{where}: seq must be an integer, got {describe(seq)}"
            )
        frame["seq"] = seq
    return dump_json(frame, where)


def _encode_unknown(msg: UnknownVoiceMessage, seq: int | None) -> str | bytes:
    op = msg.op
    if not isinstance(op, int) or isinstance(op, bool):
        raise LocalProtocolError(
            f"UnknownVoiceMessage: op must be an integer, got {describe(op)}"
        )
    where = voice_where(op)

    # An op with a class must be sent through it, so its fields get checked and the
    # receiver decodes it back into that class rather than into an unknown message.
    if op in _JSON_CLASSES or op in _BINARY_CLASSES:
        raise LocalProtocolError(
            f"{where}: has a message class; UnknownVoiceMessage is for other ops"
        )

    if not isinstance(msg.d, _BYTES):
        return _encode_json(op, msg.d, seq)
    if not 0 <= op <= 255:
        raise LocalProtocolError(f"{where}: a binary frame's op must fit in one byte")
    if seq is None:
        return bytes([op]) + bytes(msg.d)
    return _server_header(where, seq, op) + bytes(msg.d)


def decode_voice_message(
    data: str | bytes, *, from_server: bool
) -> tuple[VoiceMessage, int | None]:
    """Decode one websocket frame into ``(message, seq)``.

    ``data`` is a ``str`` for a text frame (JSON) and ``bytes`` for a binary frame.
    ``from_server`` says who sent it, which fixes the binary header layout. ``seq`` is
    the frame's sequence number, or None when it has none (client frames, and server
    JSON messages that are not replayable).

    Raises :class:`RemoteProtocolError`, and nothing else, for a malformed frame.
    """
    if isinstance(data, str):
        return _decode_text(data)
    if isinstance(data, _BYTES):
        return _decode_binary(bytes(data), from_server)
    raise TypeError(f"data must be str or bytes, got {type(data).__name__}")


def _decode_text(text: str) -> tuple[VoiceMessage, int | None]:
    frame = load_json(text, "voice text frame")

    if not isinstance(frame, dict):
        raise RemoteProtocolError(
            f"voice text frame: must be a JSON object, got {describe(frame)}"
        )
    op = frame.get("op")
    if not isinstance(op, int) or isinstance(op, bool):
        raise RemoteProtocolError(
            f"voice text frame: field 'op' must be an integer, got "
            f"{describe(frame.get('op', MISSING))}"
        )
    where = voice_where(op)
    seq = frame.get("seq")
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool)):
        raise RemoteProtocolError(
            f"{where}: field 'seq' must be an integer, got {describe(seq)}"
        )
    d = frame.get("d")

    if op in _BINARY_CLASSES:
        raise RemoteProtocolError(
            f"{where}: must arrive in a binary frame, not as JSON"
        )
    cls = _JSON_CLASSES.get(op)
    if cls is None:
        return UnknownVoiceMessage(op=op, d=d), seq
    return cls.from_d(d), seq


def _decode_binary(frame: bytes, from_server: bool) -> tuple[VoiceMessage, int | None]:
    # Split off the header; its layout depends on the direction.
    seq: int | None
    if from_server:
        if len(frame) < _SERVER_HEADER.size:
            raise RemoteProtocolError(
                f"voice binary frame: {len(frame)} bytes is shorter than the "
                f"{_SERVER_HEADER.size}-byte server header (seq, op)"
            )
        seq, op = _SERVER_HEADER.unpack_from(frame)
        payload = frame[_SERVER_HEADER.size :]
    else:
        if not frame:
            raise RemoteProtocolError(
                "voice binary frame: empty, wanted at least the op"
            )
        seq, op = None, frame[0]
        payload = frame[1:]
    where = voice_where(op)

    # A known op must come in its own frame type and from the side that sends it.
    if op in _JSON_CLASSES:
        raise RemoteProtocolError(
            f"{where}: must arrive as JSON, not in a binary frame"
        )
    cls = _BINARY_CLASSES.get(op)
    if cls is None:
        return UnknownVoiceMessage(op=op, d=payload), seq
    if cls.from_server != from_server:
        raise RemoteProtocolError(
            f"{where}: is sent {_direction(cls.from_server)}, but this frame came "
            f"{_direction(from_server)}"
        )
    return cls.from_payload(payload), seq
