"""Fixture sets: the shipped fixtures, manifests, WAV/FLAC loading and bad files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

import voicesim.media
from voicesim._exceptions import FixtureError
from voicesim.media import (
    FRAME_MS,
    SAMPLES_PER_FRAME,
    Fixture,
    default_fixtures_dir,
    encode_pcm,
    load_audio_file,
    load_fixtures,
    opus_frame_samples,
    speech_bounds,
    write_ogg_opus,
)


def _tone_with_silence(
    rate: int, lead_s: float, tone_s: float, tail_s: float
) -> np.ndarray:
    t = np.arange(int(tone_s * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    return np.concatenate(
        [np.zeros(int(lead_s * rate)), tone, np.zeros(int(tail_s * rate))]
    )


def _manifest(directory: Path, *entries: str) -> Path:
    path = directory / "manifest.toml"
    path.write_text("\n".join(f"[[fixture]]\n{entry}" for entry in entries))
    return path


def _entry(file: str, id: str = "one", kind: str = "utterance", extra: str = "") -> str:
    return (
        f'id = "{id}"\nfile = "{file}"\ntranscript = "Hello there."\n'
        f'voice = "test"\nkind = "{kind}"\n{extra}'
    )


@pytest.fixture
def tone_wav(tmp_path: Path) -> Path:
    path = tmp_path / "tone.wav"
    soundfile.write(str(path), _tone_with_silence(16000, 0.3, 1.0, 0.5), 16000)
    return path


def test_media_all_names_exported() -> None:
    """Every name in voicesim.media.__all__ exists and is public."""
    for name in voicesim.media.__all__:
        assert hasattr(voicesim.media, name)
        assert not name.startswith("_")


def test_shipped_fixtures_meet_the_brief() -> None:
    """The repository's fixtures: enough utterances, voices, replies, distinct texts."""
    fixtures = load_fixtures()

    assert len(fixtures.utterances) >= 24
    assert len(fixtures.replies) >= 6
    assert len({f.voice for f in fixtures.utterances}) >= 4
    texts = [f.transcript for f in fixtures.fixtures]
    assert len(set(texts)) == len(texts)
    assert {f.kind for f in fixtures.utterances} == {"utterance"}
    assert {f.kind for f in fixtures.replies} == {"reply"}
    for fixture in fixtures.utterances:
        assert 1500 <= fixture.duration_ms <= 8000, fixture.id


def test_shipped_fixtures_are_20ms_frames_with_measured_bounds() -> None:
    """Every shipped frame is 20 ms and the manifest bounds match a fresh measurement."""
    for fixture in load_fixtures().fixtures:
        assert all(opus_frame_samples(f) == SAMPLES_PER_FRAME for f in fixture.frames)
        assert speech_bounds(fixture.frames) == (
            fixture.speech_start_ms,
            fixture.speech_end_ms,
        )
        assert 0 < fixture.speech_start_ms < fixture.speech_end_ms < fixture.duration_ms


def test_shipped_fixtures_fit_in_three_megabytes() -> None:
    """The fixture directory stays small enough to live in the repository."""
    total = sum(p.stat().st_size for p in default_fixtures_dir().iterdir())

    assert total < 3_000_000


def test_fixture_voiced_frame_indices() -> None:
    """Voiced frame indices follow from the speech bounds in 20 ms steps."""
    fixture = Fixture(
        id="x",
        path=Path("x.opus"),
        transcript="x",
        voice="v",
        kind="utterance",
        frames=(b"\xf8\xff\xfe",) * 10,
        speech_start_ms=40.0,
        speech_end_ms=140.0,
    )

    assert fixture.duration_ms == 200.0
    assert fixture.first_voiced_frame == 2
    assert fixture.last_voiced_frame == 6


def test_fixture_set_get_by_id() -> None:
    """get finds a fixture by id and raises KeyError for an unknown one."""
    fixtures = load_fixtures()
    first = fixtures.replies[0]

    assert fixtures.get(first.id) is first
    with pytest.raises(KeyError):
        fixtures.get("no-such-fixture")


def test_default_fixtures_dir_honours_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """VOICESIM_FIXTURES overrides the repository's fixture directory."""
    monkeypatch.delenv("VOICESIM_FIXTURES", raising=False)
    assert (default_fixtures_dir() / "manifest.toml").is_file()

    monkeypatch.setenv("VOICESIM_FIXTURES", str(tmp_path))
    assert default_fixtures_dir() == tmp_path


def test_load_fixtures_wav_and_flac_with_measured_bounds(tmp_path: Path) -> None:
    """WAV and FLAC entries are encoded to 20 ms frames; missing bounds are measured."""
    soundfile.write(
        str(tmp_path / "a.wav"), _tone_with_silence(16000, 0.3, 1.0, 0.5), 16000
    )
    soundfile.write(
        str(tmp_path / "b.flac"), _tone_with_silence(44100, 0.5, 0.6, 0.2), 44100
    )
    _manifest(tmp_path, _entry("a.wav", "a"), _entry("b.flac", "b", kind="reply"))

    fixtures = load_fixtures(tmp_path)

    a, b = fixtures.get("a"), fixtures.get("b")
    assert fixtures.utterances == (a,) and fixtures.replies == (b,)
    assert a.duration_ms == 1820.0
    # The tone starts at 300 ms and ends at 1300 ms; Opus smears each edge a little.
    assert a.speech_start_ms in (280.0, 300.0)
    assert a.speech_end_ms in (1300.0, 1320.0, 1340.0)
    assert b.speech_start_ms in (480.0, 500.0)
    assert a.path == tmp_path / "a.wav"


