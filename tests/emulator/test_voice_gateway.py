"""The voice gateway v8: handshake checks, modes, seq, buffered resume, member events."""

from __future__ import annotations

import ssl

import pytest
import trio

from tests.emulator._channel import granted, in_voice
from tests.emulator._peers import VoicePeer
from voicesim.emulator import Emulator, EmulatorConfig, World
from voicesim.protocol._voice_gateway import (
    ClientDisconnect,
    ClientsConnect,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Identify,
    Ready,
    Resume,
    Resumed,
    SelectProtocol,
    SessionDescription,
    Speaking,
)

AES = "aead_aes256_gcm_rtpsize"
XCHACHA = "aead_xchacha20_poly1305_rtpsize"


def seqs(peer: VoicePeer, kind: type) -> list[int | None]:
    return [seq for message, seq in peer.messages if isinstance(message, kind)]


async def test_hello_is_v8_and_heartbeat_acks_echo_the_nonce(
    emulator: Emulator,
) -> None:
    """Hello says v8 first; op 3 is answered with op 6 carrying the same t, unnumbered."""
    info = emulator.info
    async with (
        granted(info, "bot-1") as (_, grant),
        VoicePeer.connect(info, grant, handshake=False) as peer,
    ):
        hello, hello_seq = peer.messages[0]
        assert isinstance(hello, Hello)
        assert hello.v == 8 and hello.heartbeat_interval > 0
        assert hello_seq is None
        for nonce in (1733300000123, 0, 42):
            await peer.send(Heartbeat(t=nonce, seq_ack=peer.seq_ack))
            await peer.wait_for(HeartbeatAck, lambda m, n=nonce: m.t == n)
        assert seqs(peer, HeartbeatAck) == [None, None, None]


@pytest.mark.parametrize(
    ("field", "code"),
    [
        ("server_id", 4011),
        ("user_id", 4006),
        ("session_id", 4006),
        ("token", 4004),
    ],
)
async def test_identify_that_does_not_match_the_voice_state_is_closed(
    emulator: Emulator, field: str, code: int
) -> None:
    """A wrong guild, user, session or token in Identify closes the socket with its code."""
    info = emulator.info
    async with (
        granted(info, "bot-1") as (_, grant),
        VoicePeer.connect(info, grant, handshake=False) as peer,
    ):
        fields = {
            "server_id": str(grant.guild_id),
            "user_id": str(grant.user_id),
            "session_id": grant.session_id,
            "token": grant.token,
        }
        fields[field] = {
            "server_id": "1",
            "user_id": str(info.user("bot-2").id),
            "session_id": "0" * 32,
            "token": "f" * 16,
        }[field]
        await peer.send(Identify(**fields))
        assert (await peer.wait_closed()).code == code
        assert not seqs(peer, Ready)
    assert emulator.counters.protocol_errors[f"voice:{code}"] == 1
    assert emulator.counters.voice_sessions == 0


@pytest.mark.parametrize("mode", [AES, XCHACHA])
async def test_ready_offers_only_the_aead_modes_and_dave_is_off(
    emulator: Emulator, mode: str
) -> None:
    """Ready lists exactly the two AEAD modes; Session Description has DAVE version 0."""
    info = emulator.info
    async with in_voice(info, "bot-1", mode=mode, max_dave_protocol_version=1) as peer:
        ready = await peer.wait_for(Ready)
        assert set(ready.modes) == {AES, XCHACHA} and len(ready.modes) == 2
        assert ready.ip == "127.0.0.1"
        assert ready.port == info.udp_port
        assert 0 < ready.ssrc < 2**32
        description = await peer.wait_for(SessionDescription)
        assert description.mode == mode
        assert len(description.secret_key) == 32
        assert description.dave_protocol_version == 0
        assert seqs(peer, Ready) == [None]
        assert seqs(peer, SessionDescription) == [None]


