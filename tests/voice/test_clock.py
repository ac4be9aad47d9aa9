"""The media clock's schedule, driven by hand with a fake clock and a fake socket."""

from __future__ import annotations

import itertools
import socket
import struct
import threading
from collections.abc import Callable

import pytest

from voicesim.protocol import TransportCipher, open_rtp
from voicesim.protocol._transport import NonceCounter
from voicesim.voice import MediaClock, OutboundStream, Playback

FRAME_NS = 20_000_000
TICK_NS = 1_000_000
AES = "aead_aes256_gcm_rtpsize"
XCHACHA = "aead_xchacha20_poly1305_rtpsize"
KEY = bytes(range(32))


class FakeTime:
    """A monotonic clock in ns that only moves when told to (or when slept on)."""

    def __init__(self, start_ns: int = 0) -> None:
        self.ns = start_ns
        self.on_sleep: Callable[[], None] | None = None

    def now(self) -> int:
        return self.ns

    def sleep(self, seconds: float) -> None:
        self.ns += round(seconds * 1e9)
        if self.on_sleep is not None:
            self.on_sleep()


class FakeSocket:
    """Records every datagram with the fake time it was sent at.

    ``cost_ns`` moves the fake clock forward on each send, as a real send takes time;
    ``fail`` decides, from the index of the call, whether it raises an OSError;
    ``during_send`` runs inside a send, as another thread would.
    """

    def __init__(self, time: FakeTime, *, cost_ns: int = 0) -> None:
        self.time = time
        self.cost_ns = cost_ns
        self.sent: list[tuple[int, bytes]] = []
        self.calls = 0
        self.fail: Callable[[int], bool] = lambda call: False
        self.during_send: Callable[[int], None] = lambda call: None

    def send(self, data: bytes) -> int:
        call = self.calls
        self.calls += 1
        self.during_send(call)
        self.time.ns += self.cost_ns
        if self.fail(call):
            raise BlockingIOError(11, "Resource temporarily unavailable")
        self.sent.append((self.time.ns, bytes(data)))
        return len(data)


def make_clock(
    start_ns: int = 0, lead_ns: int = 2 * TICK_NS
) -> tuple[MediaClock, FakeTime]:
    time = FakeTime(start_ns)
    clock = MediaClock(now=time.now, sleep=time.sleep, lead_ns=lead_ns)
    return clock, time


def drive(clock: MediaClock, time: FakeTime, ticks: int, *, first: int = 0) -> None:
    """Run ticks ``first .. first + ticks - 1``, each exactly at its own time."""
    for tick in range(first, first + ticks):
        time.ns = clock.epoch_ns + tick * TICK_NS
        clock.run_tick()


def frames(count: int) -> list[bytes]:
    return [bytes([n % 256]) * (40 + n % 7) for n in range(count)]


def header(packet: bytes) -> tuple[int, int, int]:
    """``(seq, rtp_timestamp, ssrc)`` from a packet's clear RTP header."""
    _, _, seq, timestamp, ssrc = struct.unpack_from(">BBHII", packet)
    return seq, timestamp, ssrc


def nonce_of(packet: bytes) -> int:
    value: int = struct.unpack(">I", packet[-4:])[0]
    return value


def test_frames_go_out_at_t0_plus_n_periods_on_the_stream_slot() -> None:
    """Each frame is sent exactly at t0 + n * 20 ms, and t0 lies on the stream's slot."""
    clock, time = make_clock(start_ns=5_000_000_000)
    sock = FakeSocket(time)
    stream = clock.open_stream(sock, TransportCipher(AES, KEY), 1234, slot=3)
    playback = clock.play(stream, frames(6))

    drive(clock, time, 200)

    assert (playback.t0_ns - clock.epoch_ns) % FRAME_NS == 3 * TICK_NS
    assert [t for t, _ in sock.sent] == [
        playback.t0_ns + n * FRAME_NS for n in range(6)
    ]
    assert [playback.intended_ns(n) for n in range(6)] == [t for t, _ in sock.sent]
    assert stream.frames_sent == 6
    assert playback.finished
    assert playback.first_sent_ns == playback.t0_ns
    assert playback.last_sent_ns == playback.t0_ns + 5 * FRAME_NS


