"""Main gateway (v10) messages: the envelope, and the few payloads a voice join needs.

Every main gateway message is the JSON envelope ``{"op", "d", "s", "t"}``;
:class:`GatewayPayload` is that envelope with ``d`` left as decoded JSON. The typed
classes below read and build the ``d`` of the messages that matter for voice: Hello,
Heartbeat, Identify, Resume, Update Voice State (op 4), Invalid Session, Reconnect and
Dispatch. Each has ``from_payload(d)``, which raises :class:`RemoteProtocolError`
naming the op and field, and ``to_payload()``, which raises
:class:`LocalProtocolError` for a bad attribute. (Dispatch is built from the whole
envelope instead, with ``from_envelope``.) The two dispatches that answer a voice join
are in ``_gateway_events``.

Ids are integers here, as discord.py sends them; decoding also accepts the strings
discord.js sends.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar, Self

import attrs

from .._exceptions import RemoteProtocolError
from ._fields import MISSING, FieldReader, FieldWriter, describe, dump_json, load_json

__all__ = [
    "GatewayDispatch",
    "GatewayHeartbeat",
    "GatewayHeartbeatAck",
    "GatewayHello",
    "GatewayIdentify",
    "GatewayInvalidSession",
    "GatewayOp",
    "GatewayPayload",
    "GatewayReconnect",
    "GatewayResume",
    "UpdateVoiceState",
    "decode_gateway_payload",
    "encode_gateway_payload",
    "parse_snowflake",
]


class GatewayOp(enum.IntEnum):
    """Main gateway opcodes used by bots."""

    DISPATCH = 0
    HEARTBEAT = 1
    IDENTIFY = 2
    PRESENCE_UPDATE = 3
    VOICE_STATE_UPDATE = 4
    RESUME = 6
    RECONNECT = 7
    REQUEST_GUILD_MEMBERS = 8
    INVALID_SESSION = 9
    HELLO = 10
    HEARTBEAT_ACK = 11


def _where(op: int) -> str:
    try:
        return f"gateway op {op} ({GatewayOp(op).name})"
    except ValueError:
        return f"gateway op {op}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@attrs.frozen(kw_only=True)
class GatewayPayload:
    """One main gateway message: ``op``, its data ``d``, and for dispatches ``s`` and ``t``."""

    op: int
    d: Any = None
    s: int | None = None
    t: str | None = None


def decode_gateway_payload(data: str | bytes) -> GatewayPayload:
    """Parse one (already decompressed) gateway message.

    ``d`` is not checked here; the typed classes do that. Raises
    :class:`RemoteProtocolError` for bad JSON or a bad envelope.
    """
    frame = load_json(data, "gateway message")

    if not isinstance(frame, dict):
        raise RemoteProtocolError(
            f"gateway message: must be a JSON object, got {describe(frame)}"
        )
    op = frame.get("op", MISSING)
    if not _is_int(op):
        raise RemoteProtocolError(
            f"gateway message: field 'op' must be an integer, got {describe(op)}"
        )
    assert isinstance(op, int)
    where = _where(op)

    s = frame.get("s")
    if s is not None and not _is_int(s):
        raise RemoteProtocolError(
            f"{where}: field 's' must be an integer, got {describe(s)}"
        )
    t = frame.get("t")
    if t is not None and not isinstance(t, str):
        raise RemoteProtocolError(
            f"{where}: field 't' must be a string, got {describe(t)}"
        )
    return GatewayPayload(op=op, d=frame.get("d"), s=s, t=t)


def encode_gateway_payload(p: GatewayPayload) -> str:
    """Serialise one gateway message; ``s`` and ``t`` are left out when None.

    Raises :class:`LocalProtocolError` if a field has the wrong type or ``d`` is not
    JSON-serialisable.
    """
    w = FieldWriter(p, "gateway message")
    where = _where(w.integer("op"))
    w.where = where
    frame: dict[str, Any] = {"op": p.op, "d": p.d}
    if p.s is not None:
        frame["s"] = w.integer("s")
    if p.t is not None:
        frame["t"] = w.string("t")
    return dump_json(frame, where)


def parse_snowflake(value: object, *, field: str) -> int:
    """An id that arrived as ``"123"`` or ``123``; RemoteProtocolError otherwise."""
    return FieldReader({field: value}, "snowflake").snowflake_int(field)


def _reader(cls: Any, d: object) -> FieldReader:
    return FieldReader(d, _where(cls.op))


def _writer(msg: Any) -> FieldWriter:
    return FieldWriter(msg, _where(msg.op))


def _null_d(cls: Any, d: object) -> None:
    # For messages whose d is null: an object is tolerated and ignored, anything else
    # is a type error.
    if d is not None:
        _reader(cls, d)


@attrs.frozen(kw_only=True)
class GatewayHello:
    """op 10, server to client: the heartbeat period in milliseconds."""

    op: ClassVar[GatewayOp] = GatewayOp.HELLO
    heartbeat_interval: int

    @classmethod
    def from_payload(cls, d: object) -> Self:
        return cls(
            heartbeat_interval=_reader(cls, d).integer("heartbeat_interval", lo=1)
        )

    def to_payload(self) -> GatewayPayload:
        interval = _writer(self).integer("heartbeat_interval", lo=1)
        return GatewayPayload(op=self.op, d={"heartbeat_interval": interval})


@attrs.frozen(kw_only=True)
class GatewayHeartbeat:
    """op 1, both directions: the last dispatch ``s`` seen, or None before the first.

    The server may also send it to ask for a heartbeat at once.
    """

    op: ClassVar[GatewayOp] = GatewayOp.HEARTBEAT
    seq: int | None = None

    @classmethod
    def from_payload(cls, d: object) -> Self:
        if d is not None and not _is_int(d):
            raise RemoteProtocolError(
                f"{_where(cls.op)}: d must be an integer or null, got {describe(d)}"
            )
        assert d is None or isinstance(d, int)
        return cls(seq=d)

    def to_payload(self) -> GatewayPayload:
        seq = None if self.seq is None else _writer(self).integer("seq")
        return GatewayPayload(op=self.op, d=seq)


@attrs.frozen(kw_only=True)
class GatewayHeartbeatAck:
    """op 11, server to client: the heartbeat arrived."""

    op: ClassVar[GatewayOp] = GatewayOp.HEARTBEAT_ACK

    @classmethod
    def from_payload(cls, d: object) -> Self:
        _null_d(cls, d)
        return cls()

    def to_payload(self) -> GatewayPayload:
        return GatewayPayload(op=self.op)


@attrs.frozen(kw_only=True)
class GatewayIdentify:
    """op 2, client to server: log in.

    ``compress``, ``large_threshold``, ``shard`` and ``presence`` are optional and left
    out when None; discord.py sends ``compress: true`` and ``large_threshold: 250``.
    """

    op: ClassVar[GatewayOp] = GatewayOp.IDENTIFY
    token: str
    intents: int
    properties: dict[str, Any]
    compress: bool | None = None
    large_threshold: int | None = None
    shard: tuple[int, int] | None = None
    presence: dict[str, Any] | None = None

    @classmethod
    def from_payload(cls, d: object) -> Self:
        r = _reader(cls, d)
        properties = r.mapping("properties")
        assert properties is not None
        return cls(
            token=r.string("token"),
            intents=r.integer("intents", lo=0),
            properties=properties,
            compress=None if r.d.get("compress") is None else r.boolean("compress"),
            large_threshold=r.optional_integer("large_threshold", lo=0),
            shard=_read_shard(r),
            presence=r.mapping("presence", optional=True),
        )

    def to_payload(self) -> GatewayPayload:
        w = _writer(self)
        d: dict[str, Any] = {
            "token": w.string("token"),
            "properties": w.mapping("properties"),
            "intents": w.integer("intents", lo=0),
        }
        if self.compress is not None:
            d["compress"] = w.boolean("compress")
        if self.large_threshold is not None:
            d["large_threshold"] = w.integer("large_threshold", lo=0)
        if self.shard is not None:
            shard = self.shard
            if len(shard) != 2 or not all(_is_int(n) and n >= 0 for n in shard):
                w.fail("shard", "a pair of non-negative integers", shard)
            d["shard"] = list(shard)
        if self.presence is not None:
            d["presence"] = w.mapping("presence")
        return GatewayPayload(op=self.op, d=d)


def _read_shard(r: FieldReader) -> tuple[int, int] | None:
    shard = r.d.get("shard")
    if shard is None:
        return None
    if not (
        isinstance(shard, list)
        and len(shard) == 2
        and all(_is_int(n) and n >= 0 for n in shard)
    ):
        r.fail("shard", "a pair of non-negative integers", shard)
    return (shard[0], shard[1])


@attrs.frozen(kw_only=True)
class GatewayResume:
    """op 6, client to server: resume a session from the last dispatch ``seq`` seen."""

    op: ClassVar[GatewayOp] = GatewayOp.RESUME
    token: str
    session_id: str
    seq: int

    @classmethod
    def from_payload(cls, d: object) -> Self:
        r = _reader(cls, d)
        return cls(
            token=r.string("token"),
            session_id=r.string("session_id"),
            seq=r.integer("seq", lo=0),
        )

    def to_payload(self) -> GatewayPayload:
        w = _writer(self)
        d = {
            "token": w.string("token"),
            "session_id": w.string("session_id"),
            "seq": w.integer("seq", lo=0),
        }
        return GatewayPayload(op=self.op, d=d)


@attrs.frozen(kw_only=True)
class UpdateVoiceState:
    """op 4, client to server: join, move to, or (``channel_id`` None) leave a channel.

    Sent with integer ids, like discord.py; decoding also takes string ids.
    """

    op: ClassVar[GatewayOp] = GatewayOp.VOICE_STATE_UPDATE
    guild_id: int
    channel_id: int | None
    self_mute: bool = False
    self_deaf: bool = False

    @classmethod
    def from_payload(cls, d: object) -> Self:
        r = _reader(cls, d)
        return cls(
            guild_id=r.snowflake_int("guild_id"),
            channel_id=r.nullable_snowflake_int("channel_id"),
            self_mute=r.boolean("self_mute"),
            self_deaf=r.boolean("self_deaf"),
        )

    def to_payload(self) -> GatewayPayload:
        w = _writer(self)
        d = {
            "guild_id": w.snowflake_int("guild_id"),
            "channel_id": w.nullable_snowflake_int("channel_id"),
            "self_mute": w.boolean("self_mute"),
            "self_deaf": w.boolean("self_deaf"),
        }
        return GatewayPayload(op=self.op, d=d)


@attrs.frozen(kw_only=True)
class GatewayInvalidSession:
    """op 9, server to client: the session is gone; ``resumable`` says if Resume may work."""

    op: ClassVar[GatewayOp] = GatewayOp.INVALID_SESSION
    resumable: bool = False

    @classmethod
    def from_payload(cls, d: object) -> Self:
        if not isinstance(d, bool):
            raise RemoteProtocolError(
                f"{_where(cls.op)}: d must be a boolean, got {describe(d)}"
            )
        return cls(resumable=d)

    def to_payload(self) -> GatewayPayload:
        return GatewayPayload(op=self.op, d=_writer(self).boolean("resumable"))


@attrs.frozen(kw_only=True)
class GatewayReconnect:
    """op 7, server to client: reconnect and resume."""

    op: ClassVar[GatewayOp] = GatewayOp.RECONNECT

    @classmethod
    def from_payload(cls, d: object) -> Self:
        _null_d(cls, d)
        return cls()

    def to_payload(self) -> GatewayPayload:
        return GatewayPayload(op=self.op)


@attrs.frozen(kw_only=True)
class GatewayDispatch:
    """op 0, server to client: the event ``t`` with data ``d``, numbered ``s``."""

    op: ClassVar[GatewayOp] = GatewayOp.DISPATCH
    t: str
    s: int
    d: Any = None

    @classmethod
    def from_envelope(cls, p: GatewayPayload) -> Self:
        """The dispatch in a decoded envelope; dispatches must carry ``t`` and ``s``."""
        where = _where(cls.op)
        if p.op != cls.op:
            raise RemoteProtocolError(f"{where}: got a message with op {p.op}")
        if p.t is None:
            raise RemoteProtocolError(f"{where}: field 't' is missing")
        if p.s is None:
            raise RemoteProtocolError(f"{where}: field 's' is missing")
        return cls(t=p.t, s=p.s, d=p.d)

    def to_payload(self) -> GatewayPayload:
        w = _writer(self)
        return GatewayPayload(op=self.op, d=self.d, s=w.integer("s"), t=w.string("t"))
