"""Typed access to the fields of gateway JSON messages.

Both gateways carry a message's fields in a JSON object ``d``. Decoding must turn any
malformed field into :class:`RemoteProtocolError` (the peer's fault) and encoding must
turn any malformed attribute into :class:`LocalProtocolError` (ours), each naming the
op and the field. The checks are the same in both directions, so :class:`_Fields`
holds them once; :class:`FieldReader` takes values from a decoded ``d`` and
:class:`FieldWriter` takes them from a message's attributes.
"""

from __future__ import annotations

import enum
import json
import math
from typing import Any, NoReturn

from .._exceptions import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MISSING",
    "SNOWFLAKE_MAX",
    "FieldReader",
    "FieldWriter",
    "describe",
    "dump_json",
    "load_json",
]

# Discord ids are unsigned 64-bit integers.
SNOWFLAKE_MAX = 2**64 - 1
_SNOWFLAKE_DIGITS = len(str(SNOWFLAKE_MAX))


class _Missing(enum.Enum):
    MISSING = "missing"


MISSING = _Missing.MISSING


def describe(value: object) -> str:
    """Render a field's value for an error message, short enough for one log line."""
    if value is MISSING:
        return "nothing (the field is missing)"
    if value is None:
        return "null"
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        # Deeply nested values and ints past Python's digit limit cannot be shown.
        return type(value).__name__
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _reject_constant(name: str) -> NoReturn:
    # Python's json accepts NaN and Infinity, which are not JSON; a peer sending them is
    # broken, and letting them through would poison heartbeat and timing arithmetic.
    raise ValueError(f"{name} is not valid JSON")


