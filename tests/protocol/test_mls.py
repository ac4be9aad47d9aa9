from __future__ import annotations

import contextlib
import hashlib

import davey
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from voicesim._exceptions import LocalProtocolError, RemoteProtocolError
from voicesim.protocol._mls import (
    decode_append_proposals,
    decode_revoke_proposals,
    encode_append_proposals,
    encode_revoke_proposals,
    group_id_for_channel,
    parse_public_message,
    parse_welcome,
    propose_add,
    propose_remove,
    split_commit_welcome,
    verify_external_proposal,
)
from voicesim.protocol._mls_codec import (
    ContentType,
    ProposalType,
    SenderType,
    TlsReader,
    decode_varint,
    encode_opaque,
    encode_varint,
)
from voicesim.protocol._mls_crypto import (
    ExternalSender,
    ExternalSenderKey,
    key_package_ref,
    parse_external_sender,
    proposal_ref,
    sign_with_label,
    verify_with_label,
)
from voicesim.protocol._mls_key_package import parse_key_package, validate_key_package

# Captured from a real Discord session (davey's own tests): channel
# 927310423890473011, the proposal adds user 158533742254751744.
CAPTURED_CHANNEL = 927310423890473011
CAPTURED_ADDED_USER = 158533742254751744
EXTERNAL_SENDER = bytes.fromhex(
    "404104ca1a2b102501d0672bd45ed74ffb83e078b2ba5b12c3f69fad56f083b6a35fc989c6736b58"
    "52b5aecdfcdf206e156d3d1dba8e3e5b2f89fc0c16f11614e84e4a00010100"
)
APPENDING_PROPOSALS = bytes.fromhex(
    "41f000010001080cde77eadc823033000000000000000002000000000002000100010002404104a6"
    "1acd34ff0548e6f767cc4df9619b51ba5814d52ee558284fc554405768e9e741ba32276414941b7c"
    "0190dcb5dfc3349a168f1247ecbdf6fc69f3eecab3765d404104f44da24e5aa9f73796fa38be1155"
    "56e6b7d4f6ba55d2ecc3f1b9d198af6237e3fc8fc635996b6c76e77b4acace33f5cfd745ad0d540d"
    "d6f03f0da85c82e14714404104e7793985ed074af49568b53cf2e3974688279f02ee8d7c7df099ce"
    "3c7a1a28e747f59a7c7c23e9ef4f7815fb3469f39ea124f8b76712c41b763a55b867e6b48b000108"
    "02333999400200000200010200020000020001010000000000000000ffffffffffffffff00404830"
    "46022100d874dc777d4ede7e6d3374f737bc1394ac0ffd0635abdc9d02b3e359e059466a022100e6"
    "2e97aefd5c6b32ff0ac5c5159dbe94f6f5a01bd0dd14a9dcc4d1e6248972ac004047304502205168"
    "abdf8d83a48daf8d5960afb305022de707c7496087feb43004c9fd2be5e80221008312a6f6df1ff5"
    "93671a39f9966f6d1caef43e0c6d53c74300ba089ceeecfbf440473045022100cdbe804ba06a9be1"
    "7615fe3c7f9055f31a6d0ea9402dd9fda6d109e9a3cb632b022067409e59f6b7f0a3eddd330a092a"
    "6c13d99d12abaebe0d6d40a0dae435c2a7a2"
)
REVOKING_PROPOSALS = bytes.fromhex(
    "212062386ffb20b28f556b2465c0a2520ba2b074fca00e94b2fdebc0496d544cd6c0"
)

# voicesim's golden vector (reference section 5.3): deterministic ECDSA with
# d = SHA-256("voicesim test external sender") mod n.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
GOLDEN_SCALAR = 0xD8DC0D11B09B6868C25362703F384854E5065E38F7A648E7953C7E24934D6148
GOLDEN_CHANNEL = 1234567890123456789
GOLDEN_EXTERNAL_SENDER = bytes.fromhex(
    "4041048babb1c7fa91f025d45f5039af71fa13277d12be79e781d2537c0f4b40ed7b0f2fcf4da7b4"
    "631c1df1301b722299b1b9e080fffa255a94da85f84b6df10a2bda00010100"
)
GOLDEN_REMOVE = bytes.fromhex(
    "0001000108112210f47de981150000000000000001020000000000020003000000014046304402"
    "201f7f0ace048a79666a3bc6b28a788f64f5e5b9b938bd2ade2dc5b8d7cb132de5022040b812f2"
    "16fe14b14612bd67a80b61e26244f6b1043357a1e14dd26b8f558ef7"
)
GOLDEN_REF = bytes.fromhex(
    "e92d7d2d16defb88e1174c174137c401dd8a6052b8b59b18b8f75a420aaf0477"
)


