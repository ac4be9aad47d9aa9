"""The two main gateway dispatches that answer a voice join.

After Update Voice State (op 4) the server sends VOICE_STATE_UPDATE, whose
``session_id`` the voice gateway's Identify needs, and VOICE_SERVER_UPDATE, with the
voice gateway's ``endpoint`` and ``token``; their order is unspecified. The server
sends ids as strings, as Discord does; decoding takes strings or integers.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import attrs

from ._fields import FieldReader, FieldWriter
from ._gateway import GatewayDispatch, GatewayPayload

__all__ = ["VoiceServerUpdate", "VoiceStateUpdate"]


def _dispatch_where(t: str) -> str:
    return f"gateway dispatch {t}"


@attrs.frozen(kw_only=True)
class VoiceServerUpdate:
    """The VOICE_SERVER_UPDATE dispatch: where the voice gateway is, and its token.

    ``endpoint`` has no scheme (``host:port``); None means the voice server went away.
    """

    t: ClassVar[str] = "VOICE_SERVER_UPDATE"
    token: str
    guild_id: int
    endpoint: str | None

    @classmethod
    def from_payload(cls, d: object) -> Self:
        r = FieldReader(d, _dispatch_where(cls.t))
        return cls(
            token=r.string("token"),
            guild_id=r.snowflake_int("guild_id"),
            endpoint=r.nullable_string("endpoint"),
        )

    def to_payload(self, *, s: int) -> GatewayPayload:
        w = FieldWriter(self, _dispatch_where(self.t))
        d = {
            "token": w.string("token"),
            "guild_id": str(w.snowflake_int("guild_id")),
            "endpoint": w.nullable_string("endpoint"),
        }
        return GatewayDispatch(t=self.t, s=s, d=d).to_payload()


@attrs.frozen(kw_only=True)
class VoiceStateUpdate:
    """The VOICE_STATE_UPDATE dispatch: a user's voice state, with their ``session_id``.

    Only the fields voice needs; the flags default to False when absent, as discord.py
    reads them leniently.
    """

    t: ClassVar[str] = "VOICE_STATE_UPDATE"
    guild_id: int | None
    channel_id: int | None
    user_id: int
    session_id: str
    deaf: bool = False
    mute: bool = False
    self_deaf: bool = False
    self_mute: bool = False
    self_video: bool = False
    suppress: bool = False

    @classmethod
    def from_payload(cls, d: object) -> Self:
        r = FieldReader(d, _dispatch_where(cls.t))
        return cls(
            # guild_id is absent for calls outside a guild.
            guild_id=r.optional_snowflake_int("guild_id"),
            channel_id=r.nullable_snowflake_int("channel_id"),
            user_id=r.snowflake_int("user_id"),
            session_id=r.string("session_id"),
            deaf=r.boolean("deaf", default=False),
            mute=r.boolean("mute", default=False),
            self_deaf=r.boolean("self_deaf", default=False),
            self_mute=r.boolean("self_mute", default=False),
            self_video=r.boolean("self_video", default=False),
            suppress=r.boolean("suppress", default=False),
        )

    def to_payload(self, *, s: int) -> GatewayPayload:
        w = FieldWriter(self, _dispatch_where(self.t))
        guild_id = w.nullable_snowflake_int("guild_id")
        channel_id = w.nullable_snowflake_int("channel_id")
        d: dict[str, Any] = {
            "channel_id": None if channel_id is None else str(channel_id),
            "user_id": str(w.snowflake_int("user_id")),
            "session_id": w.string("session_id"),
            "deaf": w.boolean("deaf"),
            "mute": w.boolean("mute"),
            "self_deaf": w.boolean("self_deaf"),
            "self_mute": w.boolean("self_mute"),
            "self_video": w.boolean("self_video"),
            "suppress": w.boolean("suppress"),
            "request_to_speak_timestamp": None,
        }
        if guild_id is not None:
            d["guild_id"] = str(guild_id)
        return GatewayDispatch(t=self.t, s=s, d=d).to_payload()
