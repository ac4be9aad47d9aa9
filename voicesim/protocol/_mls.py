"""The MLS messages the DAVE voice gateway signs, routes and inspects (RFC 9420 §6, §12).

The gateway is the group's external sender. It signs Add and Remove proposals as
PublicMessages (op 27), and it routes the commit and Welcome members send back
(op 28 in, ops 29 and 30 out). It can judge a commit only by its structure: the
signature, membership tag and confirmation tag need the group's key schedule, which
only members hold. So commits are parsed far enough to know the epoch, the sender's
leaf, the proposal references and the path's leaf node, and where the Welcome starts.

An external sender's PublicMessage has no GroupContext in its signed content and no
membership tag, which is what makes it possible to build one with ``cryptography``
alone (§6.1, §6.2).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from voicesim._exceptions import LocalProtocolError, RemoteProtocolError
from voicesim.protocol._mls_codec import (
    MLS_VERSION,
    ContentType,
    ProposalOrRefType,
    ProposalType,
    SenderType,
    TlsReader,
    WireFormat,
    encode_opaque,
    encode_varint,
)
from voicesim.protocol._mls_crypto import (
    ExternalSender,
    ExternalSenderKey,
    proposal_ref,
    verify_with_label,
)
from voicesim.protocol._mls_key_package import (
    KeyPackage,
    LeafNode,
    read_key_package,
    read_leaf_node,
)

__all__ = [
    "Commit",
    "EncryptedGroupSecrets",
    "Proposal",
    "PublicMessage",
    "SignedProposal",
    "Welcome",
    "decode_append_proposals",
    "decode_revoke_proposals",
    "encode_append_proposals",
    "encode_revoke_proposals",
    "group_id_for_channel",
    "parse_public_message",
    "parse_welcome",
    "propose_add",
    "propose_remove",
    "split_commit_welcome",
    "verify_external_proposal",
]

_REF_SIZE = 32
_MESSAGE_HEADER = MLS_VERSION.to_bytes(2, "big") + WireFormat.PUBLIC_MESSAGE.to_bytes(
    2, "big"
)


def group_id_for_channel(channel_id: int) -> bytes:
    """DAVE's MLS group id: the voice channel id as 8 big-endian bytes."""
    return channel_id.to_bytes(8, "big")


@attrs.frozen(kw_only=True)
class Proposal:
    """An Add (with its key package) or a Remove (with the removed leaf)."""

    proposal_type: int
    key_package: KeyPackage | None = None
    removed: int | None = None


@attrs.frozen(kw_only=True)
class Commit:
    """A commit's proposals, in order, and its UpdatePath's leaf node if any."""

    proposals: tuple[bytes | Proposal, ...]  # a ProposalRef, or an inline Proposal
    path_leaf: LeafNode | None

    @property
    def refs(self) -> tuple[bytes, ...]:
        return tuple(p for p in self.proposals if isinstance(p, bytes))

    @property
    def has_inline_proposals(self) -> bool:
        return any(isinstance(p, Proposal) for p in self.proposals)


@attrs.frozen(kw_only=True)
class PublicMessage:
    """An ``MLSMessage`` carrying a PublicMessage. ``data`` is the whole message."""

    data: bytes
    group_id: bytes
    epoch: int
    sender_type: int
    sender_index: int | None  # leaf index, or external sender index
    authenticated_data: bytes
    content_type: int
    proposal: Proposal | None
    commit: Commit | None
    signature: bytes
    confirmation_tag: bytes | None  # commits only
    membership_tag: bytes | None  # member senders only
    tbs: bytes  # version, wire format and FramedContent: what an external sender signs

    @property
    def ref(self) -> bytes:
        """This message's ProposalRef."""
        return proposal_ref(self.data)


def _read_proposal(reader: TlsReader) -> Proposal:
    proposal_type = reader.uint16("proposal_type")
    if proposal_type == ProposalType.ADD:
        return Proposal(
            proposal_type=proposal_type, key_package=read_key_package(reader)
        )
    if proposal_type == ProposalType.REMOVE:
        return Proposal(proposal_type=proposal_type, removed=reader.uint32("removed"))
    # Only Add and Remove exist in DAVE; other bodies cannot even be skipped
    # without knowing their layout.
    raise RemoteProtocolError(f"unsupported MLS proposal type {proposal_type}")


def _read_commit(reader: TlsReader) -> Commit:
    body = reader.vector("commit proposals")
    proposals: list[bytes | Proposal] = []
    while body.remaining:
        kind = body.uint8("ProposalOrRef type")
        if kind == ProposalOrRefType.REFERENCE:
            ref = body.opaque("proposal reference")
            if len(ref) != _REF_SIZE:
                raise RemoteProtocolError(f"proposal reference of {len(ref)} bytes")
            proposals.append(ref)
        elif kind == ProposalOrRefType.PROPOSAL:
            proposals.append(_read_proposal(body))
        else:
            raise RemoteProtocolError(f"unknown ProposalOrRef type {kind}")

    path_leaf = None
    if reader.optional("commit path"):
        path_leaf = read_leaf_node(reader)
        reader.vector("update path nodes")  # opaque to the gateway
    return Commit(proposals=tuple(proposals), path_leaf=path_leaf)


