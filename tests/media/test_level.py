"""Audio levels and the hysteresis onset detector."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicesim.media import (
    LEVEL_FLOOR_DBFS,
    OnsetDetector,
    OnsetEvent,
    SpeechEnd,
    SpeechStart,
    level_dbfs,
)

QUIET = -70.0
LOUD = -20.0


def _sine(amplitude: float, n: int = 48000, hz: float = 997.0) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * hz * np.arange(n) / 48000)


def _run(
    detector: OnsetDetector, levels: list[float]
) -> list[tuple[float, OnsetEvent]]:
    """Feed 20 ms frames from t=0 and return (feed time, event) pairs."""
    events = []
    for index, level in enumerate(levels):
        event = detector.feed(level, index * 20.0)
        if event is not None:
            events.append((index * 20.0, event))
    return events


def test_level_dbfs_full_scale_sine_is_minus_3() -> None:
    """A full-scale int16 sine reads -3.01 dBFS."""
    pcm = np.round(_sine(32767.0)).astype(np.int16)

    assert level_dbfs(pcm) == pytest.approx(-3.01, abs=0.02)


def test_level_dbfs_float_and_stereo_agree_with_int16() -> None:
    """Float samples are taken as [-1, 1] and both stereo channels count."""
    mono = _sine(0.5)
    stereo = np.stack([mono, mono], axis=1).astype(np.float32)

    assert level_dbfs(stereo) == pytest.approx(-9.03, abs=0.02)
    assert level_dbfs((mono * 32768).astype(np.int16)) == pytest.approx(-9.03, abs=0.02)


def test_level_dbfs_square_wave_is_zero() -> None:
    """A full-scale square wave reads 0 dBFS."""
    pcm = np.array([-32768, 32767] * 480, dtype=np.int16)

    assert level_dbfs(pcm) == pytest.approx(0.0, abs=0.001)


def test_level_dbfs_silence_is_floor() -> None:
    """Digital silence reads the floor, not minus infinity."""
    assert level_dbfs(np.zeros((960, 2), dtype=np.int16)) == LEVEL_FLOOR_DBFS
    assert level_dbfs(np.full(960, 1e-9)) == LEVEL_FLOOR_DBFS


def test_level_dbfs_rejects_empty_and_non_numeric() -> None:
    """Empty pcm and non-numeric arrays raise ValueError."""
    with pytest.raises(ValueError, match="empty"):
        level_dbfs(np.zeros(0, dtype=np.int16))
    with pytest.raises(ValueError, match="integers or floats"):
        level_dbfs(np.array(["a", "b"]))


@given(
    amplitude=st.floats(0.001, 0.5),
    gain_db=st.floats(-40.0, 6.0),
)
def test_level_dbfs_scales_with_gain(amplitude: float, gain_db: float) -> None:
    """Multiplying the signal by a gain adds that gain in dB to its level."""
    pcm = _sine(amplitude, n=960)
    scaled = pcm * 10 ** (gain_db / 20)

    assert level_dbfs(scaled) == pytest.approx(level_dbfs(pcm) + gain_db, abs=1e-6)


def test_onset_speech_start_and_end_carry_true_times() -> None:
    """Start is dated to the first loud frame, end to the last voiced frame's end."""
    detector = OnsetDetector()
    levels = [QUIET] * 5 + [LOUD] * 50 + [QUIET] * 50

    events = _run(detector, levels)

    assert events == [
        (120.0, SpeechStart(t_ms=100.0)),
        (1780.0, SpeechEnd(t_ms=1100.0, start_ms=100.0)),
    ]
    assert not detector.speaking


def test_onset_single_click_does_not_start_speech() -> None:
    """One loud frame between quiet ones is shorter than the attack and is ignored."""
    detector = OnsetDetector()

    assert _run(detector, [QUIET, LOUD, QUIET, QUIET, LOUD, QUIET]) == []
    assert detector.speech_start_ms is None


def test_onset_hysteresis_between_thresholds() -> None:
    """Sound between the thresholds cannot start speech but keeps it going."""
    between = -45.0
    assert _run(OnsetDetector(), [between] * 100) == []

    detector = OnsetDetector()
    events = _run(detector, [LOUD] * 3 + [between] * 100)

    assert events == [(20.0, SpeechStart(t_ms=0.0))]
    assert detector.speaking


def test_onset_pause_shorter_than_release_keeps_speech() -> None:
    """A 600 ms pause inside a sentence does not end it; 700 ms does."""
    detector = OnsetDetector(release_ms=700)
    levels = [LOUD] * 10 + [QUIET] * 30 + [LOUD] * 10 + [QUIET] * 35

    events = _run(detector, levels)

    assert events == [
        (20.0, SpeechStart(t_ms=0.0)),
        (1680.0, SpeechEnd(t_ms=1000.0, start_ms=0.0)),
    ]


