"""Durations and the random distributions of times: think time, pauses, arrivals.

Configuration writes times the way people say them: ``90s``, ``5m``, ``1h30m``,
``300ms``. Where a time varies, it is a distribution written in one short string::

    300ms                           always 300 ms (same as fixed:300ms)
    fixed:300ms
    lognormal:median=1s,sigma=0.5   right-skewed, like human and service delays
    uniform:200ms..600ms
    exp:mean=500ms                  memoryless, like independent arrivals

Both the reference agent (its think time) and the swarm engine (pauses between
turns, session arrivals) use these, so a string means the same thing everywhere.
Everything is in seconds as ``float``; sampling takes the caller's
``numpy.random.Generator``, so a seeded run is reproducible.
"""

from __future__ import annotations

import abc
import math
import re

import attrs
import numpy as np

from voicesim._exceptions import ConfigError

__all__ = [
    "Distribution",
    "Exponential",
    "Fixed",
    "LogNormal",
    "Uniform",
    "format_duration",
    "parse_distribution",
    "parse_duration",
]

_DURATION_HINT = "wanted a duration like 90s, 5m, 1h30m"
_DISTRIBUTION_HINT = (
    "wanted a duration (300ms) or a distribution like fixed:300ms, "
    "lognormal:median=1s,sigma=0.5, uniform:200ms..600ms, exp:mean=500ms"
)

# "ms" must come before "m" and "s" in the alternation, or "300ms" would read as
# 300 minutes followed by garbage.
# Sub-second units divide rather than multiply by 0.001, so "300ms" gives exactly
# the float 0.3 and durations survive a round trip through format_duration.
_UNIT_MULTIPLIER = {"h": 3600.0, "m": 60.0, "s": 1.0}
_UNIT_DIVISOR = {"ms": 1000.0, "us": 1_000_000.0}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?"
_PART = re.compile(rf"({_NUMBER})(ms|us|h|m|s)")
_PLAIN_NUMBER = re.compile(_NUMBER)


def parse_duration(text: str | float, *, key: str) -> float:
    """Return ``text`` as seconds: ``90s``, ``5m``, ``1h30m``, ``300ms``, ``1.5s``.

    A plain number (or numeric string) is seconds. Units may be combined, largest
    first or not (``1m30s``, ``2s500ms``). Negative, infinite and NaN values are
    refused.

    Raises:
        ConfigError: naming ``key``, for anything else.
    """
    if isinstance(text, bool):
        raise ConfigError(key, f"{text!r} is not a duration; {_DURATION_HINT}")
    if isinstance(text, int | float):
        value = float(text)
        if not math.isfinite(value) or value < 0:
            raise ConfigError(key, f"{text!r} is not a duration; {_DURATION_HINT}")
        return value
    if not isinstance(text, str):
        raise ConfigError(key, f"{text!r} is not a duration; {_DURATION_HINT}")

    stripped = text.strip().lower()
    if _PLAIN_NUMBER.fullmatch(stripped) and math.isfinite(float(stripped)):
        return float(stripped)

    # Walk the string part by part, so "5m junk" or "5x" fails instead of being read
    # as its valid prefix.
    total = 0.0
    position = 0
    for match in _PART.finditer(stripped):
        if match.start() != position:
            break
        number, unit = float(match.group(1)), match.group(2)
        if unit in _UNIT_DIVISOR:
            total += number / _UNIT_DIVISOR[unit]
        else:
            total += number * _UNIT_MULTIPLIER[unit]
        position = match.end()
    if position == 0 or position != len(stripped) or not math.isfinite(total):
        raise ConfigError(key, f"{text!r} is not a duration; {_DURATION_HINT}")
    return total


def format_duration(seconds: float) -> str:
    """Return ``seconds`` as the shortest exact string :func:`parse_duration` reads."""
    millis = round(seconds * 1000.0)
    if seconds < 1.0 and millis / 1000.0 == seconds:
        return f"{millis}ms"
    return f"{seconds!r}s"


class Distribution(abc.ABC):
    """A distribution of durations in seconds, made by :func:`parse_distribution`.

    ``str()`` gives back text that parses to an equal distribution.
    """

    @abc.abstractmethod
    def sample(self, rng: np.random.Generator) -> float:
        """Draw one duration in seconds."""

    @property
    @abc.abstractmethod
    def median(self) -> float:
        """The median duration in seconds."""

    @property
    @abc.abstractmethod
    def mean(self) -> float:
        """The mean duration in seconds."""

    @classmethod
    def parse(cls, text: str | float | Distribution, *, key: str) -> Distribution:
        """Same as :func:`parse_distribution`."""
        return parse_distribution(text, key=key)


@attrs.frozen(kw_only=True)
class Fixed(Distribution):
    """Always the same duration."""

    value: float

    def sample(self, rng: np.random.Generator) -> float:
        return self.value

    @property
    def median(self) -> float:
        return self.value

    @property
    def mean(self) -> float:
        return self.value

    def __str__(self) -> str:
        return f"fixed:{format_duration(self.value)}"


