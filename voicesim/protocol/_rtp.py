"""RTP headers as Discord voice uses them (RFC 3550, with RFC 8285 one-byte extensions).

Bots send a bare 12-byte header (``0x80 0x78``, no CSRCs, no extension), and that is the
hot path: :func:`build_rtp_header` packs it with one precompiled struct. Packets that
Discord's media servers forward carry CSRCs rarely and the ``0xBEDE`` one-byte header
extension usually, so parsing handles the whole header.

Under the "rtpsize" AEAD modes only part of the header travels in the clear: the fixed
12 bytes, the CSRCs and, when the X bit is set, the 4-byte extension preamble. The
extension elements are encrypted together with the payload. :func:`rtpsize_clear_length`
computes that clear part, which is also the AEAD's associated data.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from voicesim._exceptions import LocalProtocolError, RemoteProtocolError

__all__ = [
    "EXTENSION_PROFILE_ONE_BYTE",
    "OPUS_PAYLOAD_TYPE",
    "RTP_HEADER_SIZE",
    "RtpHeader",
    "RtpPacket",
    "build_extension_elements",
    "build_rtp",
    "build_rtp_header",
    "is_rtcp",
    "parse_extension_elements",
    "parse_rtp",
    "rtpsize_clear_length",
]

RTP_HEADER_SIZE = 12
OPUS_PAYLOAD_TYPE = 120
EXTENSION_PROFILE_ONE_BYTE = 0xBEDE

RTP_VERSION = 2

# Byte 0 is V(2) P(1) X(1) CC(4); byte 1 is M(1) PT(7).
_PADDING_BIT = 0x20
_EXTENSION_BIT = 0x10
_CSRC_COUNT_MASK = 0x0F
_MARKER_BIT = 0x80
_PAYLOAD_TYPE_MASK = 0x7F

# The one-byte extension form reserves id 0 for padding bytes and id 15 as "stop here".
_EXTENSION_ID_PADDING = 0
_EXTENSION_ID_STOP = 15

_FIXED_HEADER = struct.Struct(">BBHII")
_EXTENSION_PREAMBLE = struct.Struct(">HH")
_U32 = struct.Struct(">I")

# RTCP packet types 200..206 (SR, RR, SDES, BYE, APP, RTPFB, PSFB) sit where an RTP packet
# would carry the marker bit and payload types 72..78, which RFC 5761 keeps unused so
# that the two can share a socket.
_RTCP_FIRST_TYPE = 200
_RTCP_LAST_TYPE = 206


def _check_uint(bits: int) -> Callable[[Any, attrs.Attribute[int], int], None]:
    limit = 1 << bits

    def check(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
        if not 0 <= value < limit:
            raise LocalProtocolError(
                f"RTP {attribute.name} must fit in {bits} bits, got {value!r}"
            )

    return check


def _check_csrcs(
    instance: object,
    attribute: attrs.Attribute[tuple[int, ...]],
    value: tuple[int, ...],
) -> None:
    if len(value) > _CSRC_COUNT_MASK:
        raise LocalProtocolError(f"RTP allows at most 15 CSRCs, got {len(value)}")
    for csrc in value:
        if not 0 <= csrc <= 0xFFFFFFFF:
            raise LocalProtocolError(f"CSRC must fit in 32 bits, got {csrc!r}")


def _check_extension_profile(
    instance: object, attribute: attrs.Attribute[int | None], value: int | None
) -> None:
    if value is not None and not 0 <= value <= 0xFFFF:
        raise LocalProtocolError(
            f"RTP extension profile must fit in 16 bits, got {value!r}"
        )


def _check_extension_body(
    instance: RtpHeader, attribute: attrs.Attribute[bytes], value: bytes
) -> None:
    if value and instance.extension_profile is None:
        raise LocalProtocolError("an RTP extension body needs an extension_profile")
    if len(value) % 4 or len(value) > 4 * 0xFFFF:
        raise LocalProtocolError(
            "RTP extension body must be a multiple of 4 bytes and at most "
            f"{4 * 0xFFFF} bytes, got {len(value)}"
        )


@attrs.frozen(kw_only=True)
class RtpHeader:
    """One RTP header, clear and whole.

    ``extension_profile`` is ``None`` when the X bit is clear; otherwise the extension's
    16-bit profile (``0xBEDE`` for one-byte elements) with ``extension_body`` holding
    its elements, a multiple of 4 bytes. ``padding`` is the P bit: it says that the
    packet ends in padding, which :func:`build_rtp` appends and :func:`parse_rtp`
    strips.
    """

    seq: int = attrs.field(validator=_check_uint(16))
    rtp_timestamp: int = attrs.field(validator=_check_uint(32))
    ssrc: int = attrs.field(validator=_check_uint(32))
    payload_type: int = attrs.field(default=OPUS_PAYLOAD_TYPE, validator=_check_uint(7))
    marker: bool = False
    padding: bool = False
    csrcs: tuple[int, ...] = attrs.field(default=(), validator=_check_csrcs)
    extension_profile: int | None = attrs.field(
        default=None, validator=_check_extension_profile
    )
    extension_body: bytes = attrs.field(default=b"", validator=_check_extension_body)

    def encode(self) -> bytes:
        """Return the header as it goes on the wire, extension elements included."""
        first = (RTP_VERSION << 6) | len(self.csrcs)
        if self.padding:
            first |= _PADDING_BIT
        if self.extension_profile is not None:
            first |= _EXTENSION_BIT
        second = self.payload_type | (_MARKER_BIT if self.marker else 0)
        parts = [
            _FIXED_HEADER.pack(first, second, self.seq, self.rtp_timestamp, self.ssrc)
        ]

        parts.extend(_U32.pack(csrc) for csrc in self.csrcs)

        if self.extension_profile is not None:
            parts.append(
                _EXTENSION_PREAMBLE.pack(
                    self.extension_profile, len(self.extension_body) // 4
                )
            )
            parts.append(self.extension_body)
        return b"".join(parts)


@attrs.frozen(kw_only=True)
class RtpPacket:
    """An unencrypted RTP packet: its header and its payload with any padding removed."""

    header: RtpHeader
    payload: bytes


def build_rtp_header(seq: int, rtp_timestamp: int, ssrc: int) -> bytes:
    """Return the 12-byte header a bot puts on each Opus packet.

    Version 2, no padding, no extension, no CSRCs, marker clear, payload type 120.
    This runs once per packet sent, so it skips :class:`RtpHeader` and packs directly.
    """
    try:
        return _FIXED_HEADER.pack(0x80, OPUS_PAYLOAD_TYPE, seq, rtp_timestamp, ssrc)
    except struct.error:
        raise LocalProtocolError(
            "RTP seq must fit in 16 bits and rtp_timestamp and ssrc in 32, got "
            f"seq={seq!r} rtp_timestamp={rtp_timestamp!r} ssrc={ssrc!r}"
        ) from None


def build_rtp(header: RtpHeader, payload: bytes, *, padding: int = 0) -> bytes:
    """Return an unencrypted RTP packet: ``header``, ``payload``, then ``padding`` bytes.

    ``padding`` counts the padding bytes including the final count byte (RFC 3550), so
    it is 1..255 when ``header.padding`` is set and 0 when it is not.
    """
    if header.padding != (padding > 0):
        raise LocalProtocolError(
            f"padding={padding!r} does not match the header's P bit ({header.padding})"
        )
    if not 0 <= padding <= 255:
        raise LocalProtocolError(f"RTP padding must be 0..255 bytes, got {padding!r}")

    tail = bytes(padding - 1) + bytes((padding,)) if padding else b""
    return header.encode() + payload + tail


def rtpsize_clear_length(data: bytes) -> int:
    """Return how many leading bytes of an "rtpsize" packet travel in the clear.

    That is 12 + 4 * CC, plus 4 for the extension preamble when the X bit is set: the
    part the AEAD authenticates as associated data but does not encrypt.
    """
    if len(data) < RTP_HEADER_SIZE:
        raise RemoteProtocolError(
            f"RTP packet of {len(data)} bytes is shorter than the 12-byte header"
        )
    first = data[0]
    if first >> 6 != RTP_VERSION:
        raise RemoteProtocolError(f"RTP version must be 2, got {first >> 6}")

    length = RTP_HEADER_SIZE + 4 * (first & _CSRC_COUNT_MASK)
    if first & _EXTENSION_BIT:
        length += 4
    if len(data) < length:
        raise RemoteProtocolError(
            f"RTP packet of {len(data)} bytes is shorter than its {length}-byte header"
        )
    return length


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse an unencrypted RTP packet, stripping its padding."""
    clear = rtpsize_clear_length(data)
    first, second, seq, rtp_timestamp, ssrc = _FIXED_HEADER.unpack_from(data)

    # CSRCs follow the fixed header; rtpsize_clear_length already checked they fit.
    csrc_count = first & _CSRC_COUNT_MASK
    csrcs = struct.unpack_from(f">{csrc_count}I", data, RTP_HEADER_SIZE)

    extension_profile: int | None = None
    extension_body = b""
    offset = clear
    if first & _EXTENSION_BIT:
        extension_profile, words = _EXTENSION_PREAMBLE.unpack_from(data, clear - 4)
        offset = clear + 4 * words
        if offset > len(data):
            raise RemoteProtocolError(
                f"RTP extension of {4 * words} bytes runs past the end of a "
                f"{len(data)}-byte packet"
            )
        extension_body = data[clear:offset]

    end = len(data)
    if first & _PADDING_BIT:
        end -= _padding_length(data, offset)

    header = RtpHeader(
        seq=seq,
        rtp_timestamp=rtp_timestamp,
        ssrc=ssrc,
        payload_type=second & _PAYLOAD_TYPE_MASK,
        marker=bool(second & _MARKER_BIT),
        padding=bool(first & _PADDING_BIT),
        csrcs=csrcs,
        extension_profile=extension_profile,
        extension_body=extension_body,
    )
    return RtpPacket(header=header, payload=data[offset:end])


