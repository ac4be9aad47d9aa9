from __future__ import annotations

import random

import davey
import pytest

from tests.emulator._dave_harness import CHANNEL_ID, Harness
from voicesim._exceptions import LocalProtocolError
from voicesim.emulator._dave_group import (
    CloseMember,
    DaveGroup,
    DaveMode,
    negotiate_dave,
)
from voicesim.protocol._mls import decode_append_proposals, decode_revoke_proposals
from voicesim.protocol._mls_crypto import ExternalSenderKey
from voicesim.protocol._voice_gateway import (
    DaveExecuteTransition,
    DaveMlsAnnounceCommitTransition,
    DaveMlsCommitWelcome,
    DaveMlsExternalSender,
    DaveMlsInvalidCommitWelcome,
    DaveMlsKeyPackage,
    DaveMlsProposals,
    DaveMlsWelcome,
    DavePrepareEpoch,
    DavePrepareTransition,
    DaveTransitionReady,
    encode_voice_message,
)

A, B, C, D, E = 1001, 1002, 1003, 1004, 1005


def sent_types(harness: Harness, start: int = 0) -> list[tuple[int, str]]:
    return [(user, type(msg).__name__) for user, msg in harness.sent[start:]]


def formed(*users: int, expects_users: bool = False) -> Harness:
    """A harness whose users have joined one by one and settled."""
    harness = Harness()
    for user in users:
        harness.join(user, expects_users=expects_users)
        harness.pump()
    return harness


@pytest.mark.parametrize(
    ("mode", "offered", "version", "close"),
    [
        ("off", 1, 0, None),
        ("on", 1, 1, None),
        ("on", 0, 0, None),
        ("on", 7, 1, None),
        ("required", 1, 1, None),
        ("required", 0, 0, 4017),
        (DaveMode.REQUIRED, -1, 0, 4017),
    ],
)
def test_negotiate_dave_picks_version_or_4017(
    mode: str, offered: int, version: int, close: int | None
) -> None:
    """off never enables DAVE, on follows the client, required refuses a client without it."""
    decision = negotiate_dave(mode, offered)
    assert decision.dave_protocol_version == version
    assert decision.close_code == close
    if close is not None:
        assert decision.close_reason == "E2EE/DAVE protocol required"


def test_negotiate_dave_rejects_unknown_mode() -> None:
    """A mode other than off, on or required is a configuration error."""
    with pytest.raises(ValueError):
        negotiate_dave("sometimes", 1)


def test_add_member_sends_the_external_sender_once() -> None:
    """op 25 carries the group key's ExternalSender; adding a user twice is a bug."""
    key = ExternalSenderKey()
    group = DaveGroup(CHANNEL_ID, key=key)
    assert group.add_member(A, 0.0) == [
        (A, DaveMlsExternalSender(data=key.external_sender.encode()))
    ]
    with pytest.raises(LocalProtocolError):
        group.add_member(A, 0.0)


def test_lone_member_gets_no_proposals() -> None:
    """A single pending client is left alone, at epoch 0, without a group."""
    harness = formed(A)
    assert sent_types(harness) == [(A, "DaveMlsExternalSender")]
    assert harness.group.epoch == 0 and not harness.group.established
    assert harness.clients[A].session.status == davey.SessionStatus.pending


def test_two_members_build_a_group_and_exchange_media() -> None:
    """Each gets the other's Add; the first commit wins and is routed as 29 and 30."""
    harness = formed(A)
    harness.join(B)
    mark = len(harness.sent)
    harness.pump()

    assert harness.group.epoch == 1 and harness.group.established
    routed = sent_types(harness, mark)
    committer = next(
        u for u, kind in routed if kind == "DaveMlsAnnounceCommitTransition"
    )
    joiner = B if committer == A else A
    assert (joiner, "DaveMlsWelcome") in routed
    assert (joiner, "DaveMlsAnnounceCommitTransition") not in routed
    assert harness.group.leaves == (committer, joiner)
    assert harness.group.stats.commits == 1 and harness.group.stats.stale_commits == 1
    harness.assert_converged()
    harness.assert_media_flows()


