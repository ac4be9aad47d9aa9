"""The capture format: file layout, table schemas, outcome words and shared helpers.

A capture is a directory that the engine writes (``voicesim.engine.CaptureWriter``) and
that ``voicesim.analysis.load`` reads. Both sides import this module and nothing else
from each other, so the analysis package never pulls in trio or discord.py::

    capture-2026-12-03T18-40-00/
      run.json                  configuration, versions, host, clock anchor, verdicts
      turns/part-00000.parquet  one row per utterance, written in closed chunks
      sessions/part-00000.parquet
      packets/part-00000.parquet  only when packets were captured
      audio/<session>.flac      only when audio was captured

Every chunk is written under a temporary name starting with a dot and renamed into
place, so a killed run leaves whole chunks and, at worst, one stray ``.part-*.tmp``
file that readers (pandas, polars, DuckDB, pyarrow datasets) skip.

The columns of each table, their types and meaning, are declared below once; the
schemas carry each column's description in their field metadata and
``docs/capture.md`` repeats them for readers. Column names are a public interface:
notebooks depend on them, so they only ever gain columns.

Send lateness is stored as a histogram per session with fixed bucket edges
(``SEND_LATENESS_EDGES_MS``), not only as a per-session p99: percentiles over the
whole run must be computed from pooled frames, and histograms with the same edges pool
exactly by adding their counts, while per-session percentiles cannot be combined.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa

__all__ = [
    "CAPTURE_FORMAT_VERSION",
    "PACKETS_SCHEMA",
    "RUN_JSON",
    "SEND_LATENESS_EDGES_MS",
    "SESSIONS_SCHEMA",
    "TABLES",
    "TURNS_SCHEMA",
    "Column",
    "SessionOutcome",
    "TurnOutcome",
    "jsonable",
    "strip_secrets",
    "write_json_atomic",
]

CAPTURE_FORMAT_VERSION = 1
RUN_JSON = "run.json"
PART_PREFIX = "part-"
TEMP_SUFFIX = ".tmp"


class TurnOutcome(enum.StrEnum):
    """How a turn ended (``turns.outcome``)."""

    #: the agent's audible answer arrived and ended
    ANSWERED = "answered"
    #: the answer started but had not ended by the turn timeout; its latency is valid
    CUT = "cut"
    #: no audible answer started within the turn timeout
    TIMEOUT = "timeout"
    #: the session failed during the turn (disconnect, protocol error, ...)
    ERROR = "error"
    #: the run ended (duration reached, interrupted) before the turn could finish
    CANCELLED = "cancelled"


class SessionOutcome(enum.StrEnum):
    """How a session ended (``sessions.outcome``)."""

    #: joined, spoke its turns and left when asked to
    COMPLETED = "completed"
    #: never joined: the join failed or timed out
    FAILED = "failed"
    #: joined, then failed: close code, lost connection, protocol error
    LOST = "lost"
    #: failed for any other reason
    ERROR = "error"
    #: could not start on the profile's schedule (counted, never silently delayed)
    NOT_STARTED = "not_started"
    #: the run was interrupted while the session was still running
    CANCELLED = "cancelled"


#: Outcomes counted as failures by the ``failed_turns`` / ``failed_sessions`` metrics.
#: Cancelled turns and sessions are neither successes nor failures: the run ended.
FAILED_TURN_OUTCOMES = frozenset({TurnOutcome.TIMEOUT, TurnOutcome.ERROR})
FAILED_SESSION_OUTCOMES = frozenset(
    {
        SessionOutcome.FAILED,
        SessionOutcome.LOST,
        SessionOutcome.ERROR,
        SessionOutcome.NOT_STARTED,
    }
)
#: Session outcomes of sessions that never joined a channel.
UNJOINED_SESSION_OUTCOMES = frozenset(
    {SessionOutcome.FAILED, SessionOutcome.NOT_STARTED}
)


class Column(NamedTuple):
    """One column of a capture table."""

    name: str
    type: pa.DataType
    nullable: bool
    #: value written when a record leaves the column out (None: the column is required
    #: when it is not nullable, and null otherwise)
    default: Any
    doc: str


def _lateness_edges() -> tuple[float, ...]:
    # 0, then 10 us growing by 5 % a bucket up to 10 s: about 2.5 % relative error on
    # any percentile with 286 buckets, small enough to store densely per session.
    edges = [0.0]
    value = 0.01
    while value < 10_000.0:
        edges.append(float(f"{value:.6g}"))
        value *= 1.05
    edges.append(float(f"{value:.6g}"))
    return tuple(edges)


#: Bucket edges (ms) of ``sessions.send_lateness_hist``. Bucket 0 counts frames sent
#: early (lateness < 0); bucket i counts edges[i-1] <= lateness < edges[i]; the last
#: bucket counts lateness >= edges[-1]. So there are len(edges) + 1 buckets.
SEND_LATENESS_EDGES_MS: tuple[float, ...] = _lateness_edges()

_I32, _I64, _F64, _STR, _BOOL = (
    pa.int32(),
    pa.int64(),
    pa.float64(),
    pa.string(),
    pa.bool_(),
)

# fmt: off
TURN_COLUMNS: tuple[Column, ...] = (
    Column("session", _I64, False, None, "session number, unique in the run"),
    Column("turn", _I32, False, None, "turn number inside the session, from 0"),
    Column("fixture", _STR, False, None, "id of the utterance fixture spoken"),
    Column("reference_text", _STR, False, None, "the fixture's transcript"),
    Column("speech_start_ns", _I64, False, None, "intended send time of the first voiced frame (perf_counter_ns)"),
    Column("speech_end_ns", _I64, False, None, "intended send time of the last voiced frame: speech end"),
    Column("response_start_ns", _I64, True, None, "arrival of the agent's first audible frame after speech end"),
    Column("response_end_ns", _I64, True, None, "arrival of the agent's last audible frame of that answer"),
    Column("response_latency_ms", _F64, True, None, "response_start_ns - speech_end_ns, in ms; null when unanswered"),
    Column("answer_duration_ms", _F64, True, None, "response_end_ns - response_start_ns, in ms"),
    Column("transcript_text", _STR, True, None, "the agent's transcript message for the utterance"),
    Column("transcript_ns", _I64, True, None, "arrival of the transcript message"),
    Column("transcript_latency_ms", _F64, True, None, "transcript_ns - speech_end_ns, in ms"),
    Column("word_errors", _I32, True, None, "substitutions + deletions + insertions of the normalised transcript against reference_text; null without transcript"),
    Column("reference_words", _I32, True, None, "words in the normalised reference_text (null without transcript); WER pools as sum(word_errors) / sum(reference_words)"),
    Column("jitter_ms", _F64, True, None, "RFC 3550 interarrival jitter of the agent's stream over this turn, in ms"),
    Column("packets_received", _I32, False, 0, "agent packets received during the turn"),
    Column("packets_lost", _I32, False, 0, "agent packets missing by RTP sequence number"),
    Column("packets_reordered", _I32, False, 0, "agent packets that arrived after a later sequence number"),
    Column("packets_duplicated", _I32, False, 0, "agent packets received more than once"),
    Column("barge_in", _BOOL, False, False, "the synthetic user talked over the agent's answer in this turn"),
    Column("barge_in_stop_ms", _F64, True, None, "barge-in: user onset to the agent's last audible frame, in ms"),
    Column("outcome", _STR, False, None, "answered, cut, timeout, error or cancelled (TurnOutcome)"),
    Column("reason", _STR, True, None, "short reason for a turn that was not answered"),
)

SESSION_COLUMNS: tuple[Column, ...] = (
    Column("session", _I64, False, None, "session number, unique in the run"),
    Column("user_id", _STR, True, None, "the synthetic user's Discord user id"),
    Column("guild_id", _STR, True, None, "guild of the voice channel"),
    Column("channel_id", _STR, True, None, "voice channel joined"),
    Column("ssrc", _I64, True, None, "SSRC of the synthetic user's stream"),
    Column("scheduled_ns", _I64, True, None, "when the load profile wanted the session to start"),
    Column("join_requested_ns", _I64, True, None, "voice join requested (null if never started)"),
    Column("joined_ns", _I64, True, None, "voice connection ready (session description received)"),
    Column("first_frame_ns", _I64, True, None, "intended send time of the first frame sent"),
    Column("left_ns", _I64, True, None, "the session left or failed"),
    Column("join_time_ms", _F64, True, None, "first_frame_ns - join_requested_ns, in ms"),
    Column("outcome", _STR, False, None, "completed, failed, lost, error, not_started or cancelled (SessionOutcome)"),
    Column("reason", _STR, True, None, "short reason for an outcome other than completed, e.g. 'close 4017'"),
    Column("turns", _I32, False, 0, "turns started in the session"),
    Column("frames_sent", _I64, False, 0, "frames sent by the synthetic user"),
    Column("send_errors", _I64, False, 0, "frames whose send failed at the socket"),
    Column("send_lateness_p99_ms", _F64, True, None, "this session's p99 send lateness, in ms (never average it across sessions)"),
    Column("send_lateness_max_ms", _F64, True, None, "largest send lateness of the session, in ms"),
    Column("send_lateness_sum_ms", _F64, False, 0.0, "sum of all frames' send lateness, in ms (pools to an exact mean)"),
    Column("send_lateness_hist", pa.list_(_I64), True, None, "frame counts per SEND_LATENESS_EDGES_MS bucket; pools by adding"),
    Column("packets_received", _I64, False, 0, "agent packets received in the session"),
    Column("packets_lost", _I64, False, 0, "agent packets missing by RTP sequence number"),
    Column("jitter_ms", _F64, True, None, "RFC 3550 jitter of the agent's stream at the end of the session, in ms"),
    Column("resumes", _I32, False, 0, "voice gateway sessions resumed after a drop"),
    Column("reconnects", _I32, False, 0, "voice connections made anew after a drop"),
    Column("decrypt_failures", _I64, False, 0, "agent packets whose transport encryption did not verify"),
    Column("late_transcripts", _I32, False, 0, "agent transcripts that arrived after their turn had given up on them"),
    Column("dave_decrypt_failures", _I64, False, 0, "agent frames whose DAVE layer did not decrypt"),
    Column("dave_protocol_version", _I32, True, None, "DAVE version the voice server chose (0: transport encryption only)"),
    Column("dave_longest_gap_ms", _F64, True, None, "longest time a received stream had no decodable audio because of DAVE, in ms"),
    Column("dave_recoveries", _I32, False, 0, "DAVE group resets after failed commits or repeated decrypt failures"),
)

PACKET_COLUMNS: tuple[Column, ...] = (
    Column("session", _I64, False, None, "session that received the packet"),
    Column("ssrc", _I64, False, None, "SSRC of the stream"),
    Column("seq", _I32, False, None, "RTP sequence number"),
    Column("rtp_timestamp", _I64, False, None, "RTP timestamp"),
    Column("arrival_ns", _I64, False, None, "arrival time (perf_counter_ns)"),
    Column("bytes", _I32, False, None, "UDP datagram size"),
)
# fmt: on


def _schema(columns: tuple[Column, ...]) -> pa.Schema:
    return pa.schema(
        [
            pa.field(c.name, c.type, nullable=c.nullable, metadata={"doc": c.doc})
            for c in columns
        ]
    )


TURNS_SCHEMA: pa.Schema = _schema(TURN_COLUMNS)
SESSIONS_SCHEMA: pa.Schema = _schema(SESSION_COLUMNS)
PACKETS_SCHEMA: pa.Schema = _schema(PACKET_COLUMNS)

#: table name -> (columns, schema); the table name is also its directory's name.
TABLES: dict[str, tuple[tuple[Column, ...], pa.Schema]] = {
    "turns": (TURN_COLUMNS, TURNS_SCHEMA),
    "sessions": (SESSION_COLUMNS, SESSIONS_SCHEMA),
    "packets": (PACKET_COLUMNS, PACKETS_SCHEMA),
}


def part_name(index: int) -> str:
    """The file name of chunk number ``index`` of a table."""
    return f"{PART_PREFIX}{index:05d}.parquet"


def temp_name(final_name: str) -> str:
    """The name a file is written under before it is renamed to ``final_name``."""
    return f".{final_name}{TEMP_SUFFIX}"


# Keys whose values are credentials. Matching is by substring on the lower-cased key,
# so "bot_tokens", "TOKEN_FILE" and "client_secret" all go.
_SECRET_MARKERS = ("token", "secret", "password", "authorization", "api_key", "apikey")


def _is_secret_key(key: object) -> bool:
    lowered = str(key).lower()
    return any(marker in lowered for marker in _SECRET_MARKERS)


def jsonable(value: Any) -> Any:
    """Convert configuration values (attrs classes, paths, enums...) to JSON types."""
    import attrs

    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        # JSON has no NaN or infinity; null keeps run.json readable by any parser.
        return value if value == value and abs(value) != float("inf") else None
    if attrs.has(type(value)):
        return jsonable(attrs.asdict(value, recurse=False))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return jsonable(item())
    return str(value)


def strip_secrets(value: Any) -> Any:
    """Return ``value`` as JSON types with every credential-like key removed, at any depth.

    A key is dropped when its name contains "token", "secret", "password",
    "authorization" or "api_key" (case-insensitive).
    """
    value = jsonable(value)
    if isinstance(value, dict):
        return {k: strip_secrets(v) for k, v in value.items() if not _is_secret_key(k)}
    if isinstance(value, list):
        return [strip_secrets(v) for v in value]
    return value


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` so that a reader sees the old or the new file."""
    text = json.dumps(data, indent=2, sort_keys=False, allow_nan=False)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def list_parts(directory: Path) -> tuple[list[Path], list[Path]]:
    """The closed chunks of a table directory, in order, and any stray temporary files."""
    if not directory.is_dir():
        return [], []
    parts: list[Path] = []
    strays: list[Path] = []
    for entry in sorted(directory.iterdir()):
        if entry.name.endswith(TEMP_SUFFIX):
            strays.append(entry)
        elif entry.name.startswith(PART_PREFIX) and entry.suffix == ".parquet":
            parts.append(entry)
    return parts, strays


def read_table(directory: Path, schema: pa.Schema) -> tuple[pa.Table, list[str]]:
    """Read every closed chunk of a table directory into one Arrow table.

    Returns the table and a list of problems (stray temporary files, chunks that cannot
    be read) phrased for a person; a problem never raises, so a capture cut short by a
    kill still loads. Columns the schema knows but an older chunk lacks come back null;
    columns a newer writer added are kept.
    """
    import pyarrow.parquet as pq

    parts, strays = list_parts(directory)
    problems = [
        f"{directory.name}/{stray.name} was being written when the run stopped; "
        "the rows in it are lost"
        for stray in strays
    ]
    tables: list[pa.Table] = []
    for part in parts:
        try:
            tables.append(pq.read_table(part))
        except (OSError, pa.ArrowException) as exc:
            problems.append(f"{directory.name}/{part.name} cannot be read: {exc}")
    if not tables:
        return schema.empty_table(), problems

    table = pa.concat_tables(tables, promote_options="default")
    for field in schema:
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(len(table), field.type))
    known = [f.name for f in schema if f.name in table.column_names]
    extra = [name for name in table.column_names if name not in known]
    return table.select(known + extra), problems
