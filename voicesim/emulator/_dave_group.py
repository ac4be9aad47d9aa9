"""One voice channel's DAVE group, run by the emulator's voice gateway. Sans-I/O.

The gateway is the MLS group's external sender: it signs Add and Remove proposals,
picks the first valid commit of each epoch, routes that commit to the members who
stay (op 29) and the Welcome to the members it adds (op 30), and runs the transition
handshake (ops 23 and 22). Members do all the cryptography; the gateway only has to
keep an exact model of what each member's group looks like, because davey throws on
any message that does not fit its state, and in discord.py 2.7.1 an exception from
op 25 or op 27 ends that client's voice connection. Hence the model below.

The model is reconciled, not scripted. After every event the group computes the
proposals that *should* be outstanding (an Add for every validated key package with
no leaf, a Remove for every leaf whose user left or reset) and who should hold each,
then revokes and appends the difference. Proposals are tracked with the exact set of
users that hold them, so a revoke only ever goes to a client that has the reference.
A client that resets (op 31, op 24, or a fresh key package) has wiped its storage,
so it is dropped from every holder set without a revoke.

Every method takes ``now`` (seconds, any monotonic origin) and returns the messages
to send as ``(user_id, message)`` pairs, in order. :class:`CloseMember` asks the
gateway to close that user's websocket; the group has already forgotten the user, so
the later :meth:`DaveGroup.remove_member` for it is a no-op.

The gateway's duties outside this class: send op 11 listing a user to the others
before that user's key package can arrive (discord.js rejects an Add for a user it
has not been told about), call :meth:`DaveGroup.add_member` right after sending op 4
with a DAVE version (never on a resume), and :meth:`DaveGroup.remove_member` when the
session ends for good.
"""

from __future__ import annotations

import enum
import logging
from typing import TypeAlias

import attrs

from voicesim._exceptions import LocalProtocolError, RemoteProtocolError
from voicesim.protocol._mls import (
    SignedProposal,
    Welcome,
    encode_append_proposals,
    encode_revoke_proposals,
    group_id_for_channel,
    propose_add,
    propose_remove,
    split_commit_welcome,
)
from voicesim.protocol._mls_codec import ProposalType, SenderType
from voicesim.protocol._mls_crypto import ExternalSenderKey
from voicesim.protocol._mls_key_package import (
    KeyPackage,
    parse_key_package,
    validate_key_package,
)
from voicesim.protocol._voice_gateway import (
    DAVE_REQUIRED_REASON,
    PROPOSALS_APPEND,
    PROPOSALS_REVOKE,
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
    VoiceCloseCode,
)

__all__ = [
    "DAVE_PROTOCOL_VERSION",
    "CloseMember",
    "DaveGroup",
    "DaveGroupStats",
    "DaveMode",
    "DaveNegotiation",
    "DaveOutput",
    "negotiate_dave",
]

logger = logging.getLogger("voicesim.emulator.dave")

DAVE_PROTOCOL_VERSION = 1


class DaveMode(enum.StrEnum):
    """How the emulator treats DAVE: never, when the client offers it, or always."""

    OFF = "off"
    ON = "on"
    REQUIRED = "required"


@attrs.frozen(kw_only=True)
class DaveNegotiation:
    """The outcome of Identify: the version for op 4, or a close (code and reason)."""

    dave_protocol_version: int
    close_code: int | None = None
    close_reason: str = ""


def negotiate_dave(
    mode: DaveMode | str, max_dave_protocol_version: int
) -> DaveNegotiation:
    """Decide op 4's ``dave_protocol_version`` from op 0's maximum.

    ``required`` refuses a client without DAVE with 4017, as Discord has since
    March 2026; ``on`` falls back to 0 for it.
    """
    mode = DaveMode(mode)
    offered = min(max(max_dave_protocol_version, 0), DAVE_PROTOCOL_VERSION)
    if mode is DaveMode.OFF:
        return DaveNegotiation(dave_protocol_version=0)
    if mode is DaveMode.REQUIRED and offered == 0:
        return DaveNegotiation(
            dave_protocol_version=0,
            close_code=VoiceCloseCode.DAVE_REQUIRED,
            close_reason=DAVE_REQUIRED_REASON,
        )
    return DaveNegotiation(dave_protocol_version=offered)