def test_proposals_are_epoch_zero_adds_of_the_other_user() -> None:
    """Each pending client gets exactly the other's Add, signed for epoch 0."""
    harness = formed(A)
    mark = len(harness.sent)
    harness.join(B)
    harness.send_next(B)
    proposals = [
        (user, msg)
        for user, msg in harness.sent[mark:]
        if isinstance(msg, DaveMlsProposals)
    ]
    assert [user for user, _ in proposals] == [A, B]
    for user, msg in proposals:
        (message,) = decode_append_proposals(msg.data)
        assert message.epoch == 0
        assert message.proposal is not None and message.proposal.key_package is not None
        assert message.proposal.key_package.user_id == (B if user == A else A)


def test_third_member_joins_the_established_group() -> None:
    """The newcomer's Add goes to the members only; it is welcomed at epoch 2."""
    harness = formed(A, B)
    mark = len(harness.sent)
    harness.join(C, expects_users=True)
    harness.pump()

    routed = sent_types(harness, mark)
    assert (C, "DaveMlsProposals") not in routed
    assert (C, "DaveMlsWelcome") in routed
    assert harness.group.epoch == 2
    assert harness.group.leaf_of(C) == 2
    assert harness.group.pending_transitions == frozenset()
    harness.assert_converged()
    harness.assert_media_flows()


def test_transition_executes_for_everyone_once_all_are_ready() -> None:
    """op 22 goes to every member of the new epoch, after the last op 23."""
    harness = formed(A, B, C)
    executed = [
        (user, msg.transition_id)
        for user, msg in harness.sent
        if isinstance(msg, DaveExecuteTransition)
    ]
    last = executed[-1][1]
    assert sorted(u for u, t in executed if t == last) == [A, B, C]
    for user in (A, B, C):
        assert harness.clients[user].executed[-1] == last


def test_leave_and_join_mid_session_keep_media_flowing() -> None:
    """A leaver is removed in a new epoch, a joiner reuses its leaf, frames decrypt."""
    harness = formed(A, B, C, expects_users=True)
    left_leaf = harness.group.leaf_of(B)
    harness.leave(B)
    harness.pump()
    assert harness.group.epoch == 3
    assert B not in harness.group.leaves
    harness.assert_converged()
    harness.assert_media_flows()

    harness.join(D, expects_users=True)
    harness.pump()
    assert harness.group.epoch == 4
    assert harness.group.leaf_of(D) == left_leaf
    harness.assert_converged()
    harness.assert_media_flows()


def test_remove_is_never_sent_to_the_leaver() -> None:
    """The Remove goes to the staying members only, for the leaver's leaf."""
    harness = formed(A, B, C)
    leaf = harness.group.leaf_of(C)
    mark = len(harness.sent)
    harness.leave(C)
    proposals = [
        (user, msg)
        for user, msg in harness.sent[mark:]
        if isinstance(msg, DaveMlsProposals)
    ]
    assert sorted(user for user, _ in proposals) == [A, B]
    (message,) = decode_append_proposals(proposals[0][1].data)
    assert message.proposal is not None and message.proposal.removed == leaf


def test_sole_survivor_resets_and_regroups() -> None:
    """When one member is left it gets op 24 and op 21; the next joiner builds a new group."""
    harness = formed(A, B)
    mark = len(harness.sent)
    harness.leave(B)
    assert harness.sent[mark:] == [
        (A, DavePrepareEpoch(protocol_version=1, epoch=1)),
        (A, DavePrepareTransition(protocol_version=1, transition_id=0)),
    ]
    harness.pump()
    assert harness.group.epoch == 0 and harness.group.leaves == ()
    assert harness.clients[A].session.status == davey.SessionStatus.pending

    harness.join(C)
    harness.pump()
    assert harness.group.epoch == 1
    harness.assert_converged()
    harness.assert_media_flows()


