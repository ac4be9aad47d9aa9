"""The client side of DAVE: one voice connection's MLS member state, over ``davey``.

:class:`DaveClient` follows what discord.py 2.7 and @discordjs/voice 0.19 do
(``shared/reference/discord-voice-protocol.md`` §4.6) and does no I/O itself: each
handler returns the voice gateway messages to send, and the connection sends them in
order. It differs from both libraries in one way: nothing the server sends can raise
out of it. A message davey rejects is counted, and where the session may now disagree
with the gateway (a failed op 27, 29 or 30) the client reports op 31, re-initialises
and offers a new key package, which the gateway answers by re-adding it.

Threads
-------
:meth:`DaveClient.encrypt_frame` runs on the media clock's thread; everything else
runs on the connection's trio thread. davey's ``DaveSession`` is a PyO3 class: its
methods hold the GIL, and PyO3 checks borrows at run time, so two threads inside one
session at once would raise ``RuntimeError("Already borrowed")`` rather than corrupt
it. Hammering ``encrypt_opus`` on one thread while another processed proposals,
commits and welcomes raised nothing in 50 joins and 440,000 frames, but davey does not
document that guarantee, and a reinit swaps the session's whole state between a
``ready`` check and the encrypt that follows it. So every davey call goes through one
``threading.Lock``. It costs about 0.1 us uncontended; the clock thread can wait on
it while an MLS operation runs (5 ms or so), which it would do for the GIL anyway.

Receiving
---------
Frames are decrypted per sending user, looked up from the SSRC (op 5). The silence
frame ``F8 FF FE`` passes untouched. Until the local session is ready (no group yet,
or re-initialising) frames without a DAVE trailer pass through as plaintext, as both
libraries do; frames with one cannot be opened and are counted. A stream whose
encrypted frames fail more than :data:`DECRYPTION_FAILURE_TOLERANCE` times in a row,
while no transition is pending, means the local group has drifted: the client then
recovers as after a failed commit (op 31, reinit, new key package), as discord.js
does.
"""

from __future__ import annotations

import logging
import threading
from typing import TypeAlias

import attrs
import davey

from voicesim.protocol import (
    DAVE_MAGIC,
    PROPOSALS_APPEND,
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
    has_dave_trailer,
)

__all__ = [
    "DAVE_PROTOCOL_VERSION",
    "DECRYPTION_FAILURE_TOLERANCE",
    "DaveClient",
    "DaveClientStats",
    "DaveServerMessage",
    "DaveStreamStats",
    "DaveToServer",
]

log = logging.getLogger("voicesim.voice.dave")

DAVE_PROTOCOL_VERSION: int = davey.DAVE_PROTOCOL_VERSION

#: discord.js's ``DEFAULT_DECRYPTION_FAILURE_TOLERANCE``: consecutive failures of one
#: stream before the client concludes its group is broken and recovers.
DECRYPTION_FAILURE_TOLERANCE = 36
#: Passthrough windows, in seconds, as discord.js uses them: after an upgrade that
#: follows a downgrade, and while a downgrade to version 0 is pending.
TRANSITION_EXPIRY = 10
TRANSITION_EXPIRY_PENDING_DOWNGRADE = 24

_SILENCE = b"\xf8\xff\xfe"
_AUDIO = davey.MediaType.audio
_OPERATION_TYPES = {
    PROPOSALS_APPEND: davey.ProposalsOperationType.append,
}

DaveServerMessage: TypeAlias = (
    DaveMlsExternalSender
    | DaveMlsProposals
    | DaveMlsAnnounceCommitTransition
    | DaveMlsWelcome
    | DavePrepareTransition
    | DaveExecuteTransition
    | DavePrepareEpoch
)
DaveToServer: TypeAlias = (
    DaveMlsKeyPackage
    | DaveMlsCommitWelcome
    | DaveTransitionReady
    | DaveMlsInvalidCommitWelcome
)
DAVE_SERVER_MESSAGES = (
    DaveMlsExternalSender,
    DaveMlsProposals,
    DaveMlsAnnounceCommitTransition,
    DaveMlsWelcome,
    DavePrepareTransition,
    DaveExecuteTransition,
    DavePrepareEpoch,
)