def read_public_message(reader: TlsReader) -> PublicMessage:
    """Read one ``MLSMessage`` that must hold a PublicMessage."""
    start = reader.position
    version = reader.uint16("MLSMessage version")
    if version != MLS_VERSION:
        raise RemoteProtocolError(f"MLSMessage version {version} is not 1")
    wire_format = reader.uint16("wire_format")
    if wire_format != WireFormat.PUBLIC_MESSAGE:
        raise RemoteProtocolError(f"MLSMessage wire format {wire_format} is not public")

    group_id = reader.opaque("group_id")
    epoch = reader.uint64("epoch")
    sender_type = reader.uint8("sender_type")
    sender_index: int | None = None
    if sender_type in (SenderType.MEMBER, SenderType.EXTERNAL):
        sender_index = reader.uint32("sender index")
    elif sender_type not in (
        SenderType.NEW_MEMBER_PROPOSAL,
        SenderType.NEW_MEMBER_COMMIT,
    ):
        raise RemoteProtocolError(f"unknown sender type {sender_type}")
    authenticated_data = reader.opaque("authenticated_data")

    content_type = reader.uint8("content_type")
    proposal = commit = None
    if content_type == ContentType.PROPOSAL:
        proposal = _read_proposal(reader)
    elif content_type == ContentType.COMMIT:
        commit = _read_commit(reader)
    elif content_type == ContentType.APPLICATION:
        reader.opaque("application_data")
    else:
        raise RemoteProtocolError(f"unknown content type {content_type}")

    tbs = reader.data[start : reader.position]
    signature = reader.opaque("signature")
    confirmation_tag = None
    if content_type == ContentType.COMMIT:
        confirmation_tag = reader.opaque("confirmation_tag")
    membership_tag = None
    if sender_type == SenderType.MEMBER:
        membership_tag = reader.opaque("membership_tag")

    return PublicMessage(
        data=reader.data[start : reader.position],
        group_id=group_id,
        epoch=epoch,
        sender_type=sender_type,
        sender_index=sender_index,
        authenticated_data=authenticated_data,
        content_type=content_type,
        proposal=proposal,
        commit=commit,
        signature=signature,
        confirmation_tag=confirmation_tag,
        membership_tag=membership_tag,
        tbs=tbs,
    )


def parse_public_message(data: bytes) -> PublicMessage:
    """Parse exactly one PublicMessage ``MLSMessage``, with nothing after it."""
    reader = TlsReader(data)
    message = read_public_message(reader)
    reader.expect_end("MLSMessage")
    return message


def verify_external_proposal(message: PublicMessage, sender: ExternalSender) -> bool:
    """Check an external proposal's signature the way members do.

    For an external sender the signed FramedContentTBS carries no GroupContext.
    """
    if message.sender_type != SenderType.EXTERNAL:
        return False
    return verify_with_label(
        sender.signature_key, "FramedContentTBS", message.tbs, message.signature
    )


@attrs.frozen(kw_only=True)
class SignedProposal:
    """An external proposal ``MLSMessage`` and its ProposalRef."""

    message: bytes
    ref: bytes


def _external_proposal(
    key: ExternalSenderKey, channel_id: int, epoch: int, proposal: bytes
) -> SignedProposal:
    if not 0 <= epoch < 1 << 64:
        raise LocalProtocolError(f"MLS epoch out of range: {epoch!r}")
    tbs = b"".join(
        (
            _MESSAGE_HEADER,
            encode_opaque(group_id_for_channel(channel_id)),
            epoch.to_bytes(8, "big"),
            bytes((SenderType.EXTERNAL,)),
            (0).to_bytes(4, "big"),  # index 0: the gateway is the only external sender
            encode_opaque(b""),  # authenticated_data
            bytes((ContentType.PROPOSAL,)),
            proposal,
        )
    )
    message = tbs + encode_opaque(key.sign("FramedContentTBS", tbs))
    return SignedProposal(message=message, ref=proposal_ref(message))


def propose_add(
    key: ExternalSenderKey, *, channel_id: int, epoch: int, key_package: bytes
) -> SignedProposal:
    """Sign an Add of ``key_package`` (bare KeyPackage bytes, embedded verbatim)."""
    body = ProposalType.ADD.to_bytes(2, "big") + key_package
    return _external_proposal(key, channel_id, epoch, body)