def test_streams_are_spread_over_the_twenty_slots() -> None:
    """Streams opened without a slot fill the slots round-robin and send on their own tick."""
    clock, time = make_clock()
    socks = [FakeSocket(time) for _ in range(45)]
    streams = [
        clock.open_stream(s, TransportCipher(AES, KEY), 100 + i)
        for i, s in enumerate(socks)
    ]

    assert [s.slot for s in streams] == [i % 20 for i in range(45)]

    for stream in streams:
        clock.play(stream, frames(2))
    drive(clock, time, 100)

    for stream, sock in zip(streams, socks, strict=True):
        assert len(sock.sent) == 2
        for sent_ns, _ in sock.sent:
            assert (sent_ns - clock.epoch_ns) // TICK_NS % 20 == stream.slot


@pytest.mark.parametrize(
    ("slot", "expected_ms"),
    [(8, 68), (10, 50), (9, 49), (0, 60)],
)
def test_playback_scheduled_mid_period_starts_at_the_slot_next_period_after_lead(
    slot: int, expected_ms: int
) -> None:
    """t0 is the first time on the stream's slot that is at least lead_ns from now."""
    clock, time = make_clock(lead_ns=2 * TICK_NS)
    stream = clock.open_stream(
        FakeSocket(time), TransportCipher(AES, KEY), 7, slot=slot
    )
    time.ns = clock.epoch_ns + 47_000_000

    playback = clock.play(stream, frames(1))

    assert playback.t0_ns == clock.epoch_ns + expected_ms * 1_000_000
    assert playback.t0_ns - time.ns >= 2 * TICK_NS
    assert playback.t0_ns - FRAME_NS < time.ns + 2 * TICK_NS


def test_playback_with_a_start_time_begins_on_its_millisecond_and_moves_the_stream() -> (
    None
):
    """``start_ns`` starts frame 0 on the first millisecond at or after it."""
    clock, time = make_clock()
    sock = FakeSocket(time)
    stream = clock.open_stream(sock, TransportCipher(AES, KEY), 9, slot=0)

    start = clock.epoch_ns + 57 * TICK_NS + 300_000  # inside millisecond 57
    playback = clock.play(stream, frames(2), start_ns=start)
    assert playback.t0_ns == clock.epoch_ns + 58 * TICK_NS
    assert playback.slot == stream.slot == 58 % 20

    drive(clock, time, 100)
    assert [t for t, _ in sock.sent] == [playback.intended_ns(n) for n in range(2)]
    # The next talk spurt keeps the new cadence.
    later = clock.play(stream, frames(1))
    assert (later.t0_ns - clock.epoch_ns) // TICK_NS % 20 == 18


def test_start_time_already_past_is_kept_to_the_clocks_lead() -> None:
    """A start time in the past begins as soon as the lead allows, never earlier."""
    clock, time = make_clock(lead_ns=2 * TICK_NS)
    stream = clock.open_stream(FakeSocket(time), TransportCipher(AES, KEY), 9)
    time.ns = clock.epoch_ns + 40 * TICK_NS
    playback = clock.play(stream, frames(1), start_ns=clock.epoch_ns)
    assert playback.t0_ns == clock.epoch_ns + 42 * TICK_NS


def test_playback_never_starts_before_its_t0() -> None:
    """A playback scheduled mid-period sends nothing until its first intended time."""
    clock, time = make_clock()
    sock = FakeSocket(time)
    stream = clock.open_stream(sock, TransportCipher(AES, KEY), 7, slot=1)
    drive(clock, time, 27)
    playback = clock.play(stream, frames(3))
    assert sock.sent == []

    drive(clock, time, 100, first=27)

    assert playback.t0_ns == clock.epoch_ns + 41 * TICK_NS
    assert [t for t, _ in sock.sent] == [
        playback.t0_ns + n * FRAME_NS for n in range(3)
    ]


