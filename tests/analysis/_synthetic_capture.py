"""Realistic, seeded synthetic captures written with the real CaptureWriter.

Sessions arrive on a ramp; each speaks a few utterances; the agent answers with a
lognormal latency that grows with the number of active sessions (so plots show a
knee), sometimes times out, and its stream jitters and loses a few packets.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from voicesim._stats import LatenessHistogram
from voicesim._thresholds import parse_thresholds
from voicesim.engine._capture import CaptureWriter

PHRASES = (
    "turn the lights off in the kitchen",
    "what is the weather like tomorrow",
    "play some quiet music please",
    "remind me to call my sister at five",
)
DEFAULT_THRESHOLDS = (
    "response_latency: p(95) < 5s",
    "wer: rate < 50%",
)


def write_synthetic_capture(
    directory: Path,
    *,
    sessions: int = 20,
    turns: int = 8,
    seed: int = 0,
    latency_shift_ms: float = 0.0,
    packets: bool = True,
    audio: bool = False,
    thresholds: Sequence[str] = DEFAULT_THRESHOLDS,
    close: bool = True,
    flush_rows: int = 64,
) -> CaptureWriter:
    """Write a capture into ``directory``; returns the (closed unless asked) writer."""
    rng = np.random.default_rng(seed)
    config: dict[str, Any] = {
        "sessions": sessions,
        "duration": "2m",
        "profile": {"kind": "ramp", "ramp_up": "40s"},
        "thresholds": list(thresholds),
        "bot_tokens": ["secret-token-1", "secret-token-2"],
        "target": {"agent_user_id": "1000", "client_secret": "hunter2"},
    }
    writer = CaptureWriter(
        config=config, directory=directory, flush_rows=flush_rows, flush_seconds=60.0
    )
    t0 = writer.run["clock_anchor"]["monotonic_ns"]
    ms = 1_000_000

    starts = np.sort(rng.uniform(0, 40_000, sessions))  # ms after t0
    for s in range(sessions):
        join_requested = t0 + int(starts[s] * ms)
        join_ms = float(rng.uniform(250, 900))
        joined = join_requested + int(join_ms * 0.8 * ms)
        first_frame = join_requested + int(join_ms * ms)
        now = first_frame
        sent = 0
        lateness = LatenessHistogram()
        received_total = lost_total = 0
        for k in range(turns):
            speech_ms = float(rng.uniform(1500, 3500))
            speech_start = now + int(rng.uniform(200, 600) * ms)
            speech_end = speech_start + int(speech_ms * ms)
            frames = int(speech_ms // 20) + 40
            sent += frames
            lateness.add_many(rng.gamma(2.0, 0.25, frames))
            # Latency grows with load: the later sessions see a busier agent.
            load = 1.0 + 0.6 * (s / max(1, sessions - 1))
            latency = float(rng.lognormal(np.log(1100 * load), 0.22)) + latency_shift_ms
            phrase = PHRASES[(s + k) % len(PHRASES)]
            words = len(phrase.split())
            record: dict[str, Any] = {
                "session": s,
                "turn": k,
                "fixture": f"utt-{(s + k) % len(PHRASES):02d}",
                "reference_text": phrase,
                "speech_start_ns": speech_start,
                "speech_end_ns": speech_end,
                "reference_words": words,
            }
            if rng.random() < 0.05:
                record |= {"outcome": "timeout", "reason": "no audible answer in 10s"}
                now = speech_end + 10_000 * ms
            else:
                response_ms = float(rng.uniform(1200, 3000))
                received = int(response_ms // 20)
                lost = int(rng.binomial(received, 0.004))
                barge_in = bool(rng.random() < 0.1)
                errors = int(rng.binomial(words, 0.08))
                record |= {
                    "outcome": "answered",
                    "response_start_ns": speech_end + int(latency * ms),
                    "response_end_ns": speech_end + int((latency + response_ms) * ms),
                    "response_latency_ms": latency,
                    "transcript_text": phrase if errors == 0 else "turn the light of",
                    "transcript_ns": speech_end + int(latency * 0.6 * ms),
                    "transcript_latency_ms": latency * 0.6,
                    "word_errors": errors,
                    "jitter_ms": float(rng.gamma(2.0, 1.5)),
                    "packets_received": received - lost,
                    "packets_lost": lost,
                    "packets_reordered": int(rng.binomial(received, 0.001)),
                    "packets_duplicated": 0,
                    "barge_in": barge_in,
                    "barge_in_stop_ms": float(rng.uniform(150, 600))
                    if barge_in
                    else None,
                }
                received_total += received - lost
                lost_total += lost
                if packets and k == 0:
                    arrivals = (
                        speech_end + int(latency * ms) + np.arange(received) * 20 * ms
                    )
                    arrivals += rng.normal(0, 1.5 * ms, received).astype(np.int64)
                    writer.add_packets(
                        s, 5000 + s, np.arange(received) % 65536,
                        np.arange(received) * 960, arrivals,
                        rng.integers(60, 160, received),
                    )  # fmt: skip
                now = speech_end + int((latency + response_ms) * ms)
            writer.add_turn(record)
            writer.maybe_flush(now)

        failed = s == sessions - 1 and sessions > 3
        writer.add_session(
            {
                "session": s,
                "user_id": str(10_000 + s),
                "guild_id": str(20_000 + s),
                "channel_id": str(30_000 + s),
                "ssrc": 1000 + s,
                "scheduled_ns": join_requested,
                "join_requested_ns": join_requested,
                "joined_ns": joined,
                "first_frame_ns": first_frame,
                "left_ns": now + 200 * ms,
                "join_time_ms": join_ms,
                "outcome": "error" if failed else "completed",
                "reason": "close 4006" if failed else None,
                "turns": turns,
                "frames_sent": sent,
                "packets_received": received_total,
                "packets_lost": lost_total,
                "jitter_ms": float(rng.gamma(2.0, 1.5)),
                "dave_decrypt_failures": 0,
            }
            | lateness.session_columns()
        )
        if audio and s < 2:
            tone = np.sin(np.arange(48_000) * 2 * np.pi * 440 / 48_000) * 8000
            writer.write_audio(s, np.stack([tone, tone], axis=1).astype(np.int16))

    if close:
        summary, verdicts = writer.results(parse_thresholds(list(thresholds)))
        writer.close(summary, verdicts, 0 if all(v.passed for v in verdicts) else 99)
    return writer
