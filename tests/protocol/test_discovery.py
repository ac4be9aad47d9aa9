from __future__ import annotations

import asyncio
import contextlib
import types
from collections.abc import Callable

import pytest
from discord.gateway import DiscordVoiceWebSocket
from hypothesis import given
from hypothesis import strategies as st

from voicesim._exceptions import LocalProtocolError, RemoteProtocolError
from voicesim.protocol._discovery import (
    DISCOVERY_PACKET_SIZE,
    build_discovery_request,
    build_discovery_response,
    build_keepalive,
    is_discovery_request,
    is_keepalive,
    parse_discovery_request,
    parse_discovery_response,
)
from voicesim.protocol._rtp import build_rtp_header

REQUEST = bytes.fromhex(
    "0001"  # type: request
    "0046"  # length: 70
    "01020304"  # ssrc
    + "00" * 64  # address: zeros
    + "0000"  # port: zero
)
RESPONSE = bytes.fromhex(
    "0002"  # type: response
    "0046"  # length: 70
    "01020304"  # ssrc
    "3139322e3136382e312e3130"  # "192.168.1.10"
    + "00" * 52  # NUL terminator and padding
    + "c350"  # port 50000
)


def test_build_discovery_request_vector() -> None:
    """A request is type 1, length 70, the SSRC, then zeros."""
    assert build_discovery_request(0x01020304) == REQUEST
    assert len(REQUEST) == DISCOVERY_PACKET_SIZE


def test_parse_discovery_request_vector() -> None:
    """The request vector yields its SSRC."""
    assert parse_discovery_request(REQUEST) == 0x01020304


def test_build_discovery_response_vector() -> None:
    """A response carries the NUL-terminated address and a big-endian port."""
    assert build_discovery_response(0x01020304, "192.168.1.10", 50000) == RESPONSE


def test_parse_discovery_response_vector() -> None:
    """The response vector yields SSRC, address and port."""
    assert parse_discovery_response(RESPONSE) == (0x01020304, "192.168.1.10", 50000)


def test_parse_discovery_response_ignores_bytes_after_terminator() -> None:
    """Like both client libraries, parsing stops at the first NUL."""
    data = bytearray(RESPONSE)
    data[8 + 13 : 8 + 20] = b"garbage"
    assert parse_discovery_response(bytes(data))[1] == "192.168.1.10"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (RESPONSE[:73], "74 bytes"),
        (RESPONSE + b"\x00", "74 bytes"),
        (b"", "74 bytes"),
        (REQUEST, "type must be 2"),
        (b"\x00\x02\x00\x45" + RESPONSE[4:], "length field"),
        (RESPONSE[:8] + b"\x00" * 64 + RESPONSE[72:], "empty"),
        (RESPONSE[:8] + b"1" * 64 + RESPONSE[72:], "NUL-terminated"),
        (RESPONSE[:8] + b"10.0.0.\xff" + bytes(56) + RESPONSE[72:], "ASCII"),
        (RESPONSE[:8] + b"10.0.\n.1" + bytes(56) + RESPONSE[72:], "control"),
    ],
)
def test_parse_discovery_response_rejects_malformed(data: bytes, reason: str) -> None:
    """Wrong size, type, length field or address raise RemoteProtocolError."""
    with pytest.raises(RemoteProtocolError, match=reason):
        parse_discovery_response(data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (REQUEST[:10], "74 bytes"),
        (RESPONSE, "type must be 1"),
        (b"\x00\x01\x00\x00" + REQUEST[4:], "length field"),
    ],
)
def test_parse_discovery_request_rejects_malformed(data: bytes, reason: str) -> None:
    """Wrong size, type or length field raise RemoteProtocolError."""
    with pytest.raises(RemoteProtocolError, match=reason):
        parse_discovery_request(data)


@pytest.mark.parametrize(
    ("ssrc", "address", "port"),
    [
        (-1, "127.0.0.1", 1),
        (2**32, "127.0.0.1", 1),
        (1, "127.0.0.1", 65536),
        (1, "", 1),
        (1, "a" * 64, 1),
        (1, "10.0.0.1\x00", 1),
        (1, "héllo", 1),
    ],
)
def test_build_discovery_response_rejects_bad_values(
    ssrc: int, address: str, port: int
) -> None:
    """Out-of-range numbers and unusable addresses are the caller's error."""
    with pytest.raises(LocalProtocolError):
        build_discovery_response(ssrc, address, port)


def test_build_discovery_request_rejects_bad_ssrc() -> None:
    """An SSRC outside 32 bits cannot be requested."""
    with pytest.raises(LocalProtocolError):
        build_discovery_request(2**32)


