"""The TLS presentation language as MLS (RFC 9420 §2.1) uses it, and MLS's constants.

Integers are big-endian and fixed-width. Every vector, ``opaque x<V>`` or ``T x<V>``,
starts with a variable-length integer giving its length in *bytes* (never an element
count). That integer is QUIC-style: the top two bits of the first byte say whether it
takes 1, 2 or 4 bytes, ``11`` is invalid, and the shortest form is mandatory, because
davey (through openmls) rejects a longer one. The reader enforces the same rules, so
bytes it accepts are bytes every client accepts.
"""

from __future__ import annotations

import enum
import struct

from voicesim._exceptions import LocalProtocolError, RemoteProtocolError

__all__ = [
    "CIPHER_SUITE_P256",
    "CREDENTIAL_BASIC",
    "MAX_VARINT",
    "MLS_VERSION",
    "ContentType",
    "LeafNodeSource",
    "ProposalOrRefType",
    "ProposalType",
    "SenderType",
    "TlsReader",
    "WireFormat",
    "decode_varint",
    "encode_opaque",
    "encode_varint",
]

MLS_VERSION = 1
"""ProtocolVersion mls10."""
CIPHER_SUITE_P256 = 2
"""MLS_128_DHKEMP256_AES128GCM_SHA256_P256, the only suite DAVE version 1 uses."""
CREDENTIAL_BASIC = 1
CREDENTIAL_X509 = 2
MAX_VARINT = (1 << 30) - 1


class WireFormat(enum.IntEnum):
    PUBLIC_MESSAGE = 1
    PRIVATE_MESSAGE = 2
    WELCOME = 3
    GROUP_INFO = 4
    KEY_PACKAGE = 5


class SenderType(enum.IntEnum):
    MEMBER = 1
    EXTERNAL = 2
    NEW_MEMBER_PROPOSAL = 3
    NEW_MEMBER_COMMIT = 4


class ContentType(enum.IntEnum):
    APPLICATION = 1
    PROPOSAL = 2
    COMMIT = 3


class ProposalType(enum.IntEnum):
    ADD = 1
    UPDATE = 2
    REMOVE = 3


class ProposalOrRefType(enum.IntEnum):
    PROPOSAL = 1
    REFERENCE = 2


class LeafNodeSource(enum.IntEnum):
    KEY_PACKAGE = 1
    UPDATE = 2
    COMMIT = 3


_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def encode_varint(value: int) -> bytes:
    """Encode a length in the shortest MLS variable-length form."""
    if value < 0 or value > MAX_VARINT:
        raise LocalProtocolError(f"MLS varint out of range: {value!r}")
    if value < 1 << 6:
        return bytes((value,))
    if value < 1 << 14:
        return _U16.pack(0x4000 | value)
    return _U32.pack(0x8000_0000 | value)


def decode_varint(data: bytes, offset: int = 0) -> tuple[int, int]:
    """Decode the varint at ``offset``; return ``(value, offset after it)``."""
    reader = TlsReader(data, offset)
    value = reader.varint()
    return value, reader.position


def encode_opaque(data: bytes) -> bytes:
    """Encode ``opaque data<V>``: the varint byte length, then the bytes."""
    return encode_varint(len(data)) + data


class TlsReader:
    """Reads TLS-encoded fields from ``data[start:end]``, front to back.

    Every read that would run past ``end`` raises :class:`RemoteProtocolError`, so
    callers never see ``IndexError`` or ``struct.error`` from truncated input.
    """

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self._data = data
        self._pos = start
        self._end = len(data) if end is None else end

    @property
    def data(self) -> bytes:
        """The whole buffer this reader (and every sub-reader of it) reads from."""
        return self._data

    @property
    def position(self) -> int:
        """The offset, into :attr:`data`, of the next byte to be read."""
        return self._pos

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    def _advance(self, n: int, what: str) -> int:
        start = self._pos
        if n > self._end - start:
            raise RemoteProtocolError(
                f"MLS data truncated: {what} needs {n} bytes at offset {start}, "
                f"{self._end - start} left"
            )
        self._pos = start + n
        return start

    def raw(self, n: int, what: str = "field") -> bytes:
        start = self._advance(n, what)
        return self._data[start : start + n]

    def uint8(self, what: str = "uint8") -> int:
        return self._data[self._advance(1, what)]

    def uint16(self, what: str = "uint16") -> int:
        value: int = _U16.unpack_from(self._data, self._advance(2, what))[0]
        return value

    def uint32(self, what: str = "uint32") -> int:
        value: int = _U32.unpack_from(self._data, self._advance(4, what))[0]
        return value

    def uint64(self, what: str = "uint64") -> int:
        value: int = _U64.unpack_from(self._data, self._advance(8, what))[0]
        return value

    def varint(self, what: str = "vector length") -> int:
        first = self._data[self._advance(1, what)]
        prefix = first >> 6
        if prefix == 0:
            return first
        if prefix == 3:
            raise RemoteProtocolError(f"invalid MLS varint prefix 0b11 in {what}")
        extra = 1 if prefix == 1 else 3
        rest = self.raw(extra, what)
        value = int.from_bytes(bytes((first & 0x3F,)) + rest, "big")
        if value < (64 if prefix == 1 else 16384):
            # openmls refuses a length that has a shorter encoding, so must we.
            raise RemoteProtocolError(f"non-minimal MLS varint {value} in {what}")
        return value

    def opaque(self, what: str = "opaque") -> bytes:
        """Read ``opaque x<V>`` and return its bytes."""
        return self.raw(self.varint(what), what)

    def vector(self, what: str = "vector") -> TlsReader:
        """Read a ``<V>`` vector and return a reader limited to its body."""
        length = self.varint(what)
        start = self._advance(length, what)
        return TlsReader(self._data, start, start + length)

    def optional(self, what: str = "optional") -> bool:
        """Read an ``optional<T>`` presence byte; True means T follows."""
        flag = self.uint8(what)
        if flag > 1:
            raise RemoteProtocolError(f"invalid optional flag {flag} in {what}")
        return flag == 1

    def uint16_list(self, what: str) -> tuple[int, ...]:
        """Read a ``uint16 x<V>`` vector."""
        body = self.vector(what)
        if body.remaining % 2:
            raise RemoteProtocolError(f"{what} has an odd byte length")
        return tuple(body.uint16(what) for _ in range(body.remaining // 2))

    def expect_end(self, what: str) -> None:
        """Raise if anything is left: MLS structures must be consumed exactly."""
        if self._pos != self._end:
            raise RemoteProtocolError(
                f"{self._end - self._pos} trailing bytes after {what}"
            )
