from __future__ import annotations

import contextlib

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicesim._exceptions import LocalProtocolError, RemoteProtocolError
from voicesim.protocol._rtp import (
    EXTENSION_PROFILE_ONE_BYTE,
    OPUS_PAYLOAD_TYPE,
    RtpHeader,
    RtpPacket,
    build_extension_elements,
    build_rtp,
    build_rtp_header,
    is_rtcp,
    parse_extension_elements,
    parse_rtp,
    rtpsize_clear_length,
)

# A header as Discord's media server forwards it: marker set, two CSRCs and a one-byte
# extension holding an audio level (id 1, 1 byte) and a 2-byte element with id 2.
FULL_HEADER = RtpHeader(
    seq=0xABCD,
    rtp_timestamp=0x01020304,
    ssrc=0xDEADBEEF,
    marker=True,
    csrcs=(0x11111111, 0x22222222),
    extension_profile=EXTENSION_PROFILE_ONE_BYTE,
    extension_body=bytes.fromhex("10ff210102000000"),
)
FULL_HEADER_BYTES = bytes.fromhex(
    "92f8abcd01020304deadbeef"  # V=2 X=1 CC=2 | M=1 PT=120 | seq | ts | ssrc
    "1111111122222222"  # CSRCs
    "bede0002"  # one-byte profile, 2 words
    "10ff210102000000"  # id 1 len 1, id 2 len 2, zero padding
)


def test_build_rtp_header_matches_bot_header() -> None:
    """The fast header is 0x80 0x78 then seq, timestamp and SSRC, big-endian."""
    header = build_rtp_header(1, 960, 0x01020304)
    assert header == bytes.fromhex("80780001000003c001020304")


def test_build_rtp_header_equals_rtp_header_encode() -> None:
    """The fast path and the general encoder agree on a bot header."""
    header = RtpHeader(seq=65535, rtp_timestamp=0xFFFFFFFF, ssrc=7)
    assert header.encode() == build_rtp_header(65535, 0xFFFFFFFF, 7)
    assert header.encode() == bytes.fromhex("8078ffffffffffff00000007")


@pytest.mark.parametrize(
    ("seq", "rtp_timestamp", "ssrc"),
    [(65536, 0, 0), (-1, 0, 0), (0, 1 << 32, 0), (0, 0, -5)],
)
def test_build_rtp_header_rejects_out_of_range(
    seq: int, rtp_timestamp: int, ssrc: int
) -> None:
    """Values that do not fit their fields raise LocalProtocolError, not struct.error."""
    with pytest.raises(LocalProtocolError):
        build_rtp_header(seq, rtp_timestamp, ssrc)


def test_rtp_header_encode_full_vector() -> None:
    """Marker, CSRCs and a one-byte extension encode to the expected bytes."""
    assert FULL_HEADER.encode() == FULL_HEADER_BYTES


def test_parse_rtp_full_vector() -> None:
    """A packet with CSRCs and an extension parses back to its header and payload."""
    packet = parse_rtp(FULL_HEADER_BYTES + b"opus")
    assert packet == RtpPacket(header=FULL_HEADER, payload=b"opus")
    assert parse_extension_elements(packet.header.extension_body) == [
        (1, b"\xff"),
        (2, b"\x01\x02"),
    ]


def test_parse_rtp_strips_padding() -> None:
    """The P bit's padding, counted by the last byte, is removed from the payload."""
    data = bytes.fromhex("a078000500000000000000016f707573000003")
    packet = parse_rtp(data)
    assert packet.payload == b"opus"
    assert packet.header.padding
    assert build_rtp(packet.header, packet.payload, padding=3) == data


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (bytes.fromhex("8078000100000000000000"), "shorter than"),
        (bytes.fromhex("4078000100000000000000016f"), "version"),
        (bytes.fromhex("c078000100000000000000016f"), "version"),
        (bytes.fromhex("82780001000000000000000111111111"), "shorter than"),
        (bytes.fromhex("9078000100000000000000016f"), "shorter than"),
        (bytes.fromhex("907800010000000000000001bede0002aabbccdd"), "past the end"),
        (bytes.fromhex("a0780001000000000000000100"), "padding count 0"),
        (bytes.fromhex("a0780001000000000000000161626305"), "padding count 5"),
        (bytes.fromhex("a07800010000000000000001"), "no payload"),
    ],
)
def test_parse_rtp_rejects_malformed(data: bytes, reason: str) -> None:
    """Truncated headers, bad versions and bad padding raise RemoteProtocolError."""
    with pytest.raises(RemoteProtocolError, match=reason):
        parse_rtp(data)


def test_rtpsize_clear_length_counts_csrcs_and_preamble() -> None:
    """The clear part is 12 + 4 * CC, plus only the 4-byte preamble when X is set."""
    assert rtpsize_clear_length(build_rtp_header(1, 2, 3) + b"x") == 12
    assert rtpsize_clear_length(FULL_HEADER_BYTES) == 12 + 8 + 4


def test_rtpsize_clear_length_rejects_truncated() -> None:
    """A packet shorter than its own clear header is rejected."""
    with pytest.raises(RemoteProtocolError):
        rtpsize_clear_length(FULL_HEADER_BYTES[:23])


def test_parse_extension_elements_skips_padding_and_stops_at_15() -> None:
    """Id 0 bytes are padding between elements, and id 15 ends the list."""
    body = bytes.fromhex("00 10aa 0000 32010203 f0 20bb")
    assert parse_extension_elements(body) == [(1, b"\xaa"), (3, b"\x01\x02\x03")]


def test_parse_extension_elements_discord_like() -> None:
    """Audio level (id 1), abs-send-time (id 3) and a speaking element (id 9) parse."""
    body = bytes.fromhex("1081 32123456 9001 00")
    assert parse_extension_elements(body) == [
        (1, b"\x81"),
        (3, b"\x12\x34\x56"),
        (9, b"\x01"),
    ]