def _padding_length(data: bytes, start: int) -> int:
    """Return the RTP padding length at the end of ``data``, whose payload is at ``start``.

    The last byte counts the padding bytes including itself, so it is at least 1 and
    cannot reach back past the payload's start.
    """
    available = len(data) - start
    if available <= 0:
        raise RemoteProtocolError("RTP P bit set but the packet has no payload")
    count = data[-1]
    if count == 0 or count > available:
        raise RemoteProtocolError(
            f"RTP padding count {count} is invalid for a {available}-byte payload"
        )
    return count


def parse_extension_elements(body: bytes) -> list[tuple[int, bytes]]:
    """Split a one-byte (``0xBEDE``) extension body into ``(id, data)`` elements.

    Each element starts with a byte holding its id (high nibble) and its length minus
    one (low nibble). Id 0 marks a padding byte and is skipped; id 15 ends parsing, as
    RFC 8285 requires.
    """
    elements: list[tuple[int, bytes]] = []
    index = 0
    size = len(body)
    while index < size:
        byte = body[index]
        element_id = byte >> 4
        if element_id == _EXTENSION_ID_PADDING:
            index += 1
            continue
        if element_id == _EXTENSION_ID_STOP:
            break

        start = index + 1
        end = start + (byte & 0x0F) + 1
        if end > size:
            raise RemoteProtocolError(
                f"RTP extension element {element_id} needs {end - start} bytes, "
                f"only {size - start} left"
            )
        elements.append((element_id, body[start:end]))
        index = end
    return elements


def build_extension_elements(elements: Iterable[tuple[int, bytes]]) -> bytes:
    """Return a one-byte extension body for ``elements``, zero-padded to 4 bytes."""
    parts: list[bytes] = []
    for element_id, data in elements:
        if not 1 <= element_id <= 14:
            raise LocalProtocolError(
                f"one-byte RTP extension ids are 1..14, got {element_id!r}"
            )
        if not 1 <= len(data) <= 16:
            raise LocalProtocolError(
                f"one-byte RTP extension data is 1..16 bytes, got {len(data)}"
            )
        parts.append(bytes(((element_id << 4) | (len(data) - 1),)))
        parts.append(data)
    body = b"".join(parts)
    return body + bytes(-len(body) % 4)


def is_rtcp(data: bytes) -> bool:
    """Tell whether a datagram is RTCP rather than RTP, by its packet-type byte."""
    return len(data) >= 2 and _RTCP_FIRST_TYPE <= data[1] <= _RTCP_LAST_TYPE