def test_everyone_leaving_forgets_the_group() -> None:
    """With no members left the group returns to epoch 0 and sends nothing."""
    harness = formed(A, B, C)
    for user in (A, B, C):
        harness.leave(user)
    assert harness.group.epoch == 0
    assert harness.group.members == frozenset()


def test_key_package_arriving_mid_commit_is_folded_in() -> None:
    """Commits in flight without the late Add are stale; the re-commit carries both."""
    harness = formed(A, B)
    harness.join(C)
    harness.send_next(C)  # C's Add is out; A and B have queued their commits
    harness.join(D)
    harness.send_next(D)  # D's Add reaches A and B before any commit is read
    harness.pump()
    assert harness.group.epoch == 2
    assert {harness.group.leaf_of(C), harness.group.leaf_of(D)} == {2, 3}
    assert harness.group.stats.stale_commits >= 2
    harness.assert_converged()
    harness.assert_media_flows()


def test_member_leaving_while_an_add_is_pending() -> None:
    """A Remove joining a pending Add still yields a commit with the joiner's Welcome."""
    harness = formed(A, B, C)
    left_leaf = harness.group.leaf_of(B)
    harness.join(D)
    harness.send_next(D)  # Add(D) is out; commits are queued
    harness.leave(B)  # Remove(B) follows, with Add(D) repeated
    harness.pump()
    assert harness.group.epoch == 3
    assert harness.group.leaf_of(D) == left_leaf  # Removes apply before Adds
    harness.assert_converged()
    harness.assert_media_flows()


def test_joiner_leaving_before_its_commit_is_revoked() -> None:
    """When one of two pending joiners leaves, the other is still welcomed."""
    harness = formed(A, B)
    harness.join(C)
    harness.send_next(C)
    harness.join(D)
    harness.send_next(D)
    mark = len(harness.sent)
    harness.leave(C)
    revokes = [
        (user, decode_revoke_proposals(msg.data))
        for user, msg in harness.sent[mark:]
        if isinstance(msg, DaveMlsProposals) and msg.operation_type == 1
    ]
    assert sorted(user for user, _ in revokes) == [A, B]
    harness.pump()
    assert harness.group.epoch == 2
    assert C not in harness.group.leaves and harness.group.leaf_of(D) == 2
    harness.assert_converged()
    harness.assert_media_flows()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_churn_with_interleaved_delivery_converges(seed: int) -> None:
    """Joins, leaves and op 31 resets in random order always settle into one group."""
    rng = random.Random(seed)
    harness = Harness()
    next_user = 2000
    for _ in range(14):
        connected = list(harness.clients)
        action = rng.choice(
            ["join", "join", "leave", "reset"] if connected else ["join"]
        )
        if action == "join":
            next_user += 1
            harness.join(next_user, expects_users=rng.random() < 0.5)
        elif action == "leave":
            harness.leave(rng.choice(connected))
        else:
            harness.reset(rng.choice(connected))
        if rng.random() < 0.5:
            harness.pump(rng=rng)  # sometimes let the next event overlap this one
    harness.pump(rng=rng)
    if len(harness.clients) >= 2:
        harness.assert_converged()
        harness.assert_media_flows()
    assert harness.group.stats.commit_timeouts == 0


def test_new_group_with_three_pending_clients() -> None:
    """Three clients that arrive before any commit form one group of three."""
    harness = Harness()
    for user in (A, B, C):
        harness.join(user)
        harness.send_next(user)  # key packages only; commits stay queued
    harness.pump()
    assert harness.group.epoch == 1
    assert sorted(u for u in harness.group.leaves if u is not None) == [A, B, C]
    harness.assert_converged()
    harness.assert_media_flows()


