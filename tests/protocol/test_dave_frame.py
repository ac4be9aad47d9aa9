from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicesim._exceptions import LocalProtocolError, RemoteProtocolError
from voicesim.protocol._dave_frame import (
    DAVE_MAGIC,
    SILENCE_FRAME,
    DaveFrame,
    has_dave_trailer,
    parse_dave_frame,
)

TAG = bytes.fromhex("a0a1a2a3a4a5a6a7")

# An Opus frame: 3 bytes of ciphertext, the tag, nonce 5 as one ULEB128 byte, no
# ranges, supplemental size 12 (8 + 1 + 1 + 2), then the marker.
OPUS_FRAME = bytes.fromhex(
    "010203"  # ciphertext
    "a0a1a2a3a4a5a6a7"  # truncated tag
    "05"  # nonce
    "0c"  # supplemental size
    "fafa"  # magic marker
)


def test_encode_opus_frame_vector() -> None:
    """An Opus frame's trailer is tag, nonce, size byte and marker."""
    frame = DaveFrame(ciphertext=b"\x01\x02\x03", tag=TAG, nonce=5)
    assert frame.encode() == OPUS_FRAME


def test_parse_opus_frame_vector() -> None:
    """The Opus vector splits back into its parts."""
    assert parse_dave_frame(OPUS_FRAME) == DaveFrame(
        ciphertext=b"\x01\x02\x03", tag=TAG, nonce=5
    )
    assert has_dave_trailer(OPUS_FRAME)


@pytest.mark.parametrize(
    ("nonce", "encoded"),
    [(0, "00"), (127, "7f"), (128, "8001"), (300, "ac02"), (0xFFFFFFFF, "ffffffff0f")],
)
def test_encode_nonce_uleb128(nonce: int, encoded: str) -> None:
    """Nonces are ULEB128: seven bits a byte, low bits first, high bit continues."""
    frame = DaveFrame(ciphertext=b"\x99", tag=TAG, nonce=nonce).encode()
    size = 8 + len(encoded) // 2 + 1 + 2
    assert frame == b"\x99" + TAG + bytes.fromhex(encoded) + bytes((size,)) + DAVE_MAGIC
    assert parse_dave_frame(frame).nonce == nonce


def test_encode_unencrypted_ranges_vector() -> None:
    """Range pairs follow the nonce as ULEB128 offset and size."""
    frame = DaveFrame(
        ciphertext=bytes(200), tag=TAG, nonce=1, unencrypted_ranges=((0, 1), (130, 2))
    )
    expected = (
        bytes(200)
        + TAG
        + bytes.fromhex(
            "01"  # nonce
            "0001"  # range: offset 0, size 1
            "820102"  # range: offset 130 (two ULEB128 bytes), size 2
            "11"  # supplemental size 17
            "fafa"
        )
    )
    assert frame.encode() == expected
    assert parse_dave_frame(expected) == frame


def test_has_dave_trailer_false_for_plain_frames() -> None:
    """Silence, plain Opus and near misses do not count as DAVE frames."""
    assert not has_dave_trailer(SILENCE_FRAME)
    assert not has_dave_trailer(b"")
    assert not has_dave_trailer(bytes.fromhex("fc") + bytes(40))
    # The marker alone, with an impossible supplemental size.
    assert not has_dave_trailer(bytes(20) + b"\x03" + DAVE_MAGIC)
    assert not has_dave_trailer(bytes(20) + b"\x40" + DAVE_MAGIC)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (TAG + b"\x0c" + DAVE_MAGIC, "shorter than"),
        (OPUS_FRAME[:-2] + b"\xfa\xfb", "marker"),
        (OPUS_FRAME[:-3] + b"\x0b" + DAVE_MAGIC, "supplemental size 11"),
        (OPUS_FRAME[:-3] + b"\x10" + DAVE_MAGIC, "supplemental size 16"),
        # The nonce's continuation bit runs it into the size byte.
        (TAG + b"\x85" + b"\x0c" + DAVE_MAGIC, "inside a ULEB128"),
        # A range offset without its size.
        (b"x" + TAG + b"\x01\x00" + b"\x0d" + DAVE_MAGIC, "inside a ULEB128"),
        # A range reaching past the 1-byte frame.
        (b"x" + TAG + b"\x01\x00\x02" + b"\x0e" + DAVE_MAGIC, "range"),
        # Overlapping ranges.
        (bytes(4) + TAG + b"\x01\x00\x02\x01\x01" + b"\x10" + DAVE_MAGIC, "range"),
        # A nonce of 2**32.
        (TAG + b"\x80\x80\x80\x80\x10" + b"\x10" + DAVE_MAGIC, "32 bits"),
        # A ULEB128 value longer than 64 bits.
        (TAG + b"\x01" + b"\x80" * 10 + b"\x01" + b"\x17" + DAVE_MAGIC, "64 bits"),
    ],
)
def test_parse_dave_frame_rejects_malformed(frame: bytes, reason: str) -> None:
    """Broken trailers raise RemoteProtocolError and are not DAVE frames."""
    with pytest.raises(RemoteProtocolError, match=reason):
        parse_dave_frame(frame)
    assert not has_dave_trailer(frame)


