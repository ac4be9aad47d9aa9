"""What the agent says back: a recorded reply fixture, or the user's own words."""

from __future__ import annotations

import hashlib

import attrs

from voicesim._exceptions import ConfigError
from voicesim.agent._config import AgentConfig
from voicesim.media import FRAME_MS, Fixture, FixtureSet, load_fixtures

__all__ = ["ECHO_REPLY_ID", "Reply", "ReplyChooser"]

#: The ``reply_id`` of an echo reply.
ECHO_REPLY_ID = "echo"


@attrs.frozen(kw_only=True)
class Reply:
    """The Opus frames of one answer, ready to send, and where they came from."""

    id: str
    frames: tuple[bytes, ...] = attrs.field(repr=lambda f: f"<{len(f)} frames>")

    @property
    def duration_ns(self) -> int:
        """How long the reply plays: 20 ms a frame."""
        return len(self.frames) * FRAME_MS * 1_000_000


def _audible_part(fixture: Fixture) -> tuple[bytes, ...]:
    # A reply starts at its first voiced frame, so the silence a recording happens to
    # begin with does not count as the agent's latency, and a calibration reply is
    # audible exactly when it is scheduled.
    return fixture.frames[fixture.first_voiced_frame :]


@attrs.frozen(kw_only=True)
class ReplyChooser:
    """Choose the reply to each turn.

    ``"fixtures"`` picks one of ``replies`` by a hash of the user id and turn index:
    stable across runs and processes (unlike ``hash()``), spread evenly over the
    fixtures, and different for consecutive turns of one user as often as chance
    allows. ``"echo"`` plays the utterance back, frame for frame.

    Raises:
        ConfigError: ``mode`` is unknown, or ``"fixtures"`` without any reply.
    """

    mode: str
    replies: tuple[Fixture, ...] = ()
    _audio: tuple[tuple[bytes, ...], ...] = attrs.field(init=False)

    @_audio.default
    def _trim(self) -> tuple[tuple[bytes, ...], ...]:
        return tuple(_audible_part(fixture) for fixture in self.replies)

    def __attrs_post_init__(self) -> None:
        if self.mode not in ("fixtures", "echo"):
            raise ConfigError("reply", f"{self.mode!r} is not one of fixtures, echo")
        if self.mode == "fixtures" and not self.replies:
            raise ConfigError(
                "reply",
                "'fixtures' needs fixtures of kind 'reply' in the fixture manifest",
            )

    @classmethod
    def from_config(
        cls, config: AgentConfig, fixtures: FixtureSet | None = None
    ) -> ReplyChooser:
        """Build the chooser ``config.reply`` asks for, loading fixtures if needed.

        Raises:
            FixtureError: the default fixtures cannot be loaded.
            ConfigError: ``"fixtures"`` and the fixture set has no reply.
        """
        if config.reply == "echo":
            return cls(mode="echo")
        if fixtures is None:
            fixtures = load_fixtures()
        return cls(mode="fixtures", replies=fixtures.replies)

    def choose(self, *, user_id: int, turn: int, utterance: tuple[bytes, ...]) -> Reply:
        """Return the reply to turn ``turn`` of ``user_id``, who said ``utterance``."""
        if self.mode == "echo":
            return Reply(id=ECHO_REPLY_ID, frames=utterance)

        digest = hashlib.blake2b(f"{user_id}:{turn}".encode(), digest_size=8).digest()
        index = int.from_bytes(digest, "big") % len(self.replies)
        return Reply(id=self.replies[index].id, frames=self._audio[index])
