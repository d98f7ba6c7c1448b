"""The README stays true: every setting, CLI command, HTTP endpoint and metric family is in it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from otelstats.cli import cli
from otelstats.collector import StatsCollector
from otelstats.config import SETTINGS
from otelstats.store import Store
from otelstats.web import create_app

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
FLAT_README = " ".join(README.replace("`", "").split())


def _commands(group: click.Group, prefix: str = "otelstats") -> Iterator[str]:
    for name, command in sorted(group.commands.items()):
        if command.hidden:
            continue
        yield f"{prefix} {name}"
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix} {name}")


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_every_setting_is_documented(setting: object) -> None:
    env = setting.env  # type: ignore[attr-defined]
    row = next((line for line in README.splitlines() if line.startswith(f"| `{env}` |")), None)
    assert row is not None, f"{env} has no row in the README's settings table"


@pytest.mark.parametrize("command", list(_commands(cli)))
def test_every_cli_command_is_documented(command: str) -> None:
    assert f"`{command}" in README, f"{command!r} is not in the README"


def test_every_http_endpoint_is_documented(sqlite_store: Store) -> None:
    app = create_app({"TESTING": True}, store=sqlite_store)
    rules = {
        rule.rule
        for rule in app.url_map.iter_rules()
        if "GET" in (rule.methods or ())
        and "<" not in rule.rule
        and rule.rule != "/"
        and not rule.rule.startswith("/assets/")
    }
    assert {"/api/stats", "/api/export.csv", "/api/export.json", "/healthz", "/metrics"} <= rules
    missing = {rule for rule in rules if f"GET {rule}" not in FLAT_README}
    assert not missing, f"endpoints missing from the README: {sorted(missing)}"


def test_every_metric_family_is_documented(sqlite_store: Store) -> None:
    collector = StatsCollector(sqlite_store, exporter_stats=lambda: None)
    names = {family.name for family in collector.describe()}
    assert "otelstats_requests" in names
    missing = {name for name in names if name not in README}
    assert not missing, f"metric families missing from the README: {sorted(missing)}"


def test_every_test_the_guarantees_cite_exists() -> None:
    section = README.split("## Guarantees", 1)[1].split("\n## ", 1)[0]
    cited = set(re.findall(r"`(test_[a-z0-9_]+)`", section))
    assert len(cited) >= 20
    defined = {
        match
        for path in Path(__file__).parent.rglob("test_*.py")
        for match in re.findall(r"^(?:async )?def (test_[a-z0-9_]+)", path.read_text(), re.M)
    }
    assert not cited - defined, f"cited but not defined: {sorted(cited - defined)}"
