"""One speaker's audio, turned into utterances: speech start, audio to transcribe, end.

Sans-I/O: the caller passes every Opus frame with its arrival time and calls
:meth:`SpeakerListener.tick` while the stream is quiet; the listener never reads a
clock and never blocks.
"""

from __future__ import annotations

import collections

import attrs
import numpy as np
import numpy.typing as npt

from voicesim._exceptions import RemoteProtocolError
from voicesim.agent._config import AgentConfig
from voicesim.media import (
    FRAME_MS,
    LEVEL_FLOOR_DBFS,
    SAMPLES_PER_FRAME,
    SILENCE_FRAME,
    OnsetDetector,
    OpusDecoder,
    SpeechEnd,
    SpeechStart,
    level_dbfs,
)

__all__ = [
    "STT_SAMPLE_RATE",
    "ListenerEvent",
    "ListenerStats",
    "SpeakerListener",
    "SpeechAudio",
    "SpeechEnded",
    "SpeechStarted",
]

#: Sample rate of the audio handed to transcription: pocketsphinx's English model
#: (and most recognisers) is trained on 16 kHz speech.
STT_SAMPLE_RATE = 16000

_FRAME_NS = FRAME_MS * 1_000_000
_DECIMATION = 48000 // STT_SAMPLE_RATE
_Mono = npt.NDArray[np.float32]
# Audio before the first voiced frame handed to the recogniser with the utterance:
# pocketsphinx estimates the noise floor and cepstral mean from the start of an
# utterance, and words clipped at their first phone are misrecognised.
_PREROLL_NS = 300 * 1_000_000


@attrs.frozen(kw_only=True)
class SpeechStarted:
    """Speech began; ``start_ns`` is the arrival time of its first voiced frame."""

    start_ns: int


@attrs.frozen(kw_only=True)
class SpeechAudio:
    """The next piece of the current utterance, for transcription.

    ``pcm`` is 16 kHz mono 16-bit little-endian PCM, in arrival order. The first
    piece of an utterance also holds up to 300 ms from before its first voiced frame.
    """

    pcm: bytes = attrs.field(repr=lambda pcm: f"<{len(pcm) // 2} samples>")


@attrs.frozen(kw_only=True)
class SpeechEnded:
    """The utterance is over.

    ``end_ns`` is the arrival time of its last voiced frame and ``detected_ns`` the
    time the listener decided it was over (``end_silence`` later, or at once when
    ``cut``). ``cut`` means the utterance reached ``max_utterance``; the rest of
    that speech is ignored. ``frames`` are its Opus frames from the first voiced
    frame to the last (empty when the listener keeps no frames).
    """

    start_ns: int
    end_ns: int
    detected_ns: int
    cut: bool
    frames: tuple[bytes, ...] = attrs.field(repr=lambda f: f"<{len(f)} frames>")


ListenerEvent = SpeechStarted | SpeechAudio | SpeechEnded


@attrs.define
class ListenerStats:
    """Counts of what one speaker's stream held."""

    frames: int = 0
    silence_frames: int = 0
    decode_errors: int = 0
    utterances: int = 0
    cuts: int = 0


