from __future__ import annotations

import contextlib
import types

import nacl.secret
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from discord.voice_client import VoiceClient
from hypothesis import given
from hypothesis import strategies as st

from voicesim._exceptions import (
    DecryptionError,
    LocalProtocolError,
    RemoteProtocolError,
)
from voicesim.protocol._rtp import (
    EXTENSION_PROFILE_ONE_BYTE,
    RtpHeader,
    RtpPacket,
    build_extension_elements,
    build_rtp_header,
)
from voicesim.protocol._transport import (
    SUPPORTED_MODES,
    EncryptionMode,
    NonceCounter,
    ReceivedRtp,
    TransportCipher,
    choose_mode,
    open_rtp,
    seal_rtp,
    seal_rtp_packet,
)

AES = EncryptionMode.AES256_GCM
XCHACHA = EncryptionMode.XCHACHA20_POLY1305
KEY = bytes(range(32))
SILENCE = b"\xf8\xff\xfe"

# seq 1, rtp_timestamp 960, ssrc 0x01020304, payload F8 FF FE, nonce 7, key 00..1f.
BOT_PACKET = {
    AES: bytes.fromhex(
        "80780001000003c001020304"  # clear header (AAD)
        "a7182a"  # ciphertext
        "93301e09a352c57c8de48d29627465b7"  # tag
        "00000007"  # nonce counter
    ),
    XCHACHA: bytes.fromhex(
        "80780001000003c0010203044e48a3275ad173f2f8d2f839970d7262220b0600000007"
    ),
}

# X set, one 4-byte word of extension (audio level element, id 1) encrypted with the
# payload "opus": only the 4-byte preamble "bede0001" is in the clear.
EXTENSION_HEADER = RtpHeader(
    seq=0x1234,
    rtp_timestamp=0x00010000,
    ssrc=0x0A0B0C0D,
    extension_profile=EXTENSION_PROFILE_ONE_BYTE,
    extension_body=bytes.fromhex("10ff0000"),
)
EXTENSION_PACKET = {
    AES: bytes.fromhex(
        "90781234000100000a0b0c0dbede0001"
        "4f18d481155856f8"
        "31c287906f8776cfd6e6e3ac74633133"
        "00000007"
    ),
    XCHACHA: bytes.fromhex(
        "90781234000100000a0b0c0dbede0001"
        "a6485d3717b2dc38"
        "0118b3f0c9f1f53e7e6885407d26ee8a"
        "00000007"
    ),
}

modes = pytest.mark.parametrize("mode", SUPPORTED_MODES)


def independent_decrypt(
    mode: EncryptionMode, key: bytes, packet: bytes, clear: int
) -> bytes:
    """Decrypt with the crypto libraries directly, as another client would."""
    header, sealed, nonce = packet[:clear], packet[clear:-4], packet[-4:]
    if mode is AES:
        return AESGCM(key).decrypt(nonce + bytes(8), sealed, header)
    return nacl.secret.Aead(key).decrypt(sealed, header, nonce + bytes(20))


def independent_encrypt(
    mode: EncryptionMode, key: bytes, header: bytes, body: bytes, nonce: int
) -> bytes:
    """Encrypt with the crypto libraries directly, as another client would."""
    counter = nonce.to_bytes(4, "big")
    if mode is AES:
        sealed = AESGCM(key).encrypt(counter + bytes(8), body, header)
    else:
        sealed = (
            nacl.secret.Aead(key).encrypt(body, header, counter + bytes(20)).ciphertext
        )
    return header + sealed + counter


def discord_py_voice_client(ssrc: int, key: bytes) -> VoiceClient:
    """Return a discord.py VoiceClient with just the state its packet builder reads."""
    client = VoiceClient.__new__(VoiceClient)
    client._connection = types.SimpleNamespace(  # type: ignore[assignment]
        ssrc=ssrc,
        mode="aead_xchacha20_poly1305_rtpsize",
        secret_key=list(key),
        dave_session=None,
        can_encrypt=False,
    )
    return client