def test_parse_extension_elements_rejects_truncated_element() -> None:
    """An element whose length runs past the body raises RemoteProtocolError."""
    with pytest.raises(RemoteProtocolError):
        parse_extension_elements(bytes.fromhex("10aa3301"))


def test_build_extension_elements_pads_to_words() -> None:
    """Elements encode with id and length-minus-one, zero-padded to 4 bytes."""
    body = build_extension_elements([(1, b"\xff"), (2, b"\x01\x02")])
    assert body == bytes.fromhex("10ff210102000000")


@pytest.mark.parametrize("element", [(0, b"x"), (15, b"x"), (1, b""), (1, bytes(17))])
def test_build_extension_elements_rejects_bad_elements(
    element: tuple[int, bytes],
) -> None:
    """Ids outside 1..14 and data outside 1..16 bytes cannot be encoded."""
    with pytest.raises(LocalProtocolError):
        build_extension_elements([element])


def test_rtp_header_rejects_invalid_fields() -> None:
    """Constructing a header with out-of-range fields raises LocalProtocolError."""
    with pytest.raises(LocalProtocolError):
        RtpHeader(seq=70000, rtp_timestamp=0, ssrc=0)
    with pytest.raises(LocalProtocolError):
        RtpHeader(seq=0, rtp_timestamp=0, ssrc=0, payload_type=128)
    with pytest.raises(LocalProtocolError):
        RtpHeader(seq=0, rtp_timestamp=0, ssrc=0, csrcs=tuple(range(16)))
    with pytest.raises(LocalProtocolError):
        RtpHeader(seq=0, rtp_timestamp=0, ssrc=0, extension_body=b"abcd")
    with pytest.raises(LocalProtocolError):
        RtpHeader(
            seq=0,
            rtp_timestamp=0,
            ssrc=0,
            extension_profile=0xBEDE,
            extension_body=b"a",
        )


def test_build_rtp_rejects_padding_mismatch() -> None:
    """Padding needs the P bit and the P bit needs padding."""
    plain = RtpHeader(seq=1, rtp_timestamp=2, ssrc=3)
    padded = RtpHeader(seq=1, rtp_timestamp=2, ssrc=3, padding=True)
    with pytest.raises(LocalProtocolError):
        build_rtp(plain, b"x", padding=2)
    with pytest.raises(LocalProtocolError):
        build_rtp(padded, b"x")
    with pytest.raises(LocalProtocolError):
        build_rtp(padded, b"x", padding=256)


def test_is_rtcp_by_packet_type() -> None:
    """Packet types 200..206 are RTCP; Opus RTP with or without marker is not."""
    assert is_rtcp(bytes.fromhex("80c80006"))  # sender report
    assert is_rtcp(bytes.fromhex("81c9"))  # receiver report
    assert is_rtcp(bytes.fromhex("80ce"))  # payload-specific feedback
    assert not is_rtcp(bytes.fromhex("80cf"))
    assert not is_rtcp(build_rtp_header(1, 2, 3))
    assert not is_rtcp(bytes.fromhex("80f8"))
    assert not is_rtcp(b"\x80")


extension_elements = st.lists(
    st.tuples(st.integers(1, 14), st.binary(min_size=1, max_size=16)), max_size=6
)
rtp_headers = st.builds(
    RtpHeader,
    seq=st.integers(0, 0xFFFF),
    rtp_timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload_type=st.integers(0, 127),
    marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
)


@given(
    header=rtp_headers,
    elements=st.none() | extension_elements,
    payload=st.binary(max_size=64),
    padding=st.integers(0, 255),
)
def test_rtp_round_trip(
    header: RtpHeader,
    elements: list[tuple[int, bytes]] | None,
    payload: bytes,
    padding: int,
) -> None:
    """Any header, extension, payload and padding survive build_rtp then parse_rtp."""
    if elements is not None:
        header = attrs.evolve(
            header,
            extension_profile=EXTENSION_PROFILE_ONE_BYTE,
            extension_body=build_extension_elements(elements),
        )
    header = attrs.evolve(header, padding=padding > 0)

    packet = parse_rtp(build_rtp(header, payload, padding=padding))

    assert packet == RtpPacket(header=header, payload=payload)
    if elements is not None:
        assert parse_extension_elements(packet.header.extension_body) == elements


@given(
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
)
def test_build_rtp_header_parses_back(seq: int, ts: int, ssrc: int) -> None:
    """The fast bot header parses as an Opus header with the same counters."""
    header = parse_rtp(build_rtp_header(seq, ts, ssrc)).header
    assert header == RtpHeader(seq=seq, rtp_timestamp=ts, ssrc=ssrc)
    assert header.payload_type == OPUS_PAYLOAD_TYPE


@given(data=st.binary(max_size=80))
def test_parse_functions_raise_only_remote_protocol_error(data: bytes) -> None:
    """Arbitrary bytes either parse or raise RemoteProtocolError, never anything else."""
    for parse in (parse_rtp, rtpsize_clear_length, parse_extension_elements):
        with contextlib.suppress(RemoteProtocolError):
            parse(data)
    is_rtcp(data)


@given(
    data=st.binary(min_size=12, max_size=80).map(
        lambda b: bytes([0x80 | (b[0] & 0x3F)]) + b[1:]
    )
)
def test_parse_rtp_version_two_raises_only_remote_protocol_error(data: bytes) -> None:
    """Bytes with a valid version reach the CSRC, extension and padding checks safely."""
    try:
        packet = parse_rtp(data)
    except RemoteProtocolError:
        return
    assert len(packet.payload) <= len(data) - 12
