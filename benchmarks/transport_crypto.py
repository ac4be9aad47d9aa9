"""What transport encryption costs per voice packet, next to a bare header pack.

Run it as ``python benchmarks/transport_crypto.py``. Every case runs in every round and
the order rotates from round to round, because these machines' speed drifts over minutes
and only numbers taken side by side in one run compare. Within a round each case is
timed as the mean of many calls; the table shows the best round (the figure least
disturbed by other processes, and the one the ratios use) and the median round. Both
include the Python call of the benchmark loop itself, which the "empty call" row shows.

The packet is what a bot sends: a 12-byte RTP header and an Opus frame of about 120
bytes (64 kbit/s stereo at 20 ms is 160 bytes; speech at lower rates is shorter).

Cases:

- ``struct.pack header``: the baseline, packing the 12 header bytes with a precompiled
  ``struct.Struct``, the least work any sender does per packet.
- ``seal_rtp`` / ``open_rtp`` / ``decrypt``: voicesim's per-packet paths in each mode.
- ``nacl.secret.Aead``: PyNaCl's high-level class, both as discord.py uses it (a new
  ``Aead`` object per packet) and reused, against the ``nacl.bindings`` function that
  voicesim calls.
- ``libsodium via cffi``: the C function called through PyNaCl's private cffi module,
  to show how much of the binding's cost is its Python argument checks. voicesim does
  not use this path (the module is private to PyNaCl).
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

import nacl.secret
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)

# Run from a checkout without installing: the repository root holds the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voicesim.protocol._rtp import build_rtp_header
from voicesim.protocol._transport import (
    EncryptionMode,
    TransportCipher,
    open_rtp,
    seal_rtp,
)

SEQ = 4242
RTP_TIMESTAMP = 4242 * 960
SSRC = 0x0102_0304
NONCE = 77
HEADER = struct.Struct(">BBHII")


def make_cases(payload_size: int) -> list[tuple[str, Callable[[], object]]]:
    """Return ``(name, call)`` pairs; the first is the baseline."""
    key = os.urandom(32)
    opus = os.urandom(payload_size)
    aes = TransportCipher(EncryptionMode.AES256_GCM, key)
    xchacha = TransportCipher(EncryptionMode.XCHACHA20_POLY1305, key)
    aes_packet = seal_rtp(aes, SEQ, RTP_TIMESTAMP, SSRC, opus, NONCE)
    xchacha_packet = seal_rtp(xchacha, SEQ, RTP_TIMESTAMP, SSRC, opus, NONCE)

    header = build_rtp_header(SEQ, RTP_TIMESTAMP, SSRC)
    nonce24 = NONCE.to_bytes(4, "big") + bytes(20)
    sealed = xchacha_packet[12:-4]
    aead = nacl.secret.Aead(key)

    cases: list[tuple[str, Callable[[], object]]] = [
        (
            "struct.pack header",
            lambda: HEADER.pack(0x80, 0x78, SEQ, RTP_TIMESTAMP, SSRC),
        ),
        ("empty call", lambda: None),
        ("build_rtp_header", lambda: build_rtp_header(SEQ, RTP_TIMESTAMP, SSRC)),
        (
            "aes-gcm seal_rtp",
            lambda: seal_rtp(aes, SEQ, RTP_TIMESTAMP, SSRC, opus, NONCE),
        ),
        ("aes-gcm decrypt", lambda: aes.decrypt(aes_packet)),
        ("aes-gcm open_rtp", lambda: open_rtp(aes, aes_packet)),
        (
            "xchacha seal_rtp",
            lambda: seal_rtp(xchacha, SEQ, RTP_TIMESTAMP, SSRC, opus, NONCE),
        ),
        ("xchacha decrypt", lambda: xchacha.decrypt(xchacha_packet)),
        ("xchacha open_rtp", lambda: open_rtp(xchacha, xchacha_packet)),
        (
            "xchacha bindings encrypt",
            lambda: crypto_aead_xchacha20poly1305_ietf_encrypt(
                opus, header, nonce24, key
            ),
        ),
        (
            "xchacha bindings decrypt",
            lambda: crypto_aead_xchacha20poly1305_ietf_decrypt(
                sealed, header, nonce24, key
            ),
        ),
        ("xchacha Aead encrypt, reused", lambda: aead.encrypt(opus, header, nonce24)),
        (
            "xchacha Aead encrypt, per packet",
            lambda: nacl.secret.Aead(key).encrypt(opus, header, nonce24),
        ),
        ("xchacha Aead decrypt, reused", lambda: aead.decrypt(sealed, header, nonce24)),
    ]
    cases.extend(_cffi_cases(key, opus, header, nonce24, sealed))
    return cases


def _cffi_cases(
    key: bytes, opus: bytes, header: bytes, nonce24: bytes, sealed: bytes
) -> list[tuple[str, Callable[[], object]]]:
    try:
        from nacl._sodium import ffi, lib
    except ImportError:  # a PyNaCl build without the private module
        return []

    def encrypt() -> bytes:
        out = ffi.new("unsigned char[]", len(opus) + 16)
        lib.crypto_aead_xchacha20poly1305_ietf_encrypt(
            out, ffi.NULL, opus, len(opus), header, len(header), ffi.NULL, nonce24, key
        )
        return bytes(ffi.buffer(out))

    def decrypt() -> bytes:
        out = ffi.new("unsigned char[]", len(sealed) - 16)
        result = lib.crypto_aead_xchacha20poly1305_ietf_decrypt(
            out,
            ffi.NULL,
            ffi.NULL,
            sealed,
            len(sealed),
            header,
            len(header),
            nonce24,
            key,
        )
        if result != 0:
            raise RuntimeError("libsodium rejected the benchmark packet")
        return bytes(ffi.buffer(out))

    return [
        ("xchacha libsodium via cffi encrypt", encrypt),
        ("xchacha libsodium via cffi decrypt", decrypt),
    ]


def measure(
    cases: list[tuple[str, Callable[[], object]]], rounds: int, number: int
) -> dict[str, list[float]]:
    """Return microseconds per call for each case, one figure per round."""
    results: dict[str, list[float]] = {name: [] for name, _ in cases}
    for round_index in range(rounds):
        # Rotate the order so that no case always runs first or last in a round.
        shift = round_index % len(cases)
        for name, call in cases[shift:] + cases[:shift]:
            seconds = timeit.Timer(call).timeit(number)
            results[name].append(seconds / number * 1e6)
    return results


def report(results: dict[str, list[float]], payload_size: int) -> str:
    baseline_name = next(iter(results))
    baseline = min(results[baseline_name])
    lines = [
        f"{payload_size} B Opus payload + 12 B header, "
        f"{len(results[baseline_name])} rounds; microseconds per packet",
        "",
        f"{'case':<36} {'best':>8} {'median':>8} {'best / baseline':>16}",
        "-" * 71,
    ]
    for name, figures in results.items():
        best = min(figures)
        lines.append(
            f"{name:<36} {best:>8.3f} {statistics.median(figures):>8.3f} "
            f"{best / baseline:>16.1f}"
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

    cases = make_cases(args.payload_size)
    results = measure(cases, args.rounds, args.number)
    print(report(results, args.payload_size))


if __name__ == "__main__":
    main()