def propose_remove(
    key: ExternalSenderKey, *, channel_id: int, epoch: int, leaf_index: int
) -> SignedProposal:
    """Sign a Remove of the member at ``leaf_index``."""
    if not 0 <= leaf_index < 1 << 32:
        raise LocalProtocolError(f"leaf index out of range: {leaf_index!r}")
    body = ProposalType.REMOVE.to_bytes(2, "big") + leaf_index.to_bytes(4, "big")
    return _external_proposal(key, channel_id, epoch, body)


def encode_append_proposals(messages: Iterable[bytes]) -> bytes:
    """The op 27 append payload after its operation-type byte."""
    body = b"".join(messages)
    return encode_varint(len(body)) + body


def encode_revoke_proposals(refs: Iterable[bytes]) -> bytes:
    """The op 27 revoke payload after its operation-type byte."""
    body = b"".join(encode_opaque(ref) for ref in refs)
    return encode_varint(len(body)) + body


def decode_append_proposals(data: bytes) -> tuple[PublicMessage, ...]:
    """Parse an op 27 append payload (after the operation-type byte)."""
    reader = TlsReader(data)
    body = reader.vector("proposal messages")
    reader.expect_end("op 27 append payload")
    messages = []
    while body.remaining:
        messages.append(read_public_message(body))
    return tuple(messages)


def decode_revoke_proposals(data: bytes) -> tuple[bytes, ...]:
    """Parse an op 27 revoke payload (after the operation-type byte)."""
    reader = TlsReader(data)
    body = reader.vector("proposal refs")
    reader.expect_end("op 27 revoke payload")
    refs = []
    while body.remaining:
        ref = body.opaque("proposal reference")
        if len(ref) != _REF_SIZE:
            raise RemoteProtocolError(f"proposal reference of {len(ref)} bytes")
        refs.append(ref)
    return tuple(refs)


@attrs.frozen(kw_only=True)
class EncryptedGroupSecrets:
    new_member: bytes  # the KeyPackageRef of the member this entry is for
    kem_output: bytes
    ciphertext: bytes

    def encode(self) -> bytes:
        return (
            encode_opaque(self.new_member)
            + encode_opaque(self.kem_output)
            + encode_opaque(self.ciphertext)
        )


@attrs.frozen(kw_only=True)
class Welcome:
    """A bare Welcome: the tail of op 28 and the payload of op 30."""

    cipher_suite: int
    secrets: tuple[EncryptedGroupSecrets, ...]
    encrypted_group_info: bytes

    def encode(self) -> bytes:
        secrets = b"".join(entry.encode() for entry in self.secrets)
        return (
            self.cipher_suite.to_bytes(2, "big")
            + encode_opaque(secrets)
            + encode_opaque(self.encrypted_group_info)
        )

    def for_member(self, key_package_ref: bytes) -> Welcome:
        """This Welcome cut down to one member's entry, as op 30 carries it."""
        entries = tuple(e for e in self.secrets if e.new_member == key_package_ref)
        if not entries:
            raise LocalProtocolError(
                f"the Welcome has no entry for {key_package_ref.hex()}"
            )
        return attrs.evolve(self, secrets=entries)


def _read_welcome(reader: TlsReader) -> Welcome:
    cipher_suite = reader.uint16("welcome cipher_suite")
    body = reader.vector("welcome secrets")
    secrets = []
    while body.remaining:
        secrets.append(
            EncryptedGroupSecrets(
                new_member=body.opaque("new_member"),
                kem_output=body.opaque("kem_output"),
                ciphertext=body.opaque("ciphertext"),
            )
        )
    return Welcome(
        cipher_suite=cipher_suite,
        secrets=tuple(secrets),
        encrypted_group_info=reader.opaque("encrypted_group_info"),
    )


def parse_welcome(data: bytes) -> Welcome:
    """Parse a bare Welcome, or one wrapped in an ``MLSMessage`` (wire format 3)."""
    reader = TlsReader(data)
    if data[2:4] == WireFormat.WELCOME.to_bytes(2, "big") and data[0:2] == bytes(
        (0, MLS_VERSION)
    ):
        reader.raw(4)
    welcome = _read_welcome(reader)
    reader.expect_end("Welcome")
    return welcome


def split_commit_welcome(data: bytes) -> tuple[PublicMessage, Welcome | None]:
    """Split an op 28 payload: a commit ``MLSMessage``, then a Welcome or nothing.

    The two are concatenated with no length between them, so the commit is parsed
    to its end to find where the Welcome starts.
    """
    reader = TlsReader(data)
    commit = read_public_message(reader)
    if commit.content_type != ContentType.COMMIT:
        raise RemoteProtocolError("op 28 does not start with a commit")
    if not reader.remaining:
        return commit, None
    return commit, parse_welcome(data[reader.position :])
