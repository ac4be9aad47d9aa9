"""The agent in one voice channel: its connection, its speakers and its one voice.

A :class:`ChannelAgent` joins one channel through the control plane, opens a
:class:`~voicesim.voice.VoiceConnection`, tells the received streams apart by SSRC
and gives each speaker a :class:`SpeakerPipeline`. It is also what those pipelines
talk back to (their :class:`AgentOutput`): it posts transcripts in the channel's text
chat and plays replies on the connection at the times the turn-taker asks for.
"""

from __future__ import annotations

import collections
import logging
import ssl

import attrs
import trio

from voicesim._exceptions import VoiceConnectionClosed, VoiceSimError, VoiceTimeout
from voicesim.agent._pipeline import AgentCore, SpeakerPipeline
from voicesim.agent._turns import PostTranscript, ReplyLane, StartReply, StopReply
from voicesim.voice import (
    Bot,
    ControlPlane,
    MediaClock,
    ReceivedFrame,
    Speech,
    VoiceConnection,
    VoiceCredentials,
)

__all__ = ["ChannelAgent", "ChannelStats", "sole_error"]

logger = logging.getLogger("voicesim.agent")

#: How long before its start a reply goes to the media clock. The clock needs two
#: ticks of lead and trio wakes up to a millisecond late; more than one frame (20 ms)
#: would let the clock start it a frame early.
_HANDOFF_NS = 8_000_000
#: Frames kept per SSRC whose user is not known yet (the speaking message, op 5, can
#: arrive after the first packets): 5 s, so a late op 5 loses no speech.
_UNMAPPED_BACKLOG = 250
#: Bound on posting one transcript; a stuck REST call must not pile up tasks.
_POST_TIMEOUT_S = 10.0
#: Bound on each step of leaving the channel.
_LEAVE_STEP_S = 2.0


@attrs.define
class ChannelStats:
    """Counts of what one voice channel's streams held and what the agent did."""

    frames: int = 0
    #: Frames of streams whose user never became known (dropped after the backlog).
    unmapped_frames: int = 0
    #: Frames the pipeline could not take (counted and dropped).
    feed_errors: int = 0
    speakers: int = 0
    replies: int = 0
    replies_stopped: int = 0
    transcripts_posted: int = 0
    transcripts_failed: int = 0


@attrs.define(eq=False)
class _SpeakerOutput:
    """One speaker's :class:`AgentOutput`: everything goes through the channel."""

    channel: ChannelAgent
    pipeline: SpeakerPipeline | None = None

    async def post_transcript(self, action: PostTranscript) -> None:
        await self.channel.post_transcript(action)

    def start_reply(self, action: StartReply) -> None:
        self.channel.start_reply(self, action)

    def stop_reply(self, action: StopReply) -> None:
        self.channel.stop_reply(action)