@attrs.frozen(kw_only=True)
class CloseMember:
    """Not a wire message: close this user's voice websocket with ``code``."""

    code: int
    reason: str


DaveMessage: TypeAlias = (
    DaveMlsExternalSender
    | DaveMlsProposals
    | DaveMlsAnnounceCommitTransition
    | DaveMlsWelcome
    | DavePrepareTransition
    | DaveExecuteTransition
    | DavePrepareEpoch
    | CloseMember
)
DaveOutput: TypeAlias = tuple[int, DaveMessage]
DaveClientMessage: TypeAlias = (
    DaveMlsKeyPackage
    | DaveMlsCommitWelcome
    | DaveTransitionReady
    | DaveMlsInvalidCommitWelcome
)


def _proposals(user: int, operation_type: int, items: list[bytes]) -> DaveOutput:
    """An op 27 for ``user``: proposal messages to append, or references to revoke."""
    if operation_type == PROPOSALS_APPEND:
        data = encode_append_proposals(items)
    else:
        data = encode_revoke_proposals(items)
    return (user, DaveMlsProposals(operation_type=operation_type, data=data))


@attrs.define
class DaveGroupStats:
    """Counters for what the group saw; stale commits are normal, invalid ones not."""

    key_packages: int = 0
    invalid_key_packages: int = 0
    commits: int = 0
    stale_commits: int = 0
    invalid_commits: int = 0
    invalid_commit_welcome_reports: int = 0
    transition_timeouts: int = 0
    commit_timeouts: int = 0
    sole_member_resets: int = 0
    ignored: int = 0


@attrs.define(eq=False)
class _Member:
    user_id: int
    leaf: int | None = None
    key_package: KeyPackage | None = None  # validated, waiting for its Add to commit
    signature_key: bytes | None = None  # from the key package it was added with
    invalid_commits: int = 0


@attrs.define(eq=False)
class _Proposal:
    kind: ProposalType
    subject: int  # the user added or removed
    leaf: int | None  # Remove only
    key_package: KeyPackage | None  # Add only
    signed: SignedProposal
    holders: set[int]  # users whose client holds this proposal right now


@attrs.define(eq=False)
class _Transition:
    expected: set[int]
    ready: set[int]
    deadline: float


@attrs.frozen(kw_only=True)
class _Verdict:
    message: bytes  # the commit MLSMessage, relayed as received
    welcome: Welcome | None
    proposals: list[_Proposal]  # in the commit's order


# What a proposal is, independent of its signature: ("add", user, key package
# bytes) or ("remove", user, leaf).
_Wanted = tuple[str, int, bytes | int]


