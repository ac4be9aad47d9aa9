"""MLS signatures and references for cipher suite 2, and the gateway's external sender.

Cipher suite 2 signs with ECDSA over P-256 and SHA-256, and MLS carries the signature
DER-encoded (RFC 9420 §5.1.2); davey rejects a raw ``r || s``. Everything here is
built on ``cryptography`` alone: the external sender's part of MLS needs no MLS
library, only these few primitives.
"""

from __future__ import annotations

import hashlib

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from voicesim._exceptions import LocalProtocolError, RemoteProtocolError
from voicesim.protocol._mls_codec import CREDENTIAL_BASIC, TlsReader, encode_opaque

__all__ = [
    "ExternalSender",
    "ExternalSenderKey",
    "key_package_ref",
    "parse_external_sender",
    "proposal_ref",
    "ref_hash",
    "sign_with_label",
    "verify_with_label",
]

_LABEL_PREFIX = b"MLS 1.0 "
P256_POINT_SIZE = 65


def _sign_content(label: str, content: bytes) -> bytes:
    return encode_opaque(_LABEL_PREFIX + label.encode()) + encode_opaque(content)


def sign_with_label(
    key: ec.EllipticCurvePrivateKey,
    label: str,
    content: bytes,
    *,
    deterministic: bool = False,
) -> bytes:
    """SignWithLabel (RFC 9420 §5.1.2): a DER ECDSA signature over SignContent.

    ``deterministic`` uses RFC 6979 nonces, so test vectors are byte-stable.
    """
    algorithm = ec.ECDSA(hashes.SHA256(), deterministic_signing=deterministic)
    return key.sign(_sign_content(label, content), algorithm)


def verify_with_label(
    signature_key: bytes, label: str, content: bytes, signature: bytes
) -> bool:
    """VerifyWithLabel for a 65-byte uncompressed P-256 ``signature_key``."""
    try:
        public_key = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), signature_key
        )
    except ValueError:
        return False
    try:
        public_key.verify(
            signature, _sign_content(label, content), ec.ECDSA(hashes.SHA256())
        )
    except InvalidSignature:
        return False
    return True


def ref_hash(label: str, value: bytes) -> bytes:
    """RefHash (RFC 9420 §5.2): SHA-256 over ``label<V> || value<V>``."""
    return hashlib.sha256(encode_opaque(label.encode()) + encode_opaque(value)).digest()


def proposal_ref(message: bytes) -> bytes:
    """The ProposalRef of a proposal ``MLSMessage`` (PublicMessage) as sent.

    The hashed value is AuthenticatedContent, which is the message without its
    2-byte version field: wire_format, FramedContent and the auth data.
    """
    if len(message) < 4:
        raise LocalProtocolError("a proposal MLSMessage is at least 4 bytes")
    return ref_hash("MLS 1.0 Proposal Reference", message[2:])


def key_package_ref(key_package: bytes) -> bytes:
    """The KeyPackageRef of a bare KeyPackage: what Welcome entries are keyed by."""
    return ref_hash("MLS 1.0 KeyPackage Reference", key_package)


@attrs.frozen(kw_only=True)
class ExternalSender:
    """An MLS ``ExternalSender``: the op 25 payload.

    ``identity`` is the basic credential's free-form identity. No client interprets
    it, but davey compares it with the group's when a Welcome arrives, so it must
    not change for the life of a group. Discord sends one zero byte.
    """

    signature_key: bytes
    identity: bytes = b"\x00"

    def encode(self) -> bytes:
        return (
            encode_opaque(self.signature_key)
            + CREDENTIAL_BASIC.to_bytes(2, "big")
            + encode_opaque(self.identity)
        )


def parse_external_sender(data: bytes) -> ExternalSender:
    """Parse an op 25 payload; only basic credentials exist in DAVE."""
    reader = TlsReader(data)
    signature_key = reader.opaque("external sender signature_key")
    credential_type = reader.uint16("credential_type")
    if credential_type != CREDENTIAL_BASIC:
        raise RemoteProtocolError(
            f"external sender credential type {credential_type} is not basic"
        )
    identity = reader.opaque("external sender identity")
    reader.expect_end("ExternalSender")
    if len(signature_key) != P256_POINT_SIZE or signature_key[0] != 0x04:
        raise RemoteProtocolError(
            "external sender key is not an uncompressed P-256 point"
        )
    return ExternalSender(signature_key=signature_key, identity=identity)


class ExternalSenderKey:
    """The gateway's P-256 signing key and the ExternalSender that publishes it.

    One key must outlive every group it signs for: proposals signed by another key
    fail with ``InvalidSignature`` at every member.
    """

    def __init__(
        self,
        private_key: ec.EllipticCurvePrivateKey | None = None,
        *,
        identity: bytes = b"\x00",
        deterministic: bool = False,
    ) -> None:
        if private_key is None:
            private_key = ec.generate_private_key(ec.SECP256R1())
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise LocalProtocolError("the external sender key must be on P-256")
        self._private_key = private_key
        self._deterministic = deterministic
        public = private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.external_sender = ExternalSender(signature_key=public, identity=identity)

    @classmethod
    def from_private_value(
        cls, value: int, *, identity: bytes = b"\x00", deterministic: bool = False
    ) -> ExternalSenderKey:
        """Build from a private scalar, for reproducible test vectors."""
        key = ec.derive_private_key(value, ec.SECP256R1())
        return cls(key, identity=identity, deterministic=deterministic)

    def sign(self, label: str, content: bytes) -> bytes:
        return sign_with_label(
            self._private_key, label, content, deterministic=self._deterministic
        )
