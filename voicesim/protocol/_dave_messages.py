"""DAVE (end-to-end encryption) messages of the voice gateway, ops 21 to 31.

Ops 21-24 and 31 are JSON, like the handshake messages in ``_voice_messages``. Ops
25-30 travel in binary frames and carry MLS structures that this module does not
parse: it only splits off the fields that the binary layout puts in front of them
(op 27's operation type, ops 29 and 30's transition id). Binary classes turn
themselves into the payload that follows the frame header with ``to_payload()`` and
are built from it by ``from_payload()``; the header itself is ``_voice_gateway``'s.
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar, Self

import attrs

from .._exceptions import RemoteProtocolError
from ._fields import FieldReader, FieldWriter
from ._voice_ops import U16_MAX, VoiceOp, voice_where

__all__ = [
    "PROPOSALS_APPEND",
    "PROPOSALS_REVOKE",
    "DaveExecuteTransition",
    "DaveMlsAnnounceCommitTransition",
    "DaveMlsCommitWelcome",
    "DaveMlsExternalSender",
    "DaveMlsInvalidCommitWelcome",
    "DaveMlsKeyPackage",
    "DaveMlsProposals",
    "DaveMlsWelcome",
    "DavePrepareEpoch",
    "DavePrepareTransition",
    "DaveTransitionReady",
]

# Op 27's first byte: the proposals that follow are to be appended, or revoked.
PROPOSALS_APPEND = 0
PROPOSALS_REVOKE = 1

_U16 = struct.Struct(">H")


@attrs.frozen(kw_only=True)
class DavePrepareTransition:
    """op 21, server to client: a protocol version change is coming under this id."""

    op: ClassVar[VoiceOp] = VoiceOp.DAVE_PREPARE_TRANSITION
    protocol_version: int
    transition_id: int

    def to_d(self) -> dict[str, Any]:
        w = FieldWriter(self, voice_where(self.op))
        return {
            "protocol_version": w.integer("protocol_version", lo=0),
            "transition_id": w.integer("transition_id", lo=0, hi=U16_MAX),
        }

    @classmethod
    def from_d(cls, d: object) -> Self:
        r = FieldReader(d, voice_where(cls.op))
        return cls(
            protocol_version=r.integer("protocol_version", lo=0),
            transition_id=r.integer("transition_id", lo=0, hi=U16_MAX),
        )


@attrs.frozen(kw_only=True)
class _TransitionIdOnly:
    """Shared shape of the three JSON DAVE messages that carry only a transition id."""

    op: ClassVar[VoiceOp]
    transition_id: int

    def to_d(self) -> dict[str, Any]:
        w = FieldWriter(self, voice_where(self.op))
        return {"transition_id": w.integer("transition_id", lo=0, hi=U16_MAX)}

    @classmethod
    def from_d(cls, d: object) -> Self:
        r = FieldReader(d, voice_where(cls.op))
        return cls(transition_id=r.integer("transition_id", lo=0, hi=U16_MAX))


@attrs.frozen(kw_only=True)
class DaveExecuteTransition(_TransitionIdOnly):
    """op 22, server to client: switch to the version prepared under this id now."""

    op: ClassVar[VoiceOp] = VoiceOp.DAVE_EXECUTE_TRANSITION


@attrs.frozen(kw_only=True)
class DaveTransitionReady(_TransitionIdOnly):
    """op 23, client to server: this client is ready for the transition."""

    op: ClassVar[VoiceOp] = VoiceOp.DAVE_TRANSITION_READY


@attrs.frozen(kw_only=True)
class DaveMlsInvalidCommitWelcome(_TransitionIdOnly):
    """op 31, client to server: a commit or welcome failed; please re-add this client."""

    op: ClassVar[VoiceOp] = VoiceOp.DAVE_MLS_INVALID_COMMIT_WELCOME


@attrs.frozen(kw_only=True)
class DavePrepareEpoch:
    """op 24, server to client: a new epoch; epoch 1 means a new MLS group."""

    op: ClassVar[VoiceOp] = VoiceOp.DAVE_PREPARE_EPOCH
    protocol_version: int
    epoch: int

    def to_d(self) -> dict[str, Any]:
        w = FieldWriter(self, voice_where(self.op))
        return {
            "protocol_version": w.integer("protocol_version", lo=0),
            "epoch": w.integer("epoch", lo=0),
        }

    @classmethod
    def from_d(cls, d: object) -> Self:
        r = FieldReader(d, voice_where(cls.op))
        return cls(
            protocol_version=r.integer("protocol_version", lo=0),
            epoch=r.integer("epoch", lo=0),
        )


@attrs.frozen(kw_only=True)
class _OpaqueBinary:
    """Shared shape of the binary messages whose whole payload is one MLS structure."""

    op: ClassVar[VoiceOp]
    from_server: ClassVar[bool]
    data: bytes

    def to_payload(self) -> bytes:
        return FieldWriter(self, voice_where(self.op)).blob("data")

    @classmethod
    def from_payload(cls, payload: bytes) -> Self:
        return cls(data=payload)


@attrs.frozen(kw_only=True)
class DaveMlsExternalSender(_OpaqueBinary):
    """op 25, server to client (binary): the MLS ExternalSender of the group."""

    op: ClassVar[VoiceOp] = VoiceOp.DAVE_MLS_EXTERNAL_SENDER
    from_server: ClassVar[bool] = True


@attrs.frozen(kw_only=True)
class DaveMlsKeyPackage(_OpaqueBinary):
    """op 26, client to server (binary): a bare MLS KeyPackage for this client."""

    op: ClassVar[VoiceOp] = VoiceOp.DAVE_MLS_KEY_PACKAGE
    from_server: ClassVar[bool] = False


@attrs.frozen(kw_only=True)
class DaveMlsCommitWelcome(_OpaqueBinary):
    """op 28, client to server (binary): a commit MLSMessage, then an optional Welcome."""

    op: ClassVar[VoiceOp] = VoiceOp.DAVE_MLS_COMMIT_WELCOME
    from_server: ClassVar[bool] = False


@attrs.frozen(kw_only=True)
class DaveMlsProposals:
    """op 27, server to client (binary): proposals to append or revoke.

    ``operation_type`` is the payload's first byte (:data:`PROPOSALS_APPEND` or
    :data:`PROPOSALS_REVOKE`); ``data`` is the rest, an MLS vector of proposal
    messages or of proposal references.
    """

    op: ClassVar[VoiceOp] = VoiceOp.DAVE_MLS_PROPOSALS
    from_server: ClassVar[bool] = True
    operation_type: int
    data: bytes

    def to_payload(self) -> bytes:
        w = FieldWriter(self, voice_where(self.op))
        operation_type = w.integer(
            "operation_type", lo=PROPOSALS_APPEND, hi=PROPOSALS_REVOKE
        )
        return bytes([operation_type]) + w.blob("data")

    @classmethod
    def from_payload(cls, payload: bytes) -> Self:
        where = voice_where(cls.op)
        if not payload:
            raise RemoteProtocolError(
                f"{where}: payload is empty, wanted the 1-byte field 'operation_type'"
            )
        if payload[0] not in (PROPOSALS_APPEND, PROPOSALS_REVOKE):
            raise RemoteProtocolError(
                f"{where}: field 'operation_type' must be 0 (append) or 1 (revoke), "
                f"got {payload[0]}"
            )
        return cls(operation_type=payload[0], data=payload[1:])


@attrs.frozen(kw_only=True)
class _TransitionBinary:
    """Shared shape of ops 29 and 30: a u16 transition id, then an MLS structure."""

    op: ClassVar[VoiceOp]
    from_server: ClassVar[bool] = True
    transition_id: int
    data: bytes

    def to_payload(self) -> bytes:
        w = FieldWriter(self, voice_where(self.op))
        transition_id = w.integer("transition_id", lo=0, hi=U16_MAX)
        return _U16.pack(transition_id) + w.blob("data")

    @classmethod
    def from_payload(cls, payload: bytes) -> Self:
        if len(payload) < _U16.size:
            raise RemoteProtocolError(
                f"{voice_where(cls.op)}: payload of {len(payload)} bytes is too short "
                f"for the 2-byte field 'transition_id'"
            )
        (transition_id,) = _U16.unpack_from(payload)
        return cls(transition_id=transition_id, data=payload[_U16.size :])


@attrs.frozen(kw_only=True)
class DaveMlsAnnounceCommitTransition(_TransitionBinary):
    """op 29, server to client (binary): the commit everyone must apply."""

    op: ClassVar[VoiceOp] = VoiceOp.DAVE_MLS_ANNOUNCE_COMMIT_TRANSITION


@attrs.frozen(kw_only=True)
class DaveMlsWelcome(_TransitionBinary):
    """op 30, server to client (binary): the Welcome that adds this client to the group."""

    op: ClassVar[VoiceOp] = VoiceOp.DAVE_MLS_WELCOME
