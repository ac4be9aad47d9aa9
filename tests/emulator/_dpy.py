"""A real discord.py 2.7 bot, run in its own thread with its own asyncio loop.

The bot is unmodified apart from the documented configuration
(:func:`voicesim.emulator.configure_discord_client`). It logs in, joins a voice
channel with ``VoiceChannel.connect()``, waits for the test's go-ahead, plays a list of
Opus frames with ``VoiceClient.play()`` and leaves. The trio test drives it through
threading events and reads its outcome from :attr:`DpyBot.error`.

discord.py 2.7 does not receive voice, so a bot made with ``listen=True`` hears the
channel the way receive extensions for it do: through the voice client's socket
listener hook, opening the transport layer with the session's secret key and the
DAVE layer with discord.py's own ``davey`` session, so what it hears proves that
discord.py's member of the MLS group holds the right keys. discord.py does not map
SSRCs to users either; the test tells it (:attr:`DpyBot.users_by_ssrc`). A listening
bot stays in the channel after playing until :attr:`DpyBot.release` is set.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from typing import Any

import davey
import discord
import trio

from voicesim.emulator import EmulatorInfo, configure_discord_client
from voicesim.protocol import TransportCipher, open_rtp

_TIMEOUT = 30.0


class FrameSource(discord.AudioSource):
    """Pre-encoded Opus frames, one per ``read()``; ``is_opus()`` is true."""

    def __init__(self, frames: list[bytes]) -> None:
        self._frames = list(frames)
        self._index = 0

    def read(self) -> bytes:
        if self._index >= len(self._frames):
            return b""
        frame = self._frames[self._index]
        self._index += 1
        return frame

    def is_opus(self) -> bool:
        return True


class DpyBot:
    """See the module docstring."""

    def __init__(
        self,
        info: EmulatorInfo,
        user_name: str,
        guild_id: int,
        channel_id: int,
        frames: list[bytes],
        *,
        listen: bool = False,
    ) -> None:
        self.info = info
        self.listen = listen
        self.users_by_ssrc: dict[int, int] = {}
        self.heard: dict[int, list[bytes]] = defaultdict(list)
        self.undecodable = 0
        self.release = threading.Event()
        self.user = info.user(user_name)
        self.guild_id = guild_id
        self.channel_id = channel_id
        self.frames = frames
        self.joined = threading.Event()
        self.go = threading.Event()
        self.finished = threading.Event()
        self.ssrc: int | None = None
        self.mode: str | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name="discord.py bot", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    async def wait(self, event: threading.Event, timeout: float = _TIMEOUT) -> None:
        """Wait in trio for one of the bot's events (or its failure)."""
        with trio.fail_after(timeout):
            while not event.is_set():
                if self.finished.is_set() and event is not self.finished:
                    raise AssertionError(f"discord.py bot ended early: {self.error!r}")
                await trio.sleep(0.01)
        if self.error is not None:
            raise AssertionError(
                f"discord.py bot failed: {self.error!r}"
            ) from self.error

    async def join_thread(self) -> None:
        await trio.to_thread.run_sync(self._thread.join, _TIMEOUT)

    def _run(self) -> None:
        try:
            asyncio.run(asyncio.wait_for(self._main(), _TIMEOUT))
        except BaseException as exc:
            self.error = exc
        finally:
            self.finished.set()

    async def _main(self) -> None:
        kwargs: dict[str, Any] = configure_discord_client(self.info)
        client = discord.Client(
            intents=discord.Intents.default(),
            guild_ready_timeout=0.1,
            chunk_guilds_at_startup=False,
            **kwargs,
        )
        async with client:
            await client.login(self.user.token)
            runner = asyncio.create_task(client.connect(reconnect=False))
            try:
                await client.wait_until_ready()
                channel = client.get_channel(self.channel_id)
                assert isinstance(channel, discord.VoiceChannel), channel
                voice = await channel.connect(timeout=15.0, reconnect=False)
                assert isinstance(voice, discord.VoiceClient)
                self.ssrc = voice.ssrc
                self.mode = voice.mode
                if self.listen:
                    cipher = TransportCipher(voice.mode, bytes(voice.secret_key))
                    voice._connection.add_socket_listener(
                        lambda data: self._hear(voice, cipher, data)
                    )
                self.joined.set()
                await asyncio.to_thread(self.go.wait, _TIMEOUT)

                done = asyncio.Event()
                loop = asyncio.get_running_loop()
                voice.play(
                    FrameSource(self.frames),
                    after=lambda exc: loop.call_soon_threadsafe(done.set),
                )
                await done.wait()
                if self.listen:
                    await asyncio.to_thread(self.release.wait, _TIMEOUT)
                await voice.disconnect()
            finally:
                await client.close()
                runner.cancel()

    def _hear(
        self, voice: discord.VoiceClient, cipher: TransportCipher, data: bytes
    ) -> None:
        # Runs on discord.py's socket reader thread, once per datagram.
        if len(data) < 12 or data[1] & 0x7F != 0x78:
            return  # not an Opus RTP packet (IP discovery, RTCP)
        try:
            packet = open_rtp(cipher, data)
        except Exception:
            self.undecodable += 1
            return
        user_id = self.users_by_ssrc.get(packet.ssrc)
        if user_id is None:
            return
        payload = packet.payload
        session = voice._connection.dave_session
        if session is not None and payload != b"\xf8\xff\xfe":
            try:
                payload = session.decrypt(user_id, davey.MediaType.audio, payload)
            except Exception:
                self.undecodable += 1
                return
        self.heard[user_id].append(payload)
