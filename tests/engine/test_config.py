from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import attrs
import pytest

from voicesim._distributions import LogNormal
from voicesim._exceptions import ConfigError
from voicesim.engine._config import (
    BotTokens,
    SwarmConfig,
    add_swarm_arguments,
    config_from_args,
    load_config,
)

SECRET = "MTIzNDU2Nzg5.secret-part.do-not-print"


def parse(
    argv: list[str], tmp_path: Path, environ: dict[str, str] | None = None
) -> SwarmConfig:
    parser = argparse.ArgumentParser()
    add_swarm_arguments(parser)
    return config_from_args(
        parser.parse_args(argv), cwd=tmp_path, environ=environ or {}
    )


def test_load_config_defaults(tmp_path: Path) -> None:
    """With no files, variables or flags, every setting has its documented default."""
    config = load_config({}, cwd=tmp_path, environ={})
    assert config == SwarmConfig()
    assert (config.sessions, config.ramp, config.duration, config.per_channel) == (
        8,
        5.0,
        60.0,
        1,
    )
    assert (config.turn_timeout, config.join_timeout) == (15.0, 30.0)
    assert (
        config.capture is None
        and not config.capture_packets
        and not config.capture_audio
    )
    assert config.dave == "off" and config.client_dave is True
    assert config.think_distribution() == LogNormal(median_value=1.0, sigma=0.5)
    assert config.tokens() == ()


def test_load_config_precedence_of_every_layer(tmp_path: Path) -> None:
    """Flags beat variables, which beat voicesim.toml, which beats pyproject.toml."""
    (tmp_path / "pyproject.toml").write_text(
        "[project]\nname = 'x'\n[tool.voicesim]\n"
        "sessions = 2\nramp = '1s'\nduration = '2m'\nper-channel = 3\nseed = 11\n"
    )
    (tmp_path / "voicesim.toml").write_text(
        "ramp = '2s'\nduration = '3m'\nper_channel = 4\n"
    )
    environ = {"VOICESIM_DURATION": "90s", "VOICESIM_PER_CHANNEL": "5", "PATH": "/bin"}
    config = load_config({"per_channel": "6"}, cwd=tmp_path, environ=environ)
    assert config.sessions == 2  # pyproject only
    assert config.seed == 11
    assert config.ramp == 2.0  # voicesim.toml over pyproject
    assert config.duration == 90.0  # variable over both files
    assert config.per_channel == 6  # flag over everything


def test_load_config_flags_left_unset_do_not_override(tmp_path: Path) -> None:
    """Flags not given on the command line leave lower layers alone."""
    (tmp_path / "voicesim.toml").write_text(
        "quiet = true\nsessions = 4\nthresholds = ['a: p(95) < 1s']\n"
    )
    config = parse(["--duration", "5m"], tmp_path)
    assert (config.quiet, config.sessions, config.duration) == (True, 4, 300.0)
    assert config.thresholds == ("a: p(95) < 1s",)
    assert parse(["--no-quiet"], tmp_path).quiet is False


