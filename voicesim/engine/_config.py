"""Swarm configuration: one set of keys, five layers, every bad value named.

Every setting has one name, used everywhere: ``per_channel`` is ``per_channel`` or
``per-channel`` in TOML, ``VOICESIM_PER_CHANNEL`` in the environment and
``--per-channel`` on the command line (the repeatable flags are singular:
``--guild``, ``--channel``, ``--threshold``, ``--agent-arg`` fill ``guilds``,
``channels``, ``thresholds`` and ``agent_args``). Layers, lowest precedence first:

1. the defaults below;
2. ``[tool.voicesim]`` in ``pyproject.toml`` in the working directory;
3. ``voicesim.toml`` in the working directory, or the file given by ``--config``
   (or ``VOICESIM_CONFIG``), which then replaces it;
4. ``VOICESIM_*`` environment variables;
5. command-line flags.

So a file holds the project's settings, CI adjusts them with variables, and a person
at a terminal overrides anything with a flag. Durations are written ``90s``, ``5m``,
``1h30m`` or as a number of seconds. Lists in variables are comma-separated
(``VOICESIM_GUILDS=1,2``), except thresholds and agent arguments, which may contain
commas themselves: thresholds are separated by ``;`` or newlines, agent arguments
are split like a shell would. Relative paths in a file are relative to that file;
in variables and flags, to the working directory.

Bot tokens are secrets: they come only from ``tokens_file`` (one token a line) or
``VOICESIM_TOKENS`` (comma-separated), are refused in configuration files, and are
never shown by ``repr``, ``str`` or :meth:`SwarmConfig.public_dict`.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shlex
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from voicesim._distributions import Distribution, parse_distribution, parse_duration
from voicesim._exceptions import ConfigError

__all__ = [
    "BotTokens",
    "SwarmConfig",
    "add_swarm_arguments",
    "config_from_args",
    "load_config",
]

_ENV_PREFIX = "VOICESIM_"
_DAVE_MODES = ("off", "on", "required")


class BotTokens:
    """Bot tokens that never show themselves in a repr, a log line or a capture."""

    __slots__ = ("_values",)

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values = tuple(values)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BotTokens):
            return NotImplemented
        return self._values == other._values

    def __hash__(self) -> int:
        return hash(self._values)

    def __repr__(self) -> str:
        return f"<{len(self._values)} bot tokens hidden>"

    __str__ = __repr__


@attrs.frozen(kw_only=True)
class _Key:
    """How one key is read from text and what values it accepts."""

    #: turns a raw value (text from a variable or flag, or a TOML value) into the
    #: typed value; raises ConfigError through ``_wanted``
    parse: Callable[[str, object], object]
    path: bool = False
    optional: bool = False


def _wanted(key: str, wanted: str, value: object) -> ConfigError:
    return ConfigError(key, f"wanted {wanted}, got {value!r}")


def _int(minimum: int, maximum: int, wanted: str) -> Callable[[str, object], object]:
    def parse(key: str, value: object) -> object:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and value.strip().lstrip("+-").isdecimal():
            number = int(value.strip())
        if number is None or not minimum <= number <= maximum:
            raise _wanted(key, wanted, value)
        return number

    return parse


def _duration(*, positive: bool) -> Callable[[str, object], object]:
    def parse(key: str, value: object) -> object:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise _wanted(key, "a duration like 90s, 5m, 1h30m", value)
        seconds = parse_duration(value, key=key)
        if positive and seconds <= 0:
            raise _wanted(key, "a duration above zero, like 90s, 5m, 1h30m", value)
        return seconds

    return parse


def _bool(key: str, value: object) -> object:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off"):
            return False
    raise _wanted(key, "true or false (also 1/0, yes/no, on/off)", value)


def _path(key: str, value: object) -> object:
    if isinstance(value, str) and value.strip():
        return Path(value).expanduser()
    if isinstance(value, os.PathLike):
        return Path(value)
    raise _wanted(key, "a path", value)


def _choice(choices: tuple[str, ...]) -> Callable[[str, object], object]:
    def parse(key: str, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
        raise _wanted(key, "one of " + ", ".join(choices), value)

    return parse


def _distribution(key: str, value: object) -> object:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise _wanted(key, "a distribution like lognormal:median=1s,sigma=0.5", value)
    parse_distribution(value, key=key)  # raises ConfigError naming the key
    return str(value).strip()


def _url(schemes: tuple[str, ...]) -> Callable[[str, object], object]:
    def parse(key: str, value: object) -> object:
        if isinstance(value, str):
            parts = urlsplit(value.strip())
            if parts.scheme in schemes and parts.netloc:
                return value.strip()
        raise _wanted(
            key, "a " + " or ".join(s + "://" for s in schemes) + " URL", value
        )

    return parse


def _list(
    item: Callable[[str, object], object], separators: str = ","
) -> Callable[[str, object], object]:
    def parse(key: str, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise _wanted(key, "a list", value)
        values: list[object] = []
        for element in value:
            if isinstance(element, str):
                # Text may hold several items: "1,2" from a variable or a flag.
                for separator in separators[1:]:
                    element = element.replace(separator, separators[0])
                values.extend(v for v in element.split(separators[0]) if v.strip())
            else:
                values.append(element)
        return tuple(item(key, v) for v in values)

    return parse


def _text(key: str, value: object) -> object:
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise _wanted(key, "non-empty text", value)


def _agent_args(key: str, value: object) -> object:
    # One string from a variable is split like a shell command line; a list from
    # a file or repeated flags is taken item by item.
    if isinstance(value, str):
        return tuple(shlex.split(value))
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise _wanted(key, "a list of arguments", value)


_SNOWFLAKE = _int(1, 2**64 - 1, "a Discord id (a positive whole number)")
_KEYS: dict[str, _Key] = {
    "sessions": _Key(parse=_int(1, 10**6, "a whole number from 1 to 1000000")),
    "ramp": _Key(parse=_duration(positive=False)),
    "duration": _Key(parse=_duration(positive=True)),
    "per_channel": _Key(parse=_int(1, 10**6, "a whole number from 1 to 1000000")),
    "capture": _Key(parse=_path, path=True, optional=True),
    "capture_packets": _Key(parse=_bool),
    "capture_audio": _Key(parse=_bool),
    "fixtures": _Key(parse=_path, path=True, optional=True),
    "seed": _Key(parse=_int(0, 2**64 - 1, "a whole number >= 0"), optional=True),
    "quiet": _Key(parse=_bool),
    "think": _Key(parse=_distribution),
    "turn_timeout": _Key(parse=_duration(positive=True)),
    "join_timeout": _Key(parse=_duration(positive=True)),
    "dave": _Key(parse=_choice(_DAVE_MODES)),
    "client_dave": _Key(parse=_bool),
    "thresholds": _Key(parse=_list(_text, ";\n")),
    "summary_json": _Key(parse=_path, path=True, optional=True),
    "junit": _Key(parse=_path, path=True, optional=True),
    "metrics_port": _Key(
        parse=_int(0, 65535, "a TCP port from 0 to 65535"), optional=True
    ),
    "api_base": _Key(parse=_url(("http", "https")), optional=True),
    "gateway_url": _Key(parse=_url(("ws", "wss")), optional=True),
    "ca_file": _Key(parse=_path, path=True, optional=True),
    "tokens_file": _Key(parse=_path, path=True, optional=True),
    "guilds": _Key(parse=_list(_SNOWFLAKE)),
    "channels": _Key(parse=_list(_SNOWFLAKE)),
    "agent_user_id": _Key(parse=_SNOWFLAKE, optional=True),
    "emulator_state": _Key(parse=_path, path=True, optional=True),
    "agent_args": _Key(parse=_agent_args),
}


def _validate(
    instance: SwarmConfig, attribute: attrs.Attribute[Any], value: Any
) -> None:
    # Values built by load_config pass by construction; this catches the Python API
    # (SwarmConfig(sessions=0), attrs.evolve(...)) with the same messages. Parsing a
    # typed value again must give it back unchanged.
    key = _KEYS[attribute.name]
    if value is None and key.optional:
        return
    parsed = key.parse(attribute.name, value)
    if isinstance(value, float | int) and not isinstance(value, bool):
        same = parsed == value
    else:
        same = parsed == value and type(parsed) is type(value)
    if not same:
        raise _wanted(
            attribute.name, f"a {type(parsed).__name__} like {parsed!r}", value
        )


def _str_tuple(value: str | Iterable[str]) -> tuple[str, ...]:
    # One string is one item, not a tuple of characters.
    return (value,) if isinstance(value, str) else tuple(value)


def _int_tuple(value: Iterable[int]) -> tuple[int, ...]:
    return tuple(value)


def _to_path(value: str | os.PathLike[str] | None) -> Path | None:
    # The Python API may pass text for paths; files and flags are parsed already.
    return None if value is None else Path(value)


@attrs.frozen(kw_only=True)
class SwarmConfig:
    """Every setting of a swarm, with its default. Build one with :func:`load_config`.

    Durations are in seconds. ``capture`` None lets the capture writer name the
    directory ``capture-<UTC time>``.
    """

    sessions: int = attrs.field(default=8, validator=_validate)
    ramp: float = attrs.field(default=5.0, validator=_validate)
    duration: float = attrs.field(default=60.0, validator=_validate)
    per_channel: int = attrs.field(default=1, validator=_validate)
    capture: Path | None = attrs.field(
        default=None, converter=_to_path, validator=_validate
    )
    capture_packets: bool = attrs.field(default=False, validator=_validate)
    capture_audio: bool = attrs.field(default=False, validator=_validate)
    fixtures: Path | None = attrs.field(
        default=None, converter=_to_path, validator=_validate
    )
    seed: int | None = attrs.field(default=None, validator=_validate)
    quiet: bool = attrs.field(default=False, validator=_validate)
    think: str = attrs.field(
        default="lognormal:median=1s,sigma=0.5", validator=_validate
    )
    turn_timeout: float = attrs.field(default=15.0, validator=_validate)
    join_timeout: float = attrs.field(default=30.0, validator=_validate)
    #: what the target's voice server does about DAVE: off, on, or required (4017)
    dave: str = attrs.field(default="off", validator=_validate)
    #: whether the synthetic users offer DAVE (max_dave_protocol_version 1)
    client_dave: bool = attrs.field(default=True, validator=_validate)
    thresholds: tuple[str, ...] = attrs.field(
        default=(), converter=_str_tuple, validator=_validate
    )
    summary_json: Path | None = attrs.field(
        default=None, converter=_to_path, validator=_validate
    )
    junit: Path | None = attrs.field(
        default=None, converter=_to_path, validator=_validate
    )
    metrics_port: int | None = attrs.field(default=None, validator=_validate)
    api_base: str | None = attrs.field(default=None, validator=_validate)
    gateway_url: str | None = attrs.field(default=None, validator=_validate)
    ca_file: Path | None = attrs.field(
        default=None, converter=_to_path, validator=_validate
    )
    tokens_file: Path | None = attrs.field(
        default=None, converter=_to_path, validator=_validate
    )
    guilds: tuple[int, ...] = attrs.field(
        default=(), converter=_int_tuple, validator=_validate
    )
    channels: tuple[int, ...] = attrs.field(
        default=(), converter=_int_tuple, validator=_validate
    )
    agent_user_id: int | None = attrs.field(default=None, validator=_validate)
    emulator_state: Path | None = attrs.field(
        default=None, converter=_to_path, validator=_validate
    )
    #: extra command-line arguments for the embedded reference agent
    agent_args: tuple[str, ...] = attrs.field(
        default=(), converter=_str_tuple, validator=_validate
    )
    _tokens: BotTokens = attrs.field(
        default=BotTokens(), converter=BotTokens, repr=False, alias="tokens"
    )

    def tokens(self) -> tuple[str, ...]:
        """The bot tokens: given ones, else those in ``tokens_file``, else none."""
        if len(self._tokens) or self.tokens_file is None:
            return tuple(self._tokens)
        return _read_tokens(self.tokens_file)

    def think_distribution(self) -> Distribution:
        return parse_distribution(self.think, key="think")

    def public_dict(self) -> dict[str, Any]:
        """Every setting as JSON-ready values, without the tokens (for run.json)."""
        result: dict[str, Any] = {}
        for name in _KEYS:
            value = getattr(self, name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            result[name] = value
        return result


def _read_tokens(path: Path) -> tuple[str, ...]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigError(
            "tokens_file", f"wanted a readable file, {path}: {reason}"
        ) from None
    return _check_tokens(
        [
            line.strip()
            for line in lines
            if line.strip() and not line.lstrip().startswith("#")
        ],
        f"{path}",
    )


def _check_tokens(tokens: list[str], source: str) -> tuple[str, ...]:
    for number, token in enumerate(tokens, 1):
        # Never echo a token: the message names only its position.
        if any(c.isspace() for c in token):
            raise ConfigError(
                "tokens",
                f"wanted one token a line without spaces (no 'Bot ' prefix); "
                f"token {number} in {source} contains whitespace",
            )
    return tuple(tokens)


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, [*_KEYS, "config"], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _parse_layer(
    raw: Mapping[str, object], *, source: str, base: Path
) -> dict[str, object]:
    """Parse one layer's raw values; errors name the key and the layer."""
    result: dict[str, object] = {}
    for name, value in raw.items():
        key = _KEYS[name]
        try:
            parsed = key.parse(name, value)
        except ConfigError as exc:
            raise ConfigError(
                name, f"{exc.msg.removeprefix(name + ': ')} (from {source})"
            ) from None
        if key.path and isinstance(parsed, Path):
            parsed = base / parsed
        result[name] = parsed
    return result


