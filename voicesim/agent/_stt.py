"""Streaming speech-to-text in worker processes, for trio code.

Transcription is the agent's real CPU cost, the one that makes its latency grow
under load as a real agent's does, so it runs in separate processes: it uses every
core, it never stalls the event loop that receives audio, and a crash in native code
takes down one worker, not the agent.

Each utterance is a stream pinned to one worker, whose pocketsphinx decoder takes
the audio while the user is still speaking; at the end only the tail is left to
decode. A worker decodes up to ``streams_per_worker`` utterances at once (a decoder
holds about 95 MB). Streams beyond that wait in this process, buffering their audio,
and go to the first worker that frees a decoder, so when the CPU runs out the wait
shows up as transcription latency, never as lost audio.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import multiprocessing
import os
import queue
import threading
from types import TracebackType
from typing import Any, Protocol

import trio

from voicesim._exceptions import VoiceSimError
from voicesim.agent._stt_worker import run_worker

__all__ = [
    "NullStt",
    "SttPool",
    "SttStream",
    "Transcriber",
    "TranscriptStream",
    "TranscriptionError",
]

logger = logging.getLogger("voicesim.agent.stt")

# A worker that dies this many times in a row before becoming ready cannot start
# (no model, no memory); replacing it again would only spin.
_MAX_START_FAILURES = 3
_STOP_TIMEOUT_S = 5.0


class TranscriptionError(VoiceSimError, RuntimeError):
    """Raised by a stream's ``finish`` when its utterance could not be transcribed.

    The worker decoding it crashed, the recogniser failed, the stream was aborted or
    the pool closed. Other streams are not affected.
    """


class TranscriptStream(Protocol):
    """One utterance being transcribed."""

    def feed(self, pcm16k: bytes) -> None:
        """Add 16 kHz mono int16 audio; never blocks."""

    async def finish(self) -> str:
        """Mark the end of the audio and wait for the transcript."""

    def abort(self) -> None:
        """Give up on this utterance and free its decoder."""


class Transcriber(Protocol):
    """Anything that opens transcript streams."""

    def open_stream(self) -> TranscriptStream:
        """Start transcribing a new utterance."""


class _NullStream:
    def feed(self, pcm16k: bytes) -> None:
        pass

    async def finish(self) -> str:
        return ""

    def abort(self) -> None:
        pass


class NullStt:
    """A transcriber that hears nothing: every transcript is empty (``stt = none``)."""

    def open_stream(self) -> TranscriptStream:
        return _NullStream()

    async def __aenter__(self) -> NullStt:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass


class SttStream:
    """An utterance on its way through an :class:`SttPool`; see :class:`TranscriptStream`."""

    def __init__(self, pool: SttPool, stream_id: int) -> None:
        self.id = stream_id
        self._pool = pool
        self._worker: _Worker | None = None
        self._pending: list[bytes] = []  # audio fed before a worker was free
        self._ended = False  # finish() or abort() was called
        self._done = trio.Event()
        self._text: str | None = None
        self._error: TranscriptionError | None = None

    def feed(self, pcm16k: bytes) -> None:
        """Add 16 kHz mono int16 audio; never blocks.

        Audio fed to a stream that already failed is dropped; ``finish`` reports the
        failure.

        Raises:
            RuntimeError: ``finish`` or ``abort`` was already called.
        """
        if self._ended:
            raise RuntimeError(f"stream {self.id} already finished")
        if self._done.is_set() or not pcm16k:
            return
        if self._worker is None:
            self._pending.append(pcm16k)
        else:
            self._worker.send(("feed", self.id, pcm16k))

    async def finish(self) -> str:
        """Mark the end of the audio and wait for the transcript (lower case words).

        Raises:
            TranscriptionError: the utterance could not be transcribed.
        """
        if not self._ended:
            self._ended = True
            if self._worker is not None:
                self._worker.send(("end", self.id))
        await self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._text is not None
        return self._text

    def abort(self) -> None:
        """Give up on this utterance and free its decoder; ``finish`` then raises."""
        if self._done.is_set():
            return
        self._ended = True
        self._pool._abort(self)
        self._fail(TranscriptionError(f"transcription of stream {self.id} was aborted"))

    def _resolve(self, text: str) -> None:
        if not self._done.is_set():
            self._text = text
            self._done.set()

    def _fail(self, error: TranscriptionError) -> None:
        if not self._done.is_set():
            self._error = error
            self._pending = []
            self._done.set()


class _Worker:
    """This process's handle on one worker process."""

    def __init__(self, index: int) -> None:
        context = multiprocessing.get_context("spawn")
        # Two one-way pipes: a sender thread writes requests while the event loop
        # reads results, and neither waits for the other.
        requests_read, self.requests = context.Pipe(duplex=False)
        self.results, results_write = context.Pipe(duplex=False)
        self.index = index
        self.process = context.Process(
            target=run_worker,
            args=(requests_read, results_write),
            name=f"voicesim-stt-{index}",
            daemon=True,
        )
        self._child_ends = (requests_read, results_write)
        self.streams: dict[int, SttStream] = {}
        self.ready = False
        self.alive = True
        self._outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._sender = threading.Thread(
            target=self._send_loop, name=f"voicesim-stt-send-{index}", daemon=True
        )

    def start(self) -> None:
        """Start the process and the sender thread (blocks for a few ms: run in a thread)."""
        self.process.start()
        # Our copies of the child's ends must go, or its death would never read as
        # end-of-file here.
        for end in self._child_ends:
            end.close()
        self._sender.start()

    def send(self, request: tuple[Any, ...]) -> None:
        """Queue a request; the sender thread writes it (the pipe may be full)."""
        self._outbox.put(request)

    def stop(self) -> None:
        """Ask the worker to exit and wait for it; kill it if it will not (blocking)."""
        self._outbox.put(("stop",))
        self._outbox.put(None)
        if self._sender.is_alive():
            self._sender.join(_STOP_TIMEOUT_S)
        if self.process.pid is not None:
            self.process.join(_STOP_TIMEOUT_S)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
        self.requests.close()

    def close_results(self) -> None:
        """Close the results pipe (in the event loop's thread)."""
        # trio must forget the descriptor before it is closed: the next pipe may get
        # the same number.
        if not self.results.closed:
            trio.lowlevel.notify_closing(self.results.fileno())
            self.results.close()

    def _send_loop(self) -> None:
        while True:
            request = self._outbox.get()
            if request is None:
                return
            batch = [request]
            # Send whatever else is queued in the same write, joining consecutive
            # audio of one stream: fewer, larger pipe writes and decoder calls.
            while len(batch) < 512:
                try:
                    request = self._outbox.get_nowait()
                except queue.Empty:
                    break
                if request is None:
                    self._outbox.put(None)
                    break
                last = batch[-1]
                if request[0] == last[0] == "feed" and request[1] == last[1]:
                    batch[-1] = ("feed", last[1], last[2] + request[2])
                else:
                    batch.append(request)
            try:
                self.requests.send(batch)
            except OSError:
                # The worker died; the reader sees end-of-file and replaces it.
                return