@pytest.mark.parametrize(
    "frame",
    [
        DaveFrame(ciphertext=b"x", tag=bytes(7), nonce=1),
        DaveFrame(ciphertext=b"x", tag=TAG, nonce=2**32),
        DaveFrame(ciphertext=b"x", tag=TAG, nonce=-1),
        DaveFrame(ciphertext=b"xy", tag=TAG, nonce=1, unencrypted_ranges=((1, 2),)),
        DaveFrame(ciphertext=b"xy", tag=TAG, nonce=1, unencrypted_ranges=((-1, 1),)),
        # 120 ranges need more trailer bytes than the size byte can count.
        DaveFrame(
            ciphertext=bytes(240),
            tag=TAG,
            nonce=1,
            unencrypted_ranges=tuple((i * 2, 1) for i in range(120)),
        ),
    ],
)
def test_encode_rejects_invalid_frames(frame: DaveFrame) -> None:
    """Bad tags, nonces, ranges and oversized trailers are the caller's error."""
    with pytest.raises(LocalProtocolError):
        frame.encode()


ranges = st.lists(st.tuples(st.integers(0, 300), st.integers(0, 300)), max_size=5).map(
    lambda pairs: tuple(sorted(pairs))
)


@given(
    ciphertext=st.binary(max_size=400),
    tag=st.binary(min_size=8, max_size=8),
    nonce=st.integers(0, 0xFFFFFFFF),
    pairs=ranges,
)
def test_dave_frame_round_trip(
    ciphertext: bytes, tag: bytes, nonce: int, pairs: tuple[tuple[int, int], ...]
) -> None:
    """Any valid frame encodes, is recognised, and parses back to itself."""
    # Turn arbitrary pairs into ordered, non-overlapping ranges inside the frame.
    unencrypted: list[tuple[int, int]] = []
    position = 0
    for gap, size in pairs:
        offset = position + gap
        if offset + size > len(ciphertext):
            break
        unencrypted.append((offset, size))
        position = offset + size
    frame = DaveFrame(
        ciphertext=ciphertext,
        tag=tag,
        nonce=nonce,
        unencrypted_ranges=tuple(unencrypted),
    )

    data = frame.encode()

    assert data.endswith(DAVE_MAGIC)
    assert has_dave_trailer(data)
    assert parse_dave_frame(data) == frame


@given(
    data=st.binary(max_size=60)
    | st.binary(max_size=60).map(lambda b: b + DAVE_MAGIC)
    | st.tuples(st.binary(max_size=40), st.integers(0, 255)).map(
        lambda pair: pair[0] + bytes((pair[1],)) + DAVE_MAGIC
    )
)
def test_parse_arbitrary_bytes_raises_only_remote_protocol_error(data: bytes) -> None:
    """Arbitrary frames parse or raise RemoteProtocolError, agreeing with the check."""
    parsed = None
    with contextlib.suppress(RemoteProtocolError):
        parsed = parse_dave_frame(data)
    assert has_dave_trailer(data) == (parsed is not None)
    if parsed is not None:
        # Re-encoding may shorten a non-minimal ULEB128 value but keeps the meaning.
        assert parse_dave_frame(parsed.encode()) == parsed
        assert len(parsed.ciphertext) <= len(data) - 12
