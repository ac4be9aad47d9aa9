"""What the emulator's UDP relay costs per packet it forwards, next to the bare crypto.

Run it as ``python benchmarks/relay.py`` (``--help`` for the room sizes, payload sizes,
rounds and packets per round). The relay (``voicesim/emulator/_relay.py``) opens every
packet with its sender's transport key and seals it again for each other member of
the channel with that member's key and nonce counter, as Discord's media servers do.
This script measures how far above the cryptography alone that path costs, so that a
swarm's emulator CPU can be read as crypto, sockets or relay bookkeeping.

Everything is real and on loopback: one :class:`~voicesim.emulator._relay.Relay`
bound to 127.0.0.1, one channel (a ``RelayRoom``) whose members each own a UDP socket,
learn their address through the relay's IP discovery over UDP, and hold a
``TransportCipher`` under their own random key, as the voice gateway leaves them after
Select Protocol and op 5 Speaking. The first member speaks: its packets are sealed
with its key and increasing nonces (outside the timed region), and the rest receive.

Cases, each run in every round in rotating order (these machines' speed drifts by up
to 1.8x over minutes, so only figures from one run compare):

- ``relay.run``: the relay's real receive loop. The sender's packets are sent to the
  relay's socket first; the timed part starts ``Relay.run`` under trio and stops it
  when the relay's counters show every packet relayed, so it pays for ``recvfrom``,
  classification, one decryption, one encryption and one ``sendto`` per receiver.
- ``relay.handle``: the same datagrams handed straight to ``Relay.handle``, the
  relay's per-datagram handler (no ``recvfrom``, no trio).
- ``crypto + sendto``: ``TransportCipher.decrypt`` once and ``TransportCipher.encrypt``
  plus a plain ``sendto`` per receiver, from voicesim.protocol, written as a bare loop.
- ``crypto only``: the same loop without the sends, the floor any relay pays.

Times are CPU time of this (only) thread, ``time.thread_time``, so other processes on
the shared machine slow the figures less than wall time would; on loopback a sender
also pays for the receiving side's kernel work. The table shows the best round (the
least disturbed, used for the ratios) and the median round, per incoming packet, with
packets per CPU-second incoming and forwarded. After every relay case the relay's
counters and the receivers' sockets are checked: every packet relayed, every copy
delivered, nothing dropped; a shortfall is printed under the table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

# Run from a checkout without installing: the repository root holds the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voicesim.emulator._counters import Counters
from voicesim.emulator._relay import Relay, RelayMember, RelayRoom
from voicesim.protocol import (
    EncryptionMode,
    NonceCounter,
    TransportCipher,
    build_discovery_request,
    open_rtp,
    parse_discovery_response,
    seal_rtp,
)

FIRST_SSRC = 1000
FIRST_USER = 900_000_000_000_000_000
_SOCKET_BUFFER = 1 << 22
_MODES = {
    "aes-gcm": EncryptionMode.AES256_GCM,
    "xchacha": EncryptionMode.XCHACHA20_POLY1305,
}
# How long the relay loop may take to relay one round before the case gives up.
_ROUND_TIMEOUT = 30.0


@attrs.define
class Peer:
    """One channel member: its socket and the relay's view of it."""

    sock: socket.socket
    member: RelayMember

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port


@attrs.define
class Problems:
    """What went missing in the relay cases, summed over the rounds."""

    not_relayed: int = 0
    not_delivered: int = 0
    dropped: dict[str, int] = attrs.field(factory=dict)

    def lines(self) -> list[str]:
        out = []
        if self.not_relayed:
            out.append(f"  {self.not_relayed} packets were not relayed in time")
        if self.not_delivered:
            out.append(f"  {self.not_delivered} forwarded copies never arrived")
        for reason, count in sorted(self.dropped.items()):
            out.append(f"  the relay dropped {count} datagrams as {reason!r}")
        return out


def _cipher(peer: Peer) -> TransportCipher:
    cipher = peer.member.cipher
    assert cipher is not None, "every member selected a protocol in Room()"
    return cipher


def _udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
    sock.bind(("127.0.0.1", 0))
    return sock


def _drain(sock: socket.socket) -> list[bytes]:
    received = []
    while True:
        try:
            received.append(sock.recv(2048))
        except BlockingIOError:
            return received


async def _run_relay_until(relay: Relay, done: Callable[[], bool]) -> bool:
    """Run the relay's receive loop until ``done()``; False if that took too long."""
    with trio.move_on_after(_ROUND_TIMEOUT) as timeout:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay.run)
            while not done():
                # The relay checkpoints after each batch and blocks when its socket
                # is empty, so this runs between batches and once at the end.
                await trio.sleep(0)
            nursery.cancel_scope.cancel()
    return not timeout.cancelled_caught


