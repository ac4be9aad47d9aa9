"""Fixtures: recorded speech, pre-encoded to Opus, with its transcript and speech bounds.

A fixture directory holds audio files and a ``manifest.toml`` listing them::

    [[fixture]]
    id = "weather-tomorrow"
    file = "weather-tomorrow.opus"     # Ogg Opus, WAV or FLAC, relative to the manifest
    transcript = "What is the weather going to be like tomorrow morning?"
    voice = "slt"
    kind = "utterance"                 # or "reply", for the agent's answers
    duration_ms = 3560                 # optional; checked against the file
    speech_start_ms = 200              # optional, with speech_end_ms; measured if absent
    speech_end_ms = 3240

Ogg Opus files are used as they are; WAV and FLAC are encoded once per process and
kept in memory, so a swarm pays for encoding once, not once per session.
"""

from __future__ import annotations

import os
import threading
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import numpy as np
import soundfile

from voicesim._exceptions import FixtureError, RemoteProtocolError
from voicesim.media._level import AUDIBLE_DBFS, level_dbfs
from voicesim.media._opus import FRAME_MS, OpusDecoder, encode_pcm, load_opus_file

__all__ = [
    "MANIFEST_NAME",
    "Fixture",
    "FixtureSet",
    "default_fixtures_dir",
    "load_audio_file",
    "load_fixtures",
    "speech_bounds",
]

MANIFEST_NAME = "manifest.toml"
KINDS = ("utterance", "reply")

_OPUS_SUFFIXES = frozenset({".opus", ".ogg", ".oga"})
_PCM_SUFFIXES = frozenset({".wav", ".flac"})
# Below 8 kHz speech loses the consonants a recogniser needs; above 192 kHz the file
# is almost certainly not speech at all.
_MIN_RATE = 8000
_MAX_RATE = 192000