def test_invalid_welcome_report_re_adds_the_member() -> None:
    """op 31 then a new op 26 remove and re-add the reporter in one commit, same leaf."""
    harness = formed(A, B, C)
    leaf = harness.group.leaf_of(C)
    client = harness.clients[C]
    client.session.reinit(1, C, CHANNEL_ID)  # what a client does after a failed op 30
    harness.inject(
        C, encode_voice_message(DaveMlsInvalidCommitWelcome(transition_id=2))
    )
    harness.inject(
        C,
        encode_voice_message(
            DaveMlsKeyPackage(data=client.session.get_serialized_key_package())
        ),
    )
    harness.pump()
    assert harness.group.stats.invalid_commit_welcome_reports == 1
    assert harness.group.epoch == 3
    assert harness.group.leaf_of(C) == leaf
    harness.assert_converged()
    harness.assert_media_flows()


def test_corrupted_welcome_makes_the_joiner_recover() -> None:
    """A joiner whose op 30 fails sends op 31 and a new key package, and is re-added."""
    harness = formed(A, B)

    def corrupt_first_welcome(user: int, message: object) -> object:
        if isinstance(message, DaveMlsWelcome) and harness.clients[user].failures == 0:
            data = bytearray(message.data)
            data[-5] ^= 0xFF  # inside encrypted_group_info: the AEAD fails
            return DaveMlsWelcome(transition_id=message.transition_id, data=bytes(data))
        return message

    harness.tamper = corrupt_first_welcome
    harness.join(C)
    harness.pump()
    assert harness.clients[C].failures == 1
    assert harness.group.stats.invalid_commit_welcome_reports == 1
    assert harness.group.epoch == 3  # C added, then removed and re-added in one commit
    harness.assert_converged()
    harness.assert_media_flows()


def test_garbage_key_package_closes_only_that_member() -> None:
    """An op 26 that does not parse closes its sender with 4002; the others carry on."""
    harness = formed(A)
    harness.join(B)
    harness.clients[B].outbox = [
        encode_voice_message(DaveMlsKeyPackage(data=b"\x00\x01junk"))
    ]
    harness.pump()
    assert harness.clients[B].closed == 4002
    assert harness.group.stats.invalid_key_packages == 1
    assert B not in harness.group.members

    harness.join(C)
    harness.pump()
    harness.assert_converged()
    harness.assert_media_flows()


def test_key_package_for_another_user_closes_with_4020() -> None:
    """A valid key package whose identity is not the sender's is refused."""
    harness = formed(A, B)
    harness.join(C)
    impostor = davey.DaveSession(1, D, CHANNEL_ID)
    harness.clients[C].outbox = [
        encode_voice_message(
            DaveMlsKeyPackage(data=impostor.get_serialized_key_package())
        )
    ]
    harness.pump()
    assert harness.clients[C].closed == 4020
    assert harness.group.epoch == 1
    harness.assert_converged()
    harness.assert_media_flows()


def test_garbage_commits_are_dropped_then_the_sender_is_closed() -> None:
    """Malformed op 28 never wins; after three the sender is closed, others unharmed."""
    harness = formed(A, B)
    harness.join(C)
    harness.send_next(C)
    junk = [b"\xff" * 40, b"", b"\x00\x01\x00\x01\x08"]
    for data in junk:
        harness.inject(A, encode_voice_message(DaveMlsCommitWelcome(data=data)))
    assert harness.clients[A].closed == 4020
    assert harness.group.stats.invalid_commits == 3
    harness.pump()
    assert A not in harness.group.leaves
    harness.assert_converged(invalid_commits=3)
    harness.assert_media_flows()


def test_commit_for_another_group_is_invalid_not_accepted() -> None:
    """A commit whose group id is not the channel's is counted invalid and dropped."""
    harness = formed(A, B)
    harness.join(C)
    harness.send_next(C)
    client = harness.clients[A]
    frame = client.outbox.pop(0)
    assert isinstance(frame, bytes) and frame[0] == 28
    forged = bytearray(frame)
    forged[6:14] = (CHANNEL_ID + 1).to_bytes(8, "big")
    harness.inject(A, bytes(forged))
    assert harness.group.stats.invalid_commits == 1
    assert harness.group.epoch == 1
    harness.pump()
    assert harness.group.epoch == 2
    harness.assert_converged(invalid_commits=1)