class DaveGroup:
    """The DAVE group of one voice channel, seen from the gateway.

    ``transition_timeout`` bounds the wait for op 23 before op 22 goes out anyway;
    ``commit_timeout`` bounds the wait for a valid commit before the outstanding
    proposals are revoked and signed again; a member whose op 28 is malformed
    ``max_invalid_commits`` times is closed with 4020.
    """

    def __init__(
        self,
        channel_id: int,
        *,
        key: ExternalSenderKey | None = None,
        transition_timeout: float = 2.0,
        commit_timeout: float = 10.0,
        max_invalid_commits: int = 3,
    ) -> None:
        self.channel_id = channel_id
        self.key = ExternalSenderKey() if key is None else key
        self.transition_timeout = transition_timeout
        self.commit_timeout = commit_timeout
        self.max_invalid_commits = max_invalid_commits
        self.stats = DaveGroupStats()
        self._group_id = group_id_for_channel(channel_id)
        self._external_sender = self.key.external_sender.encode()
        self._members: dict[int, _Member] = {}
        self._established = False
        self._epoch = 0
        self._leaves: list[int | None] = []
        self._outstanding: dict[bytes, _Proposal] = {}
        # Every proposal signed this epoch, by what it proposes: a proposal offered
        # again goes out as the same bytes, which a client that already holds it
        # stores once. A fresh signature would be a second Add of the same key.
        self._signed: dict[_Wanted, SignedProposal] = {}
        self._commit_deadline: float | None = None
        self._transitions: dict[int, _Transition] = {}
        self._last_transition_id = 0

    # -- read-only views -------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The group's epoch: 0 until the first commit, then one more per commit."""
        return self._epoch

    @property
    def established(self) -> bool:
        return self._established

    @property
    def leaves(self) -> tuple[int | None, ...]:
        """The ratchet tree's leaves as the members see them: user id or blank."""
        return tuple(self._leaves)

    @property
    def members(self) -> frozenset[int]:
        """Connected users that have been sent op 25."""
        return frozenset(self._members)

    @property
    def pending_transitions(self) -> frozenset[int]:
        return frozenset(self._transitions)

    def leaf_of(self, user_id: int) -> int | None:
        member = self._members.get(user_id)
        return None if member is None else member.leaf

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has work, or None if nothing is timed."""
        deadlines = [t.deadline for t in self._transitions.values()]
        if self._commit_deadline is not None:
            deadlines.append(self._commit_deadline)
        return min(deadlines, default=None)

    # -- events from the gateway -----------------------------------------------

    def add_member(self, user_id: int, now: float) -> list[DaveOutput]:
        """A user got op 4 with DAVE: send it the external sender (op 25)."""
        if user_id in self._members:
            raise LocalProtocolError(f"user {user_id} is already in the DAVE group")
        self._members[user_id] = _Member(user_id)
        return [(user_id, DaveMlsExternalSender(data=self._external_sender))]

    def remove_member(self, user_id: int, now: float) -> list[DaveOutput]:
        """The user's session ended: remove its leaf, revoke its Add."""
        member = self._members.pop(user_id, None)
        if member is None:
            return []
        self._forget_holder(user_id)
        return self._settle(now)

    def receive(
        self, user_id: int, message: DaveClientMessage, now: float
    ) -> list[DaveOutput]:
        """Dispatch one DAVE message a client sent."""
        if isinstance(message, DaveMlsKeyPackage):
            return self.receive_key_package(user_id, message.data, now)
        if isinstance(message, DaveMlsCommitWelcome):
            return self.receive_commit_welcome(user_id, message.data, now)
        if isinstance(message, DaveTransitionReady):
            return self.receive_transition_ready(user_id, message.transition_id, now)
        return self.receive_invalid_commit_welcome(user_id, message.transition_id, now)

    def receive_key_package(
        self, user_id: int, data: bytes, now: float
    ) -> list[DaveOutput]:
        """op 26: validate the key package and propose its Add."""
        member = self._members.get(user_id)
        if member is None:
            self.stats.ignored += 1
            return []

        try:
            key_package = parse_key_package(data)
        except RemoteProtocolError as exc:
            self.stats.invalid_key_packages += 1
            return self._close(user_id, VoiceCloseCode.FAILED_TO_DECODE, exc, now)
        try:
            validate_key_package(key_package, user_id=user_id)
        except RemoteProtocolError as exc:
            self.stats.invalid_key_packages += 1
            return self._close(user_id, VoiceCloseCode.BAD_REQUEST, exc, now)
        self.stats.key_packages += 1

        # Clients make a key package only when they (re)initialise, which wipes
        # their MLS state: whatever leaf or proposals they had are gone.
        self._reset(member)
        member.key_package = key_package
        return self._settle(now)

    def receive_invalid_commit_welcome(
        self, user_id: int, transition_id: int, now: float
    ) -> list[DaveOutput]:
        """op 31: the client failed a commit or welcome and reset; re-add it."""
        member = self._members.get(user_id)
        if member is None:
            self.stats.ignored += 1
            return []
        self.stats.invalid_commit_welcome_reports += 1
        self._reset(member)
        return self._settle(now)

    def receive_transition_ready(
        self, user_id: int, transition_id: int, now: float
    ) -> list[DaveOutput]:
        """op 23: count the user ready; op 22 once everyone expected is."""
        transition = self._transitions.get(transition_id)
        if transition is None or user_id not in self._members:
            self.stats.ignored += 1
            return []
        transition.ready.add(user_id)
        return self._settle(now)

    def receive_commit_welcome(
        self, user_id: int, data: bytes, now: float
    ) -> list[DaveOutput]:
        """op 28: accept the first valid commit of the epoch, drop the rest."""
        member = self._members.get(user_id)
        if member is None:
            self.stats.ignored += 1
            return []

        try:
            verdict = self._judge_commit(member, data)
        except RemoteProtocolError as exc:
            self.stats.invalid_commits += 1
            member.invalid_commits += 1
            logger.debug("invalid commit from %d: %s", user_id, exc)
            if member.invalid_commits >= self.max_invalid_commits:
                return self._close(user_id, VoiceCloseCode.BAD_REQUEST, exc, now)
            return []
        if verdict is None:
            self.stats.stale_commits += 1
            return []
        return self._accept_commit(member, verdict, now)

    def tick(self, now: float) -> list[DaveOutput]:
        """Run the timeouts due at ``now``."""
        out: list[DaveOutput] = []
        for transition_id, transition in list(self._transitions.items()):
            if now >= transition.deadline:
                # Clients switch their sending keys when they process the commit;
                # op 22 only settles the version, so a late one costs little.
                self.stats.transition_timeouts += 1
                del self._transitions[transition_id]
                out += self._execute(transition_id, transition)
                out += self._sync(now)

        if self._commit_deadline is not None and now >= self._commit_deadline:
            # No valid commit came: some client lost the proposals or its answer.
            # Revoke and re-sign them, which gives them new references.
            self.stats.commit_timeouts += 1
            logger.warning(
                "no valid commit in %.1f s for channel %d epoch %d; re-proposing",
                self.commit_timeout,
                self.channel_id,
                self._epoch,
            )
            for user in self._members:
                held = [r for r, p in self._outstanding.items() if user in p.holders]
                if held:
                    out.append(_proposals(user, PROPOSALS_REVOKE, held))
            self._outstanding.clear()
            self._signed.clear()
            self._commit_deadline = None
            out += self._sync(now)
        return out

    # -- commits and transitions -----------------------------------------------

    def _judge_commit(self, member: _Member, data: bytes) -> _Verdict | None:
        """Check an op 28 as far as the gateway can (reference section 2.6).

        Returns None for a commit that is merely late or early (another commit won,
        or the proposals changed after it was made): that is normal with several
        committers. Raises :class:`RemoteProtocolError` for one no honest client
        sends.
        """
        message, welcome = split_commit_welcome(data)
        commit = message.commit
        assert commit is not None
        if message.sender_type != SenderType.MEMBER:
            raise RemoteProtocolError(f"commit from sender type {message.sender_type}")
        if message.group_id != self._group_id:
            raise RemoteProtocolError(f"commit for group {message.group_id.hex()}")
        if message.epoch != self._epoch:
            return None
        if commit.has_inline_proposals:
            raise RemoteProtocolError("commit carries inline proposals")

        if self._established:
            if member.leaf is None:
                return None
            if message.sender_index != member.leaf:
                raise RemoteProtocolError(
                    f"commit from leaf {message.sender_index}, but user "
                    f"{member.user_id} is leaf {member.leaf}"
                )
            signature_key = member.signature_key
        else:
            if member.key_package is None:
                return None
            if message.sender_index != 0:
                raise RemoteProtocolError(
                    f"new-group commit from leaf {message.sender_index}, not 0"
                )
            signature_key = member.key_package.leaf_node.signature_key

        # Each client commits exactly the proposals it holds, and davey does not
        # check that a commit covers them all, so the gateway must.
        refs = commit.refs
        if len(set(refs)) != len(refs):
            raise RemoteProtocolError("commit references a proposal twice")
        owed = {r for r, p in self._outstanding.items() if member.user_id in p.holders}
        if not owed or set(refs) != owed:
            return None
        proposals = [self._outstanding[ref] for ref in refs]

        path = commit.path_leaf
        if path is not None:
            if (
                path.identity != member.user_id.to_bytes(8, "big")
                or path.signature_key != signature_key
            ):
                raise RemoteProtocolError("commit path leaf is not the committer's")
        elif any(p.kind is ProposalType.REMOVE for p in proposals):
            raise RemoteProtocolError("commit with a Remove has no path")

        added = [p.key_package.ref for p in proposals if p.key_package is not None]
        if not added and welcome is not None:
            raise RemoteProtocolError("commit adds nobody but carries a Welcome")
        if added and (
            welcome is None
            or sorted(e.new_member for e in welcome.secrets) != sorted(added)
        ):
            raise RemoteProtocolError("Welcome does not match the commit's Adds")
        return _Verdict(message=message.data, welcome=welcome, proposals=proposals)

    def _accept_commit(
        self, committer: _Member, verdict: _Verdict, now: float
    ) -> list[DaveOutput]:
        self.stats.commits += 1
        committer.invalid_commits = 0
        self._last_transition_id = self._last_transition_id % 0xFFFF + 1
        transition_id = self._last_transition_id

        if self._established:
            staying = set(self._active())
        else:
            # In a new group the committer is leaf 0 and everyone else is added.
            assert committer.key_package is not None
            staying = {committer.user_id}
            self._leaves = [committer.user_id]
            committer.leaf = 0
            committer.signature_key = committer.key_package.leaf_node.signature_key
            committer.key_package = None

        # RFC 9420 12.3: Removes first, then each Add, in the commit's order, at the
        # leftmost blank leaf or appended. Truncating blanks on the right never
        # changes an index, so the model may do it eagerly.
        for proposal in verdict.proposals:
            if proposal.leaf is not None:
                self._leaves[proposal.leaf] = None
        welcomed: list[tuple[int, bytes]] = []
        for proposal in verdict.proposals:
            key_package = proposal.key_package
            if key_package is None:
                continue
            index = next(
                (i for i, user in enumerate(self._leaves) if user is None),
                len(self._leaves),
            )
            if index == len(self._leaves):
                self._leaves.append(proposal.subject)
            else:
                self._leaves[index] = proposal.subject
            joiner = self._members.get(proposal.subject)
            if joiner is not None:
                joiner.leaf = index
                joiner.signature_key = key_package.leaf_node.signature_key
                joiner.key_package = None
            welcomed.append((proposal.subject, key_package.ref))
        while self._leaves and self._leaves[-1] is None:
            self._leaves.pop()

        self._epoch += 1
        self._established = True
        self._outstanding.clear()
        self._signed.clear()
        self._commit_deadline = None

        active = self._active()
        out: list[DaveOutput] = [
            (
                user,
                DaveMlsAnnounceCommitTransition(
                    transition_id=transition_id, data=verdict.message
                ),
            )
            for user in active
            if user in staying
        ]
        assert verdict.welcome is not None or not welcomed
        for user, ref in welcomed:
            if user in self._members and verdict.welcome is not None:
                welcome = verdict.welcome.for_member(ref).encode()
                out.append(
                    (user, DaveMlsWelcome(transition_id=transition_id, data=welcome))
                )
        self._transitions[transition_id] = _Transition(
            expected=set(active), ready=set(), deadline=now + self.transition_timeout
        )
        return out + self._settle(now)

    def _settle(self, now: float) -> list[DaveOutput]:
        """Execute the transitions everyone is ready for, then propose what is owed."""
        out: list[DaveOutput] = []
        for transition_id, transition in list(self._transitions.items()):
            if transition.expected <= transition.ready:
                del self._transitions[transition_id]
                out += self._execute(transition_id, transition)
        return out + self._sync(now)

    @staticmethod
    def _execute(transition_id: int, transition: _Transition) -> list[DaveOutput]:
        return [
            (user, DaveExecuteTransition(transition_id=transition_id))
            for user in sorted(transition.expected)
        ]

    # -- the model -------------------------------------------------------------

    def _close(
        self, user_id: int, code: int, exc: RemoteProtocolError, now: float
    ) -> list[DaveOutput]:
        logger.info("closing DAVE member %d with %d: %s", user_id, code, exc)
        out: list[DaveOutput] = [
            (user_id, CloseMember(code=code, reason=str(exc)[:120]))
        ]
        return out + self.remove_member(user_id, now)

    def _forget_holder(self, user_id: int) -> None:
        for proposal in self._outstanding.values():
            proposal.holders.discard(user_id)
        for transition in self._transitions.values():
            transition.expected.discard(user_id)
            transition.ready.discard(user_id)

    def _reset(self, member: _Member) -> None:
        """The member's client wiped its MLS state; its old leaf is to be removed."""
        self._forget_holder(member.user_id)
        member.leaf = None
        member.key_package = None
        member.signature_key = None

    def _active(self) -> list[int]:
        """Users whose client holds the established group, in leaf order."""
        return [
            user
            for index, user in enumerate(self._leaves)
            if user is not None
            and user in self._members
            and self._members[user].leaf == index
        ]

    def _forget_group(self) -> None:
        self._established = False
        self._epoch = 0
        self._leaves = []
        self._outstanding.clear()
        self._signed.clear()
        self._commit_deadline = None
        self._transitions.clear()
        for member in self._members.values():
            member.leaf = None

    def _wanted(self) -> tuple[dict[_Wanted, set[int]], list[DaveOutput]]:
        """The proposals that should be outstanding now, and who should hold each.

        May first forget the group (nobody holds it any more) or reset a sole
        survivor, which returns that survivor's op 24 and op 21.
        """
        joiners = [m for m in self._members.values() if m.key_package is not None]
        wanted: dict[_Wanted, set[int]] = {}

        if self._established:
            active = self._active()
            removed = [
                (index, user)
                for index, user in enumerate(self._leaves)
                if user is not None and user not in active
            ]
            if not active:
                self._forget_group()
            elif (
                len(active) == 1
                and removed
                and not joiners
                and not any(user in self._members for _, user in removed)
            ):
                return {}, self._sole_member_reset(active[0])
            else:
                for index, user in removed:
                    wanted[("remove", user, index)] = set(active)
                for joiner in joiners:
                    assert joiner.key_package is not None
                    wanted[("add", joiner.user_id, joiner.key_package.data)] = set(
                        active
                    )
                return wanted, []

        # No group yet: every pending client builds its own and commits the Adds of
        # all the others; the first valid commit decides which group everyone joins.
        if len(joiners) >= 2:
            for joiner in joiners:
                assert joiner.key_package is not None
                holders = {m.user_id for m in joiners if m is not joiner}
                wanted[("add", joiner.user_id, joiner.key_package.data)] = holders
        return wanted, []

    def _sole_member_reset(self, survivor: int) -> list[DaveOutput]:
        # A group of one protects nothing, and the survivor would have to commit the
        # Remove alone; instead it re-creates its group and waits for company.
        self.stats.sole_member_resets += 1
        self._forget_group()
        self._reset(self._members[survivor])
        return [
            (
                survivor,
                DavePrepareEpoch(protocol_version=DAVE_PROTOCOL_VERSION, epoch=1),
            ),
            (
                survivor,
                DavePrepareTransition(
                    protocol_version=DAVE_PROTOCOL_VERSION, transition_id=0
                ),
            ),
        ]

    def _sync(self, now: float) -> list[DaveOutput]:
        """Revoke and append until the outstanding proposals match :meth:`_wanted`.

        Nothing is proposed while a transition is open. Until a member's op 23
        shows it processed the last commit or Welcome, it may still fail that and
        reset (op 31), and proposals sent in between would reach its new, empty
        state: a proposal for the wrong epoch is an uncaught error in discord.py.
        Outstanding proposals are always empty then, as a commit consumes them all.
        """
        if self._transitions:
            return []
        wanted, out = self._wanted()
        held_before = {ref: set(p.holders) for ref, p in self._outstanding.items()}

        for ref, proposal in list(self._outstanding.items()):
            key = self._key(proposal)
            proposal.holders &= wanted.get(key, set())
            if key not in wanted:
                del self._outstanding[ref]
        by_key = {self._key(p): p for p in self._outstanding.values()}
        for key, holders in wanted.items():
            (by_key.get(key) or self._sign(key)).holders |= holders

        changed = False
        for user in self._members:
            had = [ref for ref, holders in held_before.items() if user in holders]
            has = [p for p in self._outstanding.values() if user in p.holders]
            revoke = [ref for ref in had if ref not in {p.signed.ref for p in has}]
            append = [p for p in has if p.signed.ref not in had]
            if revoke and has:
                # davey attaches a Welcome only to a commit made right after an
                # append that holds an Add; after a revoke it re-commits without
                # one. Revoking everything makes it wait (nothing left to commit)
                # for the re-append, whose commit then carries the Welcome.
                revoke, append = had, has
            elif append and not any(p.kind is ProposalType.ADD for p in append):
                # The same rule for an append of Removes only: repeat the Adds
                # the client already holds (it stores a duplicate once).
                append = [p for p in has if p.kind is ProposalType.ADD] + append
            if revoke:
                out.append(_proposals(user, PROPOSALS_REVOKE, revoke))
            if append:
                changed = True
                messages = [p.signed.message for p in append]
                out.append(_proposals(user, PROPOSALS_APPEND, messages))

        if changed:
            self._commit_deadline = now + self.commit_timeout
        elif not self._outstanding:
            self._commit_deadline = None
        return out

    @staticmethod
    def _key(proposal: _Proposal) -> _Wanted:
        if proposal.kind is ProposalType.ADD:
            assert proposal.key_package is not None
            return ("add", proposal.subject, proposal.key_package.data)
        assert proposal.leaf is not None
        return ("remove", proposal.subject, proposal.leaf)

    def _sign(self, key: _Wanted) -> _Proposal:
        kind, user, what = key
        signed = self._signed.get(key)
        key_package = None
        if kind == "add":
            key_package = self._members[user].key_package
            assert key_package is not None
            if signed is None:
                signed = propose_add(
                    self.key,
                    channel_id=self.channel_id,
                    epoch=self._epoch,
                    key_package=key_package.data,
                )
        elif signed is None:
            assert isinstance(what, int)
            signed = propose_remove(
                self.key, channel_id=self.channel_id, epoch=self._epoch, leaf_index=what
            )
        self._signed[key] = signed
        proposal = _Proposal(
            kind=ProposalType.ADD if kind == "add" else ProposalType.REMOVE,
            subject=user,
            leaf=what if isinstance(what, int) else None,
            key_package=key_package,
            signed=signed,
            holders=set(),
        )
        self._outstanding[signed.ref] = proposal
        return proposal