class ChannelAgent:
    """The agent's stay in one voice channel; :meth:`run` until cancelled.

    Cancelling :meth:`run` leaves the channel: open turns are abandoned, replies
    stop, the bot's voice state goes back to no channel and the voice connection
    closes, all shielded and bounded.
    """

    def __init__(
        self,
        *,
        core: AgentCore,
        control: ControlPlane,
        bot: Bot,
        clock: MediaClock,
        guild_id: int,
        channel_id: int,
        ssl_context: ssl.SSLContext | None,
        join_timeout: float = 30.0,
    ) -> None:
        self.guild_id = guild_id
        self.channel_id = channel_id
        self.stats = ChannelStats()
        self._core = core
        self._control = control
        self._bot = bot
        self._clock = clock
        self._ssl_context = ssl_context
        self._join_timeout = join_timeout
        self._lane = ReplyLane()
        self._connection: VoiceConnection | None = None
        self._nursery: trio.Nursery | None = None
        self._speakers: dict[int, SpeakerPipeline] = {}
        self._unmapped: dict[int, collections.deque[ReceivedFrame]] = {}
        self._speeches: dict[tuple[int, int], Speech] = {}
        self._stopped: set[tuple[int, int]] = set()
        self._left = False
        self._rejoining = False

    @property
    def connection(self) -> VoiceConnection | None:
        return self._connection

    @property
    def speaker_ids(self) -> frozenset[int]:
        """Users the agent is listening to in this channel."""
        return frozenset(p.user_id for p in self._speakers.values())

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Join, listen and answer until cancelled or the connection ends.

        ``task_status.started()`` is called once audio can flow both ways.

        Raises:
            VoiceTimeout: the join or the voice handshake did not finish in time.
            TransportError: the channel cannot be joined or the connection failed.
        """
        try:
            credentials, updates = await self._control.join(
                self._bot, self.guild_id, self.channel_id, timeout=self._join_timeout
            )
            connection = VoiceConnection(
                credentials,
                clock=self._clock,
                on_frame=self._on_frame,
                ssl_context=self._ssl_context,
                rejoin=self._rejoin,
            )
            self._connection = connection
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    with trio.fail_after(self._join_timeout):
                        await nursery.start(self._keep_connected, connection, nursery)
                except trio.TooSlowError:
                    raise VoiceTimeout(
                        f"voice handshake in guild {self.guild_id} took longer "
                        f"than {self._join_timeout:g} s"
                    ) from None
                nursery.start_soon(self._follow_updates, updates, connection, nursery)
                logger.info(
                    "agent joined channel %s in guild %s",
                    self.channel_id,
                    self.guild_id,
                )
                task_status.started()
        except BaseExceptionGroup as group:
            error = sole_error(group)
            if error is None:
                raise
            raise error from group
        finally:
            with trio.CancelScope(shield=True):
                await self._leave()

    def user_left(self, user_id: int) -> None:
        """``user_id`` left the channel: end their turns and forget their streams."""
        for ssrc, pipeline in list(self._speakers.items()):
            if pipeline.user_id == user_id:
                pipeline.close()
                del self._speakers[ssrc]

    # -- the connection ---------------------------------------------------------------

    async def _keep_connected(
        self,
        connection: VoiceConnection,
        nursery: trio.Nursery,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        # The channel's stay ends with its connection, however that ends; a close
        # after the start is the end of the stay, not an error of the agent.
        try:
            await connection.run(task_status=task_status)
        except VoiceConnectionClosed as exc:
            if not connection.ready:
                raise
            logger.info("voice connection in guild %s closed: %s", self.guild_id, exc)
        finally:
            nursery.cancel_scope.cancel()

    async def _rejoin(self) -> VoiceCredentials:
        # After a 4006 or 4009 the voice session is gone: leave and join again for
        # fresh credentials, as a client would.
        self._rejoining = True
        try:
            await self._control.leave(self._bot, self.guild_id)
            fresh, updates = await self._control.join(
                self._bot, self.guild_id, self.channel_id, timeout=self._join_timeout
            )
        finally:
            self._rejoining = False
        if self._nursery is not None and self._connection is not None:
            self._nursery.start_soon(
                self._follow_updates, updates, self._connection, self._nursery
            )
        return fresh

    async def _follow_updates(
        self,
        updates: trio.MemoryReceiveChannel[VoiceCredentials | None],
        connection: VoiceConnection,
        nursery: trio.Nursery,
    ) -> None:
        async for credentials in updates:
            if credentials is None and self._rejoining:
                # Our own leave before a rejoin; the new join has its own updates.
                return
            if credentials is None:
                # Discord took the bot out of the channel (kicked, or the channel
                # was deleted): the stay is over.
                logger.info(
                    "agent was removed from channel %s in guild %s",
                    self.channel_id,
                    self.guild_id,
                )
                nursery.cancel_scope.cancel()
                return
            # A move or a new voice server: the next reconnect uses these.
            connection.credentials = credentials
            self.channel_id = credentials.channel_id

    async def _leave(self) -> None:
        if self._left:
            return
        self._left = True
        for pipeline in self._speakers.values():
            pipeline.close()
        self._speakers.clear()
        for speech in self._speeches.values():
            speech.cancel()

        # The voice state update is what tells Discord the bot left; closing the
        # voice WebSocket normally then ends the media session without a resume.
        with trio.move_on_after(_LEAVE_STEP_S):
            try:
                await self._control.leave(self._bot, self.guild_id)
            except Exception:
                logger.warning(
                    "leaving guild %s did not complete", self.guild_id, exc_info=True
                )
        if self._connection is not None:
            with trio.move_on_after(_LEAVE_STEP_S):
                try:
                    await self._connection.close()
                except Exception:
                    logger.debug("closing the voice connection failed", exc_info=True)
        logger.info("agent left channel %s in guild %s", self.channel_id, self.guild_id)

    # -- received audio ---------------------------------------------------------------

    def _on_frame(self, frame: ReceivedFrame) -> None:
        # Runs in the connection's receive loop for every frame, so it only sorts
        # the frame to its speaker; a speaker's bad audio is counted and dropped
        # there, never raised into the loop that serves everyone else.
        self.stats.frames += 1
        pipeline = self._speakers.get(frame.ssrc)
        if pipeline is None:
            pipeline = self._speaker_for(frame)
            if pipeline is None:
                return
        self._feed(pipeline, frame)

    def _speaker_for(self, frame: ReceivedFrame) -> SpeakerPipeline | None:
        connection = self._connection
        user_id = frame.user_id
        if user_id is None and connection is not None:
            user_id = connection.users_by_ssrc.get(frame.ssrc)
        if user_id is None:
            backlog = self._unmapped.setdefault(
                frame.ssrc, collections.deque(maxlen=_UNMAPPED_BACKLOG)
            )
            if len(backlog) == backlog.maxlen:
                self.stats.unmapped_frames += 1
            backlog.append(frame)
            return None
        if user_id == self._bot.user_id or self._left:
            return None

        output = _SpeakerOutput(channel=self)
        pipeline = self._core.open_speaker(
            user_id=user_id, output=output, lane=self._lane, guild_id=self.guild_id
        )
        output.pipeline = pipeline
        self._speakers[frame.ssrc] = pipeline
        self.stats.speakers += 1
        logger.debug("speaker %s on ssrc %s", user_id, frame.ssrc)
        for early in self._unmapped.pop(frame.ssrc, ()):
            self._feed(pipeline, early)
        return pipeline

    def _feed(self, pipeline: SpeakerPipeline, frame: ReceivedFrame) -> None:
        try:
            pipeline.feed(frame.payload, frame.arrival_ns)
        except Exception:
            self.stats.feed_errors += 1
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("dropped a frame of ssrc %s", frame.ssrc, exc_info=True)

    # -- what the pipelines ask for ---------------------------------------------------

    async def post_transcript(self, action: PostTranscript) -> None:
        """Post what ``action.user_id`` said, mentioning them, in the channel's chat."""
        content = f"<@{action.user_id}> {action.text}"
        try:
            with trio.fail_after(_POST_TIMEOUT_S):
                await self._control.send_message(self._bot, self.channel_id, content)
        except BaseException:
            self.stats.transcripts_failed += 1
            raise
        self.stats.transcripts_posted += 1

    def start_reply(self, output: _SpeakerOutput, action: StartReply) -> None:
        """Schedule a reply; it plays on this connection at ``action.at_ns``."""
        if self._nursery is None or self._left or output.pipeline is None:
            return
        self._nursery.start_soon(self._play, output.pipeline, action)

    def stop_reply(self, action: StopReply) -> None:
        """Stop a reply now (barge-in); the silence frames that end it follow."""
        key = (action.user_id, action.turn)
        speech = self._speeches.get(key)
        if speech is None:
            # Not handed to the clock yet: it must not start at all.
            self._stopped.add(key)
            return
        speech.cancel()

    async def _play(self, pipeline: SpeakerPipeline, action: StartReply) -> None:
        key = (action.user_id, action.turn)
        connection = self._connection
        assert connection is not None

        # Wait until just before the reply is due, then hand it to the media clock,
        # which sends it from the first frame boundary at or after its time.
        delay_ns = action.at_ns - _HANDOFF_NS - self._core.clock_ns()
        if delay_ns > 0:
            await trio.sleep(delay_ns / 1e9)
        if key in self._stopped:
            self._stopped.discard(key)
            pipeline.reply_ended(action.turn, self._core.clock_ns())
            return

        try:
            # Replies start when they are due, as a person's talk spurt does, not
            # at the stream's next slot: calibration mode relies on it.
            speech = await connection.speak(action.frames, start_ns=action.at_ns)
        except VoiceSimError as exc:
            logger.warning("user %s turn %d: reply not sent: %s", *key, exc)
            pipeline.reply_ended(action.turn, self._core.clock_ns())
            return
        self.stats.replies += 1
        self._speeches[key] = speech
        pipeline.reply_started(action.turn, speech.intended_ns(0))

        try:
            await speech.wait()
        finally:
            self._speeches.pop(key, None)
            playback = speech.playback
            if not playback.finished:
                playback.cancel()
            sent = min(playback.index, len(action.frames))
            pipeline.reply_ended(action.turn, speech.intended_ns(max(sent - 1, 0)))

        if playback.cancelled:
            # A stopped reply still ends its talk spurt the way clients do, with
            # the silence frames that tell receivers' decoders to stop.
            self.stats.replies_stopped += 1
            tail = await connection.speak(())
            await tail.wait()
        if not self._speeches:
            await connection.stop_speaking()


def sole_error(group: BaseExceptionGroup[BaseException]) -> VoiceSimError | None:
    """The one voicesim error a nursery wrapped, if that is all the group holds.

    Callers catch :class:`VoiceSimError`; a nursery wraps a join or handshake
    failure in a group of one.
    """
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        item = pending.pop()
        if isinstance(item, BaseExceptionGroup):
            pending.extend(item.exceptions)
        else:
            leaves.append(item)
    if len(leaves) == 1 and isinstance(leaves[0], VoiceSimError):
        return leaves[0]
    return None
