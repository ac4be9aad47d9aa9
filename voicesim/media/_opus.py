"""Opus frames: encoding PCM, decoding frames, reading and writing Ogg Opus files.

Everything voicesim sends or hears is a *frame*: one Opus packet holding 20 ms of
48 kHz audio, the only shape Discord clients produce. The functions here make frames
from PCM once (encoding costs about 260 us a frame, too much to repeat per session),
read them out of Ogg Opus files without re-encoding, and decode them back to PCM for
level measurement and transcription. PyAV's bindings to libopus do the codec work.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from voicesim._exceptions import FixtureError, RemoteProtocolError

__all__ = [
    "CHANNELS",
    "FRAME_MS",
    "SAMPLES_PER_FRAME",
    "SAMPLE_RATE",
    "SILENCE_FRAME",
    "OpusDecoder",
    "encode_pcm",
    "load_opus_file",
    "opus_frame_samples",
    "write_ogg_opus",
]

#: The three-byte Opus packet Discord clients send to mark the end of a talk spurt.
SILENCE_FRAME = b"\xf8\xff\xfe"
FRAME_MS = 20
SAMPLE_RATE = 48000
CHANNELS = 2
SAMPLES_PER_FRAME = SAMPLE_RATE * FRAME_MS // 1000

# "voip" is the application a desktop client uses for a microphone: libopus then
# tunes its filtering and mode choices for intelligible speech, not music fidelity.
_ENCODER_OPTIONS = {"application": "voip", "frame_duration": str(FRAME_MS)}
_MIN_BITRATE = 6000
_MAX_BITRATE = 510000

# Samples per Opus frame at 48 kHz for each TOC configuration number (RFC 6716, 3.1):
# configs 0-11 are SILK (10/20/40/60 ms), 12-15 hybrid (10/20 ms), 16-31 CELT
# (2.5/5/10/20 ms).
_CONFIG_SAMPLES = (480, 960, 1920, 2880) * 3 + (480, 960) * 2 + (120, 240, 480, 960) * 4


def opus_frame_samples(packet: bytes) -> int:
    """Return how many 48 kHz samples (per channel) an Opus packet decodes to.

    Reads only the table-of-contents byte (and the frame count byte of code-3
    packets), so it is cheap enough to call on every received frame.

    Raises:
        RemoteProtocolError: the packet is empty, or a code-3 packet lacks its
            frame count or declares zero frames or more than 120 ms.
    """
    if not packet:
        raise RemoteProtocolError("empty Opus packet")
    toc = packet[0]
    per_frame = _CONFIG_SAMPLES[toc >> 3]

    # The low two bits say how many frames follow: one, two of equal size, two of
    # different sizes, or an explicit count in the next byte.
    code = toc & 0x03
    if code == 0:
        count = 1
    elif code in (1, 2):
        count = 2
    else:
        if len(packet) < 2:
            raise RemoteProtocolError("Opus code-3 packet without a frame count byte")
        count = packet[1] & 0x3F
        if count == 0:
            raise RemoteProtocolError("Opus code-3 packet with zero frames")

    samples = per_frame * count
    if samples > 5760:
        # RFC 6716 caps a packet at 120 ms.
        raise RemoteProtocolError(f"Opus packet of {samples} samples exceeds 120 ms")
    return samples


def _as_stereo_48k(pcm: npt.NDArray[Any], sample_rate: int) -> npt.NDArray[np.int16]:
    """Return ``pcm`` as interleavable int16 of shape (n, 2) at 48 kHz."""
    if pcm.ndim == 1:
        pcm = pcm[:, np.newaxis]
    if pcm.ndim != 2 or pcm.shape[1] not in (1, 2):
        raise ValueError(
            f"pcm must have shape (n,), (n, 1) or (n, 2), not {pcm.shape!r}"
        )
    if pcm.shape[0] == 0:
        raise ValueError("pcm holds no samples")

    # Convert to int16 ourselves: floats are taken as [-1, 1] and clipped, as every
    # audio library does, rather than wrapping around on overflow.
    ints: npt.NDArray[np.int16]
    if pcm.dtype == np.int16:
        ints = pcm.astype(np.int16, copy=False)
    elif np.issubdtype(pcm.dtype, np.floating):
        ints = np.clip(np.rint(pcm * 32767.0), -32768, 32767).astype(np.int16)
    else:
        raise ValueError(f"pcm must be int16 or floating point, not {pcm.dtype}")

    # Duplicate mono here: libswresample would upmix it 3 dB quieter.
    if ints.shape[1] == 1:
        ints = np.repeat(ints, 2, axis=1)
    ints = np.ascontiguousarray(ints)
    if sample_rate == SAMPLE_RATE:
        return ints

    resampler = av.AudioResampler(format="s16", layout="stereo", rate=SAMPLE_RATE)
    frame = av.AudioFrame.from_ndarray(
        ints.reshape(1, -1), format="s16", layout="stereo"
    )
    frame.sample_rate = sample_rate
    chunks = [f.to_ndarray().reshape(-1, 2) for f in resampler.resample(frame)]
    chunks += [f.to_ndarray().reshape(-1, 2) for f in resampler.resample(None)]
    return np.concatenate(chunks)


def encode_pcm(
    pcm: npt.NDArray[Any], sample_rate: int, *, bitrate: int = 64000
) -> tuple[bytes, ...]:
    """Encode PCM into 20 ms Opus frames, 48 kHz stereo, as a Discord client would.

    ``pcm`` is mono (n,) or (n, 1), or stereo (n, 2); int16, or floating point in
    [-1, 1]. Any positive ``sample_rate`` is resampled to 48 kHz. The last frame is
    padded with silence. The encoder's look-ahead (6.5 ms) adds one frame at the end.

    Raises:
        ValueError: empty or badly shaped ``pcm``, a non-positive ``sample_rate``, or
            a ``bitrate`` outside what Opus supports (6 to 510 kbit/s).
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, not {sample_rate!r}")
    if not _MIN_BITRATE <= bitrate <= _MAX_BITRATE:
        raise ValueError(f"bitrate must be 6000 to 510000 bit/s, not {bitrate!r}")
    stereo = _as_stereo_48k(pcm, sample_rate)

    # Pad to whole frames so every packet holds exactly one 20 ms frame.
    remainder = len(stereo) % SAMPLES_PER_FRAME
    if remainder:
        pad = np.zeros((SAMPLES_PER_FRAME - remainder, 2), dtype=np.int16)
        stereo = np.concatenate([stereo, pad])

    encoder = _open_encoder(bitrate)
    frames: list[bytes] = []
    for start in range(0, len(stereo), SAMPLES_PER_FRAME):
        chunk = stereo[start : start + SAMPLES_PER_FRAME]
        audio = av.AudioFrame.from_ndarray(
            chunk.reshape(1, -1), format="s16", layout="stereo"
        )
        audio.sample_rate = SAMPLE_RATE
        audio.pts = start
        frames.extend(bytes(p) for p in encoder.encode(audio) if p.size)
    frames.extend(bytes(p) for p in encoder.encode(None) if p.size)

    # libopus honours frame_duration, but a frame of another length would break the
    # sender's pacing silently, so check rather than trust.
    for index, frame in enumerate(frames):
        if opus_frame_samples(frame) != SAMPLES_PER_FRAME:
            raise RuntimeError(f"libopus produced a frame {index} that is not 20 ms")
    return tuple(frames)