def test_choose_mode_prefers_aes_gcm() -> None:
    """AES-GCM wins whatever the server's order; xchacha is the fallback."""
    assert choose_mode([XCHACHA.value, AES.value]) is AES
    assert choose_mode(["xsalsa20_poly1305", XCHACHA.value]) is XCHACHA


@pytest.mark.parametrize(
    "offered", [[], ["xsalsa20_poly1305", "aead_aes256_gcm"], [1, None]]
)
def test_choose_mode_rejects_no_common_mode(offered: list[object]) -> None:
    """A modes list without either AEAD mode raises RemoteProtocolError."""
    with pytest.raises(RemoteProtocolError):
        choose_mode(offered)  # type: ignore[arg-type]


@given(
    offered=st.lists(st.sampled_from([m.value for m in SUPPORTED_MODES]) | st.text())
)
def test_choose_mode_any_list(offered: list[str]) -> None:
    """Any modes list yields the best offered AEAD mode or RemoteProtocolError."""
    try:
        chosen = choose_mode(offered)
    except RemoteProtocolError:
        assert AES.value not in offered and XCHACHA.value not in offered
        return
    assert chosen is (AES if AES.value in offered else XCHACHA)


def test_nonce_counter_counts_and_wraps() -> None:
    """The counter returns its start first and wraps from 2**32 - 1 to 0."""
    counter = NonceCounter()
    assert [counter.next() for _ in range(3)] == [0, 1, 2]
    counter = NonceCounter(start=2**32 - 2)
    assert [counter.next() for _ in range(3)] == [2**32 - 2, 2**32 - 1, 0]


@pytest.mark.parametrize("start", [-1, 2**32])
def test_nonce_counter_rejects_out_of_range_start(start: int) -> None:
    """A start outside 32 bits raises LocalProtocolError."""
    with pytest.raises(LocalProtocolError):
        NonceCounter(start)


def test_transport_cipher_rejects_bad_key_and_mode() -> None:
    """Keys must be 32 bytes and modes one of the two AEAD modes."""
    with pytest.raises(LocalProtocolError):
        TransportCipher(AES, bytes(31))
    with pytest.raises(LocalProtocolError):
        TransportCipher("xsalsa20_poly1305_lite", KEY)


def test_transport_cipher_accepts_wire_name_and_hides_key() -> None:
    """The mode can be given by its wire name, and the repr never shows the key."""
    cipher = TransportCipher("aead_xchacha20_poly1305_rtpsize", KEY)
    assert cipher.mode is XCHACHA
    assert repr(cipher) == "TransportCipher(mode='aead_xchacha20_poly1305_rtpsize')"


@modes
def test_seal_rtp_vector(mode: EncryptionMode) -> None:
    """A bot packet seals to the expected bytes in both modes."""
    cipher = TransportCipher(mode, KEY)
    assert seal_rtp(cipher, 1, 960, 0x01020304, SILENCE, 7) == BOT_PACKET[mode]


@modes
def test_open_rtp_vector(mode: EncryptionMode) -> None:
    """The bot packet vector opens to its header fields and payload."""
    received = open_rtp(TransportCipher(mode, KEY), BOT_PACKET[mode])
    assert received == ReceivedRtp(
        seq=1,
        rtp_timestamp=960,
        ssrc=0x01020304,
        payload_type=120,
        marker=False,
        extension=b"",
        payload=SILENCE,
    )


@modes
def test_seal_rtp_packet_extension_vector(mode: EncryptionMode) -> None:
    """Extension elements are encrypted with the payload; only the preamble is clear."""
    cipher = TransportCipher(mode, KEY)
    packet = RtpPacket(header=EXTENSION_HEADER, payload=b"opus")
    assert seal_rtp_packet(cipher, packet, 7) == EXTENSION_PACKET[mode]