class SttPool:
    """Worker processes running pocketsphinx; use ``async with SttPool(...) as pool``.

    ``workers`` defaults to the number of CPUs. Entering the pool starts the workers
    and waits until each has loaded its model (about a second). A worker that dies is
    replaced; only the streams it was decoding fail, with
    :class:`TranscriptionError`.

    Raises:
        ValueError: ``workers`` or ``streams_per_worker`` below 1.
        TranscriptionError: on entry, when workers die before they are ready.
    """

    def __init__(
        self, workers: int | None = None, *, streams_per_worker: int = 8
    ) -> None:
        workers = os.cpu_count() or 1 if workers is None else workers
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers!r}")
        if streams_per_worker < 1:
            raise ValueError(
                f"streams_per_worker must be at least 1, not {streams_per_worker!r}"
            )
        self._size = workers
        self._limit = streams_per_worker
        self._workers: list[_Worker] = []
        self._waiting: collections.deque[SttStream] = collections.deque()
        self._ids = itertools.count()
        self._start_failures = 0
        self._broken: str | None = None
        self._closing = False
        self._started = trio.Event()
        self._stack = contextlib.AsyncExitStack()
        self._nursery: trio.Nursery | None = None
        #: Workers that died and were replaced.
        self.crashes = 0

    @property
    def worker_pids(self) -> tuple[int | None, ...]:
        """The process ids of the current workers."""
        return tuple(worker.process.pid for worker in self._workers)

    @property
    def waiting_streams(self) -> int:
        """Streams waiting for a free decoder."""
        return len(self._waiting)

    async def __aenter__(self) -> SttPool:
        self._nursery = await self._stack.enter_async_context(trio.open_nursery())
        try:
            for index in range(self._size):
                await self._start_worker(index)
            await self._started.wait()
            if self._broken is not None:
                raise TranscriptionError(self._broken)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop every worker and fail the streams still open."""
        if self._closing:
            return
        self._closing = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        await self._stack.aclose()

        error = TranscriptionError("the transcription pool was closed")
        for worker in self._workers:
            for stream in worker.streams.values():
                stream._fail(error)
            worker.streams.clear()
        while self._waiting:
            self._waiting.popleft()._fail(error)
        with trio.CancelScope(shield=True):
            for worker in self._workers:
                await trio.to_thread.run_sync(worker.stop)
                worker.close_results()

    def open_stream(self) -> SttStream:
        """Start transcribing a new utterance.

        Raises:
            TranscriptionError: the pool is closed or its workers cannot start.
        """
        if self._closing:
            raise TranscriptionError("the transcription pool is closed")
        if self._broken is not None:
            raise TranscriptionError(self._broken)
        stream = SttStream(self, next(self._ids))
        worker = self._least_busy()
        if worker is None:
            self._waiting.append(stream)
        else:
            self._assign(stream, worker)
        return stream

    def _least_busy(self) -> _Worker | None:
        free = [w for w in self._workers if w.alive and len(w.streams) < self._limit]
        return min(free, key=lambda w: len(w.streams), default=None)

    def _assign(self, stream: SttStream, worker: _Worker) -> None:
        worker.streams[stream.id] = stream
        stream._worker = worker
        worker.send(("open", stream.id))
        if stream._pending:
            worker.send(("feed", stream.id, b"".join(stream._pending)))
            stream._pending = []
        if stream._ended:
            worker.send(("end", stream.id))

    def _abort(self, stream: SttStream) -> None:
        worker = stream._worker
        if worker is None:
            with contextlib.suppress(ValueError):
                self._waiting.remove(stream)
            return
        if worker.streams.pop(stream.id, None) is not None:
            worker.send(("abort", stream.id))
            self._freed(worker)

    def _freed(self, worker: _Worker) -> None:
        while worker.alive and self._waiting and len(worker.streams) < self._limit:
            self._assign(self._waiting.popleft(), worker)

    async def _start_worker(self, index: int) -> None:
        worker = _Worker(index)
        if index < len(self._workers):
            self._workers[index] = worker
        else:
            self._workers.append(worker)
        await trio.to_thread.run_sync(worker.start)
        assert self._nursery is not None
        self._nursery.start_soon(self._read, worker)
        # Streams waiting for a decoder can go to the new worker right away; their
        # requests queue in the pipe until it is ready.
        self._freed(worker)

    async def _read(self, worker: _Worker) -> None:
        results = worker.results
        try:
            while True:
                await trio.lowlevel.wait_readable(results.fileno())
                # Results are a few dozen bytes, written in one piece: once the pipe
                # is readable, recv() returns without waiting.
                while results.poll():
                    self._dispatch(worker, results.recv())
        except (EOFError, OSError):
            pass
        if not self._closing:
            await self._replace(worker)

    def _dispatch(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            worker.ready = True
            self._start_failures = 0
            if all(w.ready for w in self._workers):
                self._started.set()
            return

        stream = worker.streams.pop(message[1], None)
        if stream is None:
            return
        if kind == "text":
            stream._resolve(message[2])
        else:
            stream._fail(TranscriptionError(f"stream {stream.id}: {message[2]}"))
        self._freed(worker)

    async def _replace(self, worker: _Worker) -> None:
        # The pipe closed, so the process is exiting or gone; reap it for its code.
        worker.alive = False
        await trio.to_thread.run_sync(worker.process.join, _STOP_TIMEOUT_S)
        code = worker.process.exitcode
        self.crashes += 1
        logger.warning(
            "transcription worker %d (pid %s) exited with code %s; %d utterances lost",
            worker.index,
            worker.process.pid,
            code,
            len(worker.streams),
        )
        error = TranscriptionError(
            f"transcription worker {worker.index} (pid {worker.process.pid}) "
            f"exited with code {code}"
        )
        for stream in worker.streams.values():
            stream._fail(error)
        worker.streams.clear()
        await trio.to_thread.run_sync(worker.stop)
        worker.close_results()

        if not worker.ready:
            self._start_failures += 1
        if self._start_failures >= _MAX_START_FAILURES:
            self._broken = (
                f"transcription workers exit before they are ready ({error}); "
                "is pocketsphinx installed with its model?"
            )
            while self._waiting:
                self._waiting.popleft()._fail(TranscriptionError(self._broken))
            self._started.set()
            return
        await self._start_worker(worker.index)
