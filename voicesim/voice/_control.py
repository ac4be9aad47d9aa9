"""The control plane: discord.py clients in one asyncio thread, driven from trio.

Logging a bot in, identify pacing, gateway resumes and the gateway's quirks are what
discord.py has been hardened against on the real service, so every synthetic user is
a real ``discord.Client``. They all share one asyncio event loop on a dedicated
thread. Joining voice goes through :class:`_VoiceBridge`, a ``discord.VoiceProtocol``
that never opens a voice connection itself: it collects ``session_id``, ``token`` and
``endpoint`` and hands them to trio, where :mod:`voicesim.voice._connection` speaks the
voice protocol.

trio calls into asyncio with :meth:`ControlPlane._call`, which schedules a coroutine
on the loop and waits for it on a trio event, so no worker thread blocks per call.
asyncio reaches trio through the run's :class:`trio.lowlevel.TrioToken`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import attrs
import discord
import discord.gateway
import discord.http
import trio
import yarl

from voicesim._exceptions import TransportError, VoiceTimeout

__all__ = [
    "Bot",
    "ChatMessage",
    "ControlPlane",
    "Target",
    "VoiceCredentials",
]

log = logging.getLogger("voicesim.voice.control")

T = TypeVar("T")

#: GUILDS, GUILD_VOICE_STATES, GUILD_MESSAGES and MESSAGE_CONTENT: the channel cache,
#: voice joins, and the agent's transcript messages.
INTENTS_VALUE = (1 << 0) | (1 << 7) | (1 << 9) | (1 << 15)


@attrs.frozen(kw_only=True)
class Target:
    """Where the Discord-compatible service is.

    ``None`` everywhere means real Discord. For the emulator, ``api_base`` is its REST
    base (``http://127.0.0.1:P/api/v10``), ``gateway_url`` its main gateway and
    ``ca_file`` the CA that signed its voice gateway's certificate.
    """

    api_base: str | None = None
    gateway_url: str | None = None
    ca_file: Path | None = None
    guild_ready_timeout: float = 2.0

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.ca_file is not None:
            context.load_verify_locations(cafile=str(self.ca_file))
        return context


@attrs.frozen(kw_only=True)
class VoiceCredentials:
    """What a voice connection needs, from VOICE_STATE_UPDATE and VOICE_SERVER_UPDATE."""

    user_id: int
    guild_id: int
    channel_id: int
    session_id: str = attrs.field(repr=False)
    token: str = attrs.field(repr=False)
    endpoint: str


@attrs.frozen(kw_only=True)
class ChatMessage:
    """A MESSAGE_CREATE as a synthetic user saw it, with its arrival time."""

    channel_id: int
    author_id: int
    content: str
    mention_ids: tuple[int, ...]
    arrival_ns: int


@attrs.define(eq=False)
class Bot:
    """One logged-in bot user and its discord.py client."""

    user_id: int
    name: str
    client: Any = attrs.field(repr=False)
    messages: trio.MemoryReceiveChannel[ChatMessage] = attrs.field(repr=False)
    voice_states: trio.MemoryReceiveChannel[dict[str, Any]] = attrs.field(repr=False)
    _task: Any = attrs.field(repr=False, default=None)


class ControlPlane:
    """Owns the asyncio thread and every bot client in it.

    Use it as an async context manager inside a trio run::

        async with ControlPlane(target) as control:
            bot = await control.login(token)
            credentials = await control.join(bot, guild_id, channel_id)
    """

    def __init__(self, target: Target) -> None:
        self.target = target
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="voicesim-control", daemon=True
        )
        self._token: trio.lowlevel.TrioToken | None = None
        self._bots: list[Bot] = []
        self._pacer = _IdentifyPacer()

    async def __aenter__(self) -> ControlPlane:
        self._token = trio.lowlevel.current_trio_token()
        _point_discord_at(self.target)
        self._thread.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with trio.CancelScope(shield=True):
            for bot in self._bots:
                try:
                    with trio.move_on_after(5):
                        await self._call(bot.client.close())
                except Exception:
                    log.debug("closing a bot failed", exc_info=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
            await trio.to_thread.run_sync(self._thread.join, 5.0)
            if not self._loop.is_running():
                self._loop.close()

    async def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        done = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def wake(_: object) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        future.add_done_callback(wake)
        try:
            await done.wait()
        except trio.Cancelled:
            future.cancel()
            raise
        return future.result()

    def _to_trio(self, fn: Callable[..., object], *args: object) -> None:
        assert self._token is not None
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(fn, *args)

    async def login(self, token: str, *, timeout: float = 60.0) -> Bot:
        """Log one bot in, connect its gateway and wait until it is ready."""
        send_messages, messages = trio.open_memory_channel[ChatMessage](1000)
        send_states, states = trio.open_memory_channel[dict[str, Any]](100)
        try:
            with trio.fail_after(timeout):
                client, task = await self._call(
                    self._login(token, send_messages, send_states, timeout)
                )
        except trio.TooSlowError:
            raise VoiceTimeout(f"bot login took longer than {timeout:g} s") from None
        user = client.user
        bot = Bot(
            user_id=user.id,
            name=user.name,
            client=client,
            messages=messages,
            voice_states=states,
            task=task,
        )
        self._bots.append(bot)
        log.info("bot %s (%s) logged in", bot.name, bot.user_id)
        return bot

    async def _login(
        self,
        token: str,
        send_messages: trio.MemorySendChannel[ChatMessage],
        send_states: trio.MemorySendChannel[dict[str, Any]],
        timeout: float,
    ) -> tuple[Any, Any]:
        connector = aiohttp.TCPConnector(ssl=self.target.ssl_context())
        intents = discord.Intents.none()
        intents.value = INTENTS_VALUE
        client = _SyntheticClient(
            intents=intents,
            connector=connector,
            chunk_guilds_at_startup=False,
            guild_ready_timeout=self.target.guild_ready_timeout,
            member_cache_flags=discord.MemberCacheFlags.none(),
            max_messages=None,
        )
        client.voicesim_pacer = self._pacer
        client.voicesim_forward_message = lambda message: self._to_trio(
            _send_nowait, send_messages, message
        )
        client.voicesim_forward_state = lambda data: self._to_trio(
            _send_nowait, send_states, data
        )
        try:
            await client.login(token)
        except discord.LoginFailure:
            await client.close()
            raise TransportError("the bot token was rejected (401)") from None
        except (aiohttp.ClientError, OSError) as exc:
            await client.close()
            raise TransportError(f"cannot reach the REST API: {exc}") from exc
        self._pacer.configure(client)
        task = asyncio.get_running_loop().create_task(client.connect(reconnect=True))
        ready = asyncio.ensure_future(client.wait_until_ready())
        await asyncio.wait([ready, task], return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            error = task.exception() if task.done() else None
            await client.close()
            raise TransportError(f"the gateway connection failed: {error!r}")
        return client, task

    async def join(
        self, bot: Bot, guild_id: int, channel_id: int, *, timeout: float = 30.0
    ) -> tuple[VoiceCredentials, trio.MemoryReceiveChannel[VoiceCredentials | None]]:
        """Join a voice channel; return the credentials and a channel of later ones.

        Later items arrive on a move or a voice server change (new credentials), or
        ``None`` when Discord reports the bot out of the channel.
        """
        send_updates, updates = trio.open_memory_channel[VoiceCredentials | None](16)
        try:
            credentials = await self._call(
                self._join(bot, guild_id, channel_id, send_updates, timeout)
            )
        except TimeoutError:
            raise VoiceTimeout(
                f"no voice credentials for channel {channel_id} within {timeout:g} s"
            ) from None
        return credentials, updates

    async def _join(
        self,
        bot: Bot,
        guild_id: int,
        channel_id: int,
        send_updates: trio.MemorySendChannel[VoiceCredentials | None],
        timeout: float,
    ) -> VoiceCredentials:
        channel = bot.client.get_channel(channel_id)
        if channel is None:
            raise TransportError(f"bot {bot.user_id} cannot see channel {channel_id}")

        def forward(credentials: VoiceCredentials | None) -> None:
            self._to_trio(_send_nowait, send_updates, credentials)

        bridge: _VoiceBridge = await channel.connect(
            timeout=timeout, reconnect=False, cls=_VoiceBridge, self_deaf=False
        )
        bridge.forward = forward
        return bridge.credentials()

    async def leave(self, bot: Bot, guild_id: int) -> None:
        """Leave the voice channel in ``guild_id``, if the bot is in one."""
        await self._call(self._leave(bot, guild_id))

    async def _leave(self, bot: Bot, guild_id: int) -> None:
        guild = bot.client.get_guild(guild_id)
        if guild is None or guild.voice_client is None:
            return
        await guild.voice_client.disconnect(force=False)

    async def send_message(self, bot: Bot, channel_id: int, content: str) -> None:
        """Post a text message (voice channels have their own text chat)."""
        await self._call(self._send_message(bot, channel_id, content))

    async def _send_message(self, bot: Bot, channel_id: int, content: str) -> None:
        channel = bot.client.get_channel(channel_id)
        if channel is None:
            channel = await bot.client.fetch_channel(channel_id)
        await channel.send(content)


def _send_nowait(channel: trio.MemorySendChannel[Any], item: object) -> None:
    try:
        channel.send_nowait(item)
    except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
        # A consumer that stopped reading loses events rather than stalling the
        # control plane for every other bot.
        log.debug("dropped a control-plane event for a slow or closed consumer")


def _point_discord_at(target: Target) -> None:
    """Send discord.py's REST and gateway traffic to ``target``.

    discord.py reads both as class attributes, so this is process-wide: one process
    loads one target.
    """
    if target.api_base is not None:
        discord.http.Route.BASE = target.api_base.rstrip("/")
    if target.gateway_url is not None:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(target.gateway_url)


class _IdentifyPacer:
    """Spaces identifies per application by the gateway's ``max_concurrency``.

    Discord allows ``max_concurrency`` identifies per application per 5 s window.
    Each bot is its own application, so first logins of different bots go out
    together, and reconnects of one bot are spaced.
    """

    def __init__(self) -> None:
        self._last: dict[int, list[float]] = {}
        self._concurrency: dict[int, int] = {}

    def configure(self, client: Any) -> None:
        self._concurrency.setdefault(client.application_id or 0, 1)

    async def wait(self, application_id: int) -> None:
        window = 5.0
        limit = self._concurrency.get(application_id, 1)
        history = self._last.setdefault(application_id, [])
        while True:
            now = time.monotonic()
            history[:] = [t for t in history if now - t < window]
            if len(history) < limit:
                history.append(now)
                return
            await asyncio.sleep(window - (now - history[0]))


class _SyntheticClient(discord.Client):
    voicesim_pacer: _IdentifyPacer
    voicesim_forward_message: Callable[[ChatMessage], None]
    voicesim_forward_state: Callable[[dict[str, Any]], None]

    async def before_identify_hook(
        self, shard_id: int | None, *, initial: bool = False
    ) -> None:
        await self.voicesim_pacer.wait(self.application_id or 0)

    async def on_message(self, message: discord.Message) -> None:
        arrival_ns = time.perf_counter_ns()
        self.voicesim_forward_message(
            ChatMessage(
                channel_id=message.channel.id,
                author_id=message.author.id,
                content=message.content,
                mention_ids=tuple(m.id for m in message.mentions),
                arrival_ns=arrival_ns,
            )
        )

    async def on_socket_raw_receive(self, msg: str) -> None:
        return None

    async def setup_hook(self) -> None:
        # discord.py hands other users' VOICE_STATE_UPDATEs to listeners only when
        # it can build a Member, which the disabled member cache rarely allows; an
        # agent must see every join and leave, so the raw dict is forwarded after
        # discord.py has applied it to its own voice-state cache.
        parsers = self._connection.parsers
        parse = parsers["VOICE_STATE_UPDATE"]

        def parse_and_forward(data: Any) -> None:
            parse(data)
            if self.user is None or int(data.get("user_id", 0)) != self.user.id:
                self.voicesim_forward_state(data)

        parsers["VOICE_STATE_UPDATE"] = parse_and_forward


class _VoiceBridge(discord.VoiceProtocol):
    """A VoiceProtocol that only collects the voice server's credentials."""

    def __init__(self, client: discord.Client, channel: Any) -> None:
        super().__init__(client, channel)
        self._session_id: str | None = None
        self._token: str | None = None
        self._endpoint: str | None = None
        self._channel_id: int | None = channel.id
        self._guild: Any = channel.guild
        self._ready = asyncio.Event()
        self._connected = False
        self.forward: Callable[[VoiceCredentials | None], None] | None = None

    def credentials(self) -> VoiceCredentials:
        assert self._session_id and self._token and self._endpoint
        assert self.client.user is not None and self._channel_id is not None
        return VoiceCredentials(
            user_id=self.client.user.id,
            guild_id=self._guild.id,
            channel_id=self._channel_id,
            session_id=self._session_id,
            token=self._token,
            endpoint=self._endpoint.removeprefix("wss://"),
        )

    def _check(self) -> None:
        if self._session_id and self._token and self._endpoint:
            if not self._connected:
                self._connected = True
                self._ready.set()
            elif self.forward is not None:
                self.forward(self.credentials())

    async def on_voice_state_update(self, data: Any, /) -> None:
        channel_id = data.get("channel_id")
        if channel_id is None:
            if not self._connected:
                # The echo of the leave that came just before this join (a bot that
                # leaves and rejoins a guild at once): it is about the old
                # connection, and ending this one for it would drop the join.
                return
            if self.forward is not None:
                self.forward(None)
            self.cleanup()
            return
        new_channel = int(channel_id)
        moved = self._connected and new_channel != self._channel_id
        self._channel_id = new_channel
        self._session_id = data["session_id"]
        if moved:
            # A move comes with a new token; wait for its VOICE_SERVER_UPDATE.
            self._token = None

    async def on_voice_server_update(self, data: Any, /) -> None:
        endpoint = data.get("endpoint")
        self._token = data["token"]
        self._endpoint = endpoint
        if endpoint is None:
            # The voice server went away; a new update will follow.
            if self.forward is not None:
                self.forward(None)
            return
        self._check()

    async def connect(
        self,
        *,
        timeout: float,
        reconnect: bool,
        self_deaf: bool = False,
        self_mute: bool = False,
    ) -> None:
        await self._guild.change_voice_state(
            channel=self.channel, self_deaf=self_deaf, self_mute=self_mute
        )
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def disconnect(self, *, force: bool) -> None:
        try:
            await self._guild.change_voice_state(channel=None)
        finally:
            self.cleanup()
