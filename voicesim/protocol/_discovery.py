"""IP discovery and keepalive datagrams on the voice UDP socket.

Before it can select a protocol, a client asks the media server which address and port
its UDP socket appears from. Request and response have one 74-byte layout, all integers
big-endian::

    type u16 (1 request, 2 response) | length u16 (always 70) | ssrc u32
    | address: 64 bytes, NUL-terminated ASCII, zeros in the request | port u16

@discordjs/voice also sends an 8-byte keepalive every few seconds (a little-endian u32
counter and four zero bytes) that a server must not mistake for RTP.
"""

from __future__ import annotations

import struct

from voicesim._exceptions import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DISCOVERY_PACKET_SIZE",
    "KEEPALIVE_SIZE",
    "build_discovery_request",
    "build_discovery_response",
    "build_keepalive",
    "is_discovery_request",
    "is_keepalive",
    "parse_discovery_request",
    "parse_discovery_response",
]

DISCOVERY_PACKET_SIZE = 74
KEEPALIVE_SIZE = 8

_REQUEST = 0x0001
_RESPONSE = 0x0002
# The length field counts what follows it: ssrc, address and port.
_LENGTH = 70
_ADDRESS_SIZE = 64

_PACKET = struct.Struct(">HHI64sH")
_REQUEST_PREFIX = struct.pack(">HH", _REQUEST, _LENGTH)
_KEEPALIVE = struct.Struct("<I4x")


def build_discovery_request(ssrc: int) -> bytes:
    """Return the request a client sends to learn its external address."""
    _check_ssrc(ssrc)
    return _PACKET.pack(_REQUEST, _LENGTH, ssrc, b"", 0)


def parse_discovery_request(data: bytes) -> int:
    """Return the SSRC of a discovery request.

    The address and port fields are not checked: clients send zeros there and a server
    has no use for them.
    """
    kind, ssrc, _address, _port = _unpack(data)
    if kind != _REQUEST:
        raise RemoteProtocolError(f"IP discovery type must be 1 (request), got {kind}")
    return ssrc


def build_discovery_response(ssrc: int, address: str, port: int) -> bytes:
    """Return the response a server sends with the address and port it saw."""
    _check_ssrc(ssrc)
    if not 0 <= port <= 0xFFFF:
        raise LocalProtocolError(f"port must be 0..65535, got {port!r}")
    try:
        raw_address = address.encode("ascii")
    except UnicodeEncodeError:
        raise LocalProtocolError(f"address must be ASCII, got {address!r}") from None
    # One byte must stay free for the terminating NUL.
    if not raw_address or len(raw_address) >= _ADDRESS_SIZE or b"\x00" in raw_address:
        raise LocalProtocolError(
            f"address must be 1..63 ASCII characters without NUL, got {address!r}"
        )
    return _PACKET.pack(_RESPONSE, _LENGTH, ssrc, raw_address, port)


def parse_discovery_response(data: bytes) -> tuple[int, str, int]:
    """Return ``(ssrc, address, port)`` from a discovery response.

    As both client libraries do, bytes after the address's terminating NUL are ignored.
    """
    kind, ssrc, raw_address, port = _unpack(data)
    if kind != _RESPONSE:
        raise RemoteProtocolError(f"IP discovery type must be 2 (response), got {kind}")

    end = raw_address.find(b"\x00")
    if end <= 0:
        raise RemoteProtocolError(
            "IP discovery address is empty or not NUL-terminated: "
            f"{raw_address.rstrip(bytes(1))!r}"
        )
    try:
        address = raw_address[:end].decode("ascii")
    except UnicodeDecodeError:
        raise RemoteProtocolError(
            f"IP discovery address is not ASCII: {raw_address[:end]!r}"
        ) from None
    if not address.isprintable():
        raise RemoteProtocolError(
            f"IP discovery address has control characters: {address!r}"
        )
    return ssrc, address, port


def is_discovery_request(data: bytes) -> bool:
    """Tell a discovery request apart from RTP and keepalives, without parsing it."""
    return len(data) == DISCOVERY_PACKET_SIZE and data[:4] == _REQUEST_PREFIX


def build_keepalive(counter: int) -> bytes:
    """Return the 8-byte keepalive @discordjs/voice sends, with its counter."""
    try:
        return _KEEPALIVE.pack(counter)
    except struct.error:
        raise LocalProtocolError(
            f"keepalive counter must fit in 32 bits, got {counter!r}"
        ) from None


def is_keepalive(data: bytes) -> bool:
    """Tell whether a datagram is an 8-byte keepalive (any counter, four zero bytes)."""
    return len(data) == KEEPALIVE_SIZE and data[4:] == b"\x00\x00\x00\x00"


def _unpack(data: bytes) -> tuple[int, int, bytes, int]:
    if len(data) != DISCOVERY_PACKET_SIZE:
        raise RemoteProtocolError(
            f"IP discovery packet must be {DISCOVERY_PACKET_SIZE} bytes, got {len(data)}"
        )
    kind, length, ssrc, raw_address, port = _PACKET.unpack(data)
    if length != _LENGTH:
        raise RemoteProtocolError(
            f"IP discovery length field must be {_LENGTH}, got {length}"
        )
    return kind, ssrc, raw_address, port


def _check_ssrc(ssrc: int) -> None:
    if not 0 <= ssrc <= 0xFFFFFFFF:
        raise LocalProtocolError(f"ssrc must fit in 32 bits, got {ssrc!r}")
