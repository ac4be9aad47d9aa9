"""Media: fixtures, Opus encoding and decoding, audio levels and onset detection.

Everything here works on *frames*, 20 ms Opus packets of 48 kHz stereo audio, the
unit a Discord voice client sends. Nothing here touches a socket or a clock.
"""

from __future__ import annotations

from voicesim.media._fixtures import (
    MANIFEST_NAME,
    Fixture,
    FixtureSet,
    default_fixtures_dir,
    load_audio_file,
    load_fixtures,
    speech_bounds,
)
from voicesim.media._level import (
    AUDIBLE_DBFS,
    LEVEL_FLOOR_DBFS,
    OnsetDetector,
    OnsetEvent,
    SpeechEnd,
    SpeechStart,
    level_dbfs,
)
from voicesim.media._opus import (
    CHANNELS,
    FRAME_MS,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    SILENCE_FRAME,
    OpusDecoder,
    encode_pcm,
    load_opus_file,
    opus_frame_samples,
    write_ogg_opus,
)

__all__ = [
    "AUDIBLE_DBFS",
    "CHANNELS",
    "FRAME_MS",
    "LEVEL_FLOOR_DBFS",
    "MANIFEST_NAME",
    "SAMPLES_PER_FRAME",
    "SAMPLE_RATE",
    "SILENCE_FRAME",
    "Fixture",
    "FixtureSet",
    "OnsetDetector",
    "OnsetEvent",
    "OpusDecoder",
    "SpeechEnd",
    "SpeechStart",
    "default_fixtures_dir",
    "encode_pcm",
    "level_dbfs",
    "load_audio_file",
    "load_fixtures",
    "load_opus_file",
    "opus_frame_samples",
    "speech_bounds",
    "write_ogg_opus",
]
