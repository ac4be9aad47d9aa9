"""The seam between the voice gateway and a voice channel's DAVE group.

With DAVE on, the voice gateway is the MLS external sender of each voice channel: it
turns key packages into Add proposals, picks the winning commit of every epoch, fans
out commits and welcomes, and runs transitions (``shared/reference/dave-external-
sender.md``). That state machine lives in ``_dave_group`` and is sans-I/O; the gateway
only sees it through the :class:`DaveGroup` protocol below, so a test can plug in
another implementation through ``EmulatorConfig.dave_group_factory``.

What the gateway guarantees to a group:

- :meth:`DaveGroup.add_member` is called once per voice session, right after that
  user's Session Description (``dave_protocol_version`` above 0) has been queued and
  after op 11 (Clients Connect) went to the user and to the channel's other members;
  never on a resume.
- :meth:`DaveGroup.receive` gets ops 23, 26, 28 and 31 from members, already decoded.
- :meth:`DaveGroup.remove_member` is called when the user's voice session ends (leave,
  move, kick, or a dropped connection not resumed in time), after op 13 went to the
  others.
- :meth:`DaveGroup.tick` runs at or after :meth:`DaveGroup.next_deadline` (trio's
  clock, seconds).

Every method returns ``(user_id, message)`` pairs. The gateway delivers them in order
to that user's voice connection, giving each its ``seq`` and keeping it for a resume;
a :class:`CloseMember` closes that user's voice session with its code instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from voicesim.emulator._dave_group import (
    DAVE_PROTOCOL_VERSION,
    CloseMember,
    DaveClientMessage,
    DaveOutput,
)
from voicesim.emulator._dave_group import DaveGroup as _ChannelDaveGroup

__all__ = [
    "DAVE_PROTOCOL_VERSION",
    "CloseMember",
    "DaveGroup",
    "DaveGroupFactory",
    "DaveOutput",
    "default_dave_group_factory",
]


class DaveGroup(Protocol):
    """The DAVE state of one voice channel; see the module docstring."""

    def add_member(self, user_id: int, now: float) -> Sequence[DaveOutput]: ...

    def remove_member(self, user_id: int, now: float) -> Sequence[DaveOutput]: ...

    def receive(
        self, user_id: int, message: DaveClientMessage, now: float
    ) -> Sequence[DaveOutput]: ...

    def next_deadline(self) -> float | None: ...

    def tick(self, now: float) -> Sequence[DaveOutput]: ...


# (guild_id, channel_id) -> a new group for that voice channel.
DaveGroupFactory = Callable[[int, int], DaveGroup]


def default_dave_group_factory(guild_id: int, channel_id: int) -> DaveGroup:
    """The emulator's own MLS external sender for one channel."""
    return _ChannelDaveGroup(channel_id)
