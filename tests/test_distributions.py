from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicesim._distributions import (
    Distribution,
    Exponential,
    Fixed,
    LogNormal,
    Uniform,
    format_duration,
    parse_distribution,
    parse_duration,
)
from voicesim._exceptions import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("300ms", 0.3),
        ("1.5s", 1.5),
        ("2", 2.0),
        ("0.25", 0.25),
        ("1m30s", 90.0),
        ("2s500ms", 2.5),
        (" 10S ", 10.0),
        ("250us", 0.00025),
        (3, 3.0),
        (0.5, 0.5),
    ],
)
def test_parse_duration_reads_units(text: str | float, seconds: float) -> None:
    """Durations in h, m, s, ms and us, alone or combined, and plain numbers read as seconds."""
    assert parse_duration(text, key="k") == pytest.approx(seconds, abs=1e-12)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "s",
        "5x",
        "-1s",
        "5m junk",
        "1.2.3s",
        "ms",
        "inf",
        "nan",
        "1e999s",
        True,
        None,
        [],
        -1.0,
    ],
)
def test_parse_duration_rejects_other_text_naming_the_key(text: object) -> None:
    """Anything else raises ConfigError that names the key and shows the wanted form."""
    with pytest.raises(ConfigError) as info:
        parse_duration(text, key="ramp_up")  # type: ignore[arg-type]
    assert info.value.key == "ramp_up"
    assert "wanted a duration like 90s, 5m, 1h30m" in str(info.value)


def test_parse_duration_gives_exact_millisecond_floats() -> None:
    """300ms is exactly the float 0.3, so configured delays compare equal to literals."""
    assert parse_duration("300ms", key="k") == 0.3
    assert parse_duration("700ms", key="k") == 0.7


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("300ms", Fixed(value=0.3)),
        ("fixed:300ms", Fixed(value=0.3)),
        ("lognormal:median=1s,sigma=0.5", LogNormal(median_value=1.0, sigma=0.5)),
        (
            "LogNormal: sigma=0.25, median=400ms",
            LogNormal(median_value=0.4, sigma=0.25),
        ),
        ("uniform:200ms..600ms", Uniform(low=0.2, high=0.6)),
        ("exp:mean=500ms", Exponential(mean_value=0.5)),
        ("exponential:mean=2s", Exponential(mean_value=2.0)),
        (1.5, Fixed(value=1.5)),
    ],
)
def test_parse_distribution_reads_each_kind(
    text: str | float, expected: Distribution
) -> None:
    """Each documented form parses to its distribution."""
    assert parse_distribution(text, key="think") == expected


@pytest.mark.parametrize(
    "text",
    [
        "gauss:mean=1s",
        "lognormal:median=1s",
        "lognormal:median=1s,sigma=-1",
        "lognormal:median=0s,sigma=1",
        "lognormal:median=1s,sigma=x",
        "lognormal:median=1s,median=2s,sigma=1",
        "uniform:600ms..200ms",
        "uniform:200ms",
        "exp:mean=0s",
        "exp:average=1s",
        "fixed:soon",
        "",
    ],
)
def test_parse_distribution_rejects_bad_text_naming_the_key(text: str) -> None:
    """Unknown kinds, missing or impossible parameters raise ConfigError for the key."""
    with pytest.raises(ConfigError) as info:
        parse_distribution(text, key="think")
    assert info.value.key == "think"


def test_parse_distribution_passes_a_distribution_through() -> None:
    """A Distribution object is used as it is, so config may hold either form."""
    dist = Uniform(low=0.1, high=0.2)
    assert parse_distribution(dist, key="think") is dist


_seconds = st.floats(
    min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False
)
_positive = st.floats(
    min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False
)
_distributions = st.one_of(
    st.builds(Fixed, value=_seconds),
    st.builds(LogNormal, median_value=_positive, sigma=st.floats(0.0, 5.0)),
    st.tuples(_seconds, _seconds).map(
        lambda pair: Uniform(low=min(pair), high=max(pair))
    ),
    st.builds(Exponential, mean_value=_positive),
)


@given(_seconds)
def test_format_duration_round_trips(seconds: float) -> None:
    """format_duration writes text that parse_duration reads back exactly."""
    assert parse_duration(format_duration(seconds), key="k") == seconds


@given(_distributions)
def test_distribution_text_round_trips(dist: Distribution) -> None:
    """str() of any distribution parses back to an equal one."""
    assert parse_distribution(str(dist), key="k") == dist


@given(_distributions, st.integers(0, 2**32))
def test_distribution_samples_are_never_negative(dist: Distribution, seed: int) -> None:
    """Every kind draws durations of zero or more seconds."""
    rng = np.random.default_rng(seed)
    assert all(dist.sample(rng) >= 0.0 for _ in range(20))


def test_distribution_sampling_is_reproducible_with_a_seed() -> None:
    """Two generators with one seed draw the same durations."""
    dist = parse_distribution("lognormal:median=1s,sigma=0.5", key="k")
    first = [dist.sample(np.random.default_rng(7)) for _ in range(3)]
    second = [dist.sample(np.random.default_rng(7)) for _ in range(3)]
    assert first == second


@pytest.mark.parametrize(
    "text",
    [
        "fixed:300ms",
        "lognormal:median=1s,sigma=0.5",
        "uniform:200ms..600ms",
        "exp:mean=500ms",
    ],
)
def test_distribution_median_and_mean_match_samples(text: str) -> None:
    """The median and mean properties agree with 20,000 seeded draws."""
    dist = parse_distribution(text, key="k")
    rng = np.random.default_rng(12345)
    draws = np.array([dist.sample(rng) for _ in range(20_000)])
    assert np.median(draws) == pytest.approx(dist.median, rel=0.03)
    assert np.mean(draws) == pytest.approx(dist.mean, rel=0.03)


def test_distribution_lognormal_spread_follows_sigma() -> None:
    """A lognormal's log-draws have the configured standard deviation."""
    dist = LogNormal(median_value=0.4, sigma=0.5)
    rng = np.random.default_rng(3)
    logs = np.log([dist.sample(rng) for _ in range(20_000)])
    assert np.std(logs) == pytest.approx(0.5, rel=0.03)
    assert math.exp(np.mean(logs)) == pytest.approx(0.4, rel=0.03)


def test_distribution_uniform_stays_within_bounds() -> None:
    """Uniform draws fall between low and high and cover the range."""
    dist = Uniform(low=0.2, high=0.6)
    rng = np.random.default_rng(1)
    draws = [dist.sample(rng) for _ in range(5_000)]
    assert 0.2 <= min(draws) < 0.21
    assert 0.59 < max(draws) <= 0.6