def _file_keys(table: Mapping[str, Any], source: str) -> dict[str, object]:
    result: dict[str, object] = {}
    spelled: dict[str, str] = {}
    for spelling, value in table.items():
        name = spelling.replace("-", "_")
        if name == "config":
            raise ConfigError(
                "config", f"wanted no config key in {source}: files do not chain"
            )
        if name == "tokens":
            raise ConfigError(
                "tokens",
                f"bot tokens do not belong in {source}; wanted them in tokens_file "
                "or VOICESIM_TOKENS",
            )
        if name not in _KEYS:
            raise ConfigError(spelling, f"unknown key in {source}{_suggest(name)}")
        if name in spelled:
            raise ConfigError(
                name, f"given twice in {source}, as {spelled[name]!r} and {spelling!r}"
            )
        spelled[name] = spelling
        result[name] = value
    return result


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigError(
            "config", f"wanted a readable file, {path}: {exc.strerror}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"wanted valid TOML in {path}: {exc}") from None


def _env_keys(environ: Mapping[str, str]) -> dict[str, object]:
    result: dict[str, object] = {}
    for variable, value in environ.items():
        if not variable.startswith(_ENV_PREFIX) or not value.strip():
            continue
        name = variable[len(_ENV_PREFIX) :].lower()
        if name in _KEYS:
            result[name] = value
        elif name not in ("config", "tokens") and _suggest(name):
            # Other VOICESIM_ variables may belong to other tools; a near miss of
            # a key is almost certainly a typo that would otherwise pass unseen.
            raise ConfigError(variable, f"unknown variable{_suggest(name)}")
    return result


def load_config(
    cli: Mapping[str, object], *, cwd: Path, environ: Mapping[str, str]
) -> SwarmConfig:
    """Merge defaults, pyproject.toml, voicesim.toml, VOICESIM_* and ``cli``.

    ``cli`` maps keys (dashes or underscores) to flag values; None means not given.
    The key ``config`` names a file that replaces ``voicesim.toml``.

    Raises:
        ConfigError: naming the key, for any value that cannot be used.
    """
    flags: dict[str, object] = {}
    for spelling, value in cli.items():
        name = spelling.replace("-", "_")
        if value is None:
            continue
        if name != "config" and name not in _KEYS:
            raise ConfigError(spelling, f"unknown setting{_suggest(name)}")
        flags[name] = value

    merged: dict[str, Any] = {}
    pyproject = cwd / "pyproject.toml"
    if pyproject.is_file():
        tool = _read_toml(pyproject).get("tool", {})
        table = tool.get("voicesim", {}) if isinstance(tool, dict) else None
        if not isinstance(table, dict):
            raise ConfigError(
                "config", f"wanted [tool.voicesim] to be a table in {pyproject}"
            )
        source = f"[tool.voicesim] in {pyproject}"
        merged |= _parse_layer(_file_keys(table, source), source=source, base=cwd)

    chosen = flags.pop("config", None) or environ.get(_ENV_PREFIX + "CONFIG") or None
    config_file = cwd / "voicesim.toml"
    if chosen is not None:
        config_file = cwd / Path(str(chosen)).expanduser()
        if not config_file.is_file():
            raise ConfigError(
                "config", f"wanted an existing file, {config_file} is not one"
            )
    if config_file.is_file():
        source = str(config_file)
        raw = _file_keys(_read_toml(config_file), source)
        merged |= _parse_layer(raw, source=source, base=config_file.parent)

    env = _env_keys(environ)
    merged |= _parse_layer(env, source="the environment", base=cwd)
    merged |= _parse_layer(flags, source="the command line", base=cwd)

    tokens: tuple[str, ...] = ()
    env_tokens = environ.get(_ENV_PREFIX + "TOKENS", "").strip()
    if env_tokens and "tokens_file" in env:
        raise ConfigError(
            "tokens", "wanted VOICESIM_TOKENS or VOICESIM_TOKENS_FILE, not both"
        )
    tokens_file = merged.get("tokens_file")
    if env_tokens and "tokens_file" not in flags:
        # Variables override files, so VOICESIM_TOKENS beats a tokens_file from a
        # configuration file; only a --tokens-file flag beats the variable.
        merged.pop("tokens_file", None)
        tokens = _check_tokens(
            [t.strip() for t in env_tokens.split(",") if t.strip()], "VOICESIM_TOKENS"
        )
    elif isinstance(tokens_file, Path):
        tokens = _read_tokens(tokens_file)

    return SwarmConfig(**merged, tokens=BotTokens(tokens))


_TARGET = "target (default: the embedded emulator and agent)"
# (group, flag, metavar, help). An empty metavar makes a --flag/--no-flag switch.
_FLAGS = (
    ("load", "sessions", "N", "number of synthetic users"),
    ("load", "ramp", "TIME", "start the sessions evenly over this time"),
    ("load", "duration", "TIME", "how long sessions keep talking"),
    ("load", "per-channel", "K", "synthetic users per voice channel"),
    ("load", "think", "DIST", "pause after an answer before the next utterance"),
    ("load", "turn-timeout", "TIME", "give up on an answer after this time"),
    ("load", "join-timeout", "TIME", "give up joining after this time"),
    ("load", "seed", "N", "seed for every random choice, for a repeatable run"),
    ("load", "fixtures", "DIR", "audio fixtures (default: the bundled ones)"),
    ("output", "capture", "DIR", "capture directory (default: capture-<UTC time>)"),
    ("output", "capture-packets", "", "also capture every received packet"),
    ("output", "capture-audio", "", "also capture what each user heard, as FLAC"),
    ("output", "quiet", "", "no live progress and no summary table"),
    (
        "output",
        "threshold",
        "EXPR",
        "k6-style, e.g. 'response_latency: p(95) < 1500ms'",
    ),
    ("output", "summary-json", "FILE", "also write the summary as JSON to FILE"),
    ("output", "junit", "FILE", "also write the thresholds as JUnit XML to FILE"),
    ("output", "metrics-port", "PORT", "serve Prometheus metrics (0: any free port)"),
    ("output", "config", "FILE", "read settings from FILE, not ./voicesim.toml"),
    (_TARGET, "dave", "MODE", "DAVE on the embedded target's voice server"),
    (_TARGET, "client-dave", "", "whether synthetic users offer DAVE"),
    (_TARGET, "api-base", "URL", "REST base URL, e.g. https://discord.com/api/v10"),
    (_TARGET, "gateway-url", "URL", "gateway URL, e.g. wss://gateway.discord.gg"),
    (_TARGET, "ca-file", "FILE", "CA certificate to trust for the target's TLS"),
    (_TARGET, "tokens-file", "FILE", "bot tokens, one a line (or VOICESIM_TOKENS)"),
    (_TARGET, "guild", "ID", "guild id"),
    (_TARGET, "channel", "ID", "voice channel id"),
    (_TARGET, "agent-user-id", "ID", "user id of the agent under test"),
    (_TARGET, "emulator-state", "FILE", "use a running emulator, from its state file"),
    (_TARGET, "agent-arg", "ARG", "extra argument for the embedded agent"),
)
#: The repeatable flags, singular on the command line, and the keys they fill.
_REPEATABLE = {
    "threshold": "thresholds",
    "guild": "guilds",
    "channel": "channels",
    "agent-arg": "agent_args",
}


def _help(text: str, dest: str) -> str:
    if dest in _REPEATABLE.values():
        return f"{text} (repeatable)"
    default = getattr(SwarmConfig(), dest, None)
    if default is None or isinstance(default, tuple | Path) or "default:" in text:
        return text
    if isinstance(default, float):
        default = f"{default:g}s"  # every float setting is a duration
    elif isinstance(default, bool):
        default = "yes" if default else "no"
    return f"{text} (default: {default})".replace("%", "%%")


def add_swarm_arguments(parser: argparse.ArgumentParser) -> None:
    """Define the swarm's flags on ``parser``.

    A flag left out is absent from the parsed namespace, so it never overrides a
    file or a variable; pass the namespace to :func:`config_from_args`. Values stay
    text here and are checked by :func:`load_config`, so a bad one gets the same
    ConfigError naming the key whichever layer it came from.
    """
    groups: dict[str, argparse._ArgumentGroup] = {}
    for group_title, name, metavar, text in _FLAGS:
        group = groups.get(group_title)
        if group is None:
            group = groups[group_title] = parser.add_argument_group(group_title)
        dest = _REPEATABLE.get(name, name.replace("-", "_"))
        options: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS}
        if not metavar:
            options["action"] = argparse.BooleanOptionalAction
        elif name == "dave":
            options["choices"] = _DAVE_MODES
        else:
            options["metavar"] = metavar
            if name in _REPEATABLE:
                options["action"] = "append"
        group.add_argument(f"--{name}", help=_help(text, dest), **options)


def config_from_args(
    ns: argparse.Namespace, *, cwd: Path, environ: Mapping[str, str]
) -> SwarmConfig:
    """Build the configuration from flags parsed with :func:`add_swarm_arguments`."""
    given = vars(ns)
    cli = {name: given[name] for name in (*_KEYS, "config") if name in given}
    return load_config(cli, cwd=cwd, environ=environ)
