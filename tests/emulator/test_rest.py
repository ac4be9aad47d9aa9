"""The emulator's REST API, checked over loopback with urllib and with discord.py."""

from __future__ import annotations

import asyncio
from typing import Any

import discord
import pytest
import trio

from tests.emulator._http_client import HttpReply, http
from tests.emulator._peers import GatewayPeer
from voicesim.emulator import (
    Emulator,
    EmulatorConfig,
    EmulatorInfo,
    configure_discord_client,
)
from voicesim.emulator._world import world_from_mapping

UNAUTHORIZED = {"message": "401: Unauthorized", "code": 0}
NOT_FOUND = {"message": "404: Not Found", "code": 0}


def bot(info: EmulatorInfo, name: str = "bot-1") -> str:
    return f"Bot {info.user(name).token}"


def assert_json(reply: HttpReply, status: int) -> Any:
    assert reply.status == status, reply
    # discord.py decodes a body only under this exact header, parameters and all.
    assert reply.content_type == "application/json"
    return reply.json()


async def test_users_me_returns_the_token_owner(emulator: Emulator) -> None:
    """GET users/@me answers with the user whose bot token was sent."""
    info = emulator.info
    user = info.user("bot-3")
    data = assert_json(
        await http(f"{info.api_base}/users/@me", token=bot(info, "bot-3")), 200
    )
    assert data["id"] == str(user.id)
    assert data["username"] == "bot-3"
    assert data["bot"] is True
    assert {"discriminator", "avatar", "global_name", "flags"} <= data.keys()


async def test_application_me_has_the_fields_discordpy_reads(
    emulator: Emulator,
) -> None:
    """GET oauth2/applications/@me carries every key discord.py's AppInfo indexes."""
    info = emulator.info
    data = assert_json(
        await http(f"{info.api_base}/oauth2/applications/@me", token=bot(info)), 200
    )
    required = {
        "id",
        "name",
        "description",
        "icon",
        "bot_public",
        "bot_require_code_grant",
        "owner",
        "verify_key",
    }
    assert required <= data.keys()
    assert data["id"] == str(info.user("bot-1").id)
    assert "id" in data["owner"] and "username" in data["owner"]


async def test_gateway_needs_no_token_and_names_the_gateway(
    emulator: Emulator,
) -> None:
    """GET gateway works without a token and returns the main gateway URL."""
    info = emulator.info
    data = assert_json(await http(f"{info.api_base}/gateway"), 200)
    assert data == {"url": info.gateway_url}


async def test_gateway_bot_reports_and_spends_the_session_start_limit(
    emulator: Emulator,
) -> None:
    """GET gateway/bot has session_start_limit, and an identify lowers remaining."""
    info = emulator.info
    url = f"{info.api_base}/gateway/bot"
    before = assert_json(await http(url, token=bot(info)), 200)
    assert before["url"] == info.gateway_url
    assert before["shards"] == 1
    limit = before["session_start_limit"]
    assert set(limit) == {"total", "remaining", "reset_after", "max_concurrency"}
    assert limit["total"] == limit["remaining"] == 1000
    assert limit["max_concurrency"] == 1
    assert 0 <= limit["reset_after"] <= 24 * 3600 * 1000

    async with GatewayPeer.connect(info, "bot-1"):
        pass
    after = assert_json(await http(url, token=bot(info)), 200)
    assert after["session_start_limit"]["remaining"] == 999
    # Another application's budget is its own.
    other = assert_json(await http(url, token=bot(info, "bot-2")), 200)
    assert other["session_start_limit"]["remaining"] == 1000


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bot", "Bot not-a-token", "Bearer {token}", "{token}", "bot {token}"],
)
async def test_missing_or_wrong_authorization_is_401(
    emulator: Emulator, authorization: str | None
) -> None:
    """Without a known token after 'Bot ', every authenticated route answers 401."""
    info = emulator.info
    token = info.user("bot-1").token
    header = None if authorization is None else authorization.format(token=token)
    for path in ("users/@me", "oauth2/applications/@me", "gateway/bot"):
        reply = await http(f"{info.api_base}/{path}", token=header)
        assert assert_json(reply, 401) == UNAUTHORIZED


@pytest.mark.parametrize(
    "path",
    ["/api/v10/nothing-here", "/api/v10/users/@me/nope", "/favicon.ico", "/api/v10"],
)
async def test_unknown_route_is_404_in_discords_shape(
    emulator: Emulator, path: str
) -> None:
    """A route the emulator does not serve answers 404 with Discord's JSON error."""
    base = emulator.info.api_base.removesuffix("/api/v10")
    reply = await http(f"{base}{path}", token=bot(emulator.info))
    assert assert_json(reply, 404) == NOT_FOUND


