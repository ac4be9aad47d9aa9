"""Opus frames: table-of-contents parsing, encoding, decoding and Ogg Opus files."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st

from voicesim._exceptions import FixtureError, RemoteProtocolError
from voicesim.media import (
    SAMPLES_PER_FRAME,
    SILENCE_FRAME,
    OpusDecoder,
    encode_pcm,
    level_dbfs,
    load_opus_file,
    opus_frame_samples,
    write_ogg_opus,
)


def _tone(
    seconds: float, rate: int, amplitude: float = 0.3, hz: float = 440.0
) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _decode_all(frames: tuple[bytes, ...]) -> np.ndarray:
    decoder = OpusDecoder()
    return np.concatenate([decoder.decode(frame) for frame in frames])


@pytest.mark.parametrize(
    ("packet", "samples"),
    [
        (SILENCE_FRAME, 960),  # config 31: CELT fullband 20 ms, one frame
        (b"\xfc\x01\x02", 960),  # config 31, stereo flag set
        (b"\x00\x00", 480),  # config 0: SILK narrowband 10 ms
        (b"\x18", 2880),  # config 3: SILK 60 ms
        (b"\x68", 960),  # config 13: hybrid 20 ms
        (b"\x09\x00", 1920),  # config 1 (20 ms), code 1: two frames
        (b"\x83\x03\x00", 360),  # config 16 (2.5 ms), code 3: three frames
        (b"\x1b\x02", 5760),  # config 3 (60 ms), code 3: two frames = 120 ms
    ],
)
def test_opus_frame_samples_reads_toc(packet: bytes, samples: int) -> None:
    """The TOC byte (and code-3 count byte) give the packet's length in samples."""
    assert opus_frame_samples(packet) == samples


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (b"", "empty"),
        (b"\xfb", "frame count"),  # code 3 without its count byte
        (b"\xfb\x00", "zero frames"),
        (b"\x1b\x03", "120 ms"),  # three 60 ms frames
    ],
)
def test_opus_frame_samples_rejects_malformed(packet: bytes, message: str) -> None:
    """Malformed packets raise RemoteProtocolError."""
    with pytest.raises(RemoteProtocolError, match=message):
        opus_frame_samples(packet)


@given(st.binary(max_size=8))
def test_opus_frame_samples_never_crashes(packet: bytes) -> None:
    """Any bytes give a valid length or RemoteProtocolError, never another error."""
    try:
        samples = opus_frame_samples(packet)
    except RemoteProtocolError:
        return
    assert 120 <= samples <= 5760
    assert samples % 120 == 0


def test_encode_pcm_makes_20ms_frames_with_one_frame_of_lookahead() -> None:
    """One second of 16 kHz mono becomes 50 frames plus one for encoder delay."""
    frames = encode_pcm(_tone(1.0, 16000), 16000)

    assert len(frames) == 51
    assert all(opus_frame_samples(frame) == SAMPLES_PER_FRAME for frame in frames)


def test_encode_pcm_pads_the_last_frame() -> None:
    """A length that is not a whole number of frames is padded, not dropped."""
    frames = encode_pcm(np.zeros(48000 + 100, dtype=np.int16), 48000)

    assert len(frames) == 52


@settings(max_examples=15, deadline=None)
@given(
    amplitude=st.floats(0.02, 0.7),
    hz=st.floats(150.0, 3000.0),
    rate=st.sampled_from([8000, 16000, 22050, 44100, 48000]),
    stereo=st.booleans(),
)
def test_encode_decode_round_trip_keeps_level(
    amplitude: float, hz: float, rate: int, stereo: bool
) -> None:
    """PCM through encode_pcm and OpusDecoder comes back within 1.5 dB of its level."""
    pcm = _tone(0.5, rate, amplitude, hz)
    if stereo:
        pcm = np.stack([pcm, pcm], axis=1)

    decoded = _decode_all(encode_pcm(pcm, rate))

    # Compare the middle, away from the encoder's fade-in and the padded tail.
    middle = decoded[SAMPLES_PER_FRAME * 5 : SAMPLES_PER_FRAME * 20]
    assert decoded.dtype == np.int16
    assert level_dbfs(middle) == pytest.approx(level_dbfs(pcm), abs=1.5)
    assert level_dbfs(middle[:, 0]) == pytest.approx(level_dbfs(middle[:, 1]), abs=0.5)


def test_encode_pcm_int16_and_float_agree() -> None:
    """int16 input is used as is and float input is scaled from [-1, 1]."""
    floats = _tone(0.4, 48000)
    ints = np.round(floats * 32767).astype(np.int16)

    from_floats = _decode_all(encode_pcm(floats, 48000))
    from_ints = _decode_all(encode_pcm(ints, 48000))

    assert level_dbfs(from_floats) == pytest.approx(level_dbfs(from_ints), abs=0.1)


