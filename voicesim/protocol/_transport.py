"""Transport encryption of voice packets: the two AEAD "rtpsize" modes.

A packet on the wire is::

    [clear header = AAD] [ciphertext] [16-byte tag] [4-byte nonce counter, big-endian]

The clear header is the RTP header up to and including the extension preamble (see
:func:`~voicesim.protocol._rtp.rtpsize_clear_length`), or the 8-byte header of an RTCP
packet. The nonce is a per-direction 32-bit counter written big-endian into the first
four bytes of an otherwise zero nonce: 12 bytes for AES-256-GCM, 24 for
XChaCha20-Poly1305.

Every packet voicesim sends or receives passes through here, so the per-packet path is
kept short: the zero nonce tails are module constants, the ``AESGCM`` object is made once
per key, and each call does one slice per field and one concatenation for the result.
The benchmark ``benchmarks/transport_crypto.py`` measures it.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError

from voicesim._exceptions import (
    DecryptionError,
    LocalProtocolError,
    RemoteProtocolError,
)
from voicesim.protocol._rtp import (
    _CSRC_COUNT_MASK,
    _EXTENSION_BIT,
    _MARKER_BIT,
    _PADDING_BIT,
    _PAYLOAD_TYPE_MASK,
    _RTCP_FIRST_TYPE,
    _RTCP_LAST_TYPE,
    RTP_HEADER_SIZE,
    RTP_VERSION,
    RtpPacket,
    build_rtp,
    build_rtp_header,
    rtpsize_clear_length,
)

__all__ = [
    "NONCE_SIZE",
    "SECRET_KEY_SIZE",
    "SUPPORTED_MODES",
    "TAG_SIZE",
    "EncryptionMode",
    "NonceCounter",
    "ReceivedRtp",
    "TransportCipher",
    "choose_mode",
    "open_rtp",
    "seal_rtp",
    "seal_rtp_packet",
]

SECRET_KEY_SIZE = 32
TAG_SIZE = 16
NONCE_SIZE = 4
RTCP_HEADER_SIZE = 8

_NONCE_LIMIT = 1 << 32
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_FIXED_HEADER = struct.Struct(">BBHII")

# The counter fills the first four bytes; the rest of the nonce is always zero.
_AES_NONCE_TAIL = bytes(12 - NONCE_SIZE)
_XCHACHA_NONCE_TAIL = bytes(24 - NONCE_SIZE)


class EncryptionMode(enum.StrEnum):
    """The transport encryption modes Discord still accepts, by their wire names."""

    AES256_GCM = "aead_aes256_gcm_rtpsize"
    XCHACHA20_POLY1305 = "aead_xchacha20_poly1305_rtpsize"


# In order of preference: Discord asks clients to prefer AES-GCM when it is offered, and
# it is also several times cheaper per packet here.
SUPPORTED_MODES: tuple[EncryptionMode, ...] = (
    EncryptionMode.AES256_GCM,
    EncryptionMode.XCHACHA20_POLY1305,
)


def choose_mode(offered: Iterable[str]) -> EncryptionMode:
    """Pick the mode to use from the server's ``modes`` list, preferring AES-GCM."""
    offered = list(offered)
    for mode in SUPPORTED_MODES:
        if mode.value in offered:
            return mode
    raise RemoteProtocolError(f"no supported encryption mode among {offered!r}")


class NonceCounter:
    """The 32-bit nonce counter of one direction of one connection.

    :meth:`next` returns the current value and advances; after ``2**32 - 1`` comes 0.
    discord.py starts at 0, discord.js at 1.
    """

    __slots__ = ("_value",)

    def __init__(self, start: int = 0) -> None:
        if not 0 <= start < _NONCE_LIMIT:
            raise LocalProtocolError(
                f"nonce counter must fit in 32 bits, got {start!r}"
            )
        self._value = start

    def next(self) -> int:
        """Return the nonce for the next packet."""
        value = self._value
        self._value = (value + 1) % _NONCE_LIMIT
        return value

    def __repr__(self) -> str:
        return f"NonceCounter(start={self._value})"


