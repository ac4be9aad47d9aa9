"""What the emulator counts, readable in-process while it runs.

The relay bumps plain attributes on its hot path; :meth:`Counters.snapshot` copies them
into a frozen value for callers, so nobody holds a reference that changes under them.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping

import attrs

__all__ = ["Counters", "EmulatorCounters"]


@attrs.frozen(kw_only=True)
class EmulatorCounters:
    """A snapshot of the emulator's counters.

    ``dropped`` maps a reason to the number of datagrams the relay dropped for it:
    ``malformed``, ``rtcp``, ``unknown_ssrc``, ``wrong_address``, ``no_session``,
    ``not_speaking``, ``auth_failed``, ``discovery_unknown_ssrc``,
    ``discovery_conflict``, ``send_blocked``, ``send_failed``. ``protocol_errors`` maps
    a gateway (``gateway`` or ``voice``) and close code to how often a peer was closed
    for sending something invalid.
    """

    relayed_packets: int
    forwarded_packets: int
    keepalives: int
    discovery_replies: int
    dropped: Mapping[str, int]
    protocol_errors: Mapping[str, int]
    gateway_sessions: int
    voice_sessions: int
    voice_connections: int
    voice_resumes: int
    identifies: int
    messages: int

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class Counters:
    """The live counters; see :class:`EmulatorCounters` for what each means."""

    def __init__(self) -> None:
        self.relayed_packets = 0
        self.forwarded_packets = 0
        self.keepalives = 0
        self.discovery_replies = 0
        self.dropped: collections.Counter[str] = collections.Counter()
        self.protocol_errors: collections.Counter[str] = collections.Counter()
        self.gateway_sessions = 0
        self.voice_sessions = 0
        self.voice_connections = 0
        self.voice_resumes = 0
        self.identifies = 0
        self.messages = 0

    def snapshot(self) -> EmulatorCounters:
        return EmulatorCounters(
            relayed_packets=self.relayed_packets,
            forwarded_packets=self.forwarded_packets,
            keepalives=self.keepalives,
            discovery_replies=self.discovery_replies,
            dropped=dict(self.dropped),
            protocol_errors=dict(self.protocol_errors),
            gateway_sessions=self.gateway_sessions,
            voice_sessions=self.voice_sessions,
            voice_connections=self.voice_connections,
            voice_resumes=self.voice_resumes,
            identifies=self.identifies,
            messages=self.messages,
        )
