"""The agent's own account of each turn, as JSON lines another process can follow.

The swarm measures the agent from outside; the timeline says what the agent itself
saw and did, on its own clock, so the two can be lined up: where the time between a
user's last word and the answer went (end-of-speech wait, transcription, think
time, sending). All times are ``time.perf_counter_ns()`` values, which on Linux
read the system-wide monotonic clock, so processes on one machine share them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import attrs

__all__ = ["OUTCOMES", "Timeline", "TurnRecord", "read_timeline"]

#: ``answered``: the reply played to its end. ``interrupted``: the user talked over
#: it and the agent stopped. ``stt_error``: transcription failed, no reply.
#: ``abandoned``: the speaker left or the agent stopped before the turn finished.
OUTCOMES = ("answered", "interrupted", "stt_error", "abandoned")


@attrs.frozen(kw_only=True)
class TurnRecord:
    """One turn as the agent saw it. Times are in ns, ``None`` where not reached."""

    guild_id: int | None
    user_id: int
    turn: int
    speech_start_ns: int
    speech_end_ns: int | None
    #: When the agent decided the utterance was over (end_silence after its end).
    detected_ns: int | None
    cut: bool
    transcript: str | None
    transcript_ready_ns: int | None
    think_ns: int | None
    reply_id: str | None
    #: When the reply was scheduled to start.
    reply_at_ns: int | None
    #: When its first frame was actually sent, as the voice connection reported.
    reply_first_frame_ns: int | None
    reply_end_ns: int | None
    #: The user talked over this turn's reply for longer than barge_in_threshold.
    barge_in: bool
    outcome: str = attrs.field(validator=attrs.validators.in_(OUTCOMES))
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the record as a JSON object (field names are the keys)."""
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TurnRecord:
        """Read a record written by :meth:`to_json`; unknown keys are ignored.

        Raises:
            ValueError: a field is missing or the outcome is unknown.
        """
        names = {field.name for field in attrs.fields(cls)}
        try:
            return cls(**{key: value for key, value in data.items() if key in names})
        except TypeError as exc:
            raise ValueError(f"not a turn record: {exc}") from exc


@attrs.define
class Timeline:
    """Turn records kept in memory and, if ``path`` is set, appended to it.

    Each record is one JSON line, flushed when written, so a reader in another
    process sees every finished turn without waiting for the agent to stop. The file
    is opened in append mode: several agents may share one.
    """

    path: Path | None = attrs.field(default=None)
    records: list[TurnRecord] = attrs.field(factory=list, init=False)
    _file: IO[str] | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        if self.path is not None:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def append(self, record: TurnRecord) -> None:
        """Keep ``record`` and write it out."""
        self.records.append(record)
        if self._file is not None:
            # One write per line keeps concurrent appenders from interleaving lines;
            # a line is small, so writing it from the event loop costs microseconds.
            self._file.write(json.dumps(record.to_json(), separators=(",", ":")) + "\n")
            self._file.flush()

    def close(self) -> None:
        """Close the file; records stay readable in memory."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Timeline:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_timeline(path: os.PathLike[str] | str) -> list[TurnRecord]:
    """Read every complete record of a timeline file.

    A last line without its newline is a record still being written and is skipped.

    Raises:
        ValueError: a complete line is not a turn record.
    """
    records: list[TurnRecord] = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.endswith("\n"):
                break
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc})") from exc
            if not isinstance(data, dict):
                raise ValueError(f"{path}:{number}: not a JSON object")
            records.append(TurnRecord.from_json(data))
    return records