def test_load_fixtures_uses_declared_bounds(tmp_path: Path, tone_wav: Path) -> None:
    """Declared speech bounds are used as they are."""
    extra = "duration_ms = 1800\nspeech_start_ms = 100\nspeech_end_ms = 1500\n"
    _manifest(tmp_path, _entry(tone_wav.name, extra=extra))

    fixture = load_fixtures(tmp_path).get("one")

    assert (fixture.speech_start_ms, fixture.speech_end_ms) == (100.0, 1500.0)


def test_load_audio_file_caches_until_file_changes(
    tmp_path: Path, tone_wav: Path
) -> None:
    """A file is encoded once, and again after it changes on disk."""
    first = load_audio_file(tone_wav)

    assert load_audio_file(tone_wav) is first

    soundfile.write(str(tone_wav), _tone_with_silence(16000, 0.1, 0.2, 0.1), 16000)
    stat = tone_wav.stat()
    os.utime(tone_wav, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = load_audio_file(tone_wav)
    assert len(second) < len(first)


def test_load_audio_file_reads_ogg_opus_as_is(tmp_path: Path) -> None:
    """Ogg Opus is demuxed, not re-encoded, whatever the bitrate asked for."""
    frames = encode_pcm(_tone_with_silence(48000, 0.1, 0.3, 0.1), 48000, bitrate=24000)
    path = tmp_path / "x.opus"
    write_ogg_opus(path, frames)

    assert load_audio_file(path, bitrate=128000) == frames


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.wav", None, "cannot read"),
        ("text.wav", b"this is not audio at all\n" * 10, "not a readable audio file"),
        ("empty.wav", "empty", "holds no audio"),
        ("low.wav", "4000", "sample rate 4000 Hz"),
        ("three.wav", "3ch", "3 channels"),
        ("song.mp3", b"ID3", "unsupported audio file type"),
    ],
)
def test_load_audio_file_bad_files_name_the_file(
    tmp_path: Path, name: str, content: bytes | str | None, message: str
) -> None:
    """Missing, non-audio, empty, odd-rate and odd-channel files raise FixtureError."""
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "empty":
        soundfile.write(str(path), np.zeros(0, dtype=np.int16), 16000)
    elif content == "4000":
        soundfile.write(str(path), np.zeros(4000, dtype=np.int16), 4000)
    elif content == "3ch":
        soundfile.write(str(path), np.zeros((1600, 3), dtype=np.int16), 16000)

    with pytest.raises(FixtureError, match=message) as info:
        load_audio_file(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ('fixture = "nope"', "expected \\[\\[fixture\\]\\] tables"),
        ("[[fixture]\nid = 1", "not valid TOML"),
        (
            "[[fixture]]\n" + _entry("tone.wav").replace('voice = "test"\n', ""),
            "voice must",
        ),
        (
            "[[fixture]]\n" + _entry("tone.wav", extra="speech_end = 3\n"),
            "unknown keys",
        ),
        ("[[fixture]]\n" + _entry("tone.wav", kind="song"), "kind must be one of"),
        (
            "[[fixture]]\n" + _entry("tone.wav", extra='duration_ms = "long"\n'),
            "number",
        ),
        (
            "[[fixture]]\n" + _entry("tone.wav", extra="speech_start_ms = 10\n"),
            "or neither",
        ),
        (
            "[[fixture]]\n"
            + _entry("tone.wav", extra="speech_start_ms = 10\nspeech_end_ms = 9000\n"),
            "do not fit",
        ),
        (
            "[[fixture]]\n" + _entry("tone.wav", extra="duration_ms = 5000\n"),
            "manifest says 5000",
        ),
        (
            "[[fixture]]\n" + _entry("tone.wav", kind="reply"),
            "no fixture of kind 'utterance'",
        ),
        (
            "[[fixture]]\n"
            + _entry("tone.wav")
            + "\n[[fixture]]\n"
            + _entry("tone.wav"),
            "twice",
        ),
        ("[[fixture]]\n" + _entry("gone.wav"), r"gone\.wav: cannot read"),
    ],
    ids=[
        "not-tables",
        "bad-toml",
        "missing-voice",
        "unknown-key",
        "bad-kind",
        "bad-number",
        "one-bound",
        "bounds-outside",
        "duration-mismatch",
        "no-utterance",
        "duplicate-id",
        "missing-audio",
    ],
)
def test_load_fixtures_bad_manifest(
    tmp_path: Path, tone_wav: Path, manifest: str, message: str
) -> None:
    """A malformed or inconsistent manifest raises FixtureError naming a file."""
    (tmp_path / "manifest.toml").write_text(manifest)

    with pytest.raises(FixtureError, match=message) as info:
        load_fixtures(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_load_fixtures_missing_manifest(tmp_path: Path) -> None:
    """A directory without manifest.toml raises FixtureError naming the manifest."""
    with pytest.raises(FixtureError, match=r"manifest\.toml: cannot read"):
        load_fixtures(tmp_path)


def test_load_fixtures_silent_file_without_bounds(tmp_path: Path) -> None:
    """A silent file whose bounds must be measured is refused."""
    soundfile.write(str(tmp_path / "quiet.wav"), np.zeros(16000, dtype=np.int16), 16000)
    _manifest(tmp_path, _entry("quiet.wav"))

    with pytest.raises(FixtureError, match=r"quiet\.wav: no frame is louder"):
        load_fixtures(tmp_path)


def test_speech_bounds_of_silence_is_none() -> None:
    """Frames without audible sound have no speech bounds."""
    frames = encode_pcm(np.zeros(4800, dtype=np.int16), 48000)

    assert speech_bounds(frames) is None
    assert len(frames) * FRAME_MS == 120
