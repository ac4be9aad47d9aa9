"""Audio levels and the onset detector that turns them into speech start and end.

Two parts of voicesim need to know when someone is talking: the reference agent,
which must decide from audio alone when a user has finished a sentence, and the
latency measurement, which must find the first frame of the agent's answer that a
person would actually hear. Both use :class:`OnsetDetector`, so the two can never
disagree about what counts as speech.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

__all__ = [
    "AUDIBLE_DBFS",
    "LEVEL_FLOOR_DBFS",
    "OnsetDetector",
    "OnsetEvent",
    "SpeechEnd",
    "SpeechStart",
    "level_dbfs",
]

#: A frame quieter than this is not heard as sound: an open microphone in a quiet
#: room sits around -60 to -70 dBFS, normal speech around -30 to -15 dBFS.
AUDIBLE_DBFS = -50.0

#: What :func:`level_dbfs` returns for digital silence instead of minus infinity, so
#: levels stay finite numbers that can be averaged, plotted and stored.
LEVEL_FLOOR_DBFS = -120.0


def level_dbfs(pcm: npt.NDArray[Any]) -> float:
    """Return the RMS level of ``pcm`` in dBFS, never below ``LEVEL_FLOOR_DBFS``.

    Integer samples are scaled by their type's full scale (32768 for int16); floating
    point samples are taken as [-1, 1]. All channels count alike. A full-scale sine
    reads -3.01 dBFS and a full-scale square wave 0 dBFS.

    Raises:
        ValueError: ``pcm`` is empty or of a non-numeric type.
    """
    if pcm.size == 0:
        raise ValueError("cannot measure the level of empty pcm")
    if np.issubdtype(pcm.dtype, np.integer):
        full_scale = float(-np.iinfo(pcm.dtype).min)
    elif np.issubdtype(pcm.dtype, np.floating):
        full_scale = 1.0
    else:
        raise ValueError(f"pcm must hold integers or floats, not {pcm.dtype}")

    # float64 so squares of int16 samples cannot overflow; a dot product rather than
    # mean(x * x) because it runs for every received frame and is four times faster.
    samples = pcm.astype(np.float64).ravel()
    mean_square = (
        float(np.dot(samples, samples)) / samples.size / (full_scale * full_scale)
    )
    if mean_square <= 0.0:
        return LEVEL_FLOOR_DBFS
    return max(10.0 * math.log10(mean_square), LEVEL_FLOOR_DBFS)


@attrs.frozen(kw_only=True)
class SpeechStart:
    """Speech began; ``t_ms`` is the start time of its first loud frame."""

    t_ms: float


@attrs.frozen(kw_only=True)
class SpeechEnd:
    """Speech ended; ``t_ms`` is the end time of its last voiced frame.

    ``start_ms`` repeats the matching :class:`SpeechStart` time. The event is reported
    ``release_ms`` after ``t_ms``, once the silence has lasted long enough.
    """

    t_ms: float
    start_ms: float


OnsetEvent = SpeechStart | SpeechEnd


# Why the detector is built the way it is.
#
# A single threshold does not work on speech. Speech is a chain of loud vowels with
# quiet consonants, stop closures and breaths in between, many of which dip 10 to
# 20 dB below the vowels; a single threshold set for the vowels chops a sentence into
# dozens of pieces, and one set for the quiet parts fires on every fan and keyboard.
# So the detector uses two thresholds (hysteresis): speech must rise above `on_dbfs`
# to begin, and once begun it continues while frames stay above the lower
# `off_dbfs`.
#
# Attack: a single loud frame is more often a click, a pop or a packet of codec noise
# than a word, so a start needs `attack_ms` of sound (above `off_dbfs`, having
# crossed `on_dbfs` first). Waiting costs nothing in accuracy, because the start is
# reported with the time of the first loud frame, not the time the decision was
# made. That is what lets the latency measurement reject blips yet still time the
# agent's answer from its first audible frame.
#
# Release: people pause inside sentences for 200 to 500 ms (between clauses, to
# breathe, to think), and an agent that answers into such a pause interrupts its
# user. A turn is therefore over only after `release_ms` of continuous quiet; 700 ms
# is the usual compromise of voice assistants between cutting people off and feeling
# slow. The end is reported with the end time of the last voiced frame, so whoever
# measures can tell the silence the detector waited for from the agent's own delay.
#
# Time comes from the caller, in milliseconds, with every level: the detector never
# reads a clock, so it runs the same on live packets, in tests and over a capture,
# and frames that arrive late or not at all are judged by their time, not by their
# count. Discord clients stop sending altogether when their user is silent, so a
# receiver also calls `advance` as time passes without frames; missing audio counts
# as silence.
@attrs.define(kw_only=True, eq=False)
class OnsetDetector:
    """Hysteresis voice activity detector over per-frame levels.

    Feed it one level per frame with the frame's start time; it returns a
    :class:`SpeechStart` or :class:`SpeechEnd` when one is decided, else ``None``.

    Raises:
        ValueError: ``off_dbfs`` above ``on_dbfs``, a negative ``attack_ms``, or a
            non-positive ``release_ms`` or ``frame_ms``.
    """

    on_dbfs: float = -40.0
    off_dbfs: float = -50.0
    attack_ms: float = 40.0
    release_ms: float = 700.0
    frame_ms: float = 20.0

    # The first loud frame of a possible start while the attack runs, and the end
    # time of the candidate's latest frame.
    _candidate_ms: float | None = attrs.field(default=None, init=False)
    _candidate_until_ms: float = attrs.field(default=0.0, init=False)
    # The start time of the current speech, once the attack has confirmed it.
    _start_ms: float | None = attrs.field(default=None, init=False)
    # End time of the last voiced frame of the current speech.
    _voiced_until_ms: float = attrs.field(default=0.0, init=False)

    def __attrs_post_init__(self) -> None:
        if self.off_dbfs > self.on_dbfs:
            raise ValueError(
                f"off_dbfs ({self.off_dbfs!r}) must not exceed on_dbfs ({self.on_dbfs!r})"
            )
        if self.attack_ms < 0:
            raise ValueError(f"attack_ms must not be negative, not {self.attack_ms!r}")
        if self.release_ms <= 0:
            raise ValueError(f"release_ms must be positive, not {self.release_ms!r}")
        if self.frame_ms <= 0:
            raise ValueError(f"frame_ms must be positive, not {self.frame_ms!r}")

    @property
    def speaking(self) -> bool:
        """Whether speech has started and not yet ended."""
        return self._start_ms is not None

    @property
    def speech_start_ms(self) -> float | None:
        """Start time of the current speech, or ``None`` outside speech."""
        return self._start_ms

    def reset(self) -> None:
        """Forget any speech in progress, as when a stream starts over."""
        self._candidate_ms = None
        self._start_ms = None

    def feed(self, level_dbfs: float, t_ms: float) -> OnsetEvent | None:
        """Take the level of the frame that starts at ``t_ms``.

        Frames should come in time order; a frame older than the last one only ever
        extends speech, it never ends or starts it.
        """
        frame_end = t_ms + self.frame_ms
        if self._start_ms is None:
            return self._attack(level_dbfs, t_ms, frame_end)

        # A gap without frames (and without `advance` calls) as long as the release
        # ended the speech before this frame arrived.
        # XXX: when attack_ms <= frame_ms a loud frame after such a gap should also
        # start new speech at once; it only opens a candidate that the next voiced
        # frame confirms, because one call reports one event.
        if t_ms - self._voiced_until_ms >= self.release_ms:
            end = self._end(self._start_ms)
            if level_dbfs >= self.on_dbfs:
                self._candidate_ms = t_ms
                self._candidate_until_ms = frame_end
            return end

        if level_dbfs >= self.off_dbfs:
            self._voiced_until_ms = max(self._voiced_until_ms, frame_end)
            return None
        return self.advance(frame_end)

    def advance(self, t_ms: float) -> OnsetEvent | None:
        """Note that no voiced audio arrived up to ``t_ms``.

        Call it from a timer while a stream is quiet; it ends speech once the silence
        since the last voiced frame reaches ``release_ms``.
        """
        # A frame or more missing in the middle of an attack breaks it, as silence
        # would; a frame merely late by jitter does not.
        if (
            self._candidate_ms is not None
            and t_ms - self._candidate_until_ms >= self.frame_ms
        ):
            self._candidate_ms = None

        if self._start_ms is None or t_ms - self._voiced_until_ms < self.release_ms:
            return None
        return self._end(self._start_ms)

    def _attack(
        self, level_dbfs: float, t_ms: float, frame_end: float
    ) -> SpeechStart | None:
        # Not speaking: a loud frame opens a candidate, sound above the lower
        # threshold extends it, a quiet frame or a missing one drops it.
        if self._candidate_ms is not None and (
            level_dbfs < self.off_dbfs
            or t_ms - self._candidate_until_ms >= self.frame_ms
        ):
            self._candidate_ms = None
        if self._candidate_ms is None:
            if level_dbfs < self.on_dbfs:
                return None
            self._candidate_ms = t_ms
            self._candidate_until_ms = frame_end
        else:
            self._candidate_until_ms = max(self._candidate_until_ms, frame_end)

        if self._candidate_until_ms - self._candidate_ms < self.attack_ms:
            return None
        start = self._candidate_ms
        self._candidate_ms = None
        self._start_ms = start
        self._voiced_until_ms = self._candidate_until_ms
        return SpeechStart(t_ms=start)

    def _end(self, start_ms: float) -> SpeechEnd:
        end = SpeechEnd(t_ms=self._voiced_until_ms, start_ms=start_ms)
        self._start_ms = None
        return end
