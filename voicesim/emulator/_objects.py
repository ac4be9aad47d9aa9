"""Discord's JSON objects (users, members, channels, guilds, messages) for the world.

Shapes follow the API documentation's resource pages, with the fields discord.py's
parsers index directly always present. Ids are strings, as Discord sends them, because
JavaScript numbers cannot hold a snowflake.
"""

from __future__ import annotations

import datetime
from typing import Any

from voicesim.emulator._world import Channel, ChannelKind, Guild, User, World

__all__ = [
    "application_json",
    "channel_json",
    "guild_json",
    "iso_time",
    "member_json",
    "snowflake_time",
    "user_json",
]

# The permissions of @everyone: generous, so that permission checks in client
# libraries never get in the way of a test (administrator would hide checks entirely).
_EVERYONE_PERMISSIONS = sum(
    1 << bit
    for bit in (
        0,  # create instant invite
        6,  # add reactions
        9,  # stream
        10,  # view channel
        11,  # send messages
        14,  # embed links
        15,  # attach files
        16,  # read message history
        17,  # mention everyone
        18,  # use external emojis
        20,  # connect
        21,  # speak
        24,  # move members
        25,  # use voice activity
        26,  # change nickname
        31,  # use application commands
    )
)

_DISCORD_EPOCH_MS = 1_420_070_400_000


def snowflake_time(snowflake: int) -> datetime.datetime:
    ms = (snowflake >> 22) + _DISCORD_EPOCH_MS
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)


def iso_time(moment: datetime.datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "username": user.name,
        "discriminator": "0",
        "global_name": None,
        "avatar": None,
        "bot": True,
        "system": False,
        "flags": 0,
        "public_flags": 0,
        "mfa_enabled": False,
        "verified": True,
    }


def application_json(user: User, owner: User) -> dict[str, Any]:
    """The application of a bot user (its id equals the bot's user id)."""
    return {
        "id": str(user.application_id),
        "name": user.name,
        "icon": None,
        "description": "",
        "summary": "",
        "bot_public": True,
        "bot_require_code_grant": False,
        "verify_key": "0" * 64,
        "owner": user_json(owner),
        "team": None,
        "flags": 0,
        "bot": user_json(user),
        "tags": [],
        "redirect_uris": [],
        "interactions_endpoint_url": None,
        "approximate_guild_count": 0,
    }


def member_json(user: User, guild: Guild) -> dict[str, Any]:
    return {
        "user": user_json(user),
        "nick": None,
        "avatar": None,
        "roles": [],
        "joined_at": iso_time(snowflake_time(guild.id)),
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "flags": 0,
        "pending": False,
        "communication_disabled_until": None,
    }


def channel_json(
    channel: Channel, *, last_message_id: int | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(channel.id),
        "type": int(channel.kind),
        "guild_id": str(channel.guild_id),
        "name": channel.name,
        "position": channel.position,
        "permission_overwrites": [],
        "nsfw": False,
        "parent_id": None,
        "rate_limit_per_user": 0,
        "last_message_id": None if last_message_id is None else str(last_message_id),
        "flags": 0,
    }
    if channel.kind is ChannelKind.VOICE:
        data.update(
            bitrate=channel.bitrate,
            user_limit=channel.user_limit,
            rtc_region=None,
            video_quality_mode=1,
        )
    else:
        data["topic"] = None
    return data


def role_json(guild: Guild) -> dict[str, Any]:
    """The @everyone role, whose id is the guild's id."""
    return {
        "id": str(guild.id),
        "name": "@everyone",
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "icon": None,
        "unicode_emoji": None,
        "position": 0,
        "permissions": str(_EVERYONE_PERMISSIONS),
        "managed": False,
        "mentionable": False,
        "flags": 0,
    }


def guild_json(guild: Guild) -> dict[str, Any]:
    """The guild object as GET /guilds/{id} returns it (no members or voice states)."""
    return {
        "id": str(guild.id),
        "name": guild.name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "owner_id": str(guild.owner_id),
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "roles": [role_json(guild)],
        "emojis": [],
        "stickers": [],
        "features": [],
        "mfa_level": 0,
        "application_id": None,
        "system_channel_id": None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "safety_alerts_channel_id": None,
        "max_members": 500000,
        "max_video_channel_users": 25,
        "vanity_url_code": None,
        "description": None,
        "banner": None,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "preferred_locale": "en-US",
        "nsfw_level": 0,
        "premium_progress_bar_enabled": False,
    }


def guild_create_json(
    world: World,
    guild: Guild,
    users: dict[int, User],
    voice_states: list[dict[str, Any]],
) -> dict[str, Any]:
    """The GUILD_CREATE payload: the guild plus channels, members and voice states.

    Every member is listed, the receiving bot's own member included: discord.py
    treats ``guild.me`` as always cached.
    """
    data = guild_json(guild)
    data.update(
        unavailable=False,
        large=False,
        member_count=len(guild.member_ids),
        joined_at=iso_time(snowflake_time(guild.id)),
        channels=[
            {k: v for k, v in channel_json(c).items() if k != "guild_id"}
            for c in guild.channels
        ],
        members=[member_json(users[m], guild) for m in guild.member_ids],
        voice_states=voice_states,
        presences=[],
        threads=[],
        stage_instances=[],
        guild_scheduled_events=[],
        soundboard_sounds=[],
    )
    return data


def message_json(
    *,
    message_id: int,
    channel: Channel,
    author: User,
    guild: Guild,
    content: str,
    mentions: list[User],
    nonce: str | int | None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(message_id),
        "type": 0,
        "channel_id": str(channel.id),
        "guild_id": str(guild.id),
        "author": user_json(author),
        "member": {k: v for k, v in member_json(author, guild).items() if k != "user"},
        "content": content,
        "timestamp": iso_time(snowflake_time(message_id)),
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [user_json(u) for u in mentions],
        "mention_roles": [],
        "mention_channels": [],
        "attachments": [],
        "embeds": [],
        "components": [],
        "reactions": [],
        "pinned": False,
        "flags": 0,
    }
    if nonce is not None:
        data["nonce"] = nonce
    return data