# Why end of speech is decided this way.
#
# The agent decides from the audio, not from the speaking flag (voice gateway op 5)
# or from packets stopping. Clients raise the flag when the microphone opens, keep it
# up through pauses and lower it on their own schedule, and a client that sends
# breathing or background noise keeps packets flowing long after the words end; a
# real agent that trusted either would answer too early or never. So every frame is
# decoded and its level measured, as a person's ear would.
#
# The decision is voicesim.media's OnsetDetector, the same one voicesim uses to
# find the first audible frame of the agent's answer, so the agent and its measurer
# agree on what speech is. It has two thresholds (speech starts above vad_on_dbfs and
# continues while frames stay above vad_off_dbfs, so quiet consonants between loud
# vowels do not end it), an attack (vad_attack of sound before a start counts, so a
# click or a single packet of codec noise is not a turn), and a release:
# end_silence of quiet after the last voiced frame ends the utterance. 700 ms is the
# usual compromise of voice assistants: people pause 200 to 500 ms inside a
# sentence, and an agent that waits much longer feels slow. This wait is most of
# the agent's answer latency, as it is for real agents, and it is deliberate.
#
# Times are arrival times of frames. A frame is taken to cover the 20 ms before its
# arrival, so the end of speech is the arrival time of the last voiced frame: the
# moment the agent could first know that audio existed. Jitter moves it by the
# jitter; a lost packet is a short silence the release absorbs. Clients stop sending
# altogether when their user stops talking (after five F8 FF FE silence frames), so
# the caller must tick() the listener from a timer: missing audio is silence, and
# deadline_ns() says when the next tick can matter.
#
# A frame that does not decode costs only its own speaker: it is counted and heard
# as silence, like a lost packet, and the stream goes on. An utterance that reaches
# max_utterance is ended there (reported with cut=True, so it is transcribed and
# answered like any other) and the rest of that speech is ignored until the speaker
# falls silent, so a stuck microphone produces one long turn, not a new turn every
# max_utterance, and cannot hold a transcription worker forever.
#
# The recogniser gets 16 kHz mono while the utterance is still being spoken, one
# SpeechAudio per frame, so transcription runs alongside the speech and only the
# tail is left to decode once the end is known.
@attrs.define
class SpeakerListener:
    """Voice activity, utterance bounds and recogniser audio for one stream.

    Keep one per SSRC: it owns that stream's Opus decoder. ``keep_frames`` keeps each
    utterance's Opus frames for :class:`SpeechEnded` (needed by echo replies).
    """

    config: AgentConfig = attrs.field(factory=AgentConfig)
    keep_frames: bool = True
    stats: ListenerStats = attrs.field(factory=ListenerStats, init=False)

    _decoder: OpusDecoder = attrs.field(factory=OpusDecoder, init=False)
    _detector: OnsetDetector = attrs.field(init=False)
    _downsampler: _Downsampler = attrs.field(factory=lambda: _Downsampler(), init=False)
    # Times go to the detector in milliseconds counted from the first call, which
    # keeps float precision far below a nanosecond however long the process runs.
    _origin_ns: int | None = attrs.field(default=None, init=False)
    # Recent frames as (arrival_ns, opus, 48 kHz mono or None for silence), for the
    # start of an utterance.
    _recent: collections.deque[tuple[int, bytes, _Mono | None]] = attrs.field(
        init=False
    )
    _start_ns: int | None = attrs.field(default=None, init=False)
    _last_voiced_ns: int = attrs.field(default=0, init=False)
    _frames: list[bytes] = attrs.field(factory=list, init=False)
    _voiced_frames: int = attrs.field(default=0, init=False)
    _cut: bool = attrs.field(default=False, init=False)

    @_detector.default
    def _make_detector(self) -> OnsetDetector:
        return OnsetDetector(
            on_dbfs=self.config.vad_on_dbfs,
            off_dbfs=self.config.vad_off_dbfs,
            attack_ms=self.config.vad_attack * 1000.0,
            release_ms=self.config.end_silence * 1000.0,
            frame_ms=float(FRAME_MS),
        )

    @_recent.default
    def _make_recent(self) -> collections.deque[tuple[int, bytes, _Mono | None]]:
        span_ns = _PREROLL_NS + self.config.vad_attack * 1e9
        return collections.deque(maxlen=int(span_ns // _FRAME_NS) + 2)

    @property
    def speaking(self) -> bool:
        """Whether an utterance (or the ignored rest of a cut one) is in progress."""
        return self._detector.speaking

    @property
    def last_voiced_ns(self) -> int | None:
        """Arrival time of the latest voiced frame of the current speech, if any."""
        return self._last_voiced_ns if self._detector.speaking else None

    def deadline_ns(self) -> int | None:
        """When a :meth:`tick` could end the current speech; ``None`` outside speech."""
        if not self._detector.speaking:
            return None
        return self._last_voiced_ns + round(self.config.end_silence * 1e9)

    def feed(self, payload: bytes, arrival_ns: int) -> list[ListenerEvent]:
        """Take one Opus frame (transport and DAVE encryption already removed)."""
        self.stats.frames += 1
        mono, level = self._decode(payload)
        self._recent.append((arrival_ns, payload, mono))

        # The detector takes the frame's start time; the frame ends at its arrival.
        t_ms = self._ms(arrival_ns) - FRAME_MS
        decision = self._detector.feed(level, t_ms)

        if isinstance(decision, SpeechStart):
            return self._started(decision, arrival_ns)
        if isinstance(decision, SpeechEnd):
            # A gap longer than end_silence with no ticks: the old speech ended
            # before this frame, which belongs to no utterance (it may open a
            # candidate for the next one).
            return self._ended(arrival_ns)
        if not self._detector.speaking or self._cut:
            return []

        # Inside an utterance: keep the frame, pass its audio on, and cut the
        # utterance once its speech has gone on too long. Only a voiced frame can
        # make it too long: the quiet tail before end_silence runs out belongs to
        # the utterance but is not more speech.
        voiced = level >= self.config.vad_off_dbfs
        if voiced:
            self._last_voiced_ns = max(self._last_voiced_ns, arrival_ns)
            self._voiced_frames = len(self._frames) + 1
        if self.keep_frames:
            self._frames.append(payload)
        events: list[ListenerEvent] = [SpeechAudio(pcm=self._downsampler.process(mono))]
        assert self._start_ns is not None
        too_long = arrival_ns - self._start_ns >= round(self.config.max_utterance * 1e9)
        if voiced and too_long:
            events.append(self._finish(detected_ns=arrival_ns, cut=True))
            self._cut = True
            self.stats.cuts += 1
        return events

    def tick(self, now_ns: int) -> list[ListenerEvent]:
        """Note that no frame arrived up to ``now_ns``; may end the current speech."""
        if self._origin_ns is None:
            return []
        if isinstance(self._detector.advance(self._ms(now_ns)), SpeechEnd):
            return self._ended(now_ns)
        return []

    def _decode(self, payload: bytes) -> tuple[npt.NDArray[np.float32] | None, float]:
        # The silence frame is Discord's "stopped talking" marker, not audio worth
        # decoding; garbage is heard as silence so it costs this stream only.
        if payload == SILENCE_FRAME:
            self.stats.silence_frames += 1
            return None, LEVEL_FLOOR_DBFS
        try:
            pcm = self._decoder.decode(payload)
        except RemoteProtocolError:
            self.stats.decode_errors += 1
            return None, LEVEL_FLOOR_DBFS
        mono = pcm.sum(axis=1, dtype=np.float32)
        mono *= 0.5
        return mono, level_dbfs(pcm)

    def _ms(self, time_ns: int) -> float:
        if self._origin_ns is None:
            self._origin_ns = time_ns
        return (time_ns - self._origin_ns) / 1e6

    def _started(self, decision: SpeechStart, arrival_ns: int) -> list[ListenerEvent]:
        # The detector confirmed speech after the attack. The utterance starts at the
        # arrival of its first loud frame (the end of the frame the detector names),
        # which is still among the recent frames.
        assert self._origin_ns is not None
        start_ns = self._origin_ns + round((decision.t_ms + FRAME_MS) * 1e6)
        self._start_ns = start_ns
        self._last_voiced_ns = arrival_ns
        self._cut = False
        self.stats.utterances += 1

        voiced = [item for item in self._recent if item[0] >= start_ns]
        self._frames = [opus for _, opus, _ in voiced] if self.keep_frames else []
        self._voiced_frames = len(voiced)
        # Resampling costs more than decoding, so it runs only on audio that goes to
        # the recogniser: from the pre-roll on, never on a silent stream.
        self._downsampler.reset()
        preroll = [
            self._downsampler.process(mono)
            for t, _, mono in self._recent
            if t >= start_ns - _PREROLL_NS
        ]
        return [SpeechStarted(start_ns=start_ns), SpeechAudio(pcm=b"".join(preroll))]

    def _ended(self, detected_ns: int) -> list[ListenerEvent]:
        if self._cut:
            # The ignored rest of a cut utterance is over; it was reported at the cut.
            self._cut = False
            self._start_ns = None
            return []
        return [self._finish(detected_ns=detected_ns, cut=False)]

    def _finish(self, *, detected_ns: int, cut: bool) -> SpeechEnded:
        assert self._start_ns is not None
        ended = SpeechEnded(
            start_ns=self._start_ns,
            end_ns=self._last_voiced_ns,
            detected_ns=detected_ns,
            cut=cut,
            frames=tuple(self._frames[: self._voiced_frames]),
        )
        if not cut:
            self._start_ns = None
        self._frames = []
        self._voiced_frames = 0
        return ended


# Windowed-sinc low-pass for 48 kHz -> 16 kHz: passes speech up to about 7 kHz and
# removes what would otherwise fold back from above 8 kHz into the band the
# recogniser listens to. The taps are symmetric, so convolution needs no flip.
_TAPS = 63
_CUTOFF = 7200.0 / 48000.0


def _low_pass() -> npt.NDArray[np.float64]:
    n = np.arange(_TAPS) - (_TAPS - 1) / 2.0
    taps: npt.NDArray[np.float64] = (
        2.0 * _CUTOFF * np.sinc(2.0 * _CUTOFF * n) * np.hamming(_TAPS)
    )
    normalised: npt.NDArray[np.float64] = taps / taps.sum()
    return normalised


_LOW_PASS = _low_pass().astype(np.float32)
_SILENCE = np.zeros(SAMPLES_PER_FRAME, dtype=np.float32)


class _Downsampler:
    """Stream 48 kHz mono frames into 16 kHz int16, continuous across frames."""

    def __init__(self) -> None:
        self._history = np.zeros(_TAPS - 1, dtype=np.float32)

    def reset(self) -> None:
        """Start a new stretch of audio (the filter forgets the previous one)."""
        self._history[:] = 0.0

    def process(self, mono: _Mono | None) -> bytes:
        """Return 320 samples of 16 kHz PCM for one frame (``None`` is silence)."""
        # Filter with the previous frame's tail, so frame edges leave no clicks, and
        # keep every third output.
        signal = np.concatenate([self._history, _SILENCE if mono is None else mono])
        self._history = signal[-(_TAPS - 1) :]
        out = np.convolve(signal, _LOW_PASS, mode="valid")[::_DECIMATION]
        return np.clip(np.rint(out), -32768, 32767).astype("<i2").tobytes()
