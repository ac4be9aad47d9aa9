"""Micro-benchmark: the media clock's cost per frame, old and new send path side by side.

Run from the repository root::

    python benchmarks/clock_tick.py                  # 250, 500, 1000, 2000 streams
    python benchmarks/clock_tick.py --streams 1000 --rounds 5

Every stream owns a real non-blocking UDP socket connected to one of a few sink sockets
on 127.0.0.1, as voice connections do, so each frame pays for a real transport
encryption and a real ``send``. ``now`` is injected and set to each tick's own time
before ``run_tick``, so every tick sends exactly its slot's frames without sleeping,
and the loop measures only the clock's own work: one period (20 ticks) sends one frame
per stream.

``baseline`` is the clock as it was before the performance work (a ``_send`` method
call per frame, the RTP timestamp recomputed from the intended time, attribute chains
in the loop), kept here verbatim as a subclass so that the two run in one process on
the same sockets. The two alternate round by round, because these machines' speed
drifts by up to 1.8x over minutes; compare the ratio, not the absolute figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import time
from collections.abc import Callable

from voicesim.media import load_fixtures
from voicesim.protocol import TransportCipher
from voicesim.voice import MediaClock, Playback
from voicesim.voice._clock import FRAME_NS, SLOTS, TICK_NS, _pack_header

_SINKS = 8
_PERIODS = 25  # per measurement: 0.5 s of audio per stream


class BaselineClock(MediaClock):
    """The media clock's per-frame path before the performance work, for comparison."""

    def run_tick(self) -> None:
        if self._pending:
            with self._lock:
                pending, self._pending = self._pending, []
            for playback in pending:
                self._wheel[playback.stream.slot].append(playback)

        slot = self._wheel[self._tick % SLOTS]
        self._tick += 1
        if not slot:
            return

        horizon = self._now() + TICK_NS // 2
        finished: list[Playback] = []
        for playback in slot:
            if playback.cancelled or playback.stream.closed:
                finished.append(playback)
                continue
            intended = playback.t0_ns + playback.index * FRAME_NS
            if intended > horizon:
                continue
            self._baseline_send(playback, intended)
            if playback.index >= len(playback.frames):
                finished.append(playback)

        for playback in finished:
            slot.remove(playback)
            playback.finished = True
            if playback.on_done is not None:
                playback.on_done(playback)

    def _baseline_send(self, playback: Playback, intended: int) -> None:
        stream = playback.stream
        frame = playback.frames[playback.index]
        playback.index += 1
        if stream.encrypt_frame is not None:
            frame = stream.encrypt_frame(frame)

        seq = stream.seq
        stream.seq = (seq + 1) & 0xFFFF
        header = _pack_header(
            0x80, 0x78, seq, stream.rtp_timestamp_for(intended), stream.ssrc
        )
        packet = stream.cipher.encrypt(header, frame, stream.nonce.next())
        try:
            stream.sock.send(packet)
        except OSError:
            stream.send_errors += 1
            return

        sent_ns = self._now()
        stream.frames_sent += 1
        stream.lateness.record(sent_ns - intended)
        if playback.first_sent_ns is None:
            playback.first_sent_ns = sent_ns
        playback.last_sent_ns = sent_ns


def _raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def _drain(sinks: list[socket.socket]) -> None:
    for sink in sinks:
        while True:
            try:
                sink.recv(4096)
            except BlockingIOError:
                break


def _measure(
    make: Callable[..., MediaClock],
    socks: list[socket.socket],
    sinks: list[socket.socket],
    frames: list[bytes],
    mode: str,
) -> float:
    """CPU seconds per frame of ``_PERIODS`` periods of ``run_tick`` for all streams."""
    fake = [0]

    def now() -> int:
        return fake[0]

    clock = make(now=now)
    key = os.urandom(32)
    for i, sock in enumerate(socks):
        stream = clock.open_stream(sock, TransportCipher(mode, key), 1000 + i)
        clock.play(stream, frames)

    # One period to place every playback on the wheel and reach its t0, then measure.
    epoch = clock.epoch_ns
    tick = 0
    for _ in range(2 * SLOTS):
        fake[0] = epoch + tick * TICK_NS
        clock.run_tick()
        tick += 1
    _drain(sinks)

    ticks = _PERIODS * SLOTS
    start = time.thread_time()
    for _ in range(ticks):
        fake[0] = epoch + tick * TICK_NS
        clock.run_tick()
        tick += 1
    elapsed = time.thread_time() - start
    _drain(sinks)
    return elapsed / (_PERIODS * len(socks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--streams", type=int, nargs="+", default=[250, 500, 1000, 2000]
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--mode",
        default="aead_aes256_gcm_rtpsize",
        choices=["aead_aes256_gcm_rtpsize", "aead_xchacha20_poly1305_rtpsize"],
    )
    args = parser.parse_args()

    _raise_nofile(max(args.streams) + 256)
    fixture = load_fixtures().utterances[0]
    # Long enough that no playback ends inside a measurement.
    frames = list(fixture.frames) * (1 + (3 * _PERIODS) // len(fixture.frames))

    sinks = []
    for _ in range(_SINKS):
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 23)
        sink.bind(("127.0.0.1", 0))
        sink.setblocking(False)
        sinks.append(sink)

    print(f"load average before: {os.getloadavg()}")
    print(f"{'streams':>8} {'baseline us':>12} {'current us':>11} {'ratio':>6}")
    for count in args.streams:
        socks = []
        for i in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.connect(sinks[i % _SINKS].getsockname())
            sock.setblocking(False)
            socks.append(sock)
        old: list[float] = []
        new: list[float] = []
        for _ in range(args.rounds):
            old.append(_measure(BaselineClock, socks, sinks, frames, args.mode))
            new.append(_measure(MediaClock, socks, sinks, frames, args.mode))
        old_us = statistics.median(old) * 1e6
        new_us = statistics.median(new) * 1e6
        print(f"{count:>8} {old_us:>12.2f} {new_us:>11.2f} {old_us / new_us:>6.2f}")
        for sock in socks:
            sock.close()
    print(f"load average after:  {os.getloadavg()}")
    for sink in sinks:
        sink.close()


if __name__ == "__main__":
    main()