def test_lateness_recorded_is_actual_minus_intended_send_time() -> None:
    """A tick run late and a slow send both show up, exactly, as send lateness."""
    clock, time = make_clock()
    sock = FakeSocket(time, cost_ns=250_000)
    stream = clock.open_stream(sock, TransportCipher(AES, KEY), 9, slot=4)
    playback = clock.play(stream, frames(4))

    # Every tick runs 300 us after its time, so each frame leaves 550 us late.
    for tick in range(120):
        time.ns = clock.epoch_ns + tick * TICK_NS + 300_000
        clock.run_tick()

    assert stream.lateness.total == 4
    assert stream.lateness.max_ns == 550_000
    assert stream.lateness.sum_ns == 4 * 550_000
    assert [t for t, _ in sock.sent] == [
        playback.intended_ns(n) + 550_000 for n in range(4)
    ]
    assert playback.first_sent_ns == playback.t0_ns + 550_000


def test_lateness_so_far_pools_every_stream_the_clock_opened() -> None:
    """The live figure pools all streams' lateness, as their own histograms hold it."""
    clock, time = make_clock()
    fast = clock.open_stream(FakeSocket(time), TransportCipher(AES, KEY), 1, slot=2)
    slow = clock.open_stream(
        FakeSocket(time, cost_ns=3_000_000), TransportCipher(AES, KEY), 2, slot=3
    )
    clock.play(fast, frames(3))
    clock.play(slow, frames(5))
    drive(clock, time, 200)

    pooled = clock.lateness_so_far()
    assert pooled.total == fast.lateness.total + slow.lateness.total == 8
    assert pooled.max_ns == slow.lateness.max_ns >= 3_000_000
    assert pooled.percentile(99) == (fast.lateness + slow.lateness).percentile(99)


def test_clock_that_falls_behind_catches_up_tick_by_tick_without_skipping() -> None:
    """After a 45 ms stall the thread sends every missed frame in order, then is on time."""
    clock, time = make_clock()
    sock = FakeSocket(time)
    stream = clock.open_stream(sock, TransportCipher(AES, KEY), 11, slot=0)

    def stall(call: int) -> None:
        if call == 2:
            time.ns += 45_000_000

    sock.during_send = stall
    done: list[Playback] = []

    def finished(playback: Playback) -> None:
        done.append(playback)
        clock.stop()

    playback = clock.play(stream, frames(8), on_done=finished)
    clock.run()

    assert done == [playback]
    assert [header(p)[0] for _, p in sock.sent] == list(range(8))
    sent = [t for t, _ in sock.sent]
    late = [t - playback.intended_ns(n) for n, t in enumerate(sent)]
    t0 = playback.t0_ns
    # Frame 2 took the stall; 3 and 4 went out in the catch-up burst right after it.
    assert late[:2] == [0, 0]
    assert late[2] == 45_000_000
    assert sent[3] == sent[4] == t0 + 85_000_000
    assert late[3] == 25_000_000
    assert late[4] == 5_000_000
    assert late[5:] == [0, 0, 0]
    assert clock.ticks_behind_max >= 40
    assert stream.lateness.total == 8


def test_cancel_stops_after_the_current_frame_and_calls_on_done() -> None:
    """Cancelling while a frame is being sent lets that frame go, then nothing more."""
    clock, time = make_clock()
    sock = FakeSocket(time)
    stream = clock.open_stream(sock, TransportCipher(AES, KEY), 13, slot=2)
    done: list[Playback] = []
    playback = clock.play(stream, frames(10), on_done=done.append)

    def cancel_on_third(call: int) -> None:
        if call == 2:
            playback.cancel()

    sock.during_send = cancel_on_third
    drive(clock, time, 400)

    assert len(sock.sent) == 3
    assert done == [playback]
    assert playback.finished
    assert playback.cancelled