class TransportCipher:
    """Seals and opens packets of one connection under its ``secret_key``.

    Stateless apart from the key: the caller owns the nonce counter, because the two
    directions of a connection count separately and a relay opens with one connection's
    cipher and seals with another's.
    """

    __slots__ = ("_aesgcm", "_key", "mode")

    mode: EncryptionMode

    def __init__(self, mode: EncryptionMode | str, secret_key: bytes) -> None:
        try:
            self.mode = EncryptionMode(mode)
        except ValueError:
            raise LocalProtocolError(f"unsupported encryption mode {mode!r}") from None
        if len(secret_key) != SECRET_KEY_SIZE:
            raise LocalProtocolError(
                f"secret_key must be {SECRET_KEY_SIZE} bytes, got {len(secret_key)}"
            )

        # libsodium's binding insists on bytes; AESGCM copies the key into its own
        # context once here instead of once per packet.
        self._key = bytes(secret_key)
        self._aesgcm = (
            AESGCM(self._key) if self.mode is EncryptionMode.AES256_GCM else None
        )

    def __repr__(self) -> str:
        # Never show the key: reprs end up in logs and tracebacks.
        return f"TransportCipher(mode={self.mode.value!r})"

    def encrypt(self, header: bytes, body: bytes, nonce: int) -> bytes:
        """Return ``header + ciphertext + tag + nonce``, authenticating ``header``.

        ``header`` is the clear part exactly as it goes on the wire; ``body`` is what
        follows it (extension elements, payload and any padding).
        """
        try:
            nonce_bytes = _U32.pack(nonce)
        except struct.error:
            raise LocalProtocolError(
                f"transport nonce must fit in 32 bits, got {nonce!r}"
            ) from None

        if self._aesgcm is not None:
            sealed = self._aesgcm.encrypt(nonce_bytes + _AES_NONCE_TAIL, body, header)
        else:
            sealed = crypto_aead_xchacha20poly1305_ietf_encrypt(
                body, header, nonce_bytes + _XCHACHA_NONCE_TAIL, self._key
            )
        return header + sealed + nonce_bytes

    def decrypt(self, packet: bytes) -> tuple[bytes, bytes]:
        """Return ``(clear header, decrypted body)`` of an RTP or RTCP packet.

        The body still holds the RTP extension elements and padding; :func:`open_rtp`
        removes them. A ``bytearray`` or ``memoryview`` from a receive buffer is
        accepted too, at the cost of one copy.
        """
        # libsodium's binding takes nothing but bytes, and slices of a bytearray are
        # bytearrays.
        if type(packet) is not bytes:
            packet = bytes(packet)
        size = len(packet)
        if size < RTCP_HEADER_SIZE + TAG_SIZE + NONCE_SIZE:
            raise RemoteProtocolError(f"encrypted packet of {size} bytes is too short")

        # The clear part's length, as rtpsize_clear_length and is_rtcp compute it,
        # written out here because this runs for every packet received.
        first = packet[0]
        if first >> 6 != RTP_VERSION:
            raise RemoteProtocolError(f"RTP/RTCP version must be 2, got {first >> 6}")
        if _RTCP_FIRST_TYPE <= packet[1] <= _RTCP_LAST_TYPE:
            clear = RTCP_HEADER_SIZE
        else:
            clear = RTP_HEADER_SIZE + 4 * (first & _CSRC_COUNT_MASK)
            if first & _EXTENSION_BIT:
                clear += 4
        if size < clear + TAG_SIZE + NONCE_SIZE:
            raise RemoteProtocolError(
                f"encrypted packet of {size} bytes is too short for its "
                f"{clear}-byte header, tag and nonce"
            )

        header = packet[:clear]
        nonce_bytes = packet[-NONCE_SIZE:]
        sealed = packet[clear:-NONCE_SIZE]
        try:
            if self._aesgcm is not None:
                body = self._aesgcm.decrypt(
                    nonce_bytes + _AES_NONCE_TAIL, sealed, header
                )
            else:
                body = crypto_aead_xchacha20poly1305_ietf_decrypt(
                    sealed, header, nonce_bytes + _XCHACHA_NONCE_TAIL, self._key
                )
        # PyNaCl's TypeError and ValueError also derive from its CryptoError, so the
        # argument errors must be caught before the failed-tag one.
        except (TypeError, ValueError) as exc:
            raise RemoteProtocolError(f"cannot decrypt packet: {exc}") from exc
        except (InvalidTag, CryptoError) as exc:
            raise DecryptionError(
                f"{self.mode.value} tag did not verify for nonce "
                f"{_U32.unpack(nonce_bytes)[0]}"
            ) from exc
        return header, body