async def test_messages_post_and_list_in_voice_and_text_channels(
    emulator: Emulator,
) -> None:
    """Each channel, voice ones included, keeps its own chat, listed newest first."""
    info = emulator.info
    guild = info.guilds[0]
    voice = guild.voice_channels[0]
    text = guild.text_channels[0]

    posted = []
    for channel, content in ((voice, "in voice"), (text, "in text"), (voice, "again")):
        reply = await http(
            f"{info.api_base}/channels/{channel.id}/messages",
            "POST",
            token=bot(info),
            json_body={"content": content, "nonce": "n1"},
        )
        message = assert_json(reply, 200)
        assert message["channel_id"] == str(channel.id)
        assert message["guild_id"] == str(guild.id)
        assert message["content"] == content
        assert message["author"]["id"] == str(info.user("bot-1").id)
        assert message["nonce"] == "n1"
        posted.append(message)

    listed = assert_json(
        await http(f"{info.api_base}/channels/{voice.id}/messages", token=bot(info)),
        200,
    )
    assert [m["content"] for m in listed] == ["again", "in voice"]
    assert [m["id"] for m in listed] == [posted[2]["id"], posted[0]["id"]]
    limited = assert_json(
        await http(
            f"{info.api_base}/channels/{voice.id}/messages?limit=1",
            token=bot(info, "bot-2"),
        ),
        200,
    )
    assert [m["content"] for m in limited] == ["again"]
    in_text = assert_json(
        await http(f"{info.api_base}/channels/{text.id}/messages", token=bot(info)),
        200,
    )
    assert [m["content"] for m in in_text] == ["in text"]


@pytest.mark.parametrize(
    ("body", "content_type", "code"),
    [
        (b"{not json", "application/json", 50109),
        (b"\xff\xfe\x00", "application/json", 50109),
        (b"[1, 2]", "application/json", 50109),
        (b'"text"', "application/json", 50109),
        (b'{"content": 5}', "application/json", 50035),
        (b'{"content": "x", "nonce": [1]}', "application/json", 50035),
        (b'{"content": "' + b"a" * 2001 + b'"}', "application/json", 50035),
        (b'{"content": "   "}', "application/json", 50006),
        (b"{}", "application/json", 50006),
        (b"content=hi", "application/x-www-form-urlencoded", 50006),
    ],
)
async def test_bad_message_body_is_400_and_stores_nothing(
    emulator: Emulator, body: bytes, content_type: str, code: int
) -> None:
    """A message body that is not a valid message gets 400 with a Discord error code."""
    info = emulator.info
    channel = info.guilds[0].text_channels[0]
    url = f"{info.api_base}/channels/{channel.id}/messages"
    reply = await http(
        url,
        "POST",
        token=bot(info),
        body=body,
        headers={"Content-Type": content_type},
    )
    data = assert_json(reply, 400)
    assert data["code"] == code
    assert isinstance(data["message"], str) and data["message"]
    assert assert_json(await http(url, token=bot(info)), 200) == []
    assert emulator.counters.messages == 0


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=x", "before=-1"])
async def test_bad_message_query_is_400(emulator: Emulator, query: str) -> None:
    """Out-of-range or non-numeric history parameters are an invalid form body."""
    info = emulator.info
    channel = info.guilds[0].text_channels[0]
    reply = await http(
        f"{info.api_base}/channels/{channel.id}/messages?{query}", token=bot(info)
    )
    assert assert_json(reply, 400)["code"] == 50035


async def test_channels_outside_the_users_guilds_are_hidden() -> None:
    """A bot gets 403 for a channel of a guild it is not in, 404 for no channel."""
    world = world_from_mapping(
        {
            "users": [{"name": "a"}, {"name": "b"}],
            "guilds": [{"name": "private", "members": ["a"]}],
        }
    )
    async with Emulator(EmulatorConfig(world=world, state_file=None)) as emu:
        info = emu.info
        channel = info.guilds[0].voice_channels[0]
        url = f"{info.api_base}/channels/{channel.id}/messages"
        denied = await http(url, token=bot(info, "b"))
        assert assert_json(denied, 403)["code"] == 50001
        posted = await http(
            url, "POST", token=bot(info, "b"), json_body={"content": "x"}
        )
        assert assert_json(posted, 403)["code"] == 50001
        missing = await http(
            f"{info.api_base}/channels/1/messages", token=bot(info, "a")
        )
        assert assert_json(missing, 404)["code"] == 10003
        assert emu.counters.messages == 0


async def test_discordpy_logs_in_and_chats_in_a_voice_channel(
    emulator: Emulator,
) -> None:
    """discord.py's login calls, fetch_channel, send and history all work unchanged."""
    info = emulator.info
    guild = info.guilds[0]
    voice_id = guild.voice_channels[0].id
    user = info.user("bot-2")

    async def main() -> tuple[str, int, list[str]]:
        client = discord.Client(
            intents=discord.Intents.none(), **configure_discord_client(info)
        )
        async with client:
            await client.login(user.token)
            assert client.user is not None
            channel = await client.fetch_channel(voice_id)
            assert isinstance(channel, discord.VoiceChannel), channel
            sent = await channel.send("hello voice chat")
            history = [m.content async for m in channel.history(limit=10)]
            app = await client.application_info()
            return client.user.name, app.id, [sent.content, *history]

    name, app_id, contents = await trio.to_thread.run_sync(asyncio.run, main())
    assert name == "bot-2"
    assert app_id == user.id
    assert contents == ["hello voice chat", "hello voice chat"]