def test_config_from_args_reads_every_flag(tmp_path: Path) -> None:
    """Each flag fills its key, repeatable ones into lists."""
    config = parse(
        [
            "--sessions", "20", "--ramp", "1m", "--duration", "1h30m", "--per-channel", "2",
            "--capture", "out", "--capture-packets", "--capture-audio", "--fixtures", "fx",
            "--seed", "7", "--quiet", "--think", "uniform:200ms..600ms",
            "--turn-timeout", "20s", "--join-timeout", "45s", "--dave", "required",
            "--no-client-dave", "--threshold", "response_latency: p(95) < 1500ms",
            "--threshold", "wer: value < 0.2", "--summary-json", "s.json", "--junit", "j.xml",
            "--metrics-port", "9464", "--api-base", "https://discord.com/api/v10",
            "--gateway-url", "wss://gateway.discord.gg", "--ca-file", "ca.pem",
            "--guild", "111", "--guild", "222,333", "--channel", "444",
            "--agent-user-id", "555", "--emulator-state", "state.json",
            "--agent-arg=--think=2s", "--agent-arg", "x",
        ],
        tmp_path,
    )  # fmt: skip
    assert config == SwarmConfig(
        sessions=20, ramp=60.0, duration=5400.0, per_channel=2, capture=tmp_path / "out",
        capture_packets=True, capture_audio=True, fixtures=tmp_path / "fx", seed=7,
        quiet=True, think="uniform:200ms..600ms", turn_timeout=20.0, join_timeout=45.0,
        dave="required", client_dave=False,
        thresholds=("response_latency: p(95) < 1500ms", "wer: value < 0.2"),
        summary_json=tmp_path / "s.json", junit=tmp_path / "j.xml", metrics_port=9464,
        api_base="https://discord.com/api/v10", gateway_url="wss://gateway.discord.gg",
        ca_file=tmp_path / "ca.pem", guilds=(111, 222, 333), channels=(444,),
        agent_user_id=555, emulator_state=tmp_path / "state.json",
        agent_args=("--think=2s", "x"),
    )  # fmt: skip


def test_load_config_environment_lists_and_booleans(tmp_path: Path) -> None:
    """Variables carry comma lists, ;-separated thresholds and shell-split arguments."""
    environ = {
        "VOICESIM_SESSIONS": "20",
        "VOICESIM_GUILDS": "1, 2,3",
        "VOICESIM_THRESHOLDS": "response_latency: p(95) < 1500ms; wer: value < 0.2",
        "VOICESIM_CAPTURE_AUDIO": "yes",
        "VOICESIM_AGENT_ARGS": "--think 'fixed:2s' -v",
        "VOICESIM_CAPTURE": "",  # empty means unset
    }
    config = load_config({}, cwd=tmp_path, environ=environ)
    assert config.sessions == 20
    assert config.guilds == (1, 2, 3)
    assert config.thresholds == ("response_latency: p(95) < 1500ms", "wer: value < 0.2")
    assert config.capture_audio is True
    assert config.agent_args == ("--think", "fixed:2s", "-v")
    assert config.capture is None


def test_load_config_file_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    """A path in --config FILE resolves from that file's folder, a flag's from cwd."""
    other = tmp_path / "conf"
    other.mkdir()
    (other / "load.toml").write_text(
        "capture = 'caps'\nfixtures = '/abs/fx'\nsessions = 3\n"
    )
    (tmp_path / "voicesim.toml").write_text("sessions = 99\n")  # replaced by --config
    config = load_config({"config": "conf/load.toml"}, cwd=tmp_path, environ={})
    assert config.capture == other / "caps"
    assert config.fixtures == Path("/abs/fx")
    assert config.sessions == 3

    via_env = load_config(
        {}, cwd=tmp_path, environ={"VOICESIM_CONFIG": "conf/load.toml"}
    )
    assert via_env.sessions == 3


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("12", 12.0),
        ("1m30s", 90.0),
    ],
)
def test_load_config_durations(tmp_path: Path, text: str, seconds: float) -> None:
    """Durations read as people write them."""
    assert load_config({"duration": text}, cwd=tmp_path, environ={}).duration == seconds