def _open_encoder(bitrate: int) -> av.AudioCodecContext:
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = SAMPLE_RATE
    encoder.layout = "stereo"
    encoder.format = "s16"
    encoder.bit_rate = bitrate
    encoder.options = dict(_ENCODER_OPTIONS)
    encoder.open()
    return encoder


class OpusDecoder:
    """Decode one stream's frames to 48 kHz stereo int16 PCM.

    Keep one decoder per stream (per SSRC): Opus carries state from frame to frame,
    so frames from two streams through one decoder decode wrongly.
    """

    def __init__(self) -> None:
        self._codec = av.CodecContext.create("libopus", "r")
        self._codec.sample_rate = SAMPLE_RATE
        self._codec.layout = "stereo"

    def decode(self, frame: bytes) -> npt.NDArray[np.int16]:
        """Decode one 20 ms frame to an int16 array of shape (960, 2).

        Raises:
            RemoteProtocolError: the frame is empty, is not 20 ms long, or libopus
                cannot decode it.
        """
        samples = opus_frame_samples(frame)
        if samples != SAMPLES_PER_FRAME:
            raise RemoteProtocolError(
                f"Opus frame of {samples / 48:g} ms where 20 ms frames are expected"
            )

        try:
            decoded = self._codec.decode(av.Packet(frame))
        except av.FFmpegError as exc:
            raise RemoteProtocolError(
                f"libopus could not decode a frame: {exc}"
            ) from exc

        # libopus emits exactly one frame per packet with no start-up delay; anything
        # else means the packet lied about its length.
        parts = [f.to_ndarray().reshape(-1, CHANNELS) for f in decoded]
        pcm = parts[0] if len(parts) == 1 else np.concatenate(parts or [_EMPTY])
        if pcm.shape != (SAMPLES_PER_FRAME, CHANNELS):
            raise RemoteProtocolError(
                f"Opus frame decoded to {pcm.shape[0]} samples, not {SAMPLES_PER_FRAME}"
            )
        return pcm.astype(np.int16, copy=True)