def golden_key() -> ExternalSenderKey:
    return ExternalSenderKey.from_private_value(GOLDEN_SCALAR, deterministic=True)


def captured_add_message() -> bytes:
    (message,) = decode_append_proposals(APPENDING_PROPOSALS)
    return message.data


def captured_key_package() -> bytes:
    """The key package embedded in the captured Add: after 30 header bytes, before
    the 73-byte signature field."""
    return captured_add_message()[30:-73]


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (63, "3f"),
        (64, "4040"),
        (496, "41f0"),
        (16383, "7fff"),
        (16384, "80004000"),
        ((1 << 30) - 1, "bfffffff"),
    ],
)
def test_varint_encodes_shortest_form(value: int, encoded: str) -> None:
    """Each length takes the shortest of the 1, 2 and 4-byte forms, and decodes back."""
    assert encode_varint(value).hex() == encoded
    assert decode_varint(bytes.fromhex(encoded)) == (value, len(encoded) // 2)


@pytest.mark.parametrize("value", [-1, 1 << 30])
def test_varint_refuses_to_encode_out_of_range(value: int) -> None:
    """Lengths outside 0..2^30-1 have no MLS encoding."""
    with pytest.raises(LocalProtocolError):
        encode_varint(value)


@pytest.mark.parametrize("encoded", ["4005", "80000005", "80003fff", "c0", "40", ""])
def test_varint_rejects_non_minimal_invalid_and_truncated(encoded: str) -> None:
    """Longer-than-needed forms, the 0b11 prefix and cut-off bytes are errors."""
    with pytest.raises(RemoteProtocolError):
        decode_varint(bytes.fromhex(encoded))


@given(st.integers(0, (1 << 30) - 1))
def test_varint_round_trips(value: int) -> None:
    """decode(encode(n)) gives n back and consumes every byte."""
    encoded = encode_varint(value)
    assert decode_varint(encoded) == (value, len(encoded))


@given(st.binary(max_size=20000))
@settings(max_examples=50)
def test_opaque_round_trips(data: bytes) -> None:
    """An opaque<V> reads back as the same bytes with nothing left over."""
    reader = TlsReader(encode_opaque(data) + b"rest")
    assert reader.opaque() == data
    assert reader.raw(4) == b"rest"
    reader.expect_end("test")


def test_tls_reader_rejects_bad_optional_flag() -> None:
    """An optional<T> presence byte other than 0 or 1 is malformed."""
    with pytest.raises(RemoteProtocolError):
        TlsReader(b"\x02").optional()


def test_captured_external_sender_parses_and_reencodes() -> None:
    """Discord's op 25 payload is a P-256 key and a basic credential holding 00."""
    sender = parse_external_sender(EXTERNAL_SENDER)
    assert sender.identity == b"\x00"
    assert sender.signature_key == EXTERNAL_SENDER[2:67]
    assert sender.encode() == EXTERNAL_SENDER


def test_captured_add_proposal_fields() -> None:
    """The captured op 27 holds one external Add at epoch 0 for the channel's group."""
    (message,) = decode_append_proposals(APPENDING_PROPOSALS)
    assert message.group_id == group_id_for_channel(CAPTURED_CHANNEL)
    assert message.epoch == 0
    assert message.sender_type == SenderType.EXTERNAL
    assert message.sender_index == 0
    assert message.authenticated_data == b""
    assert message.content_type == ContentType.PROPOSAL
    assert message.membership_tag is None and message.confirmation_tag is None
    assert message.proposal is not None
    assert message.proposal.proposal_type == ProposalType.ADD
    key_package = message.proposal.key_package
    assert key_package is not None
    assert key_package.user_id == CAPTURED_ADDED_USER
    assert len(message.signature) == 71
    assert encode_append_proposals([message.data]) == APPENDING_PROPOSALS


def test_captured_add_signature_verifies_without_group_context() -> None:
    """Discord's signature covers the FramedContentTBS with no GroupContext."""
    (message,) = decode_append_proposals(APPENDING_PROPOSALS)
    assert verify_external_proposal(message, parse_external_sender(EXTERNAL_SENDER))
    assert not verify_external_proposal(message, golden_key().external_sender)


def test_captured_revoke_reference_is_the_add_proposal_ref() -> None:
    """The captured revoke carries exactly the RefHash of the captured Add."""
    (ref,) = decode_revoke_proposals(REVOKING_PROPOSALS)
    assert proposal_ref(captured_add_message()) == ref
    assert encode_revoke_proposals([ref]) == REVOKING_PROPOSALS


def test_captured_key_package_passes_gateway_validation() -> None:
    """The captured key package has the lifetime, capabilities and signatures DAVE wants."""
    key_package = parse_key_package(captured_key_package())
    validate_key_package(key_package, user_id=CAPTURED_ADDED_USER)
    leaf = key_package.leaf_node
    assert leaf.lifetime == (0, (1 << 64) - 1)
    assert leaf.capabilities.cipher_suites == (2,)
    assert (len(leaf.signature), len(key_package.signature)) == (72, 71)


def test_key_package_for_another_user_is_rejected() -> None:
    """The identity must be the user id the websocket authenticated as."""
    key_package = parse_key_package(captured_key_package())
    with pytest.raises(RemoteProtocolError, match="identity"):
        validate_key_package(key_package, user_id=CAPTURED_ADDED_USER + 1)


def test_tampered_key_package_fails_its_signature() -> None:
    """Changing a byte of the init key breaks the KeyPackage signature."""
    data = bytearray(captured_key_package())
    data[10] ^= 1
    with pytest.raises(RemoteProtocolError, match="signature"):
        validate_key_package(
            parse_key_package(bytes(data)), user_id=CAPTURED_ADDED_USER
        )


def test_golden_external_sender_bytes() -> None:
    """The golden key gives the reference's 71-byte op 25 payload."""
    assert hex(GOLDEN_SCALAR) == hex(
        int.from_bytes(hashlib.sha256(b"voicesim test external sender").digest())
        % P256_ORDER
    )
    assert golden_key().external_sender.encode() == GOLDEN_EXTERNAL_SENDER


def test_golden_remove_proposal_is_byte_exact() -> None:
    """Remove(leaf 1) at epoch 1, deterministically signed, matches the reference."""
    signed = propose_remove(
        golden_key(), channel_id=GOLDEN_CHANNEL, epoch=1, leaf_index=1
    )
    assert signed.message == GOLDEN_REMOVE
    assert signed.ref == GOLDEN_REF
    assert encode_append_proposals([signed.message]).hex()[:4] == "406a"
    assert encode_revoke_proposals([signed.ref]) == bytes.fromhex("2120") + GOLDEN_REF


def test_golden_remove_parses_back() -> None:
    """The Remove parses to leaf 1 at epoch 1 and its signature verifies."""
    message = parse_public_message(GOLDEN_REMOVE)
    assert message.proposal is not None and message.proposal.removed == 1
    assert message.epoch == 1
    assert message.ref == GOLDEN_REF
    assert verify_external_proposal(message, golden_key().external_sender)


def test_sign_with_label_binds_the_label() -> None:
    """A signature made under one label does not verify under another."""
    key = ec.derive_private_key(GOLDEN_SCALAR, ec.SECP256R1())
    signature = sign_with_label(key, "FramedContentTBS", b"content")
    public = golden_key().external_sender.signature_key
    assert verify_with_label(public, "FramedContentTBS", b"content", signature)
    assert not verify_with_label(public, "LeafNodeTBS", b"content", signature)
    assert not verify_with_label(
        b"\x04" + bytes(64), "FramedContentTBS", b"content", signature
    )


@pytest.mark.parametrize(
    "data",
    [EXTERNAL_SENDER, APPENDING_PROPOSALS, REVOKING_PROPOSALS, GOLDEN_REMOVE],
    ids=["external_sender", "append", "revoke", "remove"],
)
def test_every_truncation_raises_remote_protocol_error(data: bytes) -> None:
    """Cutting a message anywhere, or adding a byte, is reported, never an IndexError."""
    parsers = {
        EXTERNAL_SENDER: parse_external_sender,
        APPENDING_PROPOSALS: decode_append_proposals,
        REVOKING_PROPOSALS: decode_revoke_proposals,
        GOLDEN_REMOVE: parse_public_message,
    }
    parse = parsers[data]
    for end in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            parse(data[:end])
    with pytest.raises(RemoteProtocolError):
        parse(data + b"\x00")


@given(st.binary(max_size=600))
def test_parsers_raise_only_remote_protocol_error(data: bytes) -> None:
    """Arbitrary bytes either parse or raise RemoteProtocolError."""
    for parse in (
        parse_external_sender,
        parse_key_package,
        parse_public_message,
        parse_welcome,
        split_commit_welcome,
        decode_append_proposals,
        decode_revoke_proposals,
    ):
        with contextlib.suppress(RemoteProtocolError):
            parse(data)


@given(st.integers(0, len(APPENDING_PROPOSALS) - 1), st.integers(1, 255))
def test_flipped_byte_in_captured_proposal_is_caught(index: int, xor: int) -> None:
    """A corrupted proposal fails to parse or fails its signature check."""
    data = bytearray(APPENDING_PROPOSALS)
    data[index] ^= xor
    try:
        (message,) = decode_append_proposals(bytes(data))
    except RemoteProtocolError:
        return
    assert not verify_external_proposal(message, parse_external_sender(EXTERNAL_SENDER))


def test_external_sender_rejects_non_basic_credential_and_bad_key() -> None:
    """op 25 must hold an uncompressed P-256 key and a basic credential."""
    with pytest.raises(RemoteProtocolError, match="basic"):
        parse_external_sender(EXTERNAL_SENDER[:67] + b"\x00\x02\x01\x00")
    short = ExternalSender(signature_key=b"\x04" + bytes(10)).encode()
    with pytest.raises(RemoteProtocolError, match="P-256"):
        parse_external_sender(short)


def test_propose_rejects_out_of_range_values() -> None:
    """Epochs and leaf indices that do not fit their fields are the caller's error."""
    with pytest.raises(LocalProtocolError):
        propose_remove(golden_key(), channel_id=1, epoch=1 << 64, leaf_index=0)
    with pytest.raises(LocalProtocolError):
        propose_remove(golden_key(), channel_id=1, epoch=0, leaf_index=1 << 32)


# -- interop with davey -------------------------------------------------------


def two_davey_sessions(key: ExternalSenderKey) -> tuple[davey.DaveSession, ...]:
    sessions = tuple(
        davey.DaveSession(1, user, GOLDEN_CHANNEL) for user in (1001, 1002)
    )
    for session in sessions:
        session.set_external_sender(key.external_sender.encode())
    return sessions


def test_davey_key_package_parses_and_validates() -> None:
    """A key package davey makes passes every check, bare or MLSMessage-wrapped."""
    session = davey.DaveSession(1, 1001, GOLDEN_CHANNEL)
    data = session.get_serialized_key_package()
    key_package = parse_key_package(data)
    validate_key_package(key_package, user_id=1001)
    assert key_package.data == data
    assert key_package.ref == key_package_ref(data)
    wrapped = parse_key_package(bytes.fromhex("00010005") + data)
    assert wrapped.data == data


def test_davey_commits_our_add_and_the_welcome_routes() -> None:
    """davey commits our signed Add; we find its ref, split and cut the Welcome."""
    key = ExternalSenderKey()
    first, second = two_davey_sessions(key)
    package = second.get_serialized_key_package()
    add = propose_add(key, channel_id=GOLDEN_CHANNEL, epoch=0, key_package=package)

    result = first.process_proposals(
        davey.ProposalsOperationType.append, encode_append_proposals([add.message])
    )
    assert result is not None and result.welcome is not None
    commit, welcome = split_commit_welcome(result.commit + result.welcome)
    assert commit.data == result.commit
    assert commit.sender_type == SenderType.MEMBER and commit.sender_index == 0
    assert commit.epoch == 0 and commit.membership_tag is not None
    assert commit.commit is not None and commit.commit.refs == (add.ref,)
    assert commit.commit.path_leaf is None
    assert welcome is not None and welcome.encode() == result.welcome
    assert [e.new_member for e in welcome.secrets] == [key_package_ref(package)]

    first.process_commit(commit.data)
    second.process_welcome(welcome.for_member(key_package_ref(package)).encode())
    assert (first.epoch, second.epoch, second.own_leaf_index) == (1, 1, 1)
    with pytest.raises(LocalProtocolError):
        welcome.for_member(bytes(32))


def test_davey_commits_our_remove_with_a_path() -> None:
    """A Remove commit carries an UpdatePath whose leaf is the committer's."""
    key = ExternalSenderKey()
    first, second = two_davey_sessions(key)
    package = second.get_serialized_key_package()
    add = propose_add(key, channel_id=GOLDEN_CHANNEL, epoch=0, key_package=package)
    result = first.process_proposals(
        davey.ProposalsOperationType.append, encode_append_proposals([add.message])
    )
    assert result is not None
    first.process_commit(result.commit)

    remove = propose_remove(key, channel_id=GOLDEN_CHANNEL, epoch=1, leaf_index=1)
    result = first.process_proposals(
        davey.ProposalsOperationType.append, encode_append_proposals([remove.message])
    )
    assert result is not None and result.welcome is None
    commit, welcome = split_commit_welcome(result.commit)
    assert welcome is None and commit.epoch == 1
    assert commit.commit is not None and commit.commit.refs == (remove.ref,)
    path = commit.commit.path_leaf
    assert path is not None and path.user_id == 1001 and path.parent_hash is not None
    first.process_commit(commit.data)
    assert first.get_user_ids() == ["1001"]


def test_davey_rejects_a_proposal_signed_by_another_key() -> None:
    """Our signature is what davey checks: another key's proposal is refused."""
    key = ExternalSenderKey()
    first, second = two_davey_sessions(key)
    package = second.get_serialized_key_package()
    forged = propose_add(
        ExternalSenderKey(), channel_id=GOLDEN_CHANNEL, epoch=0, key_package=package
    )
    with pytest.raises(Exception, match="InvalidSignature"):
        first.process_proposals(
            davey.ProposalsOperationType.append,
            encode_append_proposals([forged.message]),
        )