@attrs.frozen(kw_only=True)
class Fixture:
    """One recorded utterance or reply, as ready-to-send 20 ms Opus frames."""

    id: str
    path: Path
    transcript: str
    voice: str
    kind: str
    frames: tuple[bytes, ...] = attrs.field(repr=False)
    speech_start_ms: float
    speech_end_ms: float

    @property
    def duration_ms(self) -> float:
        """Length of the fixture: 20 ms per frame."""
        return float(len(self.frames) * FRAME_MS)

    @property
    def first_voiced_frame(self) -> int:
        """Index of the frame in which speech starts."""
        return int(self.speech_start_ms // FRAME_MS)

    @property
    def last_voiced_frame(self) -> int:
        """Index of the frame in which speech ends (the last one holding speech)."""
        return max(int(-(-self.speech_end_ms // FRAME_MS)) - 1, self.first_voiced_frame)


@attrs.frozen(kw_only=True)
class FixtureSet:
    """The fixtures of one directory, split into user utterances and agent replies."""

    utterances: tuple[Fixture, ...]
    replies: tuple[Fixture, ...]

    @property
    def fixtures(self) -> tuple[Fixture, ...]:
        """Every fixture, utterances first."""
        return self.utterances + self.replies

    def get(self, id: str) -> Fixture:
        """Return the fixture called ``id``; ``KeyError`` if there is none."""
        for fixture in self.fixtures:
            if fixture.id == id:
                return fixture
        raise KeyError(id)


def default_fixtures_dir() -> Path:
    """Return ``$VOICESIM_FIXTURES`` if set, else the repository's ``audio_fixtures/``."""
    override = os.environ.get("VOICESIM_FIXTURES")
    if override:
        return Path(override).expanduser()
    # voicesim is installed editable from the repository, whose root holds the
    # fixtures next to the package: voicesim/media/_fixtures.py -> parents[2].
    return Path(__file__).resolve().parents[2] / "audio_fixtures"


def speech_bounds(
    frames: tuple[bytes, ...] | list[bytes], *, threshold_dbfs: float = AUDIBLE_DBFS
) -> tuple[float, float] | None:
    """Return (start, end) in ms of the audible part of ``frames``, or ``None``.

    Start is the start of the first frame louder than ``threshold_dbfs`` and end the
    end of the last one, both counted from the first frame.

    Raises:
        RemoteProtocolError: a frame cannot be decoded.
    """
    decoder = OpusDecoder()
    loud = [
        index
        for index, frame in enumerate(frames)
        if level_dbfs(decoder.decode(frame)) > threshold_dbfs
    ]
    if not loud:
        return None
    return float(loud[0] * FRAME_MS), float((loud[-1] + 1) * FRAME_MS)


_T = TypeVar("_T")
_cache_lock = threading.Lock()
_frame_cache: dict[tuple[Any, ...], tuple[bytes, ...]] = {}
_bounds_cache: dict[tuple[Any, ...], tuple[float, float] | None] = {}


def load_audio_file(
    path: os.PathLike[str] | str, *, bitrate: int = 64000
) -> tuple[bytes, ...]:
    """Return the 20 ms Opus frames of an Ogg Opus, WAV or FLAC file.

    Ogg Opus is read as it is (``bitrate`` does not apply); WAV and FLAC are encoded
    with :func:`encode_pcm`. Results are cached in memory by path, modification time
    and size, so a file changed on disk is read again.

    Raises:
        FixtureError: naming the file, when it is missing, of an unknown type, not
            audio, empty, at a sample rate outside 8 to 192 kHz, has more than two
            channels, or holds Opus frames that are not 20 ms.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in _OPUS_SUFFIXES:
        return _cached(_frame_cache, path, (), lambda: load_opus_file(path))
    if suffix in _PCM_SUFFIXES:
        return _cached(
            _frame_cache, path, (bitrate,), lambda: _encode_file(path, bitrate)
        )
    raise FixtureError(
        f"{path}: unsupported audio file type; use .opus, .ogg, .wav or .flac"
    )


def _cached(
    cache: dict[tuple[Any, ...], _T],
    path: Path,
    extra: tuple[Any, ...],
    load: Callable[[], _T],
) -> _T:
    try:
        stat = path.stat()
    except OSError as exc:
        raise FixtureError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, *extra)

    # One lock for all loads: fixtures load at start-up, possibly from several threads
    # at once, and encoding a file twice would cost more than waiting.
    with _cache_lock:
        if key not in cache:
            cache[key] = load()
        return cache[key]


def _encode_file(path: Path, bitrate: int) -> tuple[bytes, ...]:
    try:
        pcm, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        raise FixtureError(f"{path}: not a readable audio file ({exc})") from exc

    if not _MIN_RATE <= sample_rate <= _MAX_RATE:
        raise FixtureError(f"{path}: sample rate {sample_rate} Hz; use 8 to 192 kHz")
    if pcm.shape[1] > 2:
        raise FixtureError(f"{path}: {pcm.shape[1]} channels; use mono or stereo")
    if pcm.shape[0] == 0:
        raise FixtureError(f"{path}: holds no audio")
    return encode_pcm(np.asarray(pcm), int(sample_rate), bitrate=bitrate)


def load_fixtures(directory: os.PathLike[str] | str | None = None) -> FixtureSet:
    """Read ``manifest.toml`` in ``directory`` (default: :func:`default_fixtures_dir`).

    Audio is cached per file (see :func:`load_audio_file`), so calling this again is
    cheap and picks up files changed on disk.

    Raises:
        FixtureError: naming the manifest or audio file, when the manifest is missing
            or malformed, lists no utterance, repeats an id, or names a bad file; or
            when declared speech bounds or durations disagree with the audio.
    """
    root = Path(directory) if directory is not None else default_fixtures_dir()
    manifest = root / MANIFEST_NAME
    try:
        document = tomllib.loads(manifest.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FixtureError(f"{manifest}: cannot read ({exc.strerror or exc})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FixtureError(f"{manifest}: not valid TOML ({exc})") from exc

    entries = document.get("fixture")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise FixtureError(f"{manifest}: expected [[fixture]] tables")

    fixtures: list[Fixture] = []
    seen: set[str] = set()
    for position, entry in enumerate(entries):
        fixture = _load_entry(manifest, position, entry)
        if fixture.id in seen:
            raise FixtureError(f"{manifest}: fixture id {fixture.id!r} appears twice")
        seen.add(fixture.id)
        fixtures.append(fixture)

    utterances = tuple(f for f in fixtures if f.kind == "utterance")
    if not utterances:
        raise FixtureError(f"{manifest}: lists no fixture of kind 'utterance'")
    return FixtureSet(
        utterances=utterances, replies=tuple(f for f in fixtures if f.kind == "reply")
    )


_TEXT_KEYS = ("id", "file", "transcript", "voice", "kind")
_NUMBER_KEYS = ("duration_ms", "speech_start_ms", "speech_end_ms")


def _load_entry(manifest: Path, position: int, entry: Mapping[str, Any]) -> Fixture:
    where = f"{manifest}: fixture {entry.get('id', position)!r}"

    # Unknown keys are refused: a misspelt optional key would otherwise be ignored
    # and its value silently replaced by a measurement.
    unknown = sorted(set(entry) - set(_TEXT_KEYS) - set(_NUMBER_KEYS))
    if unknown:
        raise FixtureError(f"{where}: unknown keys {unknown}")
    for key in _TEXT_KEYS:
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise FixtureError(f"{where}: {key} must be a non-empty string")
    for key in _NUMBER_KEYS:
        value = entry.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            raise FixtureError(f"{where}: {key} must be a number")
    if entry["kind"] not in KINDS:
        raise FixtureError(
            f"{where}: kind must be one of {KINDS}, not {entry['kind']!r}"
        )

    path = manifest.parent / entry["file"]
    frames = load_audio_file(path)
    duration = len(frames) * FRAME_MS
    declared = entry.get("duration_ms")
    if declared is not None and abs(declared - duration) > FRAME_MS:
        raise FixtureError(
            f"{path}: manifest says {declared} ms but the file holds {duration} ms"
        )

    bounds = _speech_bounds_of(path, entry, frames)
    if not 0 <= bounds[0] < bounds[1] <= duration:
        raise FixtureError(
            f"{path}: speech bounds {bounds[0]}..{bounds[1]} ms do not fit in {duration} ms"
        )
    return Fixture(
        id=entry["id"],
        path=path,
        transcript=entry["transcript"],
        voice=entry["voice"],
        kind=entry["kind"],
        frames=frames,
        speech_start_ms=float(bounds[0]),
        speech_end_ms=float(bounds[1]),
    )


def _speech_bounds_of(
    path: Path, entry: Mapping[str, Any], frames: tuple[bytes, ...]
) -> tuple[float, float]:
    start, end = entry.get("speech_start_ms"), entry.get("speech_end_ms")
    if start is not None and end is not None:
        return float(start), float(end)
    if start is not None or end is not None:
        raise FixtureError(
            f"{path}: give both speech_start_ms and speech_end_ms, or neither"
        )

    try:
        measured = _cached(_bounds_cache, path, (), lambda: speech_bounds(frames))
    except RemoteProtocolError as exc:
        raise FixtureError(f"{path}: {exc}") from exc
    if measured is None:
        raise FixtureError(f"{path}: no frame is louder than {AUDIBLE_DBFS} dBFS")
    return measured