@modes
def test_open_rtp_strips_extension_body(mode: EncryptionMode) -> None:
    """The decrypted extension elements are split off from the Opus payload."""
    received = open_rtp(TransportCipher(mode, KEY), EXTENSION_PACKET[mode])
    assert received.extension == bytes.fromhex("10ff0000")
    assert received.payload == b"opus"
    assert (received.seq, received.rtp_timestamp, received.ssrc) == (
        0x1234,
        0x10000,
        0x0A0B0C0D,
    )


@modes
def test_decrypt_returns_clear_header_and_whole_body(mode: EncryptionMode) -> None:
    """decrypt leaves extension elements and padding in the body."""
    header, body = TransportCipher(mode, KEY).decrypt(EXTENSION_PACKET[mode])
    assert header == bytes.fromhex("90781234000100000a0b0c0dbede0001")
    assert body == bytes.fromhex("10ff0000") + b"opus"


@modes
def test_open_rtp_strips_padding_after_extension(mode: EncryptionMode) -> None:
    """RTP padding, encrypted with the body, is removed along with the extension."""
    cipher = TransportCipher(mode, KEY)
    header = RtpHeader(
        seq=9,
        rtp_timestamp=18,
        ssrc=27,
        marker=True,
        padding=True,
        csrcs=(5,),
        extension_profile=EXTENSION_PROFILE_ONE_BYTE,
        extension_body=build_extension_elements([(1, b"\x7f"), (3, b"abc")]),
    )
    sealed = seal_rtp_packet(
        cipher, RtpPacket(header=header, payload=b"opus"), 3, padding=4
    )

    received = open_rtp(cipher, sealed)

    assert received.payload == b"opus"
    assert received.extension == bytes.fromhex("107f326162630000")
    assert received.marker
    # The clear part is 12 + 4 (one CSRC) + 4 (preamble): all else is ciphertext.
    body = independent_decrypt(mode, KEY, sealed, 20)
    assert body == received.extension + b"opus" + bytes.fromhex("00000004")


@modes
def test_rtcp_decrypts_with_eight_byte_header(mode: EncryptionMode) -> None:
    """An RTCP packet authenticates its 8-byte header and encrypts the rest."""
    cipher = TransportCipher(mode, KEY)
    rtcp_header = bytes.fromhex("81c90007deadbeef")
    packet = cipher.encrypt(rtcp_header, b"report block", 11)
    assert cipher.decrypt(packet) == (rtcp_header, b"report block")
    assert independent_decrypt(mode, KEY, packet, 8) == b"report block"
    with pytest.raises(RemoteProtocolError, match="RTCP"):
        open_rtp(cipher, packet)


@modes
@given(
    key=st.binary(min_size=32, max_size=32),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=200),
    nonce=st.integers(0, 0xFFFFFFFF),
)
def test_seal_rtp_decrypts_with_plain_libraries(
    mode: EncryptionMode,
    key: bytes,
    seq: int,
    ts: int,
    ssrc: int,
    payload: bytes,
    nonce: int,
) -> None:
    """voicesim's packets decrypt with AESGCM or nacl.secret.Aead used directly."""
    packet = seal_rtp(TransportCipher(mode, key), seq, ts, ssrc, payload, nonce)
    assert packet[:12] == build_rtp_header(seq, ts, ssrc)
    assert packet[-4:] == nonce.to_bytes(4, "big")
    assert independent_decrypt(mode, key, packet, 12) == payload


