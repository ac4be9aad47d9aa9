"""Discord's REST API (``/api/v10``), as far as bots and voice tests use it.

Served: ``GET /gateway``, ``GET /gateway/bot``, ``GET /users/@me``, ``GET /users/{id}``,
``GET /oauth2/applications/@me`` (and ``/applications/@me``), ``GET /channels/{id}``,
``GET``/``POST /channels/{id}/messages``, ``GET /channels/{id}/messages/{id}``,
``GET /guilds/{id}``, ``GET /guilds/{id}/channels``, ``GET /guilds/{id}/members/{id}``.

Errors use Discord's JSON shape ``{"message", "code"}`` with its codes (0 for plain
HTTP errors, 10003 unknown channel, 50001 missing access, 50006 empty message, 50035
invalid form body, 50109 invalid JSON), and every JSON body goes out with the bare
``Content-Type: application/json`` that discord.py insists on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import trio

from voicesim.emulator._http import Request, Response, json_response
from voicesim.emulator._objects import (
    application_json,
    channel_json,
    guild_json,
    member_json,
    user_json,
)
from voicesim.emulator._registry import Registry
from voicesim.emulator._world import Channel, User

__all__ = ["RestApi"]

_PREFIX = re.compile(r"^/api(?:/v\d+)?(/.*)$")
_MAX_CONTENT = 2000


def _error(status: int, message: str, code: int = 0, errors: Any = None) -> Response:
    body: dict[str, Any] = {"message": message, "code": code}
    if errors is not None:
        body["errors"] = errors
    return json_response(status, body)


_UNAUTHORIZED = _error(401, "401: Unauthorized")
_NOT_FOUND = _error(404, "404: Not Found")
_METHOD = _error(405, "405: Method Not Allowed")


def _form_error(field: str, code: str, message: str) -> Response:
    errors = {field: {"_errors": [{"code": code, "message": message}]}}
    return _error(400, "Invalid Form Body", 50035, errors)


Route = Callable[[Request, User | None, list[str]], Response]


class RestApi:
    """Routes requests to handlers; call it with a :class:`Request`."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        # (method, path pattern, needs auth, handler); ids are matched as digits.
        self._routes: list[tuple[str, re.Pattern[str], bool, Route]] = [
            ("GET", re.compile(r"/gateway"), False, self._gateway),
            ("GET", re.compile(r"/gateway/bot"), True, self._gateway_bot),
            ("GET", re.compile(r"/users/@me"), True, self._me),
            ("GET", re.compile(r"/users/(\d+)"), True, self._user),
            ("GET", re.compile(r"/oauth2/applications/@me"), True, self._application),
            ("GET", re.compile(r"/applications/@me"), True, self._application),
            ("GET", re.compile(r"/channels/(\d+)"), True, self._channel),
            ("GET", re.compile(r"/channels/(\d+)/messages"), True, self._messages),
            ("POST", re.compile(r"/channels/(\d+)/messages"), True, self._post_message),
            ("GET", re.compile(r"/channels/(\d+)/messages/(\d+)"), True, self._message),
            ("GET", re.compile(r"/guilds/(\d+)"), True, self._guild),
            ("GET", re.compile(r"/guilds/(\d+)/channels"), True, self._guild_channels),
            ("GET", re.compile(r"/guilds/(\d+)/members/(\d+)"), True, self._member),
        ]

    async def __call__(self, request: Request) -> Response:
        # Handlers never wait; the checkpoint keeps a flood of requests from
        # starving the other tasks.
        await trio.lowlevel.checkpoint()
        return self.handle(request)

    def handle(self, request: Request) -> Response:
        match = _PREFIX.match(request.path)
        if match is None:
            return _NOT_FOUND
        path = match.group(1).rstrip("/") or "/"

        allowed = False
        for method, pattern, needs_auth, route in self._routes:
            found = pattern.fullmatch(path)
            if found is None:
                continue
            if method != request.method:
                allowed = True
                continue
            user = self._authenticate(request)
            if needs_auth and user is None:
                return _UNAUTHORIZED
            return route(request, user, list(found.groups()))
        return _METHOD if allowed else _NOT_FOUND

    def _authenticate(self, request: Request) -> User | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme != "Bot" or not token:
            return None
        return self.registry.users_by_token.get(token)

    # -- gateway and identity ----------------------------------------------------------

    def _gateway(self, request: Request, user: User | None, ids: list[str]) -> Response:
        return json_response(200, {"url": self.registry.gateway_url})

    def _gateway_bot(
        self, request: Request, user: User | None, ids: list[str]
    ) -> Response:
        assert user is not None
        remaining, reset_after = self.registry.start_limit(
            user.application_id, trio.current_time()
        )
        return json_response(
            200,
            {
                "url": self.registry.gateway_url,
                "shards": 1,
                "session_start_limit": {
                    "total": self.registry.session_start_limit,
                    "remaining": remaining,
                    "reset_after": int(reset_after * 1000),
                    "max_concurrency": self.registry.limiter.max_concurrency,
                },
            },
        )

    def _me(self, request: Request, user: User | None, ids: list[str]) -> Response:
        assert user is not None
        return json_response(200, user_json(user))

    def _user(self, request: Request, user: User | None, ids: list[str]) -> Response:
        found = self.registry.users.get(int(ids[0]))
        if found is None:
            return _error(404, "Unknown User", 10013)
        return json_response(200, user_json(found))

    def _application(
        self, request: Request, user: User | None, ids: list[str]
    ) -> Response:
        assert user is not None
        agent_id = self.registry.world.agent_user_id
        owner = self.registry.users.get(agent_id) if agent_id is not None else None
        return json_response(200, application_json(user, owner or user))

    # -- guilds and channels -----------------------------------------------------------

    def _visible_channel(self, user: User, raw_id: str) -> Channel | Response:
        channel = self.registry.channels.get(int(raw_id))
        if channel is None:
            return _error(404, "Unknown Channel", 10003)
        if not self.registry.is_member(user.id, channel.guild_id):
            return _error(403, "Missing Access", 50001)
        return channel

    def _channel(self, request: Request, user: User | None, ids: list[str]) -> Response:
        assert user is not None
        channel = self._visible_channel(user, ids[0])
        if isinstance(channel, Response):
            return channel
        messages = self.registry.messages.get(channel.id)
        last = int(messages[-1]["id"]) if messages else None
        return json_response(200, channel_json(channel, last_message_id=last))

    def _guild(self, request: Request, user: User | None, ids: list[str]) -> Response:
        assert user is not None
        guild = self.registry.guilds.get(int(ids[0]))
        if guild is None:
            return _error(404, "Unknown Guild", 10004)
        if user.id not in guild.member_ids:
            return _error(403, "Missing Access", 50001)
        return json_response(200, guild_json(guild))

    def _guild_channels(
        self, request: Request, user: User | None, ids: list[str]
    ) -> Response:
        assert user is not None
        guild = self.registry.guilds.get(int(ids[0]))
        if guild is None:
            return _error(404, "Unknown Guild", 10004)
        if user.id not in guild.member_ids:
            return _error(403, "Missing Access", 50001)
        return json_response(200, [channel_json(c) for c in guild.channels])

    def _member(self, request: Request, user: User | None, ids: list[str]) -> Response:
        assert user is not None
        guild = self.registry.guilds.get(int(ids[0]))
        if guild is None:
            return _error(404, "Unknown Guild", 10004)
        if user.id not in guild.member_ids:
            return _error(403, "Missing Access", 50001)
        member_id = int(ids[1])
        if member_id not in guild.member_ids:
            return _error(404, "Unknown Member", 10007)
        return json_response(200, member_json(self.registry.users[member_id], guild))

    # -- messages ----------------------------------------------------------------------

    def _messages(
        self, request: Request, user: User | None, ids: list[str]
    ) -> Response:
        assert user is not None
        channel = self._visible_channel(user, ids[0])
        if isinstance(channel, Response):
            return channel
        params: dict[str, int] = {}
        for name, low, high in (
            ("limit", 1, 100),
            ("before", 0, None),
            ("after", 0, None),
        ):
            values = request.query.get(name)
            if not values:
                continue
            try:
                value = int(values[-1])
            except ValueError:
                return _form_error(
                    name, "NUMBER_TYPE_COERCE", f'Value "{values[-1]}" is not int.'
                )
            if value < low or (high is not None and value > high):
                return _form_error(
                    name,
                    "NUMBER_TYPE_MAX" if high and value > high else "NUMBER_TYPE_MIN",
                    f"int value should be between {low} and {high}.",
                )
            params[name] = value
        # Newest first, as Discord returns them.
        messages = list(reversed(self.registry.channel_messages(channel.id)))
        if "before" in params:
            messages = [m for m in messages if int(m["id"]) < params["before"]]
        if "after" in params:
            messages = [m for m in messages if int(m["id"]) > params["after"]]
        return json_response(200, messages[: params.get("limit", 50)])

    def _message(self, request: Request, user: User | None, ids: list[str]) -> Response:
        assert user is not None
        channel = self._visible_channel(user, ids[0])
        if isinstance(channel, Response):
            return channel
        for message in self.registry.channel_messages(channel.id):
            if message["id"] == ids[1]:
                return json_response(200, message)
        return _error(404, "Unknown Message", 10008)

    def _post_message(
        self, request: Request, user: User | None, ids: list[str]
    ) -> Response:
        assert user is not None
        channel = self._visible_channel(user, ids[0])
        if isinstance(channel, Response):
            return channel
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type != "application/json":
            return _error(400, "Cannot send an empty message", 50006)
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            return _error(400, "The request body contains invalid JSON.", 50109)
        if not isinstance(body, dict):
            return _error(400, "The request body contains invalid JSON.", 50109)
        content = body.get("content")
        if content is None:
            content = ""
        if not isinstance(content, str):
            return _form_error("content", "BASE_TYPE_STRING", "Must be a string.")
        if len(content) > _MAX_CONTENT:
            return _form_error(
                "content",
                "BASE_TYPE_BAD_LENGTH",
                f"Must be {_MAX_CONTENT} or fewer in length.",
            )
        if not content.strip() and not body.get("embeds"):
            return _error(400, "Cannot send an empty message", 50006)
        nonce = body.get("nonce")
        if nonce is not None and not isinstance(nonce, str | int):
            return _form_error(
                "nonce", "BASE_TYPE_STRING", "Must be a string or integer."
            )
        message = self.registry.create_message(user, channel, content, nonce)
        return json_response(200, message)