_EMPTY = np.zeros((0, CHANNELS), dtype=np.int16)


def load_opus_file(path: os.PathLike[str] | str) -> tuple[bytes, ...]:
    """Return the frames of an Ogg Opus file, as stored (no re-encoding).

    Raises:
        FixtureError: naming the file, when it is missing, is not Ogg Opus, has more
            than two channels, holds no frames, or holds a frame that is not 20 ms.
    """
    path = Path(path)
    if not path.is_file():
        raise FixtureError(f"{path}: no such file")

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise FixtureError(f"{path}: no audio stream")
            stream = container.streams.audio[0]
            codec = stream.codec_context
            if codec.name != "opus":
                raise FixtureError(f"{path}: audio is {codec.name}, not Opus")
            if codec.sample_rate != SAMPLE_RATE:
                raise FixtureError(
                    f"{path}: sample rate {codec.sample_rate}, not 48000"
                )
            if codec.channels > 2:
                # Multichannel Ogg Opus holds multistream packets, which no voice
                # client can send as they are.
                raise FixtureError(f"{path}: {codec.channels} channels; at most 2")
            packets = [bytes(p) for p in container.demux(stream) if p.size]
    except av.FFmpegError as exc:
        raise FixtureError(f"{path}: not a readable audio file ({exc})") from exc

    if not packets:
        raise FixtureError(f"{path}: holds no Opus frames")
    for index, packet in enumerate(packets):
        try:
            samples = opus_frame_samples(packet)
        except RemoteProtocolError as exc:
            raise FixtureError(f"{path}: frame {index}: {exc}") from exc
        if samples != SAMPLES_PER_FRAME:
            raise FixtureError(
                f"{path}: frame {index} lasts {samples / 48:g} ms; every frame must be 20 ms"
            )
    return tuple(packets)


def write_ogg_opus(
    path: os.PathLike[str] | str, frames: tuple[bytes, ...] | list[bytes]
) -> None:
    """Write 20 ms Opus frames to an Ogg Opus file, as they are (no re-encoding).

    The header declares stereo and the 312-sample pre-skip of libopus's encoder, which
    matches frames made by :func:`encode_pcm`. The same frames always give the same
    bytes.

    Raises:
        ValueError: ``frames`` is empty or holds a frame that is not 20 ms.
    """
    if not frames:
        raise ValueError("no frames to write")
    for index, frame in enumerate(frames):
        if opus_frame_samples(frame) != SAMPLES_PER_FRAME:
            raise ValueError(f"frame {index} is not a 20 ms Opus frame")

    time_base = Fraction(1, SAMPLE_RATE)
    # bitexact: the Ogg muxer otherwise picks a random stream serial number, and the
    # same frames should always make the same file.
    with av.open(
        str(path), "w", format="ogg", options={"fflags": "+bitexact"}
    ) as container:
        # Opening an encoder is the way to get PyAV to build the OpusHead header; the
        # encoder itself is never fed.
        stream = container.add_stream("libopus", rate=SAMPLE_RATE, layout="stereo")
        stream.codec_context.options = dict(_ENCODER_OPTIONS)
        stream.time_base = time_base
        stream.codec_context.open()
        for index, frame in enumerate(frames):
            packet = av.Packet(frame)
            packet.stream = stream
            packet.pts = packet.dts = index * SAMPLES_PER_FRAME
            packet.duration = SAMPLES_PER_FRAME
            packet.time_base = time_base
            container.mux(packet)
