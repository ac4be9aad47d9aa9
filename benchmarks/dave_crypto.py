"""What DAVE end-to-end encryption costs per Opus frame, next to transport encryption.

Run it as ``python benchmarks/dave_crypto.py``. Every case runs in every round and the
order rotates from round to round, because these machines' speed drifts by up to 1.8x
over minutes and only numbers taken side by side in one run compare. A round times
``--number`` calls of each case with ``time.thread_time`` (CPU time of this thread,
which other processes on the shared machine disturb less than wall time); the table
shows the best round (the least disturbed, and the one the ratios use) and the median
round, in microseconds per frame. Every figure includes the Python call of the
benchmark loop, which the "empty call" row shows.

The frame is an Opus frame of ``--payload-size`` bytes (120 by default, as in
``benchmarks/transport_crypto.py``). With DAVE a sender encrypts it end to end first
(the result carries DAVE's trailer, about a dozen bytes longer) and then seals the
transport packet around it; a receiver opens the transport packet and then the DAVE
frame, per sending user.

The DAVE group is real: three voicesim :class:`~voicesim.voice._dave.DaveClient`
objects (each a ``davey.DaveSession``) join one channel's
:class:`~voicesim.emulator._dave_group.DaveGroup`, the emulator's MLS external sender,
with every message between them encoded and decoded as a voice gateway frame, until
all three are in one epoch. Member A encrypts for the encryption cases; member B's
frames, encrypted outside the timed part just before each decryption case, are opened
by member C. B's frames reach C in order and each exactly once, because davey refuses
a frame it has already opened, as a receiver must.

Cases:

- ``struct.pack header``: the baseline, the 12-byte RTP header from a precompiled
  ``struct.Struct``, the least work any sender does per packet.
- ``seal_rtp`` / ``open_rtp``: voicesim's transport paths for aes-gcm and xchacha.
- ``davey encrypt_opus`` / ``davey decrypt``: the ``DaveSession`` calls themselves.
- ``DaveClient.encrypt_frame`` / ``decrypt_frame``: voicesim's wrappers around them
  (a lock, the readiness check, per-stream statistics), which the media clock and the
  receive loop call.
- ``send: encrypt_frame + seal_rtp`` / ``receive: open_rtp + decrypt_frame``: the whole
  per-frame crypto of a DAVE voice connection in aes-gcm, the mode Discord prefers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import davey

# Run from a checkout without installing: the repository root holds the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voicesim.emulator._dave_group import CloseMember, DaveGroup
from voicesim.protocol import (
    EncryptionMode,
    TransportCipher,
    decode_voice_message,
    encode_voice_message,
    open_rtp,
    seal_rtp,
)
from voicesim.voice._dave import DaveClient

SEQ = 4242
RTP_TIMESTAMP = 4242 * 960
SSRC = 0x0102_0304
NONCE = 77
HEADER = struct.Struct(">BBHII")
CHANNEL_ID = 1_234_567_890_123_456_789
USERS = (111_111_111_111_111_111, 222_222_222_222_222_222, 333_333_333_333_333_333)
AUDIO = davey.MediaType.audio


def dave_group() -> list[DaveClient]:
    """Three clients in one DAVE group, joined one after another through the gateway."""
    group = DaveGroup(CHANNEL_ID)
    clients: dict[int, DaveClient] = {}
    connected: dict[int, set[int]] = {user: set() for user in USERS}
    wire: deque[tuple[bool, int, str | bytes]] = deque()
    seq = 0

    def to_gateway(user: int, messages: list[object]) -> None:
        for message in messages:
            wire.append((False, user, encode_voice_message(message)))  # type: ignore[arg-type]

    def to_clients(outputs: list[tuple[int, object]]) -> None:
        nonlocal seq
        for user, message in outputs:
            if isinstance(message, CloseMember):
                raise RuntimeError(f"the gateway closed {user}: {message.reason}")
            seq += 1
            wire.append((True, user, encode_voice_message(message, seq=seq)))  # type: ignore[arg-type]

    for user in USERS:
        # op 11 first, as the gateway sends it: everyone learns of the newcomer.
        for other in clients:
            connected[other].add(user)
            connected[user].add(other)
        clients[user] = DaveClient(1, user, CHANNEL_ID, known_users=connected[user])
        to_gateway(user, list(clients[user].start()))
        to_clients(list(group.add_member(user, 0.0)))
        while wire:
            from_server, peer, frame = wire.popleft()
            message, _ = decode_voice_message(frame, from_server=from_server)
            if from_server:
                to_gateway(peer, list(clients[peer].handle(message)))  # type: ignore[arg-type]
            else:
                to_clients(list(group.receive(peer, message, 0.0)))  # type: ignore[arg-type]

    members = list(clients.values())
    if group.pending_transitions or not all(c.ready for c in members):
        raise RuntimeError("the DAVE group did not settle")
    if {c.epoch for c in members} != {group.epoch}:
        raise RuntimeError("the clients disagree with the gateway about the epoch")
    return members


# A case: name, the call to time, and what makes its inputs (outside the timing).
Case = tuple[str, Callable[[bytes], object], Callable[[int], list[bytes]]]


def make_cases(payload_size: int) -> tuple[list[Case], int, DaveClient]:
    """Return the cases (the first is the baseline), the DAVE frame's size and the
    receiving client, whose statistics show whether every frame opened."""
    key = os.urandom(32)
    opus = os.urandom(payload_size)
    aes = TransportCipher(EncryptionMode.AES256_GCM, key)
    xchacha = TransportCipher(EncryptionMode.XCHACHA20_POLY1305, key)
    aes_packet = seal_rtp(aes, SEQ, RTP_TIMESTAMP, SSRC, opus, NONCE)
    xchacha_packet = seal_rtp(xchacha, SEQ, RTP_TIMESTAMP, SSRC, opus, NONCE)

    a, b, c = dave_group()
    # The davey sessions inside voicesim's clients: the same objects the wrappers call.
    encrypt_opus = a._session.encrypt_opus
    b_encrypt = b._session.encrypt_opus
    c_decrypt = c._session.decrypt
    sender = b.user_id
    encrypt_frame = a.encrypt_frame
    decrypt_frame = c.decrypt_frame

    # Sanity: what B sends, C opens to the same bytes, through both paths.
    if c_decrypt(sender, AUDIO, b_encrypt(opus)) != opus:
        raise RuntimeError("davey did not round-trip a frame")
    if decrypt_frame(SSRC, sender, b_encrypt(opus), 0) != opus:
        raise RuntimeError("DaveClient did not round-trip a frame")

    def same(packet: bytes) -> Callable[[int], list[bytes]]:
        return lambda n: [packet] * n

    def fresh_dave(n: int) -> list[bytes]:
        return [b_encrypt(opus) for _ in range(n)]

    def fresh_dave_in_aes(n: int) -> list[bytes]:
        return [
            seal_rtp(aes, SEQ, RTP_TIMESTAMP, SSRC, b_encrypt(opus), NONCE)
            for _ in range(n)
        ]

    plain = same(opus)
    cases: list[Case] = [
        (
            "struct.pack header",
            lambda x: HEADER.pack(0x80, 0x78, SEQ, RTP_TIMESTAMP, SSRC),
            plain,
        ),
        ("empty call", lambda x: None, plain),
        (
            "aes-gcm seal_rtp",
            lambda x: seal_rtp(aes, SEQ, RTP_TIMESTAMP, SSRC, x, NONCE),
            plain,
        ),
        ("aes-gcm open_rtp", lambda x: open_rtp(aes, x), same(aes_packet)),
        (
            "xchacha seal_rtp",
            lambda x: seal_rtp(xchacha, SEQ, RTP_TIMESTAMP, SSRC, x, NONCE),
            plain,
        ),
        ("xchacha open_rtp", lambda x: open_rtp(xchacha, x), same(xchacha_packet)),
        ("davey encrypt_opus", lambda x: encrypt_opus(x), plain),
        ("davey decrypt", lambda x: c_decrypt(sender, AUDIO, x), fresh_dave),
        ("DaveClient.encrypt_frame", lambda x: encrypt_frame(x), plain),
        (
            "DaveClient.decrypt_frame",
            lambda x: decrypt_frame(SSRC, sender, x, 0),
            fresh_dave,
        ),
        (
            "send: encrypt_frame + seal_rtp",
            lambda x: seal_rtp(aes, SEQ, RTP_TIMESTAMP, SSRC, encrypt_frame(x), NONCE),
            plain,
        ),
        (
            "receive: open_rtp + decrypt_frame",
            lambda x: decrypt_frame(SSRC, sender, open_rtp(aes, x).payload, 0),
            fresh_dave_in_aes,
        ),
    ]
    return cases, len(encrypt_opus(opus)), c


def measure(cases: list[Case], rounds: int, number: int) -> dict[str, list[float]]:
    """Return microseconds per call for each case, one figure per round."""
    results: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for round_index in range(rounds):
        # Rotate the order so that no case always runs first or last in a round.
        shift = round_index % len(cases)
        for name, call, inputs in cases[shift:] + cases[:shift]:
            frames = inputs(number)
            start = time.thread_time()
            for frame in frames:
                call(frame)
            seconds = time.thread_time() - start
            results[name].append(seconds / number * 1e6)
    return results


def report(results: dict[str, list[float]], payload_size: int, dave_size: int) -> str:
    baseline_name = next(iter(results))
    baseline = min(results[baseline_name])
    seal = min(results["aes-gcm seal_rtp"])
    lines = [
        f"{payload_size} B Opus frame ({dave_size} B after DAVE) + 12 B header, "
        f"{len(results[baseline_name])} rounds; CPU microseconds per frame",
        "",
        f"{'case':<36} {'best':>8} {'median':>8} {'x baseline':>11} {'x aes seal':>11}",
        "-" * 78,
    ]
    for name, figures in results.items():
        best = min(figures)
        lines.append(
            f"{name:<36} {best:>8.3f} {statistics.median(figures):>8.3f} "
            f"{best / baseline:>11.1f} {best / seal:>11.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="rounds (default 15)")
    parser.add_argument(
        "--number", type=int, default=5_000, help="calls per case per round"
    )
    parser.add_argument(
        "--payload-size", type=int, default=120, help="Opus bytes (default 120)"
    )
    args = parser.parse_args()

    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"davey {davey.__version__}, DAVE protocol version 1")
    cases, dave_size, receiver = make_cases(args.payload_size)
    results = measure(cases, args.rounds, args.number)
    # The wrapper returns None for a frame it cannot open instead of raising, so
    # check that the decrypt_frame cases timed real decryptions, not failures.
    stream = receiver.streams[SSRC]
    expected = 1 + 2 * args.rounds * args.number
    if stream.failures or stream.decrypted != expected:
        raise RuntimeError(
            f"DaveClient opened {stream.decrypted} of {expected} frames "
            f"({stream.failures} failures)"
        )
    print(report(results, args.payload_size, dave_size))
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
