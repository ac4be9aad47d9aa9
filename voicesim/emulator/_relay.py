"""The media relay: one UDP socket that does what Discord's media servers do for audio.

Transport encryption is per hop. A packet from a member is opened with that member's
key and sealed again, once per other member of the channel, with the receiver's key
and the receiver's own nonce counter; the sender's SSRC, sequence number and timestamp
stay as they were, and nothing is echoed back to its sender. DAVE frames, when
present, are inside the payload and pass through untouched.

Nothing a datagram contains can stop the relay. Each one is classified in a fixed
order and either answered (discovery), ignored (keepalives) or relayed, or dropped and
counted under a reason:

``malformed``               neither RTP, discovery nor keepalive, or broken RTP
``rtcp``                    RTCP, which the relay neither needs nor forwards
``unknown_ssrc``            no voice session owns the SSRC
``wrong_address``           the SSRC's discovery came from another address
``no_session``              the member has not selected a protocol (no key yet)
``not_speaking``            the member sent no op 5 Speaking within a short hold
``auth_failed``             the AEAD tag did not verify
``discovery_unknown_ssrc``  discovery for an SSRC nobody owns
``discovery_conflict``      discovery for an SSRC already bound to another address
``send_blocked``/``send_failed``  the socket refused a forwarded packet

A packet from a member that has a key but has not sent op 5 yet is held for a moment
rather than dropped at once: @discordjs/voice sends op 5 over the WebSocket and its
first packet over UDP back to back, and the two paths race here, so the packet can
arrive first. Held packets are relayed when op 5 comes, in order, and are counted as
``not_speaking`` drops if it does not come in time.

The loop is written for throughput: a raw non-blocking socket drained after each
``wait_readable``, members found by SSRC in one dict, each member's cipher object made
once per key, and no per-packet work beyond one decryption, one encryption per
receiver and the sends. Each batch is capped so a flood cannot starve the gateways.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct

import trio

from voicesim._exceptions import DecryptionError, RemoteProtocolError
from voicesim.emulator._counters import Counters
from voicesim.protocol._discovery import (
    DISCOVERY_PACKET_SIZE,
    KEEPALIVE_SIZE,
    build_discovery_response,
)
from voicesim.protocol._transport import NonceCounter, TransportCipher

__all__ = ["Relay", "RelayMember", "RelayRoom"]

log = logging.getLogger("voicesim.emulator.relay")

_RECEIVE_SIZE = 2048
_BATCH = 256
_SSRC = struct.Struct(">I")
# Smallest RTP packet under rtpsize AEAD: header, tag and nonce.
_MIN_RTP = 12 + 16 + 4
_DISCOVERY_PREFIX = b"\x00\x01\x00\x46"
_SOCKET_BUFFER = 1 << 22
# How long, and how many, packets sent before op 5 are held for it (see above). The
# window covers the WebSocket path's lag behind UDP, not a client that never speaks.
_HOLD_SECONDS = 0.5
_HOLD_PACKETS = 50


class RelayRoom:
    """The members of one voice channel, in the order they joined."""

    __slots__ = ("key", "members")

    def __init__(self, key: tuple[int, int]) -> None:
        self.key = key
        self.members: list[RelayMember] = []


class RelayMember:
    """One voice session as the relay sees it."""

    __slots__ = (
        "address",
        "cipher",
        "held",
        "nonce",
        "room",
        "speaking",
        "ssrc",
        "user_id",
    )

    def __init__(self, ssrc: int, user_id: int, room: RelayRoom) -> None:
        self.ssrc = ssrc
        self.user_id = user_id
        self.room = room
        self.address: tuple[str, int] | None = None
        self.cipher: TransportCipher | None = None
        # The relay's counter towards this member; discord.js starts at 1, and so do we.
        self.nonce = NonceCounter(1)
        self.speaking = False
        # Packets that came before op 5, with the time until which they are kept.
        self.held: list[tuple[float, bytes]] = []


class Relay:
    """The UDP relay; see the module docstring."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.members: dict[int, RelayMember] = {}
        self._sock: socket.socket | None = None
        self._holding: set[RelayMember] = set()
        self.ip = ""
        self.port = 0

    # -- membership (called by the voice gateway) --------------------------------------

    def add(self, room: RelayRoom, ssrc: int, user_id: int) -> RelayMember:
        member = RelayMember(ssrc, user_id, room)
        self.members[ssrc] = member
        room.members.append(member)
        return member

    def remove(self, member: RelayMember) -> None:
        self._drop_held(member)
        if self.members.get(member.ssrc) is member:
            del self.members[member.ssrc]
        if member in member.room.members:
            member.room.members.remove(member)

    # -- socket ------------------------------------------------------------------------

    def bind(self, host: str, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
        sock.bind((host, port))
        self._sock = sock
        self.ip, self.port = sock.getsockname()[:2]

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def run(self) -> None:
        """Receive and relay until cancelled."""
        sock = self._sock
        if sock is None:
            raise RuntimeError("Relay.run() before bind()")
        recvfrom = sock.recvfrom
        handle = self.handle
        while True:
            if self._holding:
                with trio.move_on_at(min(m.held[0][0] for m in self._holding)):
                    await trio.lowlevel.wait_readable(sock)
                self._expire_held(trio.current_time())
            else:
                await trio.lowlevel.wait_readable(sock)
            for _ in range(_BATCH):
                try:
                    data, address = recvfrom(_RECEIVE_SIZE)
                except BlockingIOError:
                    break
                except OSError:
                    # An ICMP error from an earlier send surfaces here on some systems.
                    self.counters.dropped["send_failed"] += 1
                    continue
                handle(data, address)
            else:
                await trio.lowlevel.checkpoint()

    def handle(self, data: bytes, address: tuple[str, int]) -> None:
        """Classify and act on one datagram (see the module docstring)."""
        size = len(data)
        if size == KEEPALIVE_SIZE and data[4:] == b"\x00\x00\x00\x00":
            self.counters.keepalives += 1
            return
        if size >= _MIN_RTP and data[0] & 0xC0 == 0x80:
            if 200 <= data[1] <= 206:
                self.counters.dropped["rtcp"] += 1
                return
            self._relay(data, address)
            return
        if size == DISCOVERY_PACKET_SIZE and data[:4] == _DISCOVERY_PREFIX:
            self._discover(data, address)
            return
        self.counters.dropped["malformed"] += 1

    def _discover(self, data: bytes, address: tuple[str, int]) -> None:
        ssrc = _SSRC.unpack_from(data, 4)[0]
        member = self.members.get(ssrc)
        if member is None:
            self.counters.dropped["discovery_unknown_ssrc"] += 1
            return
        # The first discovery binds the SSRC to its address; later ones must come
        # from the same place, or anyone could redirect a member's stream.
        if member.address is None:
            member.address = address
        elif member.address != address:
            self.counters.dropped["discovery_conflict"] += 1
            return
        self._send(build_discovery_response(ssrc, address[0], address[1]), address)
        self.counters.discovery_replies += 1

    def _relay(self, data: bytes, address: tuple[str, int]) -> None:
        counters = self.counters
        member = self.members.get(_SSRC.unpack_from(data, 8)[0])
        if member is None:
            counters.dropped["unknown_ssrc"] += 1
            return
        if member.address != address:
            counters.dropped["wrong_address"] += 1
            return
        cipher = member.cipher
        if cipher is None:
            counters.dropped["no_session"] += 1
            return
        if not member.speaking:
            if len(member.held) < _HOLD_PACKETS:
                member.held.append((trio.current_time() + _HOLD_SECONDS, data))
                self._holding.add(member)
            else:
                counters.dropped["not_speaking"] += 1
            return
        try:
            header, body = cipher.decrypt(data)
        except DecryptionError:
            counters.dropped["auth_failed"] += 1
            return
        except RemoteProtocolError:
            counters.dropped["malformed"] += 1
            return

        sendto = self._send
        forwarded = 0
        for other in member.room.members:
            other_cipher = other.cipher
            if other is member or other_cipher is None or other.address is None:
                continue
            if sendto(
                other_cipher.encrypt(header, body, other.nonce.next()), other.address
            ):
                forwarded += 1
        counters.relayed_packets += 1
        counters.forwarded_packets += forwarded

    # -- packets that came before op 5 --------------------------------------------------

    def release(self, member: RelayMember) -> None:
        """Relay what ``member`` sent before its op 5; call once it is speaking."""
        held, member.held = member.held, []
        self._holding.discard(member)
        now = trio.current_time()
        for deadline, data in held:
            if deadline <= now or member.address is None:
                self.counters.dropped["not_speaking"] += 1
            else:
                self._relay(data, member.address)

    def _expire_held(self, now: float) -> None:
        for member in list(self._holding):
            kept = [(t, data) for t, data in member.held if t > now]
            self.counters.dropped["not_speaking"] += len(member.held) - len(kept)
            member.held = kept
            if not kept:
                self._holding.discard(member)

    def _drop_held(self, member: RelayMember) -> None:
        self.counters.dropped["not_speaking"] += len(member.held)
        member.held = []
        self._holding.discard(member)

    def _send(self, packet: bytes, address: tuple[str, int]) -> bool:
        sock = self._sock
        if sock is None:
            return False
        try:
            sock.sendto(packet, address)
        except BlockingIOError:
            self.counters.dropped["send_blocked"] += 1
            return False
        except OSError:
            self.counters.dropped["send_failed"] += 1
            return False
        return True