def test_closed_stream_is_dropped_from_the_wheel() -> None:
    """Closing a stream ends its playbacks, and a playback on a closed stream sends nothing."""
    clock, time = make_clock()
    sock = FakeSocket(time)
    stream = clock.open_stream(sock, TransportCipher(AES, KEY), 15, slot=5)
    done: list[Playback] = []
    first = clock.play(stream, frames(10), on_done=done.append)
    drive(clock, time, 60)
    sent_before = len(sock.sent)
    assert sent_before == 3

    stream.closed = True
    second = clock.play(stream, frames(5), on_done=done.append)
    drive(clock, time, 200, first=60)

    assert len(sock.sent) == sent_before
    assert done == [first, second]
    assert first.finished
    assert second.finished


def test_send_errors_are_counted_not_raised() -> None:
    """An OSError from the socket loses one frame, counted; the clock and stream go on."""
    clock, time = make_clock()
    sock = FakeSocket(time)
    sock.fail = lambda call: call in (1, 3)
    stream = clock.open_stream(sock, TransportCipher(AES, KEY), 17, slot=6)
    other_sock = FakeSocket(time)
    other = clock.open_stream(other_sock, TransportCipher(AES, KEY), 18, slot=6)
    done: list[Playback] = []
    clock.play(stream, frames(6), on_done=done.append)
    clock.play(other, frames(6), on_done=done.append)

    drive(clock, time, 200)

    assert stream.send_errors == 2
    assert stream.frames_sent == 4
    assert stream.lateness.total == 4
    # The lost frames used their sequence numbers, so a receiver sees them as loss.
    assert [header(p)[0] for _, p in sock.sent] == [0, 2, 4, 5]
    assert other.send_errors == 0
    assert other.frames_sent == 6
    assert len(done) == 2


def test_rtp_seq_timestamp_and_nonce_advance_and_wrap() -> None:
    """seq wraps at 0xFFFF, the RTP timestamp at 2**32 and the nonce counter at 2**32."""
    clock, time = make_clock(start_ns=0)
    sock = FakeSocket(time)
    stream = clock.open_stream(sock, TransportCipher(AES, KEY), 0xDEADBEEF, slot=0)
    stream.seq = 0xFFFD
    stream.nonce = NonceCounter(2**32 - 2)

    # Start just before the RTP timestamp wraps: 960 samples per 20 ms period.
    wrap_period = 2**32 // 960
    start_period = wrap_period - 2
    start_ns = clock.epoch_ns + start_period * FRAME_NS
    time.ns = start_ns - 5 * TICK_NS
    clock.play(stream, frames(6))
    for tick in range(200):
        time.ns = start_ns + tick * TICK_NS
        clock.run_tick()

    headers = [header(p) for _, p in sock.sent]
    assert [seq for seq, _, _ in headers] == [0xFFFD, 0xFFFE, 0xFFFF, 0, 1, 2]
    assert {ssrc for _, _, ssrc in headers} == {0xDEADBEEF}
    stamps = [ts for _, ts, _ in headers]
    assert stamps[0] == (start_period * 960) & 0xFFFFFFFF
    assert all((b - a) % 2**32 == 960 for a, b in itertools.pairwise(stamps))
    assert any(b < a for a, b in itertools.pairwise(stamps))
    assert [nonce_of(p) for _, p in sock.sent] == [2**32 - 2, 2**32 - 1, 0, 1, 2, 3]
    assert stream.seq == 3


def test_rtp_timestamps_follow_intended_time_across_utterances() -> None:
    """A gap between two playbacks shows as a jump of whole periods in RTP timestamps."""
    clock, time = make_clock()
    sock = FakeSocket(time)
    stream = clock.open_stream(sock, TransportCipher(AES, KEY), 21, slot=0)
    first = clock.play(stream, frames(2))
    drive(clock, time, 100)
    second = clock.play(stream, frames(2))
    drive(clock, time, 100, first=100)

    stamps = [header(p)[1] for _, p in sock.sent]
    assert stamps[1] - stamps[0] == 960
    periods = (second.t0_ns - first.t0_ns) // FRAME_NS
    assert stamps[2] - stamps[0] == periods * 960
    assert [header(p)[0] for _, p in sock.sent] == [0, 1, 2, 3]


