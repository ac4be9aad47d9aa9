"""The emulator's world: guilds, their channels, and the bot users that may log in.

A world is a plain value. It is built once (defaults, a size for a swarm, or a TOML
file) and never changes while the emulator runs; everything that does change (who is
connected, who sits in which voice channel) lives in the emulator's registry.

Every bot user is its own application, as on Discord, where a bot's user id equals its
application id. Ids are snowflakes in Discord's layout, so clients that read the
creation time out of an id get a sensible date.
"""

from __future__ import annotations

import base64
import enum
import math
import secrets
import time
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import attrs

from voicesim._exceptions import ConfigError

__all__ = [
    "Channel",
    "ChannelKind",
    "Guild",
    "SnowflakeFactory",
    "User",
    "World",
]

# 2015-01-01T00:00:00Z, the epoch of Discord snowflakes.
DISCORD_EPOCH_MS = 1_420_070_400_000

_DEFAULT_GUILDS = 4
_DEFAULT_USERS = 8


class ChannelKind(enum.IntEnum):
    """Discord channel types the emulator serves."""

    TEXT = 0
    VOICE = 2


class SnowflakeFactory:
    """Hands out increasing snowflakes stamped with one creation time."""

    def __init__(self, unix_ms: int | None = None) -> None:
        if unix_ms is None:
            unix_ms = int(time.time() * 1000)
        self._stamp = (unix_ms - DISCORD_EPOCH_MS) << 22
        self._increment = 0

    def __call__(self) -> int:
        # The low 22 bits hold worker, process and increment; a counter there keeps
        # every id of one world distinct and ordered by creation.
        self._increment += 1
        return self._stamp | (self._increment & 0x3FFFFF)


def make_token(user_id: int) -> str:
    """A token in the shape of a Discord bot token: base64(id).timestamp.hmac."""
    head = base64.urlsafe_b64encode(str(user_id).encode()).decode().rstrip("=")
    return f"{head}.{secrets.token_urlsafe(5)}.{secrets.token_urlsafe(27)}"


@attrs.frozen(kw_only=True)
class User:
    """A bot user; its application id is its user id."""

    id: int
    name: str
    token: str = attrs.field(repr=False)

    @property
    def application_id(self) -> int:
        return self.id


@attrs.frozen(kw_only=True)
class Channel:
    """A voice or text channel of one guild."""

    id: int
    guild_id: int
    name: str
    kind: ChannelKind
    position: int = 0
    user_limit: int = 0
    bitrate: int = 64000


@attrs.frozen(kw_only=True)
class Guild:
    """A guild, its channels, and which users are members (bots join guilds by id)."""

    id: int
    name: str
    owner_id: int
    voice_channels: tuple[Channel, ...]
    text_channels: tuple[Channel, ...]
    member_ids: tuple[int, ...]

    @property
    def channels(self) -> tuple[Channel, ...]:
        return self.text_channels + self.voice_channels


def _check_unique(kind: str, values: Sequence[object]) -> None:
    if len(set(values)) != len(values):
        raise ConfigError("world", f"{kind} must be unique, got {list(values)!r}")