def test_onset_advance_ends_speech_when_frames_stop() -> None:
    """Time passing without frames counts as silence."""
    detector = OnsetDetector(release_ms=700)
    _run(detector, [LOUD] * 10)

    assert detector.advance(899.0) is None
    assert detector.advance(900.0) == SpeechEnd(t_ms=200.0, start_ms=0.0)
    assert detector.advance(2000.0) is None


def test_onset_missing_frames_break_the_attack() -> None:
    """A loud frame followed by a gap of a whole frame does not count toward a start."""
    detector = OnsetDetector(attack_ms=40)

    assert detector.feed(LOUD, 0.0) is None
    assert detector.feed(LOUD, 40.0) is None
    assert detector.feed(LOUD, 60.0) == SpeechStart(t_ms=40.0)


def test_onset_advance_during_attack_drops_candidate() -> None:
    """An advance past a missing frame during the attack drops the candidate."""
    detector = OnsetDetector(attack_ms=40)
    detector.feed(LOUD, 0.0)

    assert detector.advance(40.0) is None
    assert detector.feed(LOUD, 40.0) is None
    assert detector.feed(LOUD, 60.0) == SpeechStart(t_ms=40.0)


def test_onset_gap_longer_than_release_ends_speech_on_next_frame() -> None:
    """A long gap without advance calls ends speech when the next frame arrives."""
    detector = OnsetDetector(release_ms=700)
    _run(detector, [LOUD] * 10)

    assert detector.feed(LOUD, 2000.0) == SpeechEnd(t_ms=200.0, start_ms=0.0)
    assert detector.feed(LOUD, 2020.0) == SpeechStart(t_ms=2000.0)


def test_onset_late_old_frame_never_ends_speech() -> None:
    """A quiet frame older than the last voiced one does not end speech."""
    detector = OnsetDetector(release_ms=100)
    _run(detector, [LOUD] * 10)

    assert detector.feed(QUIET, -500.0) is None
    assert detector.speaking


def test_onset_zero_attack_starts_on_first_loud_frame() -> None:
    """With no attack the first frame above on_dbfs starts speech at once."""
    detector = OnsetDetector(attack_ms=0)

    assert detector.feed(LOUD, 80.0) == SpeechStart(t_ms=80.0)


def test_onset_reset_forgets_speech() -> None:
    """After reset the detector is quiet and a new start is reported."""
    detector = OnsetDetector()
    _run(detector, [LOUD] * 5)
    detector.reset()

    assert not detector.speaking
    assert detector.advance(10_000.0) is None
    assert detector.feed(LOUD, 10_000.0) is None
    assert detector.feed(LOUD, 10_020.0) == SpeechStart(t_ms=10_000.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"on_dbfs": -50.0, "off_dbfs": -40.0}, "off_dbfs"),
        ({"attack_ms": -1.0}, "attack_ms"),
        ({"release_ms": 0.0}, "release_ms"),
        ({"frame_ms": 0.0}, "frame_ms"),
    ],
)
def test_onset_rejects_bad_settings(kwargs: dict[str, float], message: str) -> None:
    """Inconsistent thresholds and non-positive durations raise ValueError."""
    with pytest.raises(ValueError, match=message):
        OnsetDetector(**kwargs)


@given(
    levels=st.lists(st.sampled_from([-90.0, -55.0, -45.0, -35.0, -10.0]), max_size=300),
    attack_ms=st.sampled_from([0.0, 20.0, 40.0, 100.0]),
    release_ms=st.sampled_from([20.0, 100.0, 700.0]),
)
def test_onset_events_alternate_and_respect_timing(
    levels: list[float], attack_ms: float, release_ms: float
) -> None:
    """Starts and ends alternate, are dated no later than decided, and honour release."""
    detector = OnsetDetector(attack_ms=attack_ms, release_ms=release_ms)

    events = _run(detector, levels)

    for position, (fed_at, event) in enumerate(events):
        if position % 2 == 0:
            assert isinstance(event, SpeechStart)
            assert levels[int(event.t_ms // 20)] >= detector.on_dbfs
            assert fed_at + 20 - event.t_ms >= attack_ms
        else:
            assert isinstance(event, SpeechEnd)
            previous = events[position - 1][1]
            assert event.start_ms == previous.t_ms
            assert event.t_ms > event.start_ms
            assert fed_at + 20 - event.t_ms >= release_ms
            assert math.isclose(event.t_ms % 20, 0.0)
            assert levels[int(event.t_ms // 20) - 1] >= detector.off_dbfs
