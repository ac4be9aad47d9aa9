"""MLS LeafNode and KeyPackage (RFC 9420 §7.2, §10): parsing and the gateway's checks.

A DAVE client sends its KeyPackage bare in op 26 (davey and libdave both do, whatever
the whitepaper's struct says), and the gateway embeds those exact bytes in the Add
proposal it signs. So the parser keeps the bytes as received and never re-encodes.
libdave fills capabilities from mlspp's defaults, so fields are parsed generically
and checked by value, never by comparing whole byte strings.
"""

from __future__ import annotations

import attrs

from voicesim._exceptions import RemoteProtocolError
from voicesim.protocol._mls_codec import (
    CIPHER_SUITE_P256,
    CREDENTIAL_BASIC,
    CREDENTIAL_X509,
    MLS_VERSION,
    LeafNodeSource,
    TlsReader,
    WireFormat,
)
from voicesim.protocol._mls_crypto import (
    P256_POINT_SIZE,
    key_package_ref,
    verify_with_label,
)

__all__ = [
    "Capabilities",
    "KeyPackage",
    "LeafNode",
    "parse_key_package",
    "validate_key_package",
]

_LIFETIME_FOREVER = (0, (1 << 64) - 1)


@attrs.frozen(kw_only=True)
class Capabilities:
    versions: tuple[int, ...]
    cipher_suites: tuple[int, ...]
    extensions: tuple[int, ...]
    proposals: tuple[int, ...]
    credentials: tuple[int, ...]


@attrs.frozen(kw_only=True)
class LeafNode:
    """A LeafNode. ``tbs`` is its encoding up to, not including, the signature."""

    encryption_key: bytes
    signature_key: bytes
    credential_type: int
    identity: bytes  # b"" for non-basic credentials
    capabilities: Capabilities
    leaf_node_source: int
    lifetime: tuple[int, int] | None  # key_package source only
    parent_hash: bytes | None  # commit source only
    extension_types: tuple[int, ...]
    signature: bytes
    tbs: bytes

    @property
    def user_id(self) -> int:
        """The identity read as DAVE's big-endian u64 user id."""
        if self.credential_type != CREDENTIAL_BASIC or len(self.identity) != 8:
            raise RemoteProtocolError(
                f"credential identity is not an 8-byte user id: {self.identity.hex()}"
            )
        return int.from_bytes(self.identity, "big")


@attrs.frozen(kw_only=True)
class KeyPackage:
    """A KeyPackage. ``data`` is the bare KeyPackage exactly as received."""

    data: bytes
    version: int
    cipher_suite: int
    init_key: bytes
    leaf_node: LeafNode
    extension_types: tuple[int, ...]
    signature: bytes
    tbs: bytes

    @property
    def user_id(self) -> int:
        return self.leaf_node.user_id

    @property
    def ref(self) -> bytes:
        """The KeyPackageRef, which keys this member's entry in a Welcome."""
        return key_package_ref(self.data)


def _read_extension_types(reader: TlsReader, what: str) -> tuple[int, ...]:
    body = reader.vector(what)
    types = []
    while body.remaining:
        types.append(body.uint16(f"{what} type"))
        body.opaque(f"{what} data")
    return tuple(types)


def read_leaf_node(reader: TlsReader) -> LeafNode:
    """Read one LeafNode from ``reader``."""
    start = reader.position
    encryption_key = reader.opaque("leaf encryption_key")
    signature_key = reader.opaque("leaf signature_key")

    credential_type = reader.uint16("credential_type")
    identity = b""
    if credential_type == CREDENTIAL_BASIC:
        identity = reader.opaque("credential identity")
    elif credential_type == CREDENTIAL_X509:
        # Certificates are opaque to DAVE; read past them so the caller can say
        # "not basic" instead of "malformed".
        reader.vector("x509 certificates")
    else:
        raise RemoteProtocolError(f"unknown credential type {credential_type}")

    capabilities = Capabilities(
        versions=reader.uint16_list("capabilities.versions"),
        cipher_suites=reader.uint16_list("capabilities.cipher_suites"),
        extensions=reader.uint16_list("capabilities.extensions"),
        proposals=reader.uint16_list("capabilities.proposals"),
        credentials=reader.uint16_list("capabilities.credentials"),
    )

    source = reader.uint8("leaf_node_source")
    lifetime: tuple[int, int] | None = None
    parent_hash: bytes | None = None
    if source == LeafNodeSource.KEY_PACKAGE:
        lifetime = (reader.uint64("not_before"), reader.uint64("not_after"))
    elif source == LeafNodeSource.COMMIT:
        parent_hash = reader.opaque("parent_hash")
    elif source != LeafNodeSource.UPDATE:
        raise RemoteProtocolError(f"unknown leaf_node_source {source}")

    extension_types = _read_extension_types(reader, "leaf extensions")
    tbs = reader.data[start : reader.position]
    signature = reader.opaque("leaf signature")
    return LeafNode(
        encryption_key=encryption_key,
        signature_key=signature_key,
        credential_type=credential_type,
        identity=identity,
        capabilities=capabilities,
        leaf_node_source=source,
        lifetime=lifetime,
        parent_hash=parent_hash,
        extension_types=extension_types,
        signature=signature,
        tbs=tbs,
    )