@pytest.mark.parametrize(
    ("layer", "key", "value"),
    [
        ("cli", "sessions", "many"),
        ("cli", "sessions", "0"),
        ("env", "sessions", "2.5"),
        ("toml", "sessions", True),
        ("toml", "sessions", 8.0),
        ("cli", "ramp", "soon"),
        ("cli", "ramp", "-1s"),
        ("cli", "duration", "0s"),
        ("toml", "duration", [60]),
        ("cli", "per_channel", "-2"),
        ("cli", "seed", "-1"),
        ("env", "quiet", "maybe"),
        ("toml", "capture_packets", "sometimes"),
        ("cli", "think", "gaussian:mean=1s"),
        ("cli", "think", "lognormal:median=1s"),
        ("cli", "turn_timeout", "0"),
        ("cli", "join_timeout", "forever"),
        ("toml", "dave", "maybe"),
        ("toml", "client_dave", 1),
        ("toml", "thresholds", 5),
        ("cli", "metrics_port", "70000"),
        ("cli", "api_base", "discord.com"),
        ("cli", "gateway_url", "https://gateway.discord.gg"),
        ("env", "guilds", "1,two"),
        ("cli", "channels", ["0"]),
        ("cli", "agent_user_id", "abc"),
        ("toml", "capture", 3),
        ("toml", "agent_args", [1, 2]),
    ],
)
def test_load_config_bad_value_names_the_key(
    tmp_path: Path, layer: str, key: str, value: object
) -> None:
    """Every unusable value raises ConfigError naming its key and what was wanted."""
    cli: dict[str, object] = {}
    environ: dict[str, str] = {}
    if layer == "cli":
        cli[key] = value
    elif layer == "env":
        environ["VOICESIM_" + key.upper()] = str(value)
    else:
        (tmp_path / "voicesim.toml").write_text(f"{key} = {json.dumps(value)}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(cli, cwd=tmp_path, environ=environ)
    assert caught.value.key == key
    assert "wanted" in str(caught.value)
    assert str(caught.value).startswith(f"{key}: ")


def test_load_config_unknown_keys_suggest_a_name(tmp_path: Path) -> None:
    """A misspelt key in a file, a variable or the mapping is refused with a guess."""
    (tmp_path / "voicesim.toml").write_text("sesions = 3\n")
    with pytest.raises(ConfigError, match="did you mean 'sessions'") as caught:
        load_config({}, cwd=tmp_path, environ={})
    assert caught.value.key == "sesions"

    (tmp_path / "voicesim.toml").unlink()
    (tmp_path / "pyproject.toml").write_text("[tool.voicesim]\nturn-timout = '3s'\n")
    with pytest.raises(ConfigError, match="did you mean 'turn_timeout'"):
        load_config({}, cwd=tmp_path, environ={})

    (tmp_path / "pyproject.toml").unlink()
    with pytest.raises(ConfigError, match="did you mean 'duration'"):
        load_config({}, cwd=tmp_path, environ={"VOICESIM_DURATON": "3s"})
    # Unrelated VOICESIM_ variables belong to someone else and pass.
    load_config({}, cwd=tmp_path, environ={"VOICESIM_LOG_FORMAT": "json"})
    with pytest.raises(ConfigError, match="did you mean 'sessions'"):
        load_config({"sesions": 3}, cwd=tmp_path, environ={})


def test_load_config_file_errors_name_the_file(tmp_path: Path) -> None:
    """Broken TOML, a missing --config file and a key given twice are refused."""
    (tmp_path / "voicesim.toml").write_text("sessions = \n")
    with pytest.raises(ConfigError, match="valid TOML") as caught:
        load_config({}, cwd=tmp_path, environ={})
    assert caught.value.key == "config"

    with pytest.raises(ConfigError, match="existing file"):
        load_config({"config": "nope.toml"}, cwd=tmp_path, environ={})

    (tmp_path / "voicesim.toml").write_text("per-channel = 2\nper_channel = 3\n")
    with pytest.raises(ConfigError, match="given twice") as caught:
        load_config({}, cwd=tmp_path, environ={})
    assert caught.value.key == "per_channel"


def test_python_api_values_are_checked(tmp_path: Path) -> None:
    """SwarmConfig and attrs.evolve refuse bad values with the same ConfigError."""
    with pytest.raises(ConfigError) as caught:
        SwarmConfig(sessions=0)
    assert caught.value.key == "sessions"
    with pytest.raises(ConfigError) as caught:
        attrs.evolve(SwarmConfig(), dave="sometimes")
    assert caught.value.key == "dave"
    with pytest.raises(ConfigError) as caught:
        SwarmConfig(quiet="yes")  # type: ignore[arg-type]
    assert caught.value.key == "quiet"
    config = SwarmConfig(capture="out", thresholds="wer: value < 0.1", ramp=2)
    assert config.capture == Path("out")
    assert config.thresholds == ("wer: value < 0.1",)


def test_tokens_from_file_never_shown(tmp_path: Path) -> None:
    """Tokens from tokens_file are usable but absent from repr, str and public_dict."""
    (tmp_path / "tokens.txt").write_text(
        f"# synthetic users\n{SECRET}\n\nsecond.token.x\n"
    )
    (tmp_path / "voicesim.toml").write_text("tokens_file = 'tokens.txt'\n")
    config = load_config({}, cwd=tmp_path, environ={})
    assert config.tokens() == (SECRET, "second.token.x")
    public = json.dumps(config.public_dict())
    for shown in (repr(config), str(config), public, repr(attrs.asdict(config))):
        assert SECRET not in shown
        assert "second.token" not in shown
    assert config.public_dict()["tokens_file"] == str(tmp_path / "tokens.txt")
    assert pickle.loads(pickle.dumps(config)).tokens() == config.tokens()


def test_tokens_from_environment_beat_a_file_setting(tmp_path: Path) -> None:
    """VOICESIM_TOKENS overrides a tokens_file from a file, a flag overrides both."""
    (tmp_path / "tokens.txt").write_text("from.file.token\n")
    (tmp_path / "voicesim.toml").write_text("tokens_file = 'tokens.txt'\n")
    environ = {"VOICESIM_TOKENS": f"{SECRET}, other.env.token"}
    config = load_config({}, cwd=tmp_path, environ=environ)
    assert config.tokens() == (SECRET, "other.env.token")
    assert config.tokens_file is None
    assert SECRET not in repr(config)

    flagged = load_config({"tokens_file": "tokens.txt"}, cwd=tmp_path, environ=environ)
    assert flagged.tokens() == ("from.file.token",)

    environ["VOICESIM_TOKENS_FILE"] = "tokens.txt"
    with pytest.raises(ConfigError, match="not both"):
        load_config({}, cwd=tmp_path, environ=environ)


def test_tokens_errors_never_echo_the_token(tmp_path: Path) -> None:
    """Tokens in a config file or with spaces are refused without printing them."""
    (tmp_path / "voicesim.toml").write_text(f"tokens = ['{SECRET}']\n")
    with pytest.raises(ConfigError) as caught:
        load_config({}, cwd=tmp_path, environ={})
    assert caught.value.key == "tokens"
    assert SECRET not in str(caught.value)

    (tmp_path / "voicesim.toml").unlink()
    with pytest.raises(ConfigError) as caught:
        load_config({}, cwd=tmp_path, environ={"VOICESIM_TOKENS": f"Bot {SECRET}"})
    assert SECRET not in str(caught.value)

    with pytest.raises(ConfigError) as caught:
        load_config({"tokens_file": "missing.txt"}, cwd=tmp_path, environ={})
    assert caught.value.key == "tokens_file"


def test_bot_tokens_repr_hides_values() -> None:
    """BotTokens says how many tokens it holds and nothing else."""
    tokens = BotTokens([SECRET])
    assert repr(tokens) == str(tokens) == "<1 bot tokens hidden>"
    assert list(tokens) == [SECRET]


def test_add_swarm_arguments_bad_dave_choice_is_usage_error(tmp_path: Path) -> None:
    """--dave only takes off, on or required; argparse exits with code 2 otherwise."""
    with pytest.raises(SystemExit) as caught:
        parse(["--dave", "maybe"], tmp_path)
    assert caught.value.code == 2