def load_json(text: str | bytes, where: str) -> object:
    """Parse one JSON text frame; any failure is the peer's and raises RemoteProtocolError."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise RemoteProtocolError(f"{where}: JSON nested too deeply") from exc
    except ValueError as exc:
        # JSONDecodeError, UnicodeDecodeError and the int-digits limit all land here.
        raise RemoteProtocolError(f"{where}: not valid JSON ({exc})") from exc


def dump_json(obj: object, where: str) -> str:
    """Serialise one outgoing message compactly, as discord.py does; LocalProtocolError on failure."""
    try:
        return json.dumps(
            obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        )
    except (TypeError, ValueError, RecursionError) as exc:
        raise LocalProtocolError(f"{where}: cannot be encoded as JSON ({exc})") from exc


def _is_int(value: object) -> bool:
    # bool is an int subclass, but true/false in an integer field is a type error.
    return isinstance(value, int) and not isinstance(value, bool)


class _Fields:
    """The field checks shared by reading and writing."""

    def __init__(self, where: str) -> None:
        self.where = where

    def _value(self, field: str) -> object:
        raise NotImplementedError

    def fail(self, field: str, wanted: str, value: object) -> NoReturn:
        raise NotImplementedError

    def _lookup(self, field: str, optional: bool) -> object:
        # Optional fields treat null like absence; the caller then uses its default.
        value = self._value(field)
        if value is None and optional:
            return MISSING
        return value

    def integer(
        self,
        field: str,
        *,
        lo: int | None = None,
        hi: int | None = None,
        default: int | _Missing = MISSING,
    ) -> int:
        value = self._lookup(field, default is not MISSING)
        if value is MISSING and not isinstance(default, _Missing):
            return default
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(field, "an integer", value)
        if lo is not None and hi is not None and not lo <= value <= hi:
            self.fail(field, f"an integer in [{lo}, {hi}]", value)
        if lo is not None and value < lo:
            self.fail(field, f"an integer >= {lo}", value)
        if hi is not None and value > hi:
            self.fail(field, f"an integer <= {hi}", value)
        return value

    def optional_integer(self, field: str, *, lo: int | None = None) -> int | None:
        value = self._lookup(field, True)
        if value is MISSING:
            return None
        return self.integer(field, lo=lo)

    def number(self, field: str, *, positive: bool = False) -> float:
        value = self._lookup(field, False)
        if not isinstance(value, int | float) or isinstance(value, bool):
            self.fail(field, "a number", value)
        try:
            number = float(value)
        except OverflowError:
            # A JSON integer literal may be longer than any float.
            number = math.inf
        if not math.isfinite(number) or (positive and number <= 0):
            self.fail(field, "a finite positive number", value)
        return number

    def boolean(self, field: str, *, default: bool | _Missing = MISSING) -> bool:
        value = self._lookup(field, default is not MISSING)
        if value is MISSING and not isinstance(default, _Missing):
            return default
        if not isinstance(value, bool):
            self.fail(field, "a boolean", value)
        return value

    def string(self, field: str, *, default: str | _Missing = MISSING) -> str:
        value = self._lookup(field, default is not MISSING)
        if value is MISSING and not isinstance(default, _Missing):
            return default
        if not isinstance(value, str):
            self.fail(field, "a string", value)
        return value

    def optional_string(self, field: str) -> str | None:
        value = self._lookup(field, True)
        return None if value is MISSING else self.string(field)

    def nullable_string(self, field: str) -> str | None:
        """A field that must be present but may be null (VOICE_SERVER_UPDATE's endpoint)."""
        if self._value(field) is None:
            return None
        return self.string(field)

    def strings(self, field: str) -> tuple[str, ...]:
        value = self._lookup(field, False)
        if not isinstance(value, list | tuple) or not all(
            isinstance(item, str) for item in value
        ):
            self.fail(field, "a list of strings", value)
        return tuple(value)

    def mapping(self, field: str, *, optional: bool = False) -> dict[str, Any] | None:
        value = self._lookup(field, optional)
        if value is MISSING and optional:
            return None
        if not isinstance(value, dict):
            self.fail(field, "an object", value)
        return value

    def _snowflake(self, field: str, value: object) -> int:
        if _is_int(value):
            assert isinstance(value, int)
            number = value
        elif (
            isinstance(value, str)
            and len(value) <= _SNOWFLAKE_DIGITS
            and value.isascii()
            and value.isdigit()
        ):
            # isascii() first: isdigit() alone accepts other scripts' digits. The length
            # cap keeps int() away from Python's limit on digits it will convert.
            number = int(value)
        else:
            self.fail(field, "a snowflake (a decimal string or an integer)", value)
        if not 0 <= number <= SNOWFLAKE_MAX:
            self.fail(field, "a snowflake in the unsigned 64-bit range", value)
        return number

    def snowflake_int(self, field: str) -> int:
        return self._snowflake(field, self._lookup(field, False))

    def optional_snowflake_int(self, field: str) -> int | None:
        value = self._lookup(field, True)
        return None if value is MISSING else self._snowflake(field, value)

    def nullable_snowflake_int(self, field: str) -> int | None:
        """A field that must be present but may be null (Update Voice State's channel_id)."""
        value = self._value(field)
        return None if value is None else self._snowflake(field, value)

    def snowflake_str(self, field: str) -> str:
        value = self._lookup(field, False)
        self._snowflake(field, value)
        # Keep a string exactly as sent, so encoding gives back the same text.
        return value if isinstance(value, str) else str(value)

    def optional_snowflake_str(self, field: str) -> str | None:
        value = self._lookup(field, True)
        return None if value is MISSING else self.snowflake_str(field)

    def snowflake_strs(self, field: str) -> tuple[str, ...]:
        value = self._lookup(field, False)
        if not isinstance(value, list | tuple):
            self.fail(field, "a list of snowflakes", value)
        for item in value:
            self._snowflake(field, item)
        return tuple(item if isinstance(item, str) else str(item) for item in value)


class FieldReader(_Fields):
    """Reads the fields of a decoded ``d``; a bad field raises RemoteProtocolError."""

    def __init__(self, d: object, where: str) -> None:
        super().__init__(where)
        if not isinstance(d, dict):
            raise RemoteProtocolError(
                f"{where}: d must be an object, got {describe(d)}"
            )
        self.d: dict[str, Any] = d

    def _value(self, field: str) -> object:
        return self.d.get(field, MISSING)

    def fail(self, field: str, wanted: str, value: object) -> NoReturn:
        raise RemoteProtocolError(
            f"{self.where}: field {field!r} must be {wanted}, got {describe(value)}"
        )

    def nested(self, field: str) -> FieldReader:
        """A reader over an object-valued field, whose errors name the full path."""
        value = self.mapping(field)
        return FieldReader(value, f"{self.where}: field {field!r}")

    def key_bytes(self, field: str, length: int) -> bytes:
        value = self._lookup(field, False)
        wanted = f"a list of {length} integers in [0, 255]"
        if not isinstance(value, list) or len(value) != length:
            self.fail(field, wanted, value)
        if not all(_is_int(b) and 0 <= b <= 255 for b in value):
            self.fail(field, wanted, value)
        return bytes(value)


class FieldWriter(_Fields):
    """Checks a message's attributes before encoding; a bad one raises LocalProtocolError."""

    def __init__(self, message: object, where: str) -> None:
        super().__init__(where)
        self.message = message

    def _value(self, field: str) -> object:
        return getattr(self.message, field)

    def fail(self, field: str, wanted: str, value: object) -> NoReturn:
        raise LocalProtocolError(
            f"{self.where}: {field!r} must be {wanted}, got {describe(value)}"
        )

    def snowflake_str(self, field: str) -> str:
        # Outgoing ids must already be strings: the voice gateway sends them as text.
        value = self._value(field)
        if not isinstance(value, str):
            self.fail(field, "a snowflake string", value)
        return super().snowflake_str(field)

    def snowflake_int(self, field: str) -> int:
        # Main gateway ids are integers on our side; a string here is a caller's slip.
        value = self._value(field)
        if not _is_int(value):
            self.fail(field, "a snowflake integer", value)
        return super().snowflake_int(field)

    def nullable_snowflake_int(self, field: str) -> int | None:
        if self._value(field) is None:
            return None
        return self.snowflake_int(field)

    def snowflake_strs(self, field: str) -> tuple[str, ...]:
        value = self._value(field)
        if not isinstance(value, tuple | list) or not all(
            isinstance(item, str) for item in value
        ):
            self.fail(field, "a sequence of snowflake strings", value)
        return super().snowflake_strs(field)

    def key_bytes(self, field: str, length: int) -> list[int]:
        value = self._value(field)
        if not isinstance(value, bytes | bytearray) or len(value) != length:
            self.fail(field, f"{length} bytes", value)
        return list(value)

    def blob(self, field: str) -> bytes:
        value = self._value(field)
        if not isinstance(value, bytes | bytearray | memoryview):
            self.fail(field, "bytes", value)
        return bytes(value)