def seal_rtp(
    cipher: TransportCipher,
    seq: int,
    rtp_timestamp: int,
    ssrc: int,
    payload: bytes,
    nonce: int,
) -> bytes:
    """Return an encrypted Opus packet with the plain 12-byte header bots send."""
    return cipher.encrypt(build_rtp_header(seq, rtp_timestamp, ssrc), payload, nonce)


def seal_rtp_packet(
    cipher: TransportCipher, packet: RtpPacket, nonce: int, *, padding: int = 0
) -> bytes:
    """Return ``packet`` encrypted, with its extension elements inside the ciphertext.

    For what Discord's media servers send: CSRCs, header extensions, RTP padding.
    """
    data = build_rtp(packet.header, packet.payload, padding=padding)
    clear = rtpsize_clear_length(data)
    return cipher.encrypt(data[:clear], data[clear:], nonce)


@attrs.frozen(kw_only=True)
class ReceivedRtp:
    """An RTP packet after transport decryption.

    ``extension`` holds the decrypted extension elements (empty without the X bit) and
    ``payload`` the Opus data, with the extension and RTP padding removed. CSRCs, which
    Discord does not use for audio, are dropped.
    """

    seq: int
    rtp_timestamp: int
    ssrc: int
    payload_type: int
    marker: bool
    extension: bytes
    payload: bytes


def open_rtp(cipher: TransportCipher, packet: bytes) -> ReceivedRtp:
    """Decrypt an RTP packet and split its body into extension elements and payload."""
    header, body = cipher.decrypt(packet)
    # Checked after decryption, from the header, to keep the common case to one test;
    # RTCP arrives every few seconds at most.
    if _RTCP_FIRST_TYPE <= header[1] <= _RTCP_LAST_TYPE:
        raise RemoteProtocolError("expected an RTP packet, got RTCP")
    first, second, seq, rtp_timestamp, ssrc = _FIXED_HEADER.unpack_from(header)

    # The extension preamble's length word, the clear header's last two bytes, says how
    # many 32-bit words of elements open the decrypted body.
    extension_size = 0
    if first & _EXTENSION_BIT:
        extension_size = 4 * _U16.unpack_from(header, len(header) - 2)[0]
        if extension_size > len(body):
            raise RemoteProtocolError(
                f"RTP extension of {extension_size} bytes is longer than the "
                f"{len(body)}-byte decrypted body"
            )

    # Padding is encrypted too, so its count byte is the body's last byte.
    end = len(body)
    if first & _PADDING_BIT:
        available = end - extension_size
        count = body[-1] if body else 0
        if count == 0 or count > available:
            raise RemoteProtocolError(
                f"RTP padding count {count} is invalid for a {available}-byte payload"
            )
        end -= count

    return ReceivedRtp(
        seq=seq,
        rtp_timestamp=rtp_timestamp,
        ssrc=ssrc,
        payload_type=second & _PAYLOAD_TYPE_MASK,
        marker=bool(second & _MARKER_BIT),
        extension=body[:extension_size],
        payload=body[extension_size:end],
    )