async def test_select_protocol_with_a_retired_mode_closes_4016(
    emulator: Emulator,
) -> None:
    """A mode the server did not offer (xsalsa20 is retired) ends the socket with 4016."""
    info = emulator.info
    async with (
        granted(info, "bot-1") as (_, grant),
        VoicePeer.connect(info, grant, handshake=False) as peer,
    ):
        await peer.send(
            Identify(
                server_id=str(grant.guild_id),
                user_id=str(grant.user_id),
                session_id=grant.session_id,
                token=grant.token,
            )
        )
        await peer.wait_for(Ready)
        await peer.send(
            SelectProtocol(address="127.0.0.1", port=9, mode="xsalsa20_poly1305")
        )
        assert (await peer.wait_closed()).code == 4016


async def test_voice_gateway_speaks_tls_with_the_emulators_ca(
    emulator: Emulator,
) -> None:
    """The voice endpoint is TLS for "localhost", trusted through info.ca_file only."""
    info = emulator.info
    assert info.voice_tls and info.ca_file is not None and info.ca_file.is_file()
    host, _, port = info.voice_endpoint.partition(":")
    assert host == "localhost"

    trusting = ssl.create_default_context(cafile=str(info.ca_file))
    stream = await trio.open_ssl_over_tcp_stream(host, int(port), ssl_context=trusting)
    async with stream:
        await stream.do_handshake()
        assert stream.version() in ("TLSv1.2", "TLSv1.3")

    # The system's CAs alone do not vouch for it: it is the emulator's own CA.
    stream = await trio.open_ssl_over_tcp_stream(
        host, int(port), ssl_context=ssl.create_default_context()
    )
    async with stream:
        with pytest.raises(trio.BrokenResourceError) as failed:
            await stream.do_handshake()
        assert isinstance(failed.value.__cause__, ssl.SSLCertVerificationError)


async def test_plain_voice_serves_ws_on_request() -> None:
    """With plain_voice the voice gateway is ws:// and a full handshake works over it."""
    config = EmulatorConfig(
        world=World.default(guilds=1, users=2), state_file=None, plain_voice=True
    )
    async with Emulator(config) as emu:
        info = emu.info
        assert info.voice_tls is False and info.ca_file is None
        assert info.voice_url.startswith("ws://")
        async with in_voice(info, "bot-1") as peer:
            assert (await peer.wait_for(SessionDescription)).dave_protocol_version == 0


async def test_members_are_announced_with_op_11_op_5_and_op_13(
    emulator: Emulator,
) -> None:
    """Others' joins (op 11), speaking with user id and SSRC (op 5) and leaves (op 13)."""
    info = emulator.info
    alice_id = str(info.user("bot-1").id)
    bob_id = str(info.user("bot-2").id)
    carol_id = str(info.user("bot-3").id)
    async with in_voice(info, "bot-1") as alice:
        async with in_voice(info, "bot-2") as bob:
            await alice.wait_for(ClientsConnect, lambda m: m.user_ids == (bob_id,))
            await bob.wait_for(ClientsConnect, lambda m: alice_id in m.user_ids)

            await alice.speak(1)
            speaking = await bob.wait_for(Speaking, lambda m: m.user_id == alice_id)
            assert speaking.ssrc == alice.ssrc and speaking.speaking == 1

            # A later member learns who already spoke once it has a key.
            async with in_voice(info, "bot-3") as carol:
                late = await carol.wait_for(Speaking, lambda m: m.user_id == alice_id)
                assert late.ssrc == alice.ssrc
                await alice.wait_for(
                    ClientsConnect, lambda m: m.user_ids == (carol_id,)
                )
            await alice.wait_for(ClientDisconnect, lambda m: m.user_id == carol_id)
            await bob.wait_for(ClientDisconnect, lambda m: m.user_id == carol_id)
        await alice.wait_for(ClientDisconnect, lambda m: m.user_id == bob_id)

        # Replayable messages are numbered 1, 2, 3... per session, in order.
        numbered = [seq for _, seq in alice.messages if seq is not None]
        assert numbered == list(range(1, len(numbered) + 1))
        assert len(numbered) == 4  # op 11 bob, op 11 carol, op 13 carol, op 13 bob
        assert seqs(alice, Hello) == [None]