def read_key_package(reader: TlsReader) -> KeyPackage:
    """Read one bare KeyPackage from ``reader``."""
    start = reader.position
    version = reader.uint16("key package version")
    cipher_suite = reader.uint16("key package cipher_suite")
    init_key = reader.opaque("init_key")
    leaf_node = read_leaf_node(reader)
    extension_types = _read_extension_types(reader, "key package extensions")
    tbs = reader.data[start : reader.position]
    signature = reader.opaque("key package signature")
    return KeyPackage(
        data=reader.data[start : reader.position],
        version=version,
        cipher_suite=cipher_suite,
        init_key=init_key,
        leaf_node=leaf_node,
        extension_types=extension_types,
        signature=signature,
        tbs=tbs,
    )


def parse_key_package(data: bytes) -> KeyPackage:
    """Parse an op 26 payload completely.

    An ``MLSMessage``-wrapped key package (the whitepaper's form, which no client
    sends) is accepted and unwrapped: bytes 2 and 3 are then the wire format 5
    instead of the cipher suite 2.
    """
    start = 0
    if len(data) >= 4 and data[2:4] == WireFormat.KEY_PACKAGE.to_bytes(2, "big"):
        if data[0:2] != MLS_VERSION.to_bytes(2, "big"):
            raise RemoteProtocolError(
                "MLSMessage-wrapped key package has a bad version"
            )
        start = 4
    reader = TlsReader(data, start)
    key_package = read_key_package(reader)
    reader.expect_end("KeyPackage")
    return key_package


def validate_key_package(key_package: KeyPackage, *, user_id: int) -> None:
    """The gateway's checks before it proposes a key package (RFC 9420 §10.1).

    Raises :class:`RemoteProtocolError` naming the first check that failed. An Add
    carrying a bad package would fail at, or crash, every member it reaches.
    """
    leaf = key_package.leaf_node
    if key_package.version != MLS_VERSION:
        raise RemoteProtocolError(f"key package version {key_package.version} is not 1")
    if key_package.cipher_suite != CIPHER_SUITE_P256:
        raise RemoteProtocolError(
            f"key package cipher suite {key_package.cipher_suite} is not 2"
        )
    if leaf.credential_type != CREDENTIAL_BASIC:
        raise RemoteProtocolError("key package credential is not basic")
    if leaf.identity != user_id.to_bytes(8, "big"):
        raise RemoteProtocolError(
            f"key package identity {leaf.identity.hex()} is not user {user_id}"
        )
    if leaf.leaf_node_source != LeafNodeSource.KEY_PACKAGE:
        raise RemoteProtocolError("key package leaf node source is not key_package")
    if leaf.lifetime != _LIFETIME_FOREVER:
        raise RemoteProtocolError(f"key package lifetime {leaf.lifetime} is not 0..max")
    for name, key in (
        ("init_key", key_package.init_key),
        ("encryption_key", leaf.encryption_key),
        ("signature_key", leaf.signature_key),
    ):
        if len(key) != P256_POINT_SIZE or key[0] != 0x04:
            raise RemoteProtocolError(f"key package {name} is not a P-256 point")
    if key_package.init_key == leaf.encryption_key:
        raise RemoteProtocolError("key package init_key equals its encryption_key")
    capabilities = leaf.capabilities
    if (
        MLS_VERSION not in capabilities.versions
        or CIPHER_SUITE_P256 not in capabilities.cipher_suites
        or CREDENTIAL_BASIC not in capabilities.credentials
    ):
        raise RemoteProtocolError(
            f"key package capabilities lack DAVE's: {capabilities}"
        )
    if not verify_with_label(
        leaf.signature_key, "LeafNodeTBS", leaf.tbs, leaf.signature
    ):
        raise RemoteProtocolError("key package leaf node signature does not verify")
    if not verify_with_label(
        leaf.signature_key, "KeyPackageTBS", key_package.tbs, key_package.signature
    ):
        raise RemoteProtocolError("key package signature does not verify")
