"""The main gateway: login, READY and GUILD_CREATE, resume, voice states, messages."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import trio
import trio.testing

from tests.emulator._http_client import http
from tests.emulator._peers import DEFAULT_INTENTS, GatewayPeer
from voicesim.emulator import Emulator, EmulatorConfig, EmulatorInfo, World
from voicesim.protocol._gateway import (
    GatewayIdentify,
    GatewayPayload,
    GatewayResume,
    UpdateVoiceState,
)

GUILDS = 1
VOICE_STATES = 1 << 7
MESSAGES = 1 << 9


@contextmanager
def real_time_limit(seconds: float) -> Iterator[None]:
    """Fail a test that runs on a frozen MockClock if it hangs for ``seconds`` of wall time.

    trio's own timeouts follow the virtual clock, which a frozen MockClock never moves
    by itself, so a watchdog thread cancels the scope instead.
    """
    token = trio.lowlevel.current_trio_token()
    with trio.CancelScope() as scope:
        timer = threading.Timer(
            seconds, lambda: trio.from_thread.run_sync(scope.cancel, trio_token=token)
        )
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
    assert not scope.cancelled_caught, f"hung for {seconds} s of wall time"


async def post(info: EmulatorInfo, user: str, channel_id: int, content: str) -> Any:
    reply = await http(
        f"{info.api_base}/channels/{channel_id}/messages",
        "POST",
        token=f"Bot {info.user(user).token}",
        json_body={"content": content},
    )
    assert reply.status == 200, reply
    return reply.json()


async def test_hello_then_heartbeats_are_acked_before_and_after_identify(
    emulator: Emulator,
) -> None:
    """Hello comes first; every op 1 gets an op 11, logged in or not."""
    info = emulator.info
    async with GatewayPeer.connect(info, "bot-1", identify=False) as peer:
        await peer.send(GatewayPayload(op=1, d=None))
        await peer.wait_until(lambda: [p for p in peer.others if p.op == 11])
        await peer.send(
            GatewayIdentify(
                token=info.user("bot-1").token, intents=DEFAULT_INTENTS, properties={}
            ).to_payload()
        )
        await peer.wait_for("READY")
        await peer.send(GatewayPayload(op=1, d=peer.dispatches[-1].s))
        await peer.wait_until(lambda: len([p for p in peer.others if p.op == 11]) == 2)


async def test_identify_with_a_bad_token_closes_4004(emulator: Emulator) -> None:
    """An unknown token, bare or after 'Bot ', ends the connection with 4004."""
    for token in ("nope", "Bot nope", ""):
        async with GatewayPeer.connect(emulator.info, "bot-1", identify=False) as peer:
            await peer.send(
                GatewayIdentify(token=token, intents=1, properties={}).to_payload()
            )
            closed = await peer.wait_closed()
            assert closed.code == 4004
            assert peer.dispatches == []
    assert emulator.counters.protocol_errors["gateway:4004"] == 3
    assert emulator.counters.gateway_sessions == 0


async def test_ready_and_guild_create_describe_the_bots_world(
    emulator: Emulator,
) -> None:
    """READY names the session and resume URL; GUILD_CREATE lists self, channels, roles, voice."""
    info = emulator.info
    guild = info.guilds[0]
    voice = guild.voice_channels[0]
    async with GatewayPeer.connect(info, "bot-2") as other:
        await other.join_voice(guild.id, voice.id)

        async with GatewayPeer.connect(info, "bot-1") as peer:
            ready = await peer.wait_for("READY")
            me = info.user("bot-1")
            assert ready["user"]["id"] == str(me.id)
            assert ready["resume_gateway_url"] == info.gateway_url
            assert isinstance(ready["session_id"], str) and ready["session_id"]
            assert ready["guilds"] == [
                {"id": str(g.id), "unavailable": True} for g in info.guilds
            ]
            created = await peer.wait_for(
                "GUILD_CREATE", lambda d: d["id"] == str(guild.id)
            )

    assert created["unavailable"] is False
    members = {m["user"]["id"]: m for m in created["members"]}
    assert str(me.id) in members
    assert all(isinstance(m["roles"], list) for m in members.values())
    assert all(isinstance(m["flags"], int) for m in members.values())
    assert [r["name"] for r in created["roles"]] == ["@everyone"]
    channels = {c["id"]: c for c in created["channels"]}
    assert channels[str(voice.id)]["type"] == 2
    assert {"name", "position", "bitrate", "user_limit"} <= channels[
        str(voice.id)
    ].keys()
    assert channels[str(guild.text_channels[0].id)]["type"] == 0
    states = created["voice_states"]
    assert [(s["user_id"], s["channel_id"]) for s in states] == [
        (str(info.user("bot-2").id), str(voice.id))
    ]
    assert states[0]["session_id"]


async def test_guild_create_needs_the_guilds_intent(emulator: Emulator) -> None:
    """A session without GUILDS gets READY but no GUILD_CREATE."""
    async with GatewayPeer.connect(emulator.info, "bot-1", intents=VOICE_STATES) as p:
        await p.send(GatewayPayload(op=1, d=None))
        await p.wait_until(lambda: [x for x in p.others if x.op == 11])
        assert [d.t for d in p.dispatches] == ["READY"]


async def test_voice_state_update_with_int_or_string_ids_is_answered_and_broadcast(
    emulator: Emulator,
) -> None:
    """Op 4 gets both voice dispatches, the guild sees the state, and leaving confirms."""
    info = emulator.info
    guild = info.guilds[1]
    channel = guild.voice_channels[0]
    async with (
        GatewayPeer.connect(info, "bot-1") as joiner,
        GatewayPeer.connect(info, "bot-2") as watcher,
        GatewayPeer.connect(info, "bot-3", intents=GUILDS) as deaf_to_voice,
    ):
        me = str(joiner.user_id)
        for guild_id, channel_id in (
            (guild.id, channel.id),
            (str(guild.id), str(channel.id)),
        ):
            mark = len(joiner.dispatches)
            await joiner.send(
                GatewayPayload(
                    op=4,
                    d={
                        "guild_id": guild_id,
                        "channel_id": channel_id,
                        "self_mute": False,
                        "self_deaf": True,
                    },
                )
            )
            state = await joiner.wait_for("VOICE_STATE_UPDATE", after=mark)
            server = await joiner.wait_for("VOICE_SERVER_UPDATE", after=mark)
            assert state["user_id"] == me
            assert state["channel_id"] == str(channel.id)
            assert state["guild_id"] == str(guild.id)
            assert state["self_deaf"] is True
            assert server["guild_id"] == str(guild.id)
            assert server["endpoint"] == info.voice_endpoint
            assert server["token"]
            session_id = state["session_id"]
            seen = await watcher.wait_for(
                "VOICE_STATE_UPDATE",
                lambda d, sid=session_id: d["user_id"] == me and d["session_id"] == sid,
            )
            assert seen["channel_id"] == str(channel.id)
            # Only the joiner learns where its voice server is.
            assert not [d for d in watcher.dispatches if d.t == "VOICE_SERVER_UPDATE"]

        mark = len(joiner.dispatches)
        await joiner.send(
            UpdateVoiceState(guild_id=guild.id, channel_id=None).to_payload()
        )
        left = await joiner.wait_for("VOICE_STATE_UPDATE", after=mark)
        assert left["channel_id"] is None
        await watcher.wait_for(
            "VOICE_STATE_UPDATE",
            lambda d: d["user_id"] == me and d["channel_id"] is None,
        )
        assert not [d for d in deaf_to_voice.dispatches if d.t == "VOICE_STATE_UPDATE"]


async def test_message_create_reaches_members_that_asked_for_messages(
    emulator: Emulator,
) -> None:
    """MESSAGE_CREATE goes to GUILD_MESSAGES sessions; content needs MESSAGE_CONTENT."""
    info = emulator.info
    voice = info.guilds[0].voice_channels[0]
    async with (
        GatewayPeer.connect(info, "bot-1") as reader,
        GatewayPeer.connect(info, "bot-2", intents=GUILDS | MESSAGES) as no_content,
        GatewayPeer.connect(
            info, "bot-3", intents=GUILDS | VOICE_STATES
        ) as no_messages,
    ):
        sent = await post(info, "bot-4", voice.id, "said in the voice channel's chat")
        got = await reader.wait_for("MESSAGE_CREATE")
        assert got["id"] == sent["id"]
        assert got["channel_id"] == str(voice.id)
        assert got["content"] == "said in the voice channel's chat"
        hidden = await no_content.wait_for("MESSAGE_CREATE")
        assert hidden["id"] == sent["id"] and hidden["content"] == ""

        # A mention shows the content to the mentioned bot even without the intent.
        mention = f"<@{no_content.user_id}> hello"
        await post(info, "bot-4", voice.id, mention)
        shown = await no_content.wait_for(
            "MESSAGE_CREATE", lambda d: d["content"] == mention
        )
        assert shown["mentions"][0]["id"] == str(no_content.user_id)

        await no_messages.send(GatewayPayload(op=1, d=None))
        await no_messages.wait_until(
            lambda: [p for p in no_messages.others if p.op == 11]
        )
        assert not [d for d in no_messages.dispatches if d.t == "MESSAGE_CREATE"]


async def test_request_guild_members_is_answered_with_chunks(
    emulator: Emulator,
) -> None:
    """Op 8 gets GUILD_MEMBERS_CHUNK with the nonce, by query or by user ids."""
    info = emulator.info
    guild = info.guilds[0]
    async with GatewayPeer.connect(info, "bot-1") as peer:
        await peer.send(
            GatewayPayload(
                op=8,
                d={"guild_id": str(guild.id), "query": "", "limit": 0, "nonce": "a"},
            )
        )
        everyone = await peer.wait_for(
            "GUILD_MEMBERS_CHUNK", lambda d: d["nonce"] == "a"
        )
        assert everyone["guild_id"] == str(guild.id)
        assert (everyone["chunk_index"], everyone["chunk_count"]) == (0, 1)
        assert sorted(m["user"]["id"] for m in everyone["members"]) == sorted(
            str(m) for m in guild.member_ids
        )

        wanted = info.user("bot-2").id
        await peer.send(
            GatewayPayload(
                op=8, d={"guild_id": guild.id, "user_ids": [wanted, 1], "nonce": "b"}
            )
        )
        some = await peer.wait_for("GUILD_MEMBERS_CHUNK", lambda d: d["nonce"] == "b")
        assert [m["user"]["id"] for m in some["members"]] == [str(wanted)]
        assert some["not_found"] == ["1"]


async def test_resume_replays_missed_dispatches_then_resumed(
    emulator: Emulator,
) -> None:
    """After an abnormal close, Resume replays what was missed, in order, then RESUMED."""
    info = emulator.info
    guild = info.guilds[0]
    text = guild.text_channels[0]
    user = info.user("bot-1")
    async with GatewayPeer.connect(info, "bot-1") as first:
        ready = await first.wait_for("READY")
        await first.wait_for(
            "GUILD_CREATE", lambda d: d["id"] == str(info.guilds[-1].id)
        )
        last_seen = first.dispatches[-1].s
        assert last_seen is not None
        # 4000 is not a normal close, so the session stays resumable.
        await first.ws.aclose(code=4000)

    missed = [await post(info, "bot-2", text.id, f"missed {i}") for i in range(3)]

    async with GatewayPeer.connect(info, "bot-1", identify=False) as second:
        await second.send(
            GatewayResume(
                token=user.token, session_id=ready["session_id"], seq=last_seen
            ).to_payload()
        )
        # RESUMED's d is an empty object, so wait for the payload, not its d.
        await second.wait_until(
            lambda: [d for d in second.dispatches if d.t == "RESUMED"]
        )
        replayed = [d for d in second.dispatches if d.t == "MESSAGE_CREATE"]
        assert [d.d["id"] for d in replayed] == [m["id"] for m in missed]
        seqs = [d.s for d in second.dispatches]
        assert seqs == list(range(last_seen + 1, last_seen + len(seqs) + 1))
        assert second.dispatches[-1].t == "RESUMED"


async def test_resume_of_an_unknown_session_gets_invalid_session(
    emulator: Emulator,
) -> None:
    """A Resume naming no live session, or with another bot's token, gets op 9."""
    info = emulator.info
    async with GatewayPeer.connect(info, "bot-1") as peer:
        session_id = (await peer.wait_for("READY"))["session_id"]
        for token, session in (
            (info.user("bot-1").token, "no-such-session"),
            (info.user("bot-2").token, session_id),
        ):
            async with GatewayPeer.connect(info, "bot-1", identify=False) as other:
                await other.send(
                    GatewayResume(token=token, session_id=session, seq=1).to_payload()
                )
                invalid = await other.wait_until(
                    lambda o=other: [p for p in o.others if p.op == 9]
                )
                assert invalid[0].d is False
                assert other.dispatches == []