class Room:
    """A relay and one channel of ``members`` peers in ``mode``; peer 0 speaks."""

    def __init__(self, mode: EncryptionMode, members: int, payload_size: int) -> None:
        self.counters = Counters()
        self.relay = Relay(self.counters)
        self.relay.bind("127.0.0.1", 0)
        self.relay_address = (self.relay.ip, self.relay.port)
        room = RelayRoom((1, 1))
        self.peers = [
            Peer(_udp_socket(), self.relay.add(room, FIRST_SSRC + i, FIRST_USER + i))
            for i in range(members)
        ]
        for peer in self.peers:
            # What the voice gateway does on Select Protocol and on op 5 Speaking.
            peer.member.cipher = TransportCipher(mode, os.urandom(32))
            peer.member.speaking = True
        # Every case hands the relay at most what a receive buffer holds (the relay
        # asks for the same size as these sockets; a datagram this size takes about
        # 1 KiB of it on loopback) and the receivers are drained in between, untimed,
        # so that no packet is lost where the system caps socket buffers lower.
        buffer = min(
            p.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) for p in self.peers
        )
        self.chunk = max(64, buffer // 2048)
        self.sender = self.peers[0]
        self.receivers = self.peers[1:]
        self.payload = os.urandom(payload_size)
        self._seq = 0
        self._nonce = NonceCounter(1)
        self.problems = Problems()

    def close(self) -> None:
        self.relay.close()
        for peer in self.peers:
            peer.sock.close()

    async def discover(self) -> None:
        """Every member learns its address from the relay, over UDP."""
        for peer in self.peers:
            peer.sock.sendto(
                build_discovery_request(peer.member.ssrc), self.relay_address
            )
        wanted = len(self.peers)
        if not await _run_relay_until(
            self.relay, lambda: self.counters.discovery_replies >= wanted
        ):
            raise RuntimeError("the relay did not answer IP discovery")
        for peer in self.peers:
            replies = _drain(peer.sock)
            ssrc, host, port = parse_discovery_response(replies[0])
            if (ssrc, (host, port)) != (peer.member.ssrc, peer.address):
                raise RuntimeError(f"discovery answered {ssrc} {host}:{port} wrongly")
            if peer.member.address != peer.address:
                raise RuntimeError("the relay did not bind the member's address")

    def sealed_packets(self, count: int) -> list[bytes]:
        """The sender's next ``count`` packets, as its voice connection seals them."""
        cipher = _cipher(self.sender)
        packets = []
        for _ in range(count):
            self._seq = (self._seq + 1) & 0xFFFF
            packets.append(
                seal_rtp(
                    cipher,
                    self._seq,
                    self._seq * 960,
                    self.sender.member.ssrc,
                    self.payload,
                    self._nonce.next(),
                )
            )
        return packets

    def check_delivery(self, count: int, before: Counters) -> None:
        """Every packet relayed, every copy at its receiver; else counted."""
        relayed = self.counters.relayed_packets - before.relayed_packets
        self.problems.not_relayed += count - relayed
        for reason, total in self.counters.dropped.items():
            new = total - before.dropped[reason]
            if new:
                self.problems.dropped[reason] = (
                    self.problems.dropped.get(reason, 0) + new
                )
        for peer in self.receivers:
            self.problems.not_delivered += count - len(_drain(peer.sock))

    def check_content(self) -> None:
        """A relayed packet opens at each receiver with its own key, unchanged."""
        packet = self.sealed_packets(1)[0]
        self.relay.handle(packet, self.sender.address)
        for peer in self.receivers:
            (data,) = _drain(peer.sock)
            received = open_rtp(_cipher(peer), data)
            if received.payload != self.payload or received.seq != self._seq:
                raise RuntimeError("a relayed packet did not decrypt to what was sent")

    def snapshot(self) -> Counters:
        copy = Counters()
        copy.relayed_packets = self.counters.relayed_packets
        copy.dropped = self.counters.dropped.copy()
        return copy


# -- the cases: each takes the round's packets and returns the CPU seconds spent -----


async def relay_run(room: Room, packets: list[bytes]) -> float:
    sock = room.sender.sock
    for packet in packets:
        sock.sendto(packet, room.relay_address)
    before = room.snapshot()
    target = before.relayed_packets + len(packets)
    counters = room.counters
    start = time.thread_time()
    await _run_relay_until(room.relay, lambda: counters.relayed_packets >= target)
    elapsed = time.thread_time() - start
    room.check_delivery(len(packets), before)
    return elapsed


async def relay_handle(room: Room, packets: list[bytes]) -> float:
    handle = room.relay.handle
    address = room.sender.address
    before = room.snapshot()
    start = time.thread_time()
    for packet in packets:
        handle(packet, address)
    elapsed = time.thread_time() - start
    room.check_delivery(len(packets), before)
    return elapsed


def _bare_receivers(
    room: Room,
) -> list[tuple[TransportCipher, NonceCounter, tuple[str, int]]]:
    # Their own nonce counters: the bare loops must not move the relay's.
    return [(_cipher(p), NonceCounter(1), p.address) for p in room.receivers]


async def crypto_sendto(room: Room, packets: list[bytes]) -> float:
    decrypt = _cipher(room.sender).decrypt
    receivers = _bare_receivers(room)
    with _udp_socket() as sock:
        sendto = sock.sendto
        start = time.thread_time()
        for packet in packets:
            header, body = decrypt(packet)
            for cipher, nonce, address in receivers:
                sendto(cipher.encrypt(header, body, nonce.next()), address)
        elapsed = time.thread_time() - start
    for peer in room.receivers:
        room.problems.not_delivered += len(packets) - len(_drain(peer.sock))
    return elapsed


async def crypto_only(room: Room, packets: list[bytes]) -> float:
    decrypt = _cipher(room.sender).decrypt
    receivers = _bare_receivers(room)
    start = time.thread_time()
    for packet in packets:
        header, body = decrypt(packet)
        for cipher, nonce, _address in receivers:
            cipher.encrypt(header, body, nonce.next())
    return time.thread_time() - start


CASES = [
    ("relay.run (recvfrom + handle)", relay_run),
    ("relay.handle", relay_handle),
    ("crypto + sendto", crypto_sendto),
    ("crypto only", crypto_only),
]


async def measure(room: Room, rounds: int, packets: int) -> dict[str, list[float]]:
    """Microseconds of CPU per incoming packet, per case, one figure per round."""
    results: dict[str, list[float]] = {name: [] for name, _ in CASES}
    for round_index in range(rounds + 1):
        # Rotate the order so that no case always runs first or last in a round.
        shift = round_index % len(CASES)
        for name, case in CASES[shift:] + CASES[:shift]:
            seconds = 0.0
            for start in range(0, packets, room.chunk):
                count = min(room.chunk, packets - start)
                seconds += await case(room, room.sealed_packets(count))
            if round_index > 0:  # the first round only warms up
                results[name].append(seconds / packets * 1e6)
    return results


def report(
    results: dict[str, list[float]], label: str, receivers: int, problems: Problems
) -> str:
    floor = min(results["crypto only"])
    rounds = len(results["crypto only"])
    lines = [
        f"{label}: {receivers} receiver{'s' if receivers != 1 else ''}, "
        f"{rounds} round{'s' if rounds != 1 else ''}; "
        "CPU microseconds per incoming packet",
        f"{'case':<30} {'best':>8} {'median':>8} {'pkts/CPU-s':>11} "
        f"{'fwd/CPU-s':>10} {'x crypto':>9}",
        "-" * 81,
    ]
    for name, figures in results.items():
        best = min(figures)
        lines.append(
            f"{name:<30} {best:>8.2f} {statistics.median(figures):>8.2f} "
            f"{1e6 / best:>11,.0f} {receivers * 1e6 / best:>10,.0f} "
            f"{best / floor:>9.2f}"
        )
    lines.extend(problems.lines())
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> None:
    for payload_size in args.payload_sizes:
        for mode_name in args.modes:
            for members in args.members:
                room = Room(_MODES[mode_name], members, payload_size)
                try:
                    await room.discover()
                    room.check_content()
                    results = await measure(room, args.rounds, args.packets)
                finally:
                    room.close()
                label = f"{mode_name}, {payload_size} B Opus payload"
                print(report(results, label, members - 1, room.problems), flush=True)
                print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="rounds (default 9)")
    parser.add_argument(
        "--packets", type=int, default=2_000, help="packets per case per round"
    )
    parser.add_argument(
        "--members",
        type=int,
        nargs="+",
        default=[2, 5],
        help="channel members, sender included (default 2 5: one session per "
        "guild, and four users with the agent in one channel)",
    )
    parser.add_argument(
        "--payload-sizes",
        type=int,
        nargs="+",
        default=[120],
        help="Opus bytes per packet (default 120)",
    )
    parser.add_argument(
        "--modes", nargs="+", choices=list(_MODES), default=list(_MODES)
    )
    args = parser.parse_args()
    if min(args.members) < 2:
        parser.error("--members needs a sender and at least one receiver")

    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print()
    trio.run(main_async, args)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