@pytest.mark.parametrize("mode", [AES, XCHACHA])
def test_packets_decrypt_with_open_rtp_under_the_same_key(mode: str) -> None:
    """Every packet opens with a TransportCipher of the stream's key to the frame sent."""
    clock, time = make_clock()
    sock = FakeSocket(time)
    stream = clock.open_stream(sock, TransportCipher(mode, KEY), 4242, slot=7)
    sent_frames = frames(5)
    clock.play(stream, sent_frames)
    drive(clock, time, 200)

    receiver = TransportCipher(mode, KEY)
    opened = [open_rtp(receiver, p) for _, p in sock.sent]
    assert [r.payload for r in opened] == sent_frames
    assert [r.seq for r in opened] == list(range(5))
    assert {r.ssrc for r in opened} == {4242}
    assert {r.payload_type for r in opened} == {0x78}
    assert [nonce_of(p) for _, p in sock.sent] == list(range(5))


def test_encrypt_frame_hook_runs_per_frame_before_transport_encryption() -> None:
    """The stream's encrypt_frame sees each Opus frame, and its output is what is sealed."""
    clock, time = make_clock()
    sock = FakeSocket(time)
    seen: list[bytes] = []

    def wrap(frame: bytes) -> bytes:
        seen.append(frame)
        return b"E2E" + frame[::-1]

    stream = clock.open_stream(
        sock, TransportCipher(AES, KEY), 55, slot=1, encrypt_frame=wrap
    )
    sent_frames = frames(4)
    clock.play(stream, sent_frames)
    drive(clock, time, 200)

    receiver = TransportCipher(AES, KEY)
    assert seen == sent_frames
    assert [open_rtp(receiver, p).payload for _, p in sock.sent] == [
        b"E2E" + f[::-1] for f in sent_frames
    ]


def test_encrypt_frame_set_after_open_is_used() -> None:
    """A DAVE hook attached to an already open stream applies from the next frame on."""
    clock, time = make_clock()
    sock = FakeSocket(time)
    stream = clock.open_stream(sock, TransportCipher(AES, KEY), 56, slot=1)
    clock.play(stream, frames(4))
    drive(clock, time, 30)
    stream.encrypt_frame = lambda frame: b"X" + frame
    drive(clock, time, 100, first=30)

    receiver = TransportCipher(AES, KEY)
    payloads = [open_rtp(receiver, p).payload for _, p in sock.sent]
    assert payloads == [frames(4)[0], *(b"X" + f for f in frames(4)[1:])]


def test_clock_thread_sends_real_datagrams_on_loopback() -> None:
    """Started as a thread, the clock sends a playback over a real UDP socket and stops."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5.0)
        sender.connect(receiver.getsockname())
        sender.setblocking(False)
        clock = MediaClock()
        stream: OutboundStream = clock.open_stream(
            sender, TransportCipher(AES, KEY), 77
        )
        done = threading.Event()
        clock.start()
        try:
            clock.play(stream, frames(3), on_done=lambda _: done.set())
            assert done.wait(5.0)
        finally:
            clock.stop()

        cipher = TransportCipher(AES, KEY)
        payloads = [open_rtp(cipher, receiver.recv(2048)).payload for _ in range(3)]
        assert payloads == frames(3)
        assert stream.frames_sent == 3
        assert stream.lateness.total == 3


def test_clock_thread_asks_for_raised_priority_and_says_what_it_got() -> None:
    """The running thread's scheduling matches what the clock reports it got."""
    import os
    import time

    clock = MediaClock()
    clock.start()
    try:
        deadline = time.monotonic() + 5
        while clock.scheduling is None and time.monotonic() < deadline:
            time.sleep(0.01)
        thread = clock._thread
        assert thread is not None and thread.native_id is not None
        policy = os.sched_getscheduler(thread.native_id)
        nice = os.getpriority(os.PRIO_PROCESS, thread.native_id)
        if clock.scheduling == "realtime":
            assert policy == os.SCHED_FIFO
        elif clock.scheduling == "nice":
            assert policy == os.SCHED_OTHER and nice == -10
        else:
            assert clock.scheduling == "normal"
            assert nice == os.getpriority(os.PRIO_PROCESS, 0)
    finally:
        clock.stop()
