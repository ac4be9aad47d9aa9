"""Voice gateway v8 messages of the connection handshake and keepalive.

Each message is a frozen attrs class whose attribute names are the wire names. A
class turns itself into the JSON value of ``d`` with ``to_d()`` (checking its
attributes, LocalProtocolError if one is wrong) and is built from a decoded ``d`` by
``from_d()`` (RemoteProtocolError naming the op and the field if it is malformed).
The framing (``op``, ``seq``, binary headers) lives in ``_voice_gateway``; the DAVE
messages live in ``_dave_messages``.

Decoding is liberal where the two client libraries differ: snowflakes arrive as
strings or integers and are kept as strings, optional fields may be absent or null,
and fields a real server adds (``experiments``, ``video_codec``...) are ignored.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import attrs

from ._fields import FieldReader, FieldWriter
from ._voice_ops import SECRET_KEY_SIZE, U16_MAX, U32_MAX, VoiceOp, voice_where

__all__ = [
    "ClientDisconnect",
    "ClientsConnect",
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
    "UnknownVoiceMessage",
]


@attrs.frozen(kw_only=True)
class Identify:
    """op 0, client to server: start a new voice session."""

    op: ClassVar[VoiceOp] = VoiceOp.IDENTIFY
    server_id: str
    user_id: str
    session_id: str
    token: str
    max_dave_protocol_version: int = 0

    def to_d(self) -> dict[str, Any]:
        w = FieldWriter(self, voice_where(self.op))
        return {
            "server_id": w.snowflake_str("server_id"),
            "user_id": w.snowflake_str("user_id"),
            "session_id": w.string("session_id"),
            "token": w.string("token"),
            "max_dave_protocol_version": w.integer("max_dave_protocol_version", lo=0),
        }

    @classmethod
    def from_d(cls, d: object) -> Self:
        r = FieldReader(d, voice_where(cls.op))
        return cls(
            server_id=r.snowflake_str("server_id"),
            user_id=r.snowflake_str("user_id"),
            session_id=r.string("session_id"),
            token=r.string("token"),
            # Absent or 0 both mean the client cannot do DAVE.
            max_dave_protocol_version=r.integer(
                "max_dave_protocol_version", lo=0, default=0
            ),
        )


@attrs.frozen(kw_only=True)
class SelectProtocol:
    """op 1, client to server: the address IP discovery found and the chosen mode.

    On the wire address, port and mode sit in a nested ``data`` object.
    """

    op: ClassVar[VoiceOp] = VoiceOp.SELECT_PROTOCOL
    protocol: str = "udp"
    address: str
    port: int
    mode: str

    def to_d(self) -> dict[str, Any]:
        w = FieldWriter(self, voice_where(self.op))
        data = {
            "address": w.string("address"),
            "port": w.integer("port", lo=0, hi=U16_MAX),
            "mode": w.string("mode"),
        }
        return {"protocol": w.string("protocol"), "data": data}

    @classmethod
    def from_d(cls, d: object) -> Self:
        r = FieldReader(d, voice_where(cls.op))
        protocol = r.string("protocol")
        data = r.nested("data")
        return cls(
            protocol=protocol,
            address=data.string("address"),
            port=data.integer("port", lo=0, hi=U16_MAX),
            mode=data.string("mode"),
        )


@attrs.frozen(kw_only=True)
class Ready:
    """op 2, server to client: our SSRC, the UDP endpoint and the offered modes."""

    op: ClassVar[VoiceOp] = VoiceOp.READY
    ssrc: int
    ip: str
    port: int
    modes: tuple[str, ...]

    def to_d(self) -> dict[str, Any]:
        w = FieldWriter(self, voice_where(self.op))
        return {
            "ssrc": w.integer("ssrc", lo=0, hi=U32_MAX),
            "ip": w.string("ip"),
            "port": w.integer("port", lo=0, hi=U16_MAX),
            "modes": list(w.strings("modes")),
        }

    @classmethod
    def from_d(cls, d: object) -> Self:
        # A heartbeat_interval in Ready is documented as erroneous, so it is ignored.
        r = FieldReader(d, voice_where(cls.op))
        return cls(
            ssrc=r.integer("ssrc", lo=0, hi=U32_MAX),
            ip=r.string("ip"),
            port=r.integer("port", lo=0, hi=U16_MAX),
            modes=r.strings("modes"),
        )


@attrs.frozen(kw_only=True)
class Heartbeat:
    """op 3, client to server (v8 form): a nonce and the last seq seen, -1 for none."""

    op: ClassVar[VoiceOp] = VoiceOp.HEARTBEAT
    t: int
    seq_ack: int = -1

    def to_d(self) -> dict[str, Any]:
        w = FieldWriter(self, voice_where(self.op))
        return {"t": w.integer("t"), "seq_ack": w.integer("seq_ack")}

    @classmethod
    def from_d(cls, d: object) -> Self:
        # A client that has seen no seq may omit seq_ack instead of sending -1.
        r = FieldReader(d, voice_where(cls.op))
        return cls(t=r.integer("t"), seq_ack=r.integer("seq_ack", default=-1))


@attrs.frozen(kw_only=True)
class SessionDescription:
    """op 4, server to client: the transport key and the DAVE version chosen.

    ``secret_key`` is a list of 32 integers on the wire and bytes here. The field
    ``dave_protocol_version`` is always sent, because discord.py indexes it directly.
    """

    op: ClassVar[VoiceOp] = VoiceOp.SESSION_DESCRIPTION
    mode: str
    secret_key: bytes
    dave_protocol_version: int = 0
    audio_codec: str = "opus"
    media_session_id: str = ""

    def to_d(self) -> dict[str, Any]:
        w = FieldWriter(self, voice_where(self.op))
        return {
            "mode": w.string("mode"),
            "secret_key": w.key_bytes("secret_key", SECRET_KEY_SIZE),
            "dave_protocol_version": w.integer("dave_protocol_version", lo=0),
            "audio_codec": w.string("audio_codec"),
            "media_session_id": w.string("media_session_id"),
        }

    @classmethod
    def from_d(cls, d: object) -> Self:
        r = FieldReader(d, voice_where(cls.op))
        return cls(
            mode=r.string("mode"),
            secret_key=r.key_bytes("secret_key", SECRET_KEY_SIZE),
            dave_protocol_version=r.integer("dave_protocol_version", lo=0, default=0),
            audio_codec=r.string("audio_codec", default="opus"),
            media_session_id=r.string("media_session_id", default=""),
        )


@attrs.frozen(kw_only=True)
class Speaking:
    """op 5, both directions: a speaking bitmask for an SSRC.

    Clients send ``delay`` (always 0) and no ``user_id``; the server sends
    ``user_id`` and no ``delay``. A field that is None is left out on the wire.
    """

    op: ClassVar[VoiceOp] = VoiceOp.SPEAKING
    speaking: int
    ssrc: int
    delay: int | None = 0
    user_id: str | None = None

    def to_d(self) -> dict[str, Any]:
        w = FieldWriter(self, voice_where(self.op))
        d: dict[str, Any] = {
            "speaking": w.integer("speaking", lo=0),
            "ssrc": w.integer("ssrc", lo=0, hi=U32_MAX),
        }
        if self.delay is not None:
            d["delay"] = w.integer("delay", lo=0)
        if self.user_id is not None:
            d["user_id"] = w.snowflake_str("user_id")
        return d

    @classmethod
    def from_d(cls, d: object) -> Self:
        r = FieldReader(d, voice_where(cls.op))
        return cls(
            speaking=r.integer("speaking", lo=0),
            ssrc=r.integer("ssrc", lo=0, hi=U32_MAX),
            delay=r.optional_integer("delay", lo=0),
            user_id=r.optional_snowflake_str("user_id"),
        )


@attrs.frozen(kw_only=True)
class HeartbeatAck:
    """op 6, server to client (v8 form): echoes the heartbeat's nonce."""

    op: ClassVar[VoiceOp] = VoiceOp.HEARTBEAT_ACK
    t: int

    def to_d(self) -> dict[str, Any]:
        return {"t": FieldWriter(self, voice_where(self.op)).integer("t")}

    @classmethod
    def from_d(cls, d: object) -> Self:
        return cls(t=FieldReader(d, voice_where(cls.op)).integer("t"))