@attrs.frozen(kw_only=True)
class LogNormal(Distribution):
    """``median * exp(sigma * N(0, 1))``: skewed to the right, never negative.

    Service and human delays look like this: most are near the median, a few are
    several times longer. ``sigma`` 0.5 puts the 95th percentile at 2.3 times the
    median.
    """

    median_value: float
    sigma: float

    def sample(self, rng: np.random.Generator) -> float:
        return self.median_value * math.exp(self.sigma * float(rng.standard_normal()))

    @property
    def median(self) -> float:
        return self.median_value

    @property
    def mean(self) -> float:
        return self.median_value * math.exp(self.sigma * self.sigma / 2.0)

    def __str__(self) -> str:
        return (
            f"lognormal:median={format_duration(self.median_value)},"
            f"sigma={self.sigma!r}"
        )


@attrs.frozen(kw_only=True)
class Uniform(Distribution):
    """Any duration from ``low`` to ``high``, all equally likely."""

    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))

    @property
    def median(self) -> float:
        return (self.low + self.high) / 2.0

    @property
    def mean(self) -> float:
        return (self.low + self.high) / 2.0

    def __str__(self) -> str:
        return f"uniform:{format_duration(self.low)}..{format_duration(self.high)}"


@attrs.frozen(kw_only=True)
class Exponential(Distribution):
    """Memoryless durations with the given mean: the gaps of a Poisson process."""

    mean_value: float

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.exponential(self.mean_value))

    @property
    def median(self) -> float:
        return self.mean_value * math.log(2.0)

    @property
    def mean(self) -> float:
        return self.mean_value

    def __str__(self) -> str:
        return f"exp:mean={format_duration(self.mean_value)}"


def parse_distribution(text: str | float | Distribution, *, key: str) -> Distribution:
    """Parse a distribution of durations; a bare duration means a fixed one.

    Accepts ``300ms``, ``fixed:300ms``, ``lognormal:median=1s,sigma=0.5``,
    ``uniform:200ms..600ms`` and ``exp:mean=500ms`` (also ``exponential:``). A
    :class:`Distribution` is returned as it is.

    Raises:
        ConfigError: naming ``key``, for text that is none of these or has
            impossible parameters (negative sigma, low above high, zero mean).
    """
    if isinstance(text, Distribution):
        return text
    if not isinstance(text, str) or ":" not in text:
        return Fixed(value=_duration(text, key=key))

    kind, _, spec = text.strip().partition(":")
    kind = kind.strip().lower()
    spec = spec.strip()
    if kind == "fixed":
        return Fixed(value=_duration(spec, key=key))

    if kind == "uniform":
        low_text, dots, high_text = spec.partition("..")
        if not dots:
            raise ConfigError(
                key, f"{text!r}: uniform needs low..high; {_DISTRIBUTION_HINT}"
            )
        low, high = _duration(low_text, key=key), _duration(high_text, key=key)
        if low > high:
            raise ConfigError(key, f"{text!r}: uniform low is above high")
        return Uniform(low=low, high=high)

    if kind not in ("lognormal", "exp", "exponential"):
        raise ConfigError(
            key, f"{text!r}: unknown distribution {kind!r}; {_DISTRIBUTION_HINT}"
        )
    params = _params(text, spec, key=key)
    if kind == "lognormal":
        _expect_params(text, params, {"median", "sigma"}, key=key)
        median = _duration(params["median"], key=key)
        sigma = _number(params["sigma"], text, key=key)
        if median <= 0:
            raise ConfigError(key, f"{text!r}: lognormal median must be positive")
        return LogNormal(median_value=median, sigma=sigma)
    _expect_params(text, params, {"mean"}, key=key)
    mean = _duration(params["mean"], key=key)
    if mean <= 0:
        raise ConfigError(key, f"{text!r}: exponential mean must be positive")
    return Exponential(mean_value=mean)


def _duration(text: str | float, *, key: str) -> float:
    # Same error as parse_duration, but with the distribution hint, since the user
    # wrote a distribution key.
    try:
        return parse_duration(text, key=key)
    except ConfigError:
        raise ConfigError(
            key, f"{text!r} is not a duration; {_DISTRIBUTION_HINT}"
        ) from None


def _params(text: str, spec: str, *, key: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in spec.split(","):
        name, equals, value = item.partition("=")
        name = name.strip().lower()
        if not equals or not name or name in params:
            raise ConfigError(
                key, f"{text!r}: expected name=value pairs; {_DISTRIBUTION_HINT}"
            )
        params[name] = value.strip()
    return params


def _expect_params(
    text: str, params: dict[str, str], names: set[str], *, key: str
) -> None:
    if set(params) != names:
        wanted = ", ".join(sorted(names))
        raise ConfigError(key, f"{text!r}: wanted exactly the parameters {wanted}")


def _number(value: str, text: str, *, key: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(key, f"{text!r}: {value!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise ConfigError(key, f"{text!r}: {value!r} must be a non-negative number")
    return number
