"""Where a running emulator can be reached, and who may log in: the state file's content.

The emulator writes this as JSON (``emulator.json`` by default) for clients in other
processes: a bot pointed at the emulator, a Node peer, ``voicesim swarm``. Ids are
strings in the file, as in Discord's JSON, so JavaScript readers keep them exact. The
file holds bot tokens, so it is written readable by its owner only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from voicesim._exceptions import ConfigError
from voicesim.emulator._world import World

__all__ = ["ChannelInfo", "EmulatorInfo", "GuildInfo", "UserInfo"]


@attrs.frozen(kw_only=True)
class UserInfo:
    id: int
    name: str
    token: str = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class ChannelInfo:
    id: int
    name: str


@attrs.frozen(kw_only=True)
class GuildInfo:
    id: int
    name: str
    voice_channels: tuple[ChannelInfo, ...]
    text_channels: tuple[ChannelInfo, ...]
    member_ids: tuple[int, ...]


@attrs.frozen(kw_only=True)
class EmulatorInfo:
    """Endpoints and topology of a running emulator.

    ``voice_endpoint`` is what VOICE_SERVER_UPDATE carries (``host:port``, no scheme);
    ``voice_tls`` says whether it speaks ``wss://`` (the default) or plain ``ws://``.
    ``ca_file`` is the CA a client must trust for TLS, None with plain voice.
    """

    api_base: str
    gateway_url: str
    voice_endpoint: str
    voice_tls: bool
    udp_host: str
    udp_port: int
    ca_file: Path | None
    users: tuple[UserInfo, ...]
    guilds: tuple[GuildInfo, ...]
    agent_user_id: int | None = None
    dave: str = "off"
    modes: tuple[str, ...] = ()

    @property
    def voice_url(self) -> str:
        scheme = "wss" if self.voice_tls else "ws"
        return f"{scheme}://{self.voice_endpoint}/?v=8"

    def user(self, name: str) -> UserInfo:
        for user in self.users:
            if user.name == name:
                return user
        raise KeyError(name)

    @classmethod
    def from_world(cls, world: World, **endpoints: Any) -> EmulatorInfo:
        return cls(
            users=tuple(
                UserInfo(id=u.id, name=u.name, token=u.token) for u in world.users
            ),
            guilds=tuple(
                GuildInfo(
                    id=g.id,
                    name=g.name,
                    voice_channels=tuple(
                        ChannelInfo(id=c.id, name=c.name) for c in g.voice_channels
                    ),
                    text_channels=tuple(
                        ChannelInfo(id=c.id, name=c.name) for c in g.text_channels
                    ),
                    member_ids=g.member_ids,
                )
                for g in world.guilds
            ),
            agent_user_id=world.agent_user_id,
            **endpoints,
        )

    def to_json(self) -> dict[str, Any]:
        def channels(items: tuple[ChannelInfo, ...]) -> list[dict[str, str]]:
            return [{"id": str(c.id), "name": c.name} for c in items]

        return {
            "api_base": self.api_base,
            "gateway_url": self.gateway_url,
            "voice_endpoint": self.voice_endpoint,
            "voice_url": self.voice_url,
            "voice_tls": self.voice_tls,
            "udp": {"host": self.udp_host, "port": self.udp_port},
            "ca_file": None if self.ca_file is None else str(self.ca_file),
            "agent_user_id": None
            if self.agent_user_id is None
            else str(self.agent_user_id),
            "dave": self.dave,
            "modes": list(self.modes),
            "users": [
                {"id": str(u.id), "name": u.name, "token": u.token} for u in self.users
            ],
            "guilds": [
                {
                    "id": str(g.id),
                    "name": g.name,
                    "voice_channels": channels(g.voice_channels),
                    "text_channels": channels(g.text_channels),
                    "member_ids": [str(m) for m in g.member_ids],
                }
                for g in self.guilds
            ],
            "pid": os.getpid(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EmulatorInfo:
        try:
            return cls(
                api_base=data["api_base"],
                gateway_url=data["gateway_url"],
                voice_endpoint=data["voice_endpoint"],
                voice_tls=bool(data["voice_tls"]),
                udp_host=data["udp"]["host"],
                udp_port=int(data["udp"]["port"]),
                ca_file=None if data["ca_file"] is None else Path(data["ca_file"]),
                agent_user_id=None
                if data.get("agent_user_id") is None
                else int(data["agent_user_id"]),
                dave=data.get("dave", "off"),
                modes=tuple(data.get("modes", ())),
                users=tuple(
                    UserInfo(id=int(u["id"]), name=u["name"], token=u["token"])
                    for u in data["users"]
                ),
                guilds=tuple(
                    GuildInfo(
                        id=int(g["id"]),
                        name=g["name"],
                        voice_channels=tuple(
                            ChannelInfo(id=int(c["id"]), name=c["name"])
                            for c in g["voice_channels"]
                        ),
                        text_channels=tuple(
                            ChannelInfo(id=int(c["id"]), name=c["name"])
                            for c in g["text_channels"]
                        ),
                        member_ids=tuple(int(m) for m in g.get("member_ids", ())),
                    )
                    for g in data["guilds"]
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                "state_file", f"is not an emulator state file: {exc!r}"
            ) from exc

    @classmethod
    def load(cls, path: Path | str) -> EmulatorInfo:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                "state_file", f"cannot read {str(path)!r}: {exc}"
            ) from exc
        if not isinstance(data, dict):
            raise ConfigError(
                "state_file", f"{str(path)!r} does not hold a JSON object"
            )
        return cls.from_json(data)

    def write(self, path: Path) -> None:
        """Write atomically, readable by the owner only (the file holds tokens)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