@modes
@given(
    key=st.binary(min_size=32, max_size=32),
    elements=st.lists(
        st.tuples(st.integers(1, 14), st.binary(min_size=1, max_size=16)), max_size=4
    ),
    payload=st.binary(max_size=200),
    nonce=st.integers(0, 0xFFFFFFFF),
)
def test_open_rtp_reads_independently_encrypted_packets(
    mode: EncryptionMode,
    key: bytes,
    elements: list[tuple[int, bytes]],
    payload: bytes,
    nonce: int,
) -> None:
    """Packets sealed by plain library calls, extension encrypted, open correctly."""
    extension = build_extension_elements(elements)
    clear = bytes.fromhex("9078abcd0000000100000002bede") + (
        len(extension) // 4
    ).to_bytes(2, "big")
    packet = independent_encrypt(mode, key, clear, extension + payload, nonce)

    received = open_rtp(TransportCipher(mode, key), packet)

    assert received.extension == extension
    assert received.payload == payload
    assert (received.seq, received.rtp_timestamp, received.ssrc) == (0xABCD, 1, 2)


def test_discord_py_packets_match_and_open() -> None:
    """discord.py's own packet builder produces exactly voicesim's bytes, across the wrap."""
    voice_client = discord_py_voice_client(ssrc=0x01020304, key=KEY)
    voice_client.sequence = 1
    voice_client.timestamp = 960
    voice_client._incr_nonce = 2**32 - 2
    cipher = TransportCipher(XCHACHA, KEY)
    counter = NonceCounter(2**32 - 2)

    for index in range(4):
        opus = bytes([index]) * (40 + index)
        # discord.py returns a bytearray; open_rtp accepts that as well.
        theirs = voice_client._get_voice_packet(opus)
        ours = seal_rtp(cipher, 1, 960, 0x01020304, opus, counter.next())
        assert theirs == ours
        assert open_rtp(cipher, theirs).payload == opus

    # Both counters went 2**32 - 2, 2**32 - 1, 0, 1.
    assert theirs[-4:] == bytes.fromhex("00000001")
    assert voice_client._incr_nonce == counter.next()


def test_discord_py_encrypt_method_matches_vector() -> None:
    """discord.py's xchacha method seals the bot vector to the same bytes."""
    voice_client = discord_py_voice_client(ssrc=0x01020304, key=KEY)
    voice_client._incr_nonce = 7
    # discord.py hands this method the bytearray its _get_voice_packet builds.
    header = bytearray(build_rtp_header(1, 960, 0x01020304))
    sealed = voice_client._encrypt_aead_xchacha20_poly1305_rtpsize(header, SILENCE)  # type: ignore[arg-type]
    assert sealed == BOT_PACKET[XCHACHA]


@given(
    key=st.binary(min_size=32, max_size=32),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    opus=st.binary(min_size=1, max_size=200),
    nonce=st.integers(0, 0xFFFFFFFF),
)
def test_discord_py_and_voicesim_agree(
    key: bytes, seq: int, ts: int, opus: bytes, nonce: int
) -> None:
    """For any key, counters and frame, discord.py's packet is voicesim's packet."""
    voice_client = discord_py_voice_client(ssrc=0xFEEDF00D, key=key)
    voice_client.sequence = seq
    voice_client.timestamp = ts
    voice_client._incr_nonce = nonce
    theirs = bytes(voice_client._get_voice_packet(opus))
    cipher = TransportCipher(XCHACHA, key)
    assert theirs == seal_rtp(cipher, seq, ts, 0xFEEDF00D, opus, nonce)
    assert (
        nacl.secret.Aead(key).decrypt(
            theirs[12:-4], theirs[:12], theirs[-4:] + bytes(20)
        )
        == opus
    )


@modes
def test_every_bit_flip_is_rejected(mode: EncryptionMode) -> None:
    """Flipping any bit of header, ciphertext, tag or nonce fails authentication."""
    cipher = TransportCipher(mode, KEY)
    packet = EXTENSION_PACKET[mode]
    clear = 16
    for index in range(len(packet)):
        for bit in range(8):
            tampered = bytearray(packet)
            tampered[index] ^= 1 << bit
            if index < clear:
                # A flipped header bit may also change the version or the clear length.
                with pytest.raises(RemoteProtocolError):
                    open_rtp(cipher, bytes(tampered))
            else:
                with pytest.raises(DecryptionError):
                    open_rtp(cipher, bytes(tampered))


