"""The examples users copy stay true to what voicesim really exports and accepts."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

from voicesim._thresholds import parse_threshold
from voicesim.analysis import _commands
from voicesim.engine._config import add_swarm_arguments
from voicesim.engine._prometheus import PrometheusExporter

EXAMPLES = Path(__file__).parents[2] / "examples"
DASHBOARD = EXAMPLES / "grafana-dashboard.json"
WORKFLOW = EXAMPLES / "github-actions.yml"

#: Labels Prometheus itself adds or uses in queries, not the exporter.
PROMQL_LABELS = {"le", "job", "instance"}


def exported_series() -> dict[str, set[str]]:
    """Every sample name the exporter serves, with the label names it carries.

    Labelled counters have no samples until a label value is used, so one event of
    each kind is recorded first.
    """
    exporter = PrometheusExporter()
    exporter.session_started()
    exporter.session_ended("lost", "close 4006")
    exporter.turn_done(
        {
            "outcome": "answered",
            "response_latency_ms": 900.0,
            "transcript_latency_ms": 500.0,
            "jitter_ms": 2.0,
            "packets_received": 50,
            "packets_lost": 1,
            "word_errors": 1,
            "reference_words": 6,
        }
    )
    exporter.lateness_batch([0.0004, 0.0012])
    series: dict[str, set[str]] = {}
    for family in exporter.registry.collect():
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def dashboard_expressions(node: Any) -> Iterator[str]:
    """Every PromQL expression in a dashboard: panel targets and template queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            # Template variables hold a query too: label_values(metric, label).
            is_query = key == "expr" or (key == "query" and "(" in str(value))
            if is_query and isinstance(value, str):
                yield value
            else:
                yield from dashboard_expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_expressions(item)


def test_dashboard_is_valid_json_with_panels() -> None:
    """The dashboard parses, and every panel has a title and a query."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))

    assert dashboard["title"] and dashboard["uid"]
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["title"]
        assert all(target["expr"] for target in panel["targets"])
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_uses_only_exported_metrics_and_labels() -> None:
    """Every metric and grouping label in the dashboard is one the exporter serves."""
    series = exported_series()
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    expressions = list(dashboard_expressions(dashboard))

    used = {m for e in expressions for m in re.findall(r"\bvoicesim_\w+", e)}
    assert used, "the dashboard queries no voicesim metric"
    assert sorted(used - series.keys()) == []
    # Grouping and matcher labels exist on the metrics of their expression.
    for expression in expressions:
        labels = set(PROMQL_LABELS)
        for metric in re.findall(r"\bvoicesim_\w+", expression):
            labels |= series[metric]
        grouped = {
            name.strip()
            for group in re.findall(r"\bby\s*\(([^)]*)\)", expression)
            for name in group.split(",")
        }
        matched = set(re.findall(r"[{,]\s*(\w+)\s*=~?", expression))
        assert sorted((grouped | matched) - labels) == [], expression
    # The panels the brief of the dashboard promises are there.
    for needed in (
        "voicesim_active_sessions",
        "voicesim_turns_total",
        "voicesim_errors_total",
        "voicesim_response_latency_seconds_bucket",
        "voicesim_jitter_seconds_bucket",
        "voicesim_send_lateness_seconds_bucket",
    ):
        assert needed in used


class _Refused(Exception):
    pass


class _StrictParser(argparse.ArgumentParser):
    """Raises on an unknown flag or a missing value instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise _Refused(message)


def swarm_parser() -> argparse.ArgumentParser:
    """The swarm's flags, as ``voicesim.engine._config`` defines them from ``_FLAGS``."""
    parser = _StrictParser(prog="voicesim swarm", allow_abbrev=False)
    add_swarm_arguments(parser)
    return parser


def voicesim_commands(text: str) -> list[list[str]]:
    """The arguments after ``python -m voicesim`` of every command line in a script.

    Shell line continuations are joined first, so a command spread over lines with
    trailing backslashes counts as one.
    """
    joined = re.sub(r"\\\n\s*", " ", text)
    commands = []
    for line in joined.splitlines():
        line = line.split(" #")[0]
        for match in re.finditer(r"python -m voicesim\s+(.*)", line):
            commands.append(shlex.split(match.group(1)))
    return commands


def test_workflow_is_valid_yaml() -> None:
    """The workflow parses as YAML, with jobs whose steps run or use something."""
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))

    assert workflow["name"]
    # PyYAML reads the bare key ``on`` as the boolean True (YAML 1.1).
    assert "on" in workflow or True in workflow
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    assert steps and all("run" in step or "uses" in step for step in steps)
    runs = "\n".join(step.get("run", "") for step in steps)
    assert {c[0] for c in voicesim_commands(runs)} == {"swarm", "compare", "report"}


def test_workflow_uses_only_real_command_line_flags() -> None:
    """Every ``python -m voicesim`` line parses with the real flags and thresholds."""
    commands = voicesim_commands(WORKFLOW.read_text(encoding="utf-8"))
    parsers = {
        "swarm": swarm_parser(),
        "report": _commands._report_parser(),
        "compare": _commands._compare_parser(),
    }

    assert {c[0] for c in commands} == set(parsers)
    for command, *argv in commands:
        try:
            args = parsers[command].parse_args(argv)
        except (_Refused, _commands._UsageError) as exc:
            pytest.fail(f"python -m voicesim {command} {shlex.join(argv)}: {exc}")
        # Spelled out in full: an abbreviation argparse accepts today may clash with
        # a flag added tomorrow.
        options = {o for a in parsers[command]._actions for o in a.option_strings}
        flags = [arg.split("=")[0] for arg in argv if arg.startswith("-")]
        assert sorted(set(flags) - options) == [], command
        for text in getattr(args, "thresholds", None) or []:
            parse_threshold(text)
    swarm = next(argv for command, *argv in commands if command == "swarm")
    assert "--junit" in swarm and "--threshold" in swarm
