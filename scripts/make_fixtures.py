"""Generate audio_fixtures/: synthetic speech for voicesim's users and reference agent.

Needs the Debian package ``flite`` (the speech synthesiser and its voices slt, awb,
rms and kal16), plus voicesim's own Python dependencies (PyAV with libopus, numpy,
soundfile). Run from the repository root::

    apt-get install flite
    python scripts/make_fixtures.py            # writes audio_fixtures/
    python scripts/make_fixtures.py --out DIR  # somewhere else

Each text is synthesised with flite, trimmed, padded with a little silence, levelled,
given a faint noise floor like an open microphone's, and encoded once into 20 ms Opus
frames (48 kHz stereo, application "voip", 64 kbit/s) stored as Ogg Opus. The speech
bounds in the manifest are measured on those frames as a receiver decodes them. The
output is deterministic for a given flite and libopus.

Texts use common words in plain sentences, which pocketsphinx's stock English model
transcribes well; tests/media/test_intelligibility.py holds them to a pooled word
error rate of 15 %. Every text is distinct, so a transcript identifies its fixture.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile

from voicesim.media import (
    FRAME_MS,
    MANIFEST_NAME,
    encode_pcm,
    load_opus_file,
    speech_bounds,
    write_ogg_opus,
)

REPO = Path(__file__).resolve().parents[1]

# (id, voice, text). Users speak in four voices; the agent answers in one.
UTTERANCES = (
    (
        "weather-tomorrow",
        "slt",
        "What is the weather going to be like tomorrow morning?",
    ),
    ("lights-kitchen", "awb", "Please switch off all the lights in the kitchen."),
    (
        "airport-drive",
        "rms",
        "How long does it take to drive to the airport from here?",
    ),
    ("alarm-seven", "kal16", "Set an alarm for seven thirty tomorrow morning."),
    ("play-music", "slt", "Play some music in the living room."),
    ("game-tonight", "awb", "Can you tell me when the game starts tonight?"),
    ("call-mother", "rms", "Call my mother on her mobile phone."),
    ("milk-bread", "kal16", "Remind me to buy milk and bread after work."),
    (
        "table-italian",
        "awb",
        "I need to book a table for four people at an Italian restaurant on Saturday night.",
    ),
    ("city-chicago", "kal16", "How many people live in the city of Chicago?"),
    ("volume-down", "rms", "Stop the music and turn the volume down."),
    (
        "meeting-friday",
        "kal16",
        "Please put a meeting with the team on my calendar for Friday.",
    ),
    (
        "news-weather",
        "slt",
        "Please read me the headlines from this morning "
        "and then tell me about the weather.",
    ),
    ("capital-australia", "awb", "What is the capital city of Australia?"),
    (
        "email-boss",
        "rms",
        "Could you help me write a short email to my boss asking for next Monday off?",
    ),
    (
        "message-john",
        "awb",
        "Send a message to John and tell him I will be late for dinner.",
    ),
    ("cook-rice", "rms", "What is the best way to cook rice?"),
    (
        "flight-paris",
        "awb",
        "Find me a cheap flight from London to Paris for the second week of June.",
    ),
    (
        "garage-door",
        "rms",
        "Please open the garage door and turn on the outside light.",
    ),
    (
        "money-food",
        "kal16",
        "I would like to know how much money I spent on food last month.",
    ),
    (
        "dog-story",
        "slt",
        "Tell me a short story about a little dog who lives on a farm "
        "with his best friend.",
    ),
    ("hospital-way", "awb", "How do I get to the nearest hospital?"),
    (
        "dinner-ideas",
        "rms",
        "What should I make for dinner tonight if I only have chicken, "
        "potatoes and some green beans?",
    ),
    (
        "train-late",
        "rms",
        "My train is running late, so please move my meeting to four.",
    ),
    ("timer-twenty", "slt", "Set a timer for twenty minutes."),
    ("shopping-list", "rms", "Put coffee and orange juice on my shopping list."),
    ("doctor-call", "kal16", "Please call the doctor and ask about my appointment."),
    ("summer-songs", "kal16", "Play my favorite songs from the summer."),
    ("green-tea", "slt", "How do I make a cup of green tea?"),
)

REPLIES = (
    ("reply-sure", "slt", "Sure, I can help with that."),
    ("reply-done", "slt", "Okay, that is done."),
    ("reply-found", "slt", "Here is what I found for you."),
    ("reply-again", "slt", "Sorry, I did not catch that. Could you say it again?"),
    ("reply-check", "slt", "Let me check that for you."),
    ("reply-weather", "slt", "Tomorrow will be sunny and warm, with a light wind."),
)

LEAD_SILENCE_S = 0.25
TAIL_SILENCE_S = 0.35
SPEECH_RMS_DBFS = -20.0
PEAK_LIMIT_DBFS = -1.0
NOISE_FLOOR_DBFS = -72.0
# Blocks this far below the loudest one count as the synthesiser's silence.
TRIM_DB = -30.0


def synthesise(
    voice: str, text: str, workdir: Path
) -> tuple[npt.NDArray[np.float64], int]:
    """Run flite and return its mono output as floats in [-1, 1] with the rate."""
    wav = workdir / "speech.wav"
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(wav)], check=True)
    pcm, rate = soundfile.read(str(wav), dtype="float64")
    return np.asarray(pcm), int(rate)


def condition(
    pcm: npt.NDArray[np.float64], rate: int, seed: int
) -> npt.NDArray[np.float64]:
    """Trim, pad, level and add a noise floor, as a clean microphone take would be."""
    # Trim the synthesiser's own silence, which is not silent (flite's voices leave
    # noise at -70 to -45 dBFS): keep from two 20 ms blocks before the first block
    # within 30 dB of the loudest to two blocks after the last one, faded in and out.
    block = rate * FRAME_MS // 1000
    blocks = pcm[: len(pcm) // block * block].reshape(-1, block)
    block_rms = np.sqrt(np.mean(blocks**2, axis=1))
    loud = np.flatnonzero(block_rms > block_rms.max() * 10 ** (TRIM_DB / 20))
    first, last = max(loud[0] - 2, 0), min(loud[-1] + 3, len(blocks))
    pcm = pcm[first * block : last * block].copy()
    fade = np.linspace(0.0, 1.0, block // 2)
    pcm[: len(fade)] *= fade
    pcm[len(pcm) - len(fade) :] *= fade[::-1]

    # Level by the RMS of the voiced blocks, so quiet and loud voices sound alike,
    # then keep the peaks below clipping.
    voiced = block_rms[loud]
    gain = 10 ** (SPEECH_RMS_DBFS / 20) / np.sqrt(np.mean(voiced**2))
    gain = min(gain, 10 ** (PEAK_LIMIT_DBFS / 20) / np.abs(pcm).max())
    pcm = pcm * gain

    lead = np.zeros(int(LEAD_SILENCE_S * rate))
    tail = np.zeros(int(TAIL_SILENCE_S * rate))
    pcm = np.concatenate([lead, pcm, tail])
    noise = np.random.default_rng(seed).standard_normal(len(pcm))
    return np.asarray(pcm + noise * 10 ** (NOISE_FLOOR_DBFS / 20))


def make(out: Path) -> list[dict[str, object]]:
    """Write every fixture to ``out`` and return the manifest entries."""
    entries: list[dict[str, object]] = []
    texts = [text for _, _, text in UTTERANCES + REPLIES]
    if len(set(texts)) != len(texts):
        raise SystemExit("two fixtures share a text; transcripts must identify them")

    with tempfile.TemporaryDirectory() as tmp:
        for kind, table in (("utterance", UTTERANCES), ("reply", REPLIES)):
            for fixture_id, voice, text in table:
                pcm, rate = synthesise(voice, text, Path(tmp))
                pcm = condition(pcm, rate, seed=zlib.crc32(fixture_id.encode()))
                frames = encode_pcm(pcm, rate, bitrate=64000)

                path = out / f"{fixture_id}.opus"
                write_ogg_opus(path, frames)
                # Measure on what was written, read back as a user of the fixture will.
                frames = load_opus_file(path)
                bounds = speech_bounds(frames)
                if bounds is None:
                    raise SystemExit(f"{fixture_id}: no audible speech")
                entries.append(
                    {
                        "id": fixture_id,
                        "file": path.name,
                        "transcript": text,
                        "voice": voice,
                        "kind": kind,
                        "duration_ms": len(frames) * FRAME_MS,
                        "speech_start_ms": int(bounds[0]),
                        "speech_end_ms": int(bounds[1]),
                    }
                )
                print(
                    f"{fixture_id:18} {voice:6} {len(frames) * FRAME_MS / 1000:5.2f} s "
                    f"{path.stat().st_size / 1024:6.1f} KiB"
                )
    return entries


def write_manifest(out: Path, entries: list[dict[str, object]]) -> None:
    lines = [
        "# voicesim audio fixtures, written by scripts/make_fixtures.py; regenerate,",
        "# do not edit. Times are milliseconds from the first frame; speech bounds are",
        "# the first and last 20 ms frame louder than -50 dBFS after decoding.",
        "",
    ]
    for entry in entries:
        lines.append("[[fixture]]")
        for key, value in entry.items():
            # JSON strings of plain text are valid TOML basic strings.
            lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    (out / MANIFEST_NAME).write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "audio_fixtures")
    args = parser.parse_args()

    if shutil.which("flite") is None:
        raise SystemExit("flite is not installed (Debian: apt-get install flite)")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.opus"):
        stale.unlink()

    entries = make(out)
    write_manifest(out, entries)
    total = sum(p.stat().st_size for p in out.iterdir())
    print(f"{len(entries)} fixtures, {total / 1024:.0f} KiB in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