@attrs.frozen(kw_only=True)
class Resume:
    """op 7, client to server: resume a session, asking for messages after ``seq_ack``."""

    op: ClassVar[VoiceOp] = VoiceOp.RESUME
    server_id: str
    session_id: str
    token: str
    seq_ack: int = -1

    def to_d(self) -> dict[str, Any]:
        w = FieldWriter(self, voice_where(self.op))
        return {
            "server_id": w.snowflake_str("server_id"),
            "session_id": w.string("session_id"),
            "token": w.string("token"),
            "seq_ack": w.integer("seq_ack"),
        }

    @classmethod
    def from_d(cls, d: object) -> Self:
        r = FieldReader(d, voice_where(cls.op))
        return cls(
            server_id=r.snowflake_str("server_id"),
            session_id=r.string("session_id"),
            token=r.string("token"),
            seq_ack=r.integer("seq_ack", default=-1),
        )


@attrs.frozen(kw_only=True)
class Hello:
    """op 8, server to client, first on every connection: the heartbeat period in ms.

    The interval may be fractional on the wire; a whole number is sent as an integer,
    which is what real servers do.
    """

    op: ClassVar[VoiceOp] = VoiceOp.HELLO
    heartbeat_interval: float
    v: int = 8

    def to_d(self) -> dict[str, Any]:
        w = FieldWriter(self, voice_where(self.op))
        interval = w.number("heartbeat_interval", positive=True)
        return {
            "v": w.integer("v", lo=0),
            "heartbeat_interval": int(interval) if interval.is_integer() else interval,
        }

    @classmethod
    def from_d(cls, d: object) -> Self:
        r = FieldReader(d, voice_where(cls.op))
        return cls(
            heartbeat_interval=r.number("heartbeat_interval", positive=True),
            v=r.integer("v", lo=0, default=8),
        )