@pytest.mark.parametrize(
    ("pcm", "rate", "bitrate", "message"),
    [
        (np.zeros(0, dtype=np.int16), 48000, 64000, "no samples"),
        (np.zeros((100, 3), dtype=np.int16), 48000, 64000, "shape"),
        (np.zeros((2, 2, 2), dtype=np.int16), 48000, 64000, "shape"),
        (np.zeros(100, dtype=np.int32), 48000, 64000, "int16 or floating"),
        (np.zeros(100, dtype=np.int16), 0, 64000, "sample_rate"),
        (np.zeros(100, dtype=np.int16), 48000, 1000, "bitrate"),
    ],
)
def test_encode_pcm_rejects_bad_input(
    pcm: np.ndarray, rate: int, bitrate: int, message: str
) -> None:
    """Empty or badly shaped PCM and impossible rates raise ValueError."""
    with pytest.raises(ValueError, match=message):
        encode_pcm(pcm, rate, bitrate=bitrate)


def test_opus_decoder_silence_frame_decodes_to_silence() -> None:
    """Discord's three-byte silence frame decodes to 960 stereo zero samples."""
    pcm = OpusDecoder().decode(SILENCE_FRAME)

    assert pcm.shape == (960, 2)
    assert pcm.dtype == np.int16
    assert not pcm.any()


def test_opus_decoder_rejects_frames_not_20ms() -> None:
    """A 10 ms packet is refused; the decoder still works afterwards."""
    decoder = OpusDecoder()

    with pytest.raises(RemoteProtocolError, match="10 ms"):
        decoder.decode(b"\xf0\xff\xfe")
    assert decoder.decode(SILENCE_FRAME).shape == (960, 2)


def test_opus_decoder_rejects_corrupt_frame() -> None:
    """A code-2 packet whose first frame overruns the packet raises RemoteProtocolError."""
    decoder = OpusDecoder()

    with pytest.raises(RemoteProtocolError):
        decoder.decode(b"\xfe\xff\x01")
    with pytest.raises(RemoteProtocolError, match="empty"):
        decoder.decode(b"")
    assert decoder.decode(SILENCE_FRAME).shape == (960, 2)


def test_ogg_opus_write_then_load_keeps_frames(tmp_path: Path) -> None:
    """Frames written to Ogg Opus read back byte for byte; files are reproducible."""
    frames = encode_pcm(_tone(0.3, 48000), 48000)
    path = tmp_path / "tone.opus"

    write_ogg_opus(path, frames)

    assert load_opus_file(path) == frames
    with av.open(str(path)) as container:
        assert container.streams.audio[0].codec_context.name == "opus"
    again = tmp_path / "again.opus"
    write_ogg_opus(again, frames)
    assert again.read_bytes() == path.read_bytes()


def test_write_ogg_opus_rejects_empty_and_wrong_frames(tmp_path: Path) -> None:
    """Writing nothing, or a 10 ms frame, raises ValueError."""
    with pytest.raises(ValueError, match="no frames"):
        write_ogg_opus(tmp_path / "a.opus", [])
    with pytest.raises(ValueError, match="frame 1"):
        write_ogg_opus(tmp_path / "b.opus", [SILENCE_FRAME, b"\xf0\xff\xfe"])


def test_load_opus_file_rejects_missing_file(tmp_path: Path) -> None:
    """A missing file raises FixtureError naming it."""
    path = tmp_path / "nothing.opus"

    with pytest.raises(FixtureError, match="no such file") as info:
        load_opus_file(path)
    assert str(path) in str(info.value)


def test_load_opus_file_rejects_non_audio(tmp_path: Path) -> None:
    """A text file raises FixtureError naming it."""
    path = tmp_path / "notes.opus"
    path.write_text("this is not audio\n" * 20)

    with pytest.raises(FixtureError) as info:
        load_opus_file(path)
    assert str(path) in str(info.value)


def test_load_opus_file_rejects_other_codecs(tmp_path: Path) -> None:
    """A WAV file is audio but not Opus."""
    path = tmp_path / "tone.wav"
    soundfile.write(str(path), _tone(0.2, 48000), 48000)

    with pytest.raises(FixtureError, match="not Opus"):
        load_opus_file(path)


def test_load_opus_file_rejects_10ms_frames(tmp_path: Path) -> None:
    """Ogg Opus encoded with 10 ms frames is refused, naming the first bad frame."""
    path = tmp_path / "short-frames.opus"
    pcm = np.round(_tone(0.2, 48000) * 32767).astype(np.int16)
    with av.open(str(path), "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=48000, layout="mono")
        stream.codec_context.format = "s16"
        stream.codec_context.options = {"frame_duration": "10"}
        frame = av.AudioFrame.from_ndarray(
            pcm.reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = 48000
        frame.pts = 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)

    with pytest.raises(FixtureError, match="frame 0 lasts 10 ms") as info:
        load_opus_file(path)
    assert str(path) in str(info.value)


def test_load_opus_file_rejects_empty_files(tmp_path: Path) -> None:
    """A zero-byte file and an Ogg Opus file with headers but no audio are refused."""
    headers_only = tmp_path / "headers-only.opus"
    with av.open(str(headers_only), "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=48000, layout="stereo")
        stream.codec_context.open()
        container.start_encoding()
    zero_bytes = tmp_path / "zero.opus"
    zero_bytes.write_bytes(b"")

    for path in (headers_only, zero_bytes):
        with pytest.raises(FixtureError) as info:
            load_opus_file(path)
        assert str(path) in str(info.value)