async def test_resume_replays_what_was_missed_after_op_9(emulator: Emulator) -> None:
    """After a 4015 drop, Resume gets Resumed and then the messages sent meanwhile."""
    info = emulator.info
    bob_id = str(info.user("bot-2").id)
    async with (
        granted(info, "bot-1") as (_, grant),
        VoicePeer.connect(info, grant) as alice,
        in_voice(info, "bot-2") as bob,
    ):
        await alice.wait_for(ClientsConnect)
        seen = alice.seq_ack
        assert seen == 1
        assert emulator.drop_voice_connection(grant.user_id) == 1
        assert (await alice.wait_closed()).code == 4015
        await bob.speak(1)
        await bob.speak(0)

        async with VoicePeer.connect(info, grant, handshake=False) as again:
            await again.send(
                Resume(
                    server_id=str(grant.guild_id),
                    session_id=grant.session_id,
                    token=grant.token,
                    seq_ack=seen,
                )
            )
            await again.wait_until(lambda: len(again.messages) >= 4)
            kinds = [type(m) for m, _ in again.messages]
            assert kinds == [Hello, Resumed, Speaking, Speaking]
            replayed = [m for m, _ in again.messages[2:]]
            assert [(m.user_id, m.speaking) for m in replayed] == [
                (bob_id, 1),
                (bob_id, 0),
            ]
            assert [s for _, s in again.messages[2:]] == [2, 3]

            # Live traffic carries on after the replay, numbered on.
            await bob.speak(1)
            await again.wait_until(lambda: again.seq_ack == 4)
            # Heartbeat ACKs still echo on the resumed connection.
            await again.send(Heartbeat(t=7, seq_ack=again.seq_ack))
            await again.wait_for(HeartbeatAck, lambda m: m.t == 7)
    assert emulator.counters.voice_resumes == 1


async def test_resume_beyond_the_replay_buffer_closes_4006() -> None:
    """When the buffer no longer holds a missed message, Resume is refused with 4006."""
    config = EmulatorConfig(
        world=World.default(guilds=1, users=2), state_file=None, voice_replay_buffer=2
    )
    async with Emulator(config) as emu:
        info = emu.info
        async with granted(info, "bot-1") as (_, grant):
            async with (
                VoicePeer.connect(info, grant) as alice,
                in_voice(info, "bot-2") as bob,
            ):
                await alice.wait_for(ClientsConnect)
                seen = alice.seq_ack
                emu.drop_voice_connection(grant.user_id)
                await alice.wait_closed()
                for flag in (1, 0, 1):
                    await bob.speak(flag)
                # Let the three op 5 reach the (detached) session's buffer.
                with trio.fail_after(5):
                    while (
                        s := emu.hub.sessions.get((grant.guild_id, grant.user_id))
                    ) and s.replay.last_seq < 4:
                        await trio.sleep(0.01)

                async with VoicePeer.connect(info, grant, handshake=False) as again:
                    await again.send(
                        Resume(
                            server_id=str(grant.guild_id),
                            session_id=grant.session_id,
                            token=grant.token,
                            seq_ack=seen,
                        )
                    )
                    assert (await again.wait_closed()).code == 4006
                    assert [type(m) for m, _ in again.messages] == [Hello]
            # The session is gone for good: even a resume with nothing missed fails.
            async with VoicePeer.connect(info, grant, handshake=False) as late:
                await late.send(
                    Resume(
                        server_id=str(grant.guild_id),
                        session_id=grant.session_id,
                        token=grant.token,
                        seq_ack=4,
                    )
                )
                assert (await late.wait_closed()).code == 4006
        assert emu.counters.voice_resumes == 0


async def test_resume_with_a_wrong_token_closes_4004(emulator: Emulator) -> None:
    """A Resume for a live session with the wrong token is an authentication failure."""
    info = emulator.info
    async with granted(info, "bot-1") as (_, grant):
        async with VoicePeer.connect(info, grant) as alice:
            emulator.drop_voice_connection(grant.user_id)
            await alice.wait_closed()
        async with VoicePeer.connect(info, grant, handshake=False) as again:
            await again.send(
                Resume(
                    server_id=str(grant.guild_id),
                    session_id=grant.session_id,
                    token="0" * 16,
                    seq_ack=-1,
                )
            )
            assert (await again.wait_closed()).code == 4004
