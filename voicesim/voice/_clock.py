"""The media clock: one paced sender thread per process.

Why a thread and not a trio task per stream
--------------------------------------------
A Discord client sends one Opus frame every 20 ms per stream. Under trio, each
``trio.sleep_until`` costs about 30 us and rounds up to whole milliseconds, and an
``await sock.sendto`` costs about 37 us; a task per stream therefore saturates a core
near 200 to 300 streams, and its lateness is coarse. A plain thread that sleeps with
``time.sleep`` (which oversleeps by tens of microseconds) and sends with raw
non-blocking socket calls (about 7 us) holds sub-millisecond lateness at several
hundred streams per core.

The wheel
---------
The 20 ms period is cut into 20 slots of 1 ms. Every stream is pinned to one slot, so
the frames of all streams are spread over the period the way independent users'
frames are, instead of bursting together. The thread wakes once a millisecond,
takes the slot that is due, and sends the next frame of every playback in it. Each
frame has an intended send time ``t0 + n * 20 ms``; the thread records how late the
actual send was, so an overloaded generator shows up in its own figures instead of
silently stretching the cadence. A thread that falls behind keeps going tick by tick
without sleeping until it has caught up; it never skips frames.

Only the clock thread touches a stream's sequence number, RTP timestamp and nonce
counter. trio hands it playbacks through a locked list that the thread drains once a
tick, and learns of a finished playback through a callback the thread invokes.

The per-frame path
------------------
At a thousand streams the thread sends 50,000 frames a second, so every microsecond
of Python per frame is five percent of a core. ``run_tick`` is therefore one flat
loop: no method call per frame beyond the cipher, the socket, the nonce counter and
the histogram; a playback carries the intended time of its next frame and the RTP
timestamp of its first, so neither is recomputed by division; locals stand in for
repeated attribute lookups. ``benchmarks/clock_tick.py`` measures it against the
earlier per-frame method calls in the same run. What remains is the kernel's send
(about 3 us on loopback, more with thousands of sockets) and AES-GCM (about 0.6 us).

Batching sends with ``sendmmsg`` does not help here: it sends many datagrams on ONE
socket, and every session owns its own UDP socket (its own address and port, which
the voice server binds its SSRC to at IP discovery), so a slot's frames go to as many
sockets as it has streams.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from voicesim._histogram import LatenessHistogram
from voicesim.protocol._transport import NonceCounter, TransportCipher

__all__ = ["MediaClock", "OutboundStream", "Playback"]

FRAME_NS = 20_000_000
TICK_NS = 1_000_000
SLOTS = FRAME_NS // TICK_NS
SAMPLES_PER_FRAME = 960

_HALF_TICK_NS = TICK_NS // 2
_RTP_TIMESTAMP_MASK = 0xFFFFFFFF
_RTP_FIRST_BYTE = 0x80  # version 2, no padding, no extension, no CSRC
_RTP_OPUS = 0x78  # payload type 120, no marker
_pack_header = struct.Struct(">BBHII").pack


@attrs.define(eq=False)
class OutboundStream:
    """One SSRC's outgoing frames: the socket, the cipher and the RTP counters.

    ``encrypt_frame`` is applied to each Opus frame before transport encryption (DAVE
    end-to-end encryption plugs in here); it returns the frame to send.
    """

    sock: Any
    cipher: TransportCipher
    ssrc: int
    slot: int
    epoch_ns: int
    seq: int = 0
    nonce: NonceCounter = attrs.Factory(NonceCounter)
    encrypt_frame: Callable[[bytes], bytes] | None = None
    lateness: LatenessHistogram = attrs.Factory(LatenessHistogram)
    frames_sent: int = 0
    send_errors: int = 0
    closed: bool = False

    def rtp_timestamp_for(self, intended_ns: int) -> int:
        # The RTP clock follows the intended send time, so the gap between two
        # utterances shows as a jump in timestamps, as a real microphone's does.
        return (
            (intended_ns - self.epoch_ns) // FRAME_NS * SAMPLES_PER_FRAME
        ) & 0xFFFFFFFF


@attrs.define(eq=False)
class Playback:
    """A sequence of frames the clock sends on one stream, one every 20 ms.

    ``t0_ns`` is the intended send time of frame 0 on the ``time.perf_counter_ns``
    clock, fixed when the playback is scheduled. ``on_done`` runs on the clock thread
    when the last frame has gone or the playback was cancelled.
    """

    stream: OutboundStream
    frames: Sequence[bytes]
    t0_ns: int
    on_done: Callable[[Playback], None] | None = None
    #: The wheel slot the playback is sent from, fixed when it is scheduled.
    slot: int = 0
    index: int = 0
    cancelled: bool = False
    finished: bool = False
    first_sent_ns: int | None = None
    last_sent_ns: int | None = None
    # Kept by the clock thread so that sending a frame needs no division: the
    # intended time of frame ``index``, the RTP timestamp of frame 0 (unmasked), and
    # the number of frames.
    _next_ns: int = attrs.field(init=False)
    _rtp_base: int = attrs.field(init=False)
    _count: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._next_ns = self.t0_ns + self.index * FRAME_NS
        periods = (self.t0_ns - self.stream.epoch_ns) // FRAME_NS
        self._rtp_base = periods * SAMPLES_PER_FRAME
        self._count = len(self.frames)

    def intended_ns(self, index: int) -> int:
        return self.t0_ns + index * FRAME_NS

    def cancel(self) -> None:
        """Stop after the frame being sent now, if any; safe from any thread."""
        self.cancelled = True


#: The clock thread's real-time priority (SCHED_FIFO), kept low among real-time
#: threads, and the nice value used where real-time scheduling is refused.
_CLOCK_RT_PRIORITY = 5
_CLOCK_NICE = -10


def _raise_thread_priority() -> str:
    """Ask the scheduler to run the calling thread first; return what was granted.

    Pacing is the generator's first duty. On a small machine the target (the
    embedded emulator and agent) and the generator's own trio thread compete with the
    clock for the cores, and a clock thread that wakes on time but waits for a core
    sends late. Measured with ``benchmarks/swarm_capacity.py`` at 750 sessions on 2
    cores, side by side: p99 lateness 2.7 to 5.5 ms at nice -10 (and 3.5 to 4.3 ms at
    normal priority), 1.5 to 1.9 ms under SCHED_FIFO. A real-time thread that never
    slept could starve a core, but this one sleeps every millisecond unless it is
    behind, and the kernel's real-time throttling caps it in any case.

    Returns ``"realtime"``, ``"nice"`` or ``"normal"``. Both raises need
    CAP_SYS_NICE (root, or a container granted it); without it the thread keeps its
    priority and its lateness figures show the cost.
    """
    thread = threading.get_native_id()
    try:
        os.sched_setscheduler(thread, os.SCHED_FIFO, os.sched_param(_CLOCK_RT_PRIORITY))
    except (OSError, AttributeError):
        pass
    else:
        return "realtime"
    try:
        os.setpriority(os.PRIO_PROCESS, thread, _CLOCK_NICE)
    except OSError:
        return "normal"
    return "nice"


class MediaClock:
    """The process's paced sender: a 20-slot, 1 ms timer wheel on its own thread.

    ``now`` and ``sleep`` are injectable so the schedule can be tested with a fake
    clock through :meth:`run_tick` without a thread.
    """

    def __init__(
        self,
        *,
        now: Callable[[], int] = time.perf_counter_ns,
        sleep: Callable[[float], None] = time.sleep,
        lead_ns: int = 2 * TICK_NS,
    ) -> None:
        self._now = now
        self._sleep = sleep
        self._lead_ns = lead_ns
        self._epoch_ns = now()
        self._tick = 0
        self._wheel: list[list[Playback]] = [[] for _ in range(SLOTS)]
        self._pending: list[Playback] = []
        self._lock = threading.Lock()
        self._next_slot = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._streams: list[OutboundStream] = []
        self.ticks_behind_max = 0
        #: How the thread is scheduled: ``"realtime"``, ``"nice"`` or ``"normal"``
        #: (see :func:`_raise_thread_priority`); None until it has started.
        self.scheduling: str | None = None

    @property
    def epoch_ns(self) -> int:
        return self._epoch_ns

    def open_stream(
        self,
        sock: Any,
        cipher: TransportCipher,
        ssrc: int,
        *,
        encrypt_frame: Callable[[bytes], bytes] | None = None,
        slot: int | None = None,
    ) -> OutboundStream:
        """Register a stream and pin it to the next slot of the wheel."""
        with self._lock:
            if slot is None:
                slot = self._next_slot
                self._next_slot = (self._next_slot + 1) % SLOTS
        stream = OutboundStream(
            sock=sock,
            cipher=cipher,
            ssrc=ssrc,
            slot=slot % SLOTS,
            epoch_ns=self._epoch_ns,
            encrypt_frame=encrypt_frame,
        )
        with self._lock:
            self._streams.append(stream)
        return stream

    def lateness_so_far(self) -> LatenessHistogram:
        """Every stream's send lateness pooled, for a live display.

        Read from another thread while the clock sends, so a frame being counted
        may be missed or half-counted; the total is recounted from the buckets so
        the copy is consistent with itself. The exact figures are the streams' own
        histograms, read once the streams are done.
        """
        with self._lock:
            streams = list(self._streams)
        pooled = LatenessHistogram()
        for stream in streams:
            pooled.merge(stream.lateness)
        pooled.total = sum(pooled.counts)
        return pooled

    def play(
        self,
        stream: OutboundStream,
        frames: Sequence[bytes],
        *,
        on_done: Callable[[Playback], None] | None = None,
        start_ns: int | None = None,
    ) -> Playback:
        """Schedule ``frames`` on ``stream``; thread-safe.

        The first frame's intended time is the stream's next slot at least
        ``lead_ns`` from now, so scheduling never starts late by construction.

        With ``start_ns`` it is instead the first millisecond at or after
        ``start_ns`` (and at least ``lead_ns`` from now), and the stream moves to
        that slot, so its later playbacks keep the new cadence. A person starts a
        talk spurt whenever they like; an agent's reply due at a chosen time uses
        this rather than waiting up to 19 ms for its stream's slot.
        """
        earliest = self._now() + self._lead_ns
        with self._lock:
            if start_ns is None:
                offset = stream.slot * TICK_NS
                periods = -(-(earliest - self._epoch_ns - offset) // FRAME_NS)
                t0 = self._epoch_ns + offset + max(periods, 0) * FRAME_NS
            else:
                ticks = -(-(max(start_ns, earliest) - self._epoch_ns) // TICK_NS)
                t0 = self._epoch_ns + ticks * TICK_NS
                stream.slot = ticks % SLOTS
            # The clock thread places the playback by its own slot, never reading
            # the stream's, which only this method changes.
            playback = Playback(
                stream=stream,
                frames=frames,
                t0_ns=t0,
                on_done=on_done,
                slot=stream.slot,
            )
            self._pending.append(playback)
        return playback

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("media clock already started")
        self._thread = threading.Thread(
            target=self._run_thread, name="voicesim-media-clock", daemon=True
        )
        self._thread.start()

    def _run_thread(self) -> None:
        self.scheduling = _raise_thread_priority()
        self.run()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def run(self) -> None:
        """The thread's body: tick until :meth:`stop`; with a fake ``sleep``, a test's."""
        while not self._stop.is_set():
            target = self._epoch_ns + self._tick * TICK_NS
            delay = target - self._now()
            if delay > 0:
                self._sleep(delay / 1e9)
            else:
                behind = -delay // TICK_NS
                if behind > self.ticks_behind_max:
                    self.ticks_behind_max = behind
            self.run_tick()

    def run_tick(self) -> None:
        """Send everything due in the current slot, then advance one tick."""
        if self._pending:
            with self._lock:
                pending, self._pending = self._pending, []
            wheel = self._wheel
            for playback in pending:
                wheel[playback.slot].append(playback)

        slot = self._wheel[self._tick % SLOTS]
        self._tick += 1
        if not slot:
            return

        # The loop below runs once per frame of every stream; see "The per-frame path"
        # in the module docstring before adding anything to it.
        now = self._now
        pack = _pack_header
        horizon = now() + _HALF_TICK_NS
        ended: list[Playback] | None = None
        for playback in slot:
            stream = playback.stream
            if playback.cancelled or stream.closed:
                if ended is None:
                    ended = []
                ended.append(playback)
                continue
            intended = playback._next_ns
            if intended > horizon:
                continue

            index = playback.index
            frame = playback.frames[index]
            playback.index = index + 1
            playback._next_ns = intended + FRAME_NS
            encrypt_frame = stream.encrypt_frame
            if encrypt_frame is not None:
                frame = encrypt_frame(frame)

            seq = stream.seq
            stream.seq = (seq + 1) & 0xFFFF
            timestamp = (
                playback._rtp_base + index * SAMPLES_PER_FRAME
            ) & _RTP_TIMESTAMP_MASK
            packet = stream.cipher.encrypt(
                pack(_RTP_FIRST_BYTE, _RTP_OPUS, seq, timestamp, stream.ssrc),
                frame,
                stream.nonce.next(),
            )
            try:
                stream.sock.send(packet)
            except OSError:
                # A full socket buffer or a vanished peer loses this frame only; the
                # receiver sees it as loss, and the count says the generator caused
                # it. Its sequence number stays used, as a real lost packet's does.
                stream.send_errors += 1
            else:
                sent_ns = now()
                stream.frames_sent += 1
                stream.lateness.record(sent_ns - intended)
                if playback.first_sent_ns is None:
                    playback.first_sent_ns = sent_ns
                playback.last_sent_ns = sent_ns

            if index + 1 >= playback._count:
                if ended is None:
                    ended = []
                ended.append(playback)

        if ended is not None:
            for playback in ended:
                slot.remove(playback)
                playback.finished = True
                if playback.on_done is not None:
                    playback.on_done(playback)