async def _identify_outcome(info: EmulatorInfo, name: str) -> int:
    """Identify once on a fresh connection; 0 for READY, 9 for Invalid Session."""
    async with GatewayPeer.connect(info, name, identify=False) as peer:
        await peer.send(
            GatewayIdentify(
                token=info.user(name).token, intents=GUILDS, properties={}
            ).to_payload()
        )
        await peer.wait_until(
            lambda: peer.dispatches or [p for p in peer.others if p.op == 9]
        )
        # Close abnormally so the sessions stay open and nothing else changes.
        await peer.ws.aclose(code=4000)
        return 0 if peer.dispatches else 9


async def test_identify_concurrency_is_per_application_per_five_seconds(
    mock_clock: trio.testing.MockClock,
) -> None:
    """With max_concurrency 2, a third identify in 5 virtual seconds gets op 9."""
    config = EmulatorConfig(
        world=World.default(guilds=1, users=2), state_file=None, max_concurrency=2
    )
    with real_time_limit(30):
        async with Emulator(config) as emu:
            info = emu.info
            assert [await _identify_outcome(info, "bot-1") for _ in range(3)] == [
                0,
                0,
                9,
            ]
            # Another bot is another application, with its own window.
            assert await _identify_outcome(info, "bot-2") == 0

            mock_clock.jump(4.9)
            assert await _identify_outcome(info, "bot-1") == 9
            mock_clock.jump(0.1)
            assert [await _identify_outcome(info, "bot-1") for _ in range(3)] == [
                0,
                0,
                9,
            ]

            reply = await http(
                f"{info.api_base}/gateway/bot", token=f"Bot {info.user('bot-1').token}"
            )
            limit = reply.json()["session_start_limit"]
            assert limit["max_concurrency"] == 2
            # Refused identifies do not use up session starts.
            assert limit["remaining"] == 1000 - 4