@attrs.define
class DaveStreamStats:
    """DAVE decryption of one incoming stream (one SSRC).

    ``longest_gap_ns`` is the longest stretch without decodable audio that DAVE
    caused: from the last frame this stream decoded before a run of failures to the
    first one after it (from the first failure, when nothing had decoded before).
    """

    decrypted: int = 0
    passthrough: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    longest_gap_ns: int = 0
    last_decrypted_ns: int | None = None
    failing_since_ns: int | None = None


@attrs.define
class DaveClientStats:
    """What the client's DAVE layer did, for reports and tests."""

    key_packages: int = 0
    commits_sent: int = 0
    commits_processed: int = 0
    welcomes_processed: int = 0
    transitions_executed: int = 0
    recoveries: int = 0
    rejected_messages: int = 0
    encrypted_frames: int = 0
    encrypt_failures: int = 0
    unknown_sender_frames: int = 0


class DaveClient:
    """One voice connection's DAVE state; see the module docstring.

    ``known_users`` is the connection's live set of other users in the channel (op 11
    and op 13); like discord.js, the client passes it to davey with every proposal, so
    an Add for a user the gateway never announced is refused.
    """

    def __init__(
        self,
        protocol_version: int,
        user_id: int,
        channel_id: int,
        *,
        known_users: set[int],
        failure_tolerance: int = DECRYPTION_FAILURE_TOLERANCE,
    ) -> None:
        if protocol_version < 1:
            raise ValueError("DAVE needs a protocol version of at least 1")
        self.user_id = user_id
        self.channel_id = channel_id
        self.protocol_version = protocol_version
        self.failure_tolerance = failure_tolerance
        self.stats = DaveClientStats()
        self.streams: dict[int, DaveStreamStats] = {}
        self._known_users = known_users
        self._lock = threading.Lock()
        self._session = davey.DaveSession(protocol_version, user_id, channel_id)
        self._pending_transitions: dict[int, int] = {}
        self._last_transition_id: int | None = None
        self._downgraded = False
        self._reinitializing = False
        self._recovery_due: int | None = None

    # -- state --------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether frames are end-to-end encrypted now (a group exists and it is in it)."""
        with self._lock:
            return self.protocol_version > 0 and self._session.ready

    @property
    def epoch(self) -> int | None:
        with self._lock:
            return self._session.epoch

    @property
    def voice_privacy_code(self) -> str | None:
        with self._lock:
            code = self._session.voice_privacy_code
        return code or None

    def group_user_ids(self) -> frozenset[int]:
        """The users in the local MLS group, this one included."""
        with self._lock:
            return frozenset(int(u) for u in self._session.get_user_ids())

    @property
    def failures_by_ssrc(self) -> dict[int, int]:
        return {ssrc: s.failures for ssrc, s in self.streams.items() if s.failures}

    # -- the voice gateway --------------------------------------------------------

    def start(self) -> list[DaveToServer]:
        """op 4 offered DAVE: the first key package (op 26)."""
        return [self._key_package()]

    def handle(self, message: DaveServerMessage) -> list[DaveToServer]:
        """Apply one DAVE message from the gateway; returns what to send back."""
        if isinstance(message, DaveMlsExternalSender):
            return self._external_sender(message.data)
        if isinstance(message, DaveMlsProposals):
            return self._proposals(message)
        if isinstance(message, DaveMlsAnnounceCommitTransition | DaveMlsWelcome):
            return self._commit_or_welcome(message)
        if isinstance(message, DavePrepareTransition):
            return self._prepare_transition(
                message.protocol_version, message.transition_id
            )
        if isinstance(message, DaveExecuteTransition):
            self._execute_transition(message.transition_id)
            return []
        return self._prepare_epoch(message.protocol_version, message.epoch)

    def take_recovery(self) -> list[DaveToServer]:
        """The op 31 and key package a run of decrypt failures asked for, if any."""
        transition_id = self._recovery_due
        if transition_id is None:
            return []
        self._recovery_due = None
        return self._recover(transition_id)

    def _key_package(self) -> DaveMlsKeyPackage:
        with self._lock:
            data = self._session.get_serialized_key_package()
        self.stats.key_packages += 1
        return DaveMlsKeyPackage(data=data)

    def _reinit(self) -> list[DaveToServer]:
        with self._lock:
            if self.protocol_version > 0:
                self._session.reinit(
                    self.protocol_version, self.user_id, self.channel_id
                )
            else:
                self._session.reset()
                self._session.set_passthrough_mode(True, TRANSITION_EXPIRY)
        if self.protocol_version > 0:
            return [self._key_package()]
        return []

    def _recover(self, transition_id: int) -> list[DaveToServer]:
        if self._reinitializing:
            return []
        self._reinitializing = True
        self.stats.recoveries += 1
        for stream in self.streams.values():
            stream.consecutive_failures = 0
        log.info(
            "DAVE recovery for user %s (transition %d)", self.user_id, transition_id
        )
        return [
            DaveMlsInvalidCommitWelcome(transition_id=transition_id),
            *self._reinit(),
        ]

    def _external_sender(self, data: bytes) -> list[DaveToServer]:
        try:
            with self._lock:
                self._session.set_external_sender(data)
        except (ValueError, RuntimeError) as exc:
            # Nothing to recover: without an external sender there is no group.
            self.stats.rejected_messages += 1
            log.debug("external sender rejected: %s", exc)
        return []

    def _proposals(self, message: DaveMlsProposals) -> list[DaveToServer]:
        operation = _OPERATION_TYPES.get(
            message.operation_type, davey.ProposalsOperationType.revoke
        )
        try:
            with self._lock:
                result = self._session.process_proposals(
                    operation, message.data, sorted(self._known_users)
                )
        except (ValueError, RuntimeError) as exc:
            # The gateway now believes this client holds proposals it does not: start
            # over, which the gateway turns into a remove and re-add.
            self.stats.rejected_messages += 1
            log.debug("proposals rejected: %s", exc)
            return self._recover(self._last_transition_id or 0)
        if result is None:
            return []
        self.stats.commits_sent += 1
        return [DaveMlsCommitWelcome(data=result.commit + (result.welcome or b""))]

    def _commit_or_welcome(
        self, message: DaveMlsAnnounceCommitTransition | DaveMlsWelcome
    ) -> list[DaveToServer]:
        transition_id = message.transition_id
        try:
            with self._lock:
                if isinstance(message, DaveMlsAnnounceCommitTransition):
                    self._session.process_commit(message.data)
                else:
                    self._session.process_welcome(message.data)
        except (ValueError, RuntimeError) as exc:
            self.stats.rejected_messages += 1
            log.debug("commit or welcome %d rejected: %s", transition_id, exc)
            return self._recover(transition_id)
        if isinstance(message, DaveMlsAnnounceCommitTransition):
            self.stats.commits_processed += 1
        else:
            self.stats.welcomes_processed += 1
        if transition_id == 0:
            self._reinitializing = False
            self._last_transition_id = 0
            return []
        self._pending_transitions[transition_id] = self.protocol_version
        return [DaveTransitionReady(transition_id=transition_id)]

    def _prepare_transition(
        self, protocol_version: int, transition_id: int
    ) -> list[DaveToServer]:
        self._pending_transitions[transition_id] = protocol_version
        if transition_id == 0:
            self._execute_transition(0)
            return []
        if protocol_version == 0:
            with self._lock:
                self._session.set_passthrough_mode(
                    True, TRANSITION_EXPIRY_PENDING_DOWNGRADE
                )
        return [DaveTransitionReady(transition_id=transition_id)]

    def _execute_transition(self, transition_id: int) -> None:
        version = self._pending_transitions.pop(transition_id, None)
        if version is None:
            log.debug("execute for unknown transition %d ignored", transition_id)
            return
        old = self.protocol_version
        self.protocol_version = version
        if old != version and version == 0:
            self._downgraded = True
        elif transition_id > 0 and self._downgraded:
            self._downgraded = False
            with self._lock:
                self._session.set_passthrough_mode(True, TRANSITION_EXPIRY)
        self._reinitializing = False
        self._last_transition_id = transition_id
        self.stats.transitions_executed += 1

    def _prepare_epoch(self, protocol_version: int, epoch: int) -> list[DaveToServer]:
        if epoch != 1:
            return []
        # Epoch 1 announces a new group: throw the old one away and offer a package.
        self.protocol_version = protocol_version
        return self._reinit()

    # -- media --------------------------------------------------------------------

    def encrypt_frame(self, frame: bytes) -> bytes:
        """End-to-end encrypt one outgoing Opus frame; runs on the clock thread.

        Before the group exists, and for silence, the frame goes out as it is.
        """
        if frame == _SILENCE:
            return frame
        with self._lock:
            if self.protocol_version == 0 or not self._session.ready:
                return frame
            try:
                sealed = self._session.encrypt_opus(frame)
            except (ValueError, RuntimeError):
                self.stats.encrypt_failures += 1
                return frame
        self.stats.encrypted_frames += 1
        return sealed

    def decrypt_frame(
        self, ssrc: int, user_id: int | None, payload: bytes, arrival_ns: int
    ) -> bytes | None:
        """The Opus frame inside ``payload``, or None when it cannot be opened."""
        stream = self.streams.get(ssrc)
        if stream is None:
            stream = self.streams[ssrc] = DaveStreamStats()
        if payload == _SILENCE:
            return payload
        # Once the group is ready davey checks the whole trailer as it decrypts, so
        # the magic bytes are all this side needs to look at; the Python parse of
        # the trailer would cost more than davey's decryption itself. Only a frame
        # that might be let through in the clear is parsed here.
        encrypted = payload[-2:] == DAVE_MAGIC
        with self._lock:
            ready = self.protocol_version > 0 and self._session.ready
            if not ready:
                encrypted = encrypted and has_dave_trailer(payload)
            if not ready and not encrypted:
                # No group yet (or re-initialising): everyone sends in the clear.
                opened: bytes | None = payload
            elif user_id is None:
                opened = None
            else:
                try:
                    opened = self._session.decrypt(user_id, _AUDIO, payload)
                except (ValueError, RuntimeError):
                    opened = None
        if opened is None:
            self._count_failure(stream, encrypted and user_id is not None, arrival_ns)
            if user_id is None:
                self.stats.unknown_sender_frames += 1
            return None

        if encrypted:
            stream.decrypted += 1
        else:
            stream.passthrough += 1
        stream.consecutive_failures = 0
        if stream.failing_since_ns is not None:
            start = stream.last_decrypted_ns or stream.failing_since_ns
            stream.longest_gap_ns = max(stream.longest_gap_ns, arrival_ns - start)
            stream.failing_since_ns = None
        stream.last_decrypted_ns = arrival_ns
        return opened

    def _count_failure(
        self, stream: DaveStreamStats, counts_toward_recovery: bool, now: int
    ) -> None:
        stream.failures += 1
        if stream.failing_since_ns is None:
            stream.failing_since_ns = now
        # While a transition is pending or the session is being rebuilt, failures are
        # expected: keys change under frames already in flight. Plaintext frames from
        # a member not yet in the group say nothing about this client's group.
        if (
            not counts_toward_recovery
            or self._reinitializing
            or self._pending_transitions
        ):
            return
        stream.consecutive_failures += 1
        if (
            stream.consecutive_failures > self.failure_tolerance
            and self._recovery_due is None
        ):
            self._recovery_due = self._last_transition_id or 0