@attrs.frozen(kw_only=True)
class Resumed:
    """op 9, server to client: the resume worked; replayed messages follow."""

    op: ClassVar[VoiceOp] = VoiceOp.RESUMED

    def to_d(self) -> None:
        return None

    @classmethod
    def from_d(cls, d: object) -> Self:
        # d is null; an object is tolerated (and ignored) in case a server fills it in.
        if d is not None:
            FieldReader(d, voice_where(cls.op))
        return cls()


@attrs.frozen(kw_only=True)
class ClientsConnect:
    """op 11, server to client: users present in (or joining) the call."""

    op: ClassVar[VoiceOp] = VoiceOp.CLIENTS_CONNECT
    user_ids: tuple[str, ...]

    def to_d(self) -> dict[str, Any]:
        w = FieldWriter(self, voice_where(self.op))
        return {"user_ids": list(w.snowflake_strs("user_ids"))}

    @classmethod
    def from_d(cls, d: object) -> Self:
        r = FieldReader(d, voice_where(cls.op))
        return cls(user_ids=r.snowflake_strs("user_ids"))


@attrs.frozen(kw_only=True)
class ClientDisconnect:
    """op 13, server to client: a user left the call."""

    op: ClassVar[VoiceOp] = VoiceOp.CLIENT_DISCONNECT
    user_id: str

    def to_d(self) -> dict[str, Any]:
        w = FieldWriter(self, voice_where(self.op))
        return {"user_id": w.snowflake_str("user_id")}

    @classmethod
    def from_d(cls, d: object) -> Self:
        r = FieldReader(d, voice_where(cls.op))
        return cls(user_id=r.snowflake_str("user_id"))


@attrs.frozen(kw_only=True)
class UnknownVoiceMessage:
    """A message whose op has no class here (ops 12-20, or anything newer).

    ``d`` is the decoded JSON value for a text frame, or the payload bytes after the
    header for a binary frame. Decoding never fails on an unknown op, so a client keeps
    working when Discord adds one.
    """

    op: int
    d: Any = None