@attrs.frozen(kw_only=True)
class World:
    """The topology the emulator serves. Build it with a classmethod."""

    users: tuple[User, ...]
    guilds: tuple[Guild, ...]
    agent_user_id: int | None = None

    def __attrs_post_init__(self) -> None:
        if not self.users:
            raise ConfigError("world", "needs at least one user")
        _check_unique("user ids", [u.id for u in self.users])
        _check_unique("user names", [u.name for u in self.users])
        _check_unique("user tokens", [u.token for u in self.users])
        ids = [g.id for g in self.guilds]
        ids += [c.id for g in self.guilds for c in g.channels]
        _check_unique("guild and channel ids", ids)
        known = {u.id for u in self.users}
        for guild in self.guilds:
            stray = set(guild.member_ids) - known
            if stray:
                raise ConfigError(
                    "world", f"guild {guild.name!r} lists unknown members"
                )
        if self.agent_user_id is not None and self.agent_user_id not in known:
            raise ConfigError("world", "agent_user_id is not one of the users")

    def iter_channels(self) -> Iterator[Channel]:
        for guild in self.guilds:
            yield from guild.channels

    def user_named(self, name: str) -> User:
        for user in self.users:
            if user.name == name:
                return user
        raise KeyError(name)

    # -- constructors ----------------------------------------------------------------

    @classmethod
    def default(
        cls, *, guilds: int = _DEFAULT_GUILDS, users: int = _DEFAULT_USERS
    ) -> World:
        """``guilds`` guilds, each with one voice and one text channel; every user in every guild."""
        if guilds < 1:
            raise ConfigError("guilds", f"must be at least 1, got {guilds!r}")
        if users < 1:
            raise ConfigError("users", f"must be at least 1, got {users!r}")
        new_id = SnowflakeFactory()
        members = [_new_user(new_id, f"bot-{i + 1}") for i in range(users)]
        member_ids = tuple(u.id for u in members)
        built = [
            _new_guild(new_id, f"Guild {i + 1}", members[0].id, member_ids)
            for i in range(guilds)
        ]
        return cls(users=tuple(members), guilds=tuple(built))

    @classmethod
    def sized_for(cls, *, sessions: int, per_channel: int = 1) -> World:
        """A world for a swarm: ``sessions`` synthetic users and one agent user.

        Synthetic user i sits in guild ``i // per_channel``, so there are
        ``ceil(sessions / per_channel)`` guilds; the agent is a member of all of them,
        and each synthetic user only of its own (keeping GUILD_CREATE small).
        """
        if sessions < 1:
            raise ConfigError("sessions", f"must be at least 1, got {sessions!r}")
        if per_channel < 1:
            raise ConfigError("per_channel", f"must be at least 1, got {per_channel!r}")
        new_id = SnowflakeFactory()
        agent = _new_user(new_id, "agent")
        synthetic = [_new_user(new_id, f"user-{i + 1}") for i in range(sessions)]
        built = []
        for g in range(math.ceil(sessions / per_channel)):
            chunk = synthetic[g * per_channel : (g + 1) * per_channel]
            member_ids = (agent.id, *(u.id for u in chunk))
            built.append(_new_guild(new_id, f"Guild {g + 1}", agent.id, member_ids))
        return cls(
            users=(agent, *synthetic), guilds=tuple(built), agent_user_id=agent.id
        )

    @classmethod
    def from_toml(cls, path: Path | str) -> World:
        """Read a world from a TOML file (see :func:`world_from_mapping` for the keys)."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError("world", f"cannot read {str(path)!r}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                "world", f"{str(path)!r} is not valid TOML: {exc}"
            ) from exc
        return world_from_mapping(data)


def _new_user(new_id: SnowflakeFactory, name: str, token: str | None = None) -> User:
    user_id = new_id()
    return User(id=user_id, name=name, token=token or make_token(user_id))


def _new_guild(
    new_id: SnowflakeFactory,
    name: str,
    owner_id: int,
    member_ids: tuple[int, ...],
    voice_names: Sequence[str] = ("General",),
    text_names: Sequence[str] = ("general",),
) -> Guild:
    guild_id = new_id()
    text = tuple(
        Channel(
            id=new_id(), guild_id=guild_id, name=n, kind=ChannelKind.TEXT, position=i
        )
        for i, n in enumerate(text_names)
    )
    voice = tuple(
        Channel(
            id=new_id(), guild_id=guild_id, name=n, kind=ChannelKind.VOICE, position=i
        )
        for i, n in enumerate(voice_names)
    )
    return Guild(
        id=guild_id,
        name=name,
        owner_id=owner_id,
        voice_channels=voice,
        text_channels=text,
        member_ids=member_ids,
    )


def _str_list(value: object, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(key, f"must be a list of strings, got {value!r}")
    return list(value)


def world_from_mapping(data: Mapping[str, object]) -> World:
    """Build a world from parsed TOML.

    ::

        agent = "agent"                       # optional: the agent's user name
        [[users]]
        name = "agent"
        token = "..."                         # optional; generated when absent
        [[guilds]]
        name = "Lobby"
        voice_channels = ["General", "Quiet"] # default ["General"]
        text_channels = ["general"]           # default ["general"]
        members = ["agent", "bot-1"]          # default: every user
    """
    new_id = SnowflakeFactory()
    raw_users = data.get("users", [])
    if not isinstance(raw_users, list) or not raw_users:
        raise ConfigError("world.users", "must be a non-empty array of tables")
    users: list[User] = []
    for i, entry in enumerate(raw_users):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"world.users[{i}]", "needs a string 'name'")
        token = entry.get("token")
        if token is not None and (not isinstance(token, str) or not token):
            raise ConfigError(f"world.users[{i}].token", "must be a non-empty string")
        users.append(_new_user(new_id, entry["name"], token))
    by_name = {u.name: u for u in users}

    raw_guilds = data.get("guilds", [])
    if not isinstance(raw_guilds, list):
        raise ConfigError("world.guilds", "must be an array of tables")
    guilds: list[Guild] = []
    for i, entry in enumerate(raw_guilds):
        key = f"world.guilds[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError(key, "needs a string 'name'")
        names = _str_list(entry.get("members", list(by_name)), f"{key}.members")
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ConfigError(f"{key}.members", f"unknown users {unknown!r}")
        member_ids = tuple(by_name[n].id for n in names)
        if not member_ids:
            raise ConfigError(f"{key}.members", "needs at least one member")
        guilds.append(
            _new_guild(
                new_id,
                entry["name"],
                member_ids[0],
                member_ids,
                _str_list(
                    entry.get("voice_channels", ["General"]), f"{key}.voice_channels"
                ),
                _str_list(
                    entry.get("text_channels", ["general"]), f"{key}.text_channels"
                ),
            )
        )

    agent = data.get("agent")
    if agent is not None and (not isinstance(agent, str) or agent not in by_name):
        raise ConfigError("world.agent", f"must name one of the users, got {agent!r}")
    return World(
        users=tuple(users),
        guilds=tuple(guilds),
        agent_user_id=by_name[agent].id if agent is not None else None,
    )
