"""The reference agent's settings, checked once when they are made."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from voicesim._distributions import (
    Distribution,
    Fixed,
    format_duration,
    parse_distribution,
    parse_duration,
)
from voicesim._exceptions import ConfigError

__all__ = ["AgentConfig"]

STT_ENGINES = ("pocketsphinx", "none")
REPLY_MODES = ("fixtures", "echo")
BARGE_IN_POLICIES = ("stop", "none")


# One named converter per key: the attrs mypy plugin understands only named
# functions, and each must name its own key in its error.
def _end_silence(value: Any) -> float:
    return parse_duration(value, key="end_silence")


def _vad_attack(value: Any) -> float:
    return parse_duration(value, key="vad_attack")


def _barge_in_threshold(value: Any) -> float:
    return parse_duration(value, key="barge_in_threshold")


def _max_utterance(value: Any) -> float:
    return parse_duration(value, key="max_utterance")


def _calibration_delay(value: Any) -> float | None:
    return None if value is None else parse_duration(value, key="calibration_delay")


def _distribution(value: Any) -> Distribution:
    return parse_distribution(value, key="think")


def _optional_path(value: Any) -> Path | None:
    return None if value is None else Path(value)


def _default_workers() -> int:
    return os.cpu_count() or 1


def _choice(
    options: tuple[str, ...],
) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in options:
            raise ConfigError(
                attribute.name, f"{value!r} is not one of {', '.join(options)}"
            )

    return check


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not value > 0:
        raise ConfigError(attribute.name, f"must be positive, not {value!r}")


def _positive_int(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            attribute.name, f"must be a whole number of at least 1, not {value!r}"
        )


def _dbfs(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not -120.0 <= value <= 0.0
    ):
        raise ConfigError(
            attribute.name, f"wanted a level in dBFS from -120 to 0, not {value!r}"
        )


@attrs.frozen(kw_only=True)
class AgentConfig:
    """How the reference agent listens, transcribes, thinks and answers.

    Durations accept seconds or text such as ``700ms``; ``think`` also accepts a
    distribution such as ``lognormal:median=400ms,sigma=0.4``. Every value is
    checked here, and a bad one raises :class:`ConfigError` naming its key.
    """

    #: Silence after the last voiced frame that ends an utterance.
    end_silence: float = attrs.field(
        default=0.7,
        converter=_end_silence,
        validator=_positive,
    )
    #: A frame at least this loud can start speech...
    vad_on_dbfs: float = attrs.field(default=-40.0, validator=_dbfs)
    #: ...and once started, speech continues while frames stay at least this loud.
    vad_off_dbfs: float = attrs.field(default=-50.0, validator=_dbfs)
    #: Sound that must last this long before it counts as speech (rejects clicks).
    vad_attack: float = attrs.field(default=0.04, converter=_vad_attack)
    #: Time from transcript to the start of the reply.
    think: Distribution = attrs.field(default=Fixed(value=0.3), converter=_distribution)
    stt: str = attrs.field(default="pocketsphinx", validator=_choice(STT_ENGINES))
    #: Transcription worker processes.
    stt_workers: int = attrs.field(factory=_default_workers, validator=_positive_int)
    #: Utterances one worker decodes at once; more wait for a free decoder. Each
    #: decoder holds about 95 MB.
    stt_streams_per_worker: int = attrs.field(default=8, validator=_positive_int)
    reply: str = attrs.field(default="fixtures", validator=_choice(REPLY_MODES))
    barge_in: str = attrs.field(default="stop", validator=_choice(BARGE_IN_POLICIES))
    #: Overlap of user speech with a reply that counts as an interruption.
    barge_in_threshold: float = attrs.field(
        default=0.3,
        converter=_barge_in_threshold,
        validator=_positive,
    )
    #: Longest utterance; longer speech is cut here and the rest ignored.
    max_utterance: float = attrs.field(
        default=30.0,
        converter=_max_utterance,
        validator=_positive,
    )
    #: Calibration mode: answer exactly this long after the end of speech, no STT.
    calibration_delay: float | None = attrs.field(
        default=None, converter=_calibration_delay
    )
    #: Where to append one JSON line per finished turn.
    timeline_path: Path | None = attrs.field(default=None, converter=_optional_path)
    #: Seed of think-time draws; ``None`` draws a fresh one.
    seed: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.vad_off_dbfs > self.vad_on_dbfs:
            raise ConfigError(
                "vad_off_dbfs",
                f"{self.vad_off_dbfs!r} is above vad_on_dbfs {self.vad_on_dbfs!r}; "
                "speech must start louder than it continues",
            )
        if self.max_utterance <= self.vad_attack:
            raise ConfigError("max_utterance", "must be longer than vad_attack")
        # The reply is timed from the last voiced frame, but the agent only knows the
        # speech is over end_silence later; a shorter delay would ask it to have
        # answered before it could know.
        if (
            self.calibration_delay is not None
            and self.calibration_delay < self.end_silence
        ):
            raise ConfigError(
                "calibration_delay",
                f"{format_duration(self.calibration_delay)} is shorter than "
                f"end_silence {format_duration(self.end_silence)}; the end of speech "
                "is only known end_silence after it happens",
            )
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ConfigError("seed", f"must be a whole number, not {self.seed!r}")

    @property
    def calibrating(self) -> bool:
        """Whether the agent runs in calibration mode (fixed delay, no STT)."""
        return self.calibration_delay is not None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> AgentConfig:
        """Build from a mapping of key names (as in TOML), refusing unknown keys.

        Raises:
            ConfigError: naming the first unknown or bad key.
        """
        known = {field.name for field in attrs.fields(cls)}
        for key in values:
            if key not in known:
                raise ConfigError(
                    key, f"unknown agent setting; known: {', '.join(sorted(known))}"
                )
        return cls(**dict(values))

    def to_mapping(self) -> dict[str, Any]:
        """Return the settings as JSON-able values that :meth:`from_mapping` reads."""
        values: dict[str, Any] = attrs.asdict(self, recurse=False)
        values["think"] = str(self.think)
        if self.timeline_path is not None:
            values["timeline_path"] = str(self.timeline_path)
        return values