def test_commit_claiming_another_leaf_is_invalid() -> None:
    """A member cannot pass its commit off as another leaf's."""
    harness = formed(A, B)
    harness.join(C)
    harness.send_next(C)
    frame = harness.clients[A].outbox.pop(0)
    assert isinstance(frame, bytes)
    forged = bytearray(frame)
    leaf = harness.group.leaf_of(A)
    assert leaf is not None
    forged[23:27] = (1 - leaf).to_bytes(4, "big")
    harness.inject(A, bytes(forged))
    assert harness.group.stats.invalid_commits == 1
    assert harness.group.epoch == 1


def test_transition_times_out_without_every_ready() -> None:
    """A missing op 23 delays op 22 until the timeout, not forever."""
    harness = Harness(DaveGroup(CHANNEL_ID, transition_timeout=2.0))
    harness.join(A)
    harness.pump()
    harness.join(B)
    harness.pump(drop=(DaveTransitionReady,))
    assert harness.group.epoch == 1
    (transition_id,) = harness.group.pending_transitions
    assert harness.group.next_deadline() == pytest.approx(2.0)

    harness.advance(1.9)
    assert harness.group.pending_transitions == frozenset([transition_id])
    mark = len(harness.sent)
    harness.advance(0.2)
    assert sorted(harness.sent[mark:]) == sorted(
        [
            (A, DaveExecuteTransition(transition_id=transition_id)),
            (B, DaveExecuteTransition(transition_id=transition_id)),
        ]
    )
    assert harness.group.stats.transition_timeouts == 1
    assert harness.group.next_deadline() is None


def test_ready_for_unknown_transition_is_ignored() -> None:
    """op 23 with an id the gateway never issued changes nothing."""
    harness = formed(A, B)
    assert harness.group.receive_transition_ready(A, 999, 0.0) == []
    assert harness.group.stats.ignored == 1


def test_lost_commits_are_re_proposed_after_the_commit_timeout() -> None:
    """With every commit lost, proposals are revoked and re-signed, then committed."""
    harness = Harness(DaveGroup(CHANNEL_ID, commit_timeout=5.0))
    harness.join(A)
    harness.pump()
    harness.join(B)
    harness.pump(drop=(DaveMlsCommitWelcome,))
    assert harness.group.epoch == 0
    first_refs = {
        message.ref
        for _, msg in harness.sent
        if isinstance(msg, DaveMlsProposals) and msg.operation_type == 0
        for message in decode_append_proposals(msg.data)
    }

    harness.advance(4.0)
    assert harness.group.stats.commit_timeouts == 0
    mark = len(harness.sent)
    harness.advance(1.5)
    assert harness.group.stats.commit_timeouts == 1
    revoked = {
        ref
        for _, msg in harness.sent[mark:]
        if isinstance(msg, DaveMlsProposals) and msg.operation_type == 1
        for ref in decode_revoke_proposals(msg.data)
    }
    assert revoked == first_refs
    harness.pump()
    assert harness.group.epoch == 1
    harness.assert_converged()
    harness.assert_media_flows()


def test_ops_for_unknown_users_are_ignored() -> None:
    """Messages from users never added (no DAVE, or already closed) are counted only."""
    group = DaveGroup(CHANNEL_ID)
    assert group.receive_key_package(A, b"", 0.0) == []
    assert group.receive_commit_welcome(A, b"", 0.0) == []
    assert group.receive_invalid_commit_welcome(A, 1, 0.0) == []
    assert group.remove_member(A, 0.0) == []
    assert group.stats.ignored == 3


def test_outputs_use_the_voice_gateway_message_classes() -> None:
    """Everything routed is a voice gateway message or a CloseMember."""
    harness = formed(A, B, C)
    harness.leave(A)
    harness.pump()
    allowed = (
        DaveMlsExternalSender,
        DaveMlsProposals,
        DaveMlsAnnounceCommitTransition,
        DaveMlsWelcome,
        DaveExecuteTransition,
        DavePrepareEpoch,
        DavePrepareTransition,
        CloseMember,
    )
    assert all(isinstance(msg, allowed) for _, msg in harness.sent)