@modes
def test_truncated_and_oversized_packets_are_rejected(mode: EncryptionMode) -> None:
    """Every prefix of a packet, and the packet with bytes appended, is rejected."""
    cipher = TransportCipher(mode, KEY)
    packet = BOT_PACKET[mode]
    for length in range(len(packet)):
        with pytest.raises(RemoteProtocolError):
            open_rtp(cipher, packet[:length])
    with pytest.raises(RemoteProtocolError, match="too short"):
        cipher.decrypt(packet[:12] + bytes(19))
    with pytest.raises(DecryptionError):
        open_rtp(cipher, packet + b"\x00")
    with pytest.raises(DecryptionError):
        open_rtp(cipher, packet[:12] + bytes(20))


@modes
def test_wrong_key_raises_decryption_error(mode: EncryptionMode) -> None:
    """A packet sealed under another key fails with DecryptionError."""
    with pytest.raises(DecryptionError, match="nonce 7"):
        open_rtp(TransportCipher(mode, bytes(32)), BOT_PACKET[mode])


@modes
def test_open_rtp_rejects_bad_extension_and_padding(mode: EncryptionMode) -> None:
    """Authentic packets whose extension or padding do not fit the body are rejected."""
    cipher = TransportCipher(mode, KEY)
    # The preamble claims 4 words of elements, but the body has only 6 bytes.
    long_extension = cipher.encrypt(
        bytes.fromhex("907800010000000000000001bede0004"), b"\x10\x01opus", 1
    )
    # P bit with a count byte of 0, and with a count larger than the payload.
    zero_padding = cipher.encrypt(
        bytes.fromhex("a07800010000000000000001"), b"opus\x00", 2
    )
    long_padding = cipher.encrypt(
        bytes.fromhex("a07800010000000000000001"), b"opus\x09", 3
    )
    empty_padded = cipher.encrypt(bytes.fromhex("a07800010000000000000001"), b"", 4)
    for packet, reason in [
        (long_extension, "extension"),
        (zero_padding, "padding count 0"),
        (long_padding, "padding count 9"),
        (empty_padded, "padding count 0"),
    ]:
        with pytest.raises(RemoteProtocolError, match=reason):
            open_rtp(cipher, packet)


@modes
def test_encrypt_rejects_out_of_range_nonce(mode: EncryptionMode) -> None:
    """A nonce outside 32 bits is the caller's error."""
    cipher = TransportCipher(mode, KEY)
    for nonce in (-1, 2**32):
        with pytest.raises(LocalProtocolError):
            cipher.encrypt(build_rtp_header(1, 2, 3), b"x", nonce)


@modes
@given(data=st.binary(max_size=120))
def test_decrypt_arbitrary_bytes_raises_only_remote_protocol_error(
    mode: EncryptionMode, data: bytes
) -> None:
    """Any datagram either opens or raises RemoteProtocolError, never a library error."""
    cipher = TransportCipher(mode, KEY)
    with contextlib.suppress(RemoteProtocolError):
        cipher.decrypt(data)
    with contextlib.suppress(RemoteProtocolError):
        open_rtp(cipher, data)


@modes
@given(
    packet_index=st.integers(0, 1),
    cut=st.integers(0, 60),
    junk=st.binary(max_size=40),
)
def test_mangled_real_packets_raise_only_remote_protocol_error(
    mode: EncryptionMode, packet_index: int, cut: int, junk: bytes
) -> None:
    """Real packets cut short or with junk appended are rejected as remote errors."""
    packet = [BOT_PACKET, EXTENSION_PACKET][packet_index][mode]
    mangled = packet[: len(packet) - cut] + junk
    if mangled == packet:
        return
    with pytest.raises(RemoteProtocolError):
        open_rtp(TransportCipher(mode, KEY), mangled)