def test_is_discovery_request_tells_packets_apart() -> None:
    """Only a 74-byte packet starting 00 01 00 46 counts as a discovery request."""
    assert is_discovery_request(REQUEST)
    assert not is_discovery_request(RESPONSE)
    assert not is_discovery_request(REQUEST[:73])
    assert not is_discovery_request(build_rtp_header(1, 2, 3) + bytes(62))
    assert not is_discovery_request(build_keepalive(0))


def test_keepalive_vector() -> None:
    """A keepalive is a little-endian counter then four zero bytes."""
    assert build_keepalive(0) == bytes(8)
    assert build_keepalive(0x01020304) == bytes.fromhex("0403020100000000")
    assert is_keepalive(bytes.fromhex("0403020100000000"))


def test_is_keepalive_rejects_other_packets() -> None:
    """Other sizes, and 8 bytes whose last four are not zero, are not keepalives."""
    assert not is_keepalive(bytes(7))
    assert not is_keepalive(bytes(9))
    assert not is_keepalive(bytes.fromhex("0000000000000001"))
    assert not is_keepalive(REQUEST)


def test_build_keepalive_rejects_out_of_range_counter() -> None:
    """A counter outside 32 bits raises LocalProtocolError."""
    with pytest.raises(LocalProtocolError):
        build_keepalive(2**32)


def test_discord_py_discover_ip_interop() -> None:
    """discord.py's discover_ip sends a request we parse and reads our response."""
    sent: list[bytes] = []

    async def discover() -> tuple[str, int]:
        loop = asyncio.get_running_loop()

        async def sock_sendall(sock: object, data: bytes) -> None:
            sent.append(bytes(data))

        def add_socket_listener(callback: Callable[[bytes], None]) -> None:
            # Answer as the media server would, for the SSRC the request carried.
            ssrc = parse_discovery_request(sent[0])
            callback(build_discovery_response(ssrc, "203.0.113.7", 50004))

        voice_websocket = types.SimpleNamespace(
            loop=types.SimpleNamespace(
                sock_sendall=sock_sendall,
                create_future=loop.create_future,
                call_soon_threadsafe=loop.call_soon_threadsafe,
            ),
            _connection=types.SimpleNamespace(
                ssrc=0xCAFE0001,
                socket=None,
                add_socket_listener=add_socket_listener,
                remove_socket_listener=lambda callback: None,
            ),
        )
        return await DiscordVoiceWebSocket.discover_ip(voice_websocket)  # type: ignore[arg-type]

    assert asyncio.run(discover()) == ("203.0.113.7", 50004)
    assert sent == [build_discovery_request(0xCAFE0001)]


@given(ssrc=st.integers(0, 0xFFFFFFFF))
def test_discovery_request_round_trip(ssrc: int) -> None:
    """Any SSRC survives a request round trip."""
    data = build_discovery_request(ssrc)
    assert is_discovery_request(data)
    assert parse_discovery_request(data) == ssrc


@given(
    ssrc=st.integers(0, 0xFFFFFFFF),
    address=st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E),
        min_size=1,
        max_size=63,
    ),
    port=st.integers(0, 0xFFFF),
)
def test_discovery_response_round_trip(ssrc: int, address: str, port: int) -> None:
    """Any printable ASCII address, SSRC and port survive a response round trip."""
    data = build_discovery_response(ssrc, address, port)
    assert len(data) == DISCOVERY_PACKET_SIZE
    assert parse_discovery_response(data) == (ssrc, address, port)


@given(counter=st.integers(0, 0xFFFFFFFF))
def test_keepalive_round_trip(counter: int) -> None:
    """Every keepalive counter is recognised, and none looks like discovery."""
    data = build_keepalive(counter)
    assert is_keepalive(data)
    assert int.from_bytes(data[:4], "little") == counter
    assert not is_discovery_request(data)


@given(
    data=st.binary(max_size=80)
    | st.binary(min_size=70, max_size=70).map(lambda rest: b"\x00\x02\x00\x46" + rest)
    | st.binary(min_size=70, max_size=70).map(lambda rest: b"\x00\x01\x00\x46" + rest)
)
def test_parse_arbitrary_bytes_raises_only_remote_protocol_error(data: bytes) -> None:
    """Arbitrary datagrams either parse or raise RemoteProtocolError."""
    with contextlib.suppress(RemoteProtocolError):
        parse_discovery_request(data)
    with contextlib.suppress(RemoteProtocolError):
        parse_discovery_response(data)
    is_discovery_request(data)
    is_keepalive(data)
