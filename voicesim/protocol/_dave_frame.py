"""The trailer DAVE appends to each end-to-end encrypted media frame.

A DAVE frame (Discord's "protocol frame") is::

    [frame, encrypted except for the unencrypted ranges] [8-byte truncated AES-GCM tag]
    [ULEB128 nonce] [ULEB128 offset/size pairs of unencrypted ranges]
    [1-byte supplemental size] [0xFA 0xFA]

The supplemental size counts everything after the frame: tag, nonce, ranges, the size
byte itself and the magic marker. Opus frames are encrypted whole, so their range list
is empty. The 3-byte Opus silence frame ``F8 FF FE`` passes through unencrypted.

Decryption needs the MLS group's keys and is ``davey``'s job. This module only reads and
writes the framing, so that a relay can tell E2EE frames from plain ones and a test can
check what a client put on the wire.
"""

from __future__ import annotations

import attrs

from voicesim._exceptions import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DAVE_MAGIC",
    "DAVE_TAG_SIZE",
    "SILENCE_FRAME",
    "DaveFrame",
    "has_dave_trailer",
    "parse_dave_frame",
]

DAVE_MAGIC = b"\xfa\xfa"
SILENCE_FRAME = b"\xf8\xff\xfe"
DAVE_TAG_SIZE = 8

# tag + a nonce of at least one byte + the size byte + the magic marker.
_MIN_SUPPLEMENTAL_SIZE = DAVE_TAG_SIZE + 1 + 1 + len(DAVE_MAGIC)
# The nonce is a 32-bit value, so its ULEB128 form takes at most 5 bytes.
_NONCE_LIMIT = 1 << 32


@attrs.frozen(kw_only=True)
class DaveFrame:
    """One DAVE-encrypted frame split into its parts.

    ``ciphertext`` is the frame before the trailer: encrypted bytes, with the
    ``unencrypted_ranges`` (``(offset, size)`` pairs into it) left in the clear.
    """

    ciphertext: bytes
    tag: bytes
    nonce: int
    unencrypted_ranges: tuple[tuple[int, int], ...] = ()

    def encode(self) -> bytes:
        """Return the frame with its trailer, as it goes into an RTP payload."""
        if len(self.tag) != DAVE_TAG_SIZE:
            raise LocalProtocolError(
                f"DAVE tag must be {DAVE_TAG_SIZE} bytes, got {len(self.tag)}"
            )
        if not 0 <= self.nonce < _NONCE_LIMIT:
            raise LocalProtocolError(
                f"DAVE nonce must fit in 32 bits, got {self.nonce!r}"
            )
        _check_ranges(self.unencrypted_ranges, len(self.ciphertext), LocalProtocolError)

        parts = [self.tag, _encode_uleb128(self.nonce)]
        for offset, size in self.unencrypted_ranges:
            parts.append(_encode_uleb128(offset))
            parts.append(_encode_uleb128(size))
        supplemental = b"".join(parts)

        supplemental_size = len(supplemental) + 1 + len(DAVE_MAGIC)
        if supplemental_size > 0xFF:
            raise LocalProtocolError(
                f"DAVE trailer of {supplemental_size} bytes does not fit its size byte"
            )
        return self.ciphertext + supplemental + bytes((supplemental_size,)) + DAVE_MAGIC


def has_dave_trailer(frame: bytes) -> bool:
    """Tell whether ``frame`` ends in a well-formed DAVE trailer."""
    # Most plain Opus frames fail the magic check; only the rare ones that end in FA FA
    # by chance pay for a full parse.
    if len(frame) < _MIN_SUPPLEMENTAL_SIZE or frame[-2:] != DAVE_MAGIC:
        return False
    try:
        parse_dave_frame(frame)
    except RemoteProtocolError:
        return False
    return True


def parse_dave_frame(frame: bytes) -> DaveFrame:
    """Split a DAVE frame into ciphertext, tag, nonce and unencrypted ranges."""
    if len(frame) < _MIN_SUPPLEMENTAL_SIZE:
        raise RemoteProtocolError(
            f"DAVE frame of {len(frame)} bytes is shorter than the smallest trailer"
        )
    if frame[-2:] != DAVE_MAGIC:
        raise RemoteProtocolError(
            f"DAVE frame ends in {frame[-2:].hex()}, not the fafa marker"
        )
    supplemental_size = frame[-3]
    if not _MIN_SUPPLEMENTAL_SIZE <= supplemental_size <= len(frame):
        raise RemoteProtocolError(
            f"DAVE supplemental size {supplemental_size} is invalid for a "
            f"{len(frame)}-byte frame"
        )

    start = len(frame) - supplemental_size
    ciphertext = frame[:start]
    tag = frame[start : start + DAVE_TAG_SIZE]

    # The nonce and the range pairs fill the space between the tag and the size byte.
    end = len(frame) - 1 - len(DAVE_MAGIC)
    nonce, index = _decode_uleb128(frame, start + DAVE_TAG_SIZE, end)
    if nonce >= _NONCE_LIMIT:
        raise RemoteProtocolError(f"DAVE nonce {nonce} does not fit in 32 bits")

    ranges: list[tuple[int, int]] = []
    while index < end:
        offset, index = _decode_uleb128(frame, index, end)
        size, index = _decode_uleb128(frame, index, end)
        ranges.append((offset, size))
    unencrypted_ranges = tuple(ranges)
    _check_ranges(unencrypted_ranges, len(ciphertext), RemoteProtocolError)

    return DaveFrame(
        ciphertext=ciphertext,
        tag=tag,
        nonce=nonce,
        unencrypted_ranges=unencrypted_ranges,
    )


def _check_ranges(
    ranges: tuple[tuple[int, int], ...],
    frame_size: int,
    error: type[LocalProtocolError] | type[RemoteProtocolError],
) -> None:
    """Unencrypted ranges must be in order, not overlap, and lie inside the frame."""
    previous_end = 0
    for offset, size in ranges:
        if offset < previous_end or size < 0 or offset + size > frame_size:
            raise error(
                f"DAVE unencrypted range ({offset}, {size}) is out of order or "
                f"outside the {frame_size}-byte frame"
            )
        previous_end = offset + size


def _encode_uleb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _decode_uleb128(data: bytes, index: int, end: int) -> tuple[int, int]:
    """Decode one ULEB128 value from ``data[index:end]``; return it and the next index.

    Values are capped at 64 bits, so a long run of continuation bytes cannot build an
    arbitrarily large integer.
    """
    value = 0
    shift = 0
    while True:
        if index >= end:
            raise RemoteProtocolError("DAVE trailer ends inside a ULEB128 value")
        if shift >= 64:
            raise RemoteProtocolError("DAVE trailer ULEB128 value exceeds 64 bits")
        byte = data[index]
        index += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, index
        shift += 7
