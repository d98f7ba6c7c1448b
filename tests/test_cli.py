"""The `otelstats` command line through click's CliRunner, on a temporary SQLite file."""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from otelstats import queries
from otelstats.cli import cli, local_timezone
from otelstats.config import SETTINGS
from otelstats.export import DAILY_COLUMNS
from otelstats.store import Store
from tests.factories import record

NOW = datetime.now(timezone.utc)


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = tmp_path / "stats.db"
    store = Store.open(path)
    store.write(
        [
            record(NOW - timedelta(minutes=3), input_tokens=5, output_tokens=8),
            record(NOW - timedelta(days=1), request_model="=evil()", input_tokens=1),
            record(NOW - timedelta(days=3), outcome="error", error_type="E", output_tokens=None),
        ]
    )
    store.dispose()
    return str(path)


@pytest.fixture
def runner(db: str) -> CliRunner:
    return CliRunner(env={"OTELSTATS_DB": db, "TZ": "UTC"})


def test_help_lists_every_command(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "demo", "run", "stats", "export", "db", "proxy", "import"):
        assert f"  {command} " in result.output
    result = runner.invoke(cli, ["db", "--help"])
    assert "upgrade" in result.output
    assert "info" in result.output
    assert "prune" in result.output


def test_option_help_comes_from_the_settings_table(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["serve", "--help"], terminal_width=400)
    flat = " ".join(result.output.split())
    for env in ("OTELSTATS_DB", "OTELSTATS_HOST", "OTELSTATS_PORT"):
        setting = next(s for s in SETTINGS if s.env == env)
        assert " ".join(setting.help.split()) in flat
        assert env in flat


def test_stats_json_is_the_query_result(runner: CliRunner, db: str) -> None:
    result = runner.invoke(cli, ["stats", "--json", "--period", "7d", "--tz", "Asia/Kolkata"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    store = Store.open(db)
    expected = queries.stats(store.engine, "7d", "Asia/Kolkata")
    store.dispose()
    assert (body["overview"], body["daily"], body["models"]) == (
        expected["overview"],
        expected["daily"],
        expected["models"],
    )
    assert body["overview"]["requests"] == 3


def test_stats_table(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["stats", "--period", "all"])
    assert result.exit_code == 0, result.output
    assert "API calls          3" in result.output
    assert "=evil()" in result.output
    assert "gpt-test" in result.output


def test_stats_uses_local_timezone_by_default(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["stats", "--json"], env={"TZ": "Australia/Adelaide"})
    assert json.loads(result.output)["timezone"] == "Australia/Adelaide"


def test_local_timezone_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/St_Johns")
    assert local_timezone() == "America/St_Johns"
    monkeypatch.setenv("TZ", "Not/AZone")
    assert local_timezone() != "Not/AZone"  # the system zone or UTC, never an invalid name


def test_export_csv_to_file(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "daily.csv"
    result = runner.invoke(cli, ["export", "--format", "csv", "--period", "30d", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"), newline="")))
    assert tuple(rows[0]) == DAILY_COLUMNS
    assert len(rows) == 31
    assert sum(int(r[1]) for r in rows[1:]) == 3


def test_export_json_to_stdout(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["export", "--format", "json", "--period", "today"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["period"] == "today"


def test_export_csv_by_model_neutralises_names(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["export", "--format", "csv", "--by", "model", "--period", "7d"])
    assert result.exit_code == 0, result.output
    models = {row["model"] for row in csv.DictReader(io.StringIO(result.output))}
    assert models == {"gpt-test", "'=evil()"}


def test_by_model_is_csv_only(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["export", "--format", "json", "--by", "model"])
    assert result.exit_code == 2
    assert result.output.strip() == "otelstats: error: --by applies to --format csv only"


@pytest.mark.parametrize(
    ("args", "env", "code", "needle"),
    [
        (["stats", "--tz", "Mars/Base"], {}, 2, "unknown timezone"),
        (["stats", "--period", "forever"], {}, 2, "forever"),
        (["stats"], {"OTELSTATS_DB": "mysql://x/y"}, 2, "unsupported database"),
        (["serve", "--host", "0.0.0.0"], {"OTELSTATS_TOKEN": None}, 2, "OTELSTATS_TOKEN"),
        (["serve", "--port", "99999"], {}, 2, "99999"),
        (["serve"], {"OTELSTATS_PORT": "http"}, 2, "OTELSTATS_PORT"),
    ],
)
def test_errors_are_one_line_without_traceback(
    runner: CliRunner, args: list[str], env: dict[str, str | None], code: int, needle: str
) -> None:
    result = runner.invoke(cli, args, env=env)
    assert result.exit_code == code, result.output
    assert needle in result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    "args",
    [
        ["stats"],
        ["export", "--format", "csv"],
        ["export", "--format", "json"],
        ["db", "info"],
        ["db", "prune", "--older-than", "30d"],
    ],
    ids=["stats", "export-csv", "export-json", "db-info", "db-prune"],
)
def test_reading_a_database_that_is_not_there_is_refused(
    runner: CliRunner, tmp_path: Path, args: list[str]
) -> None:
    """A mistyped --db must not create an empty database and report zeros: the command says
    where it looked, and leaves nothing behind."""
    typo = tmp_path / "missing" / "stat.db"
    result = runner.invoke(cli, [*args, "--db", str(typo)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"otelstats: error: no database at {typo}:")
    assert "Traceback" not in result.output
    assert not typo.parent.exists()


def test_storage_error_exits_1(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "not-a-db.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    result = runner.invoke(cli, ["stats"], env={"OTELSTATS_DB": str(bad)})
    assert result.exit_code == 1, result.output
    assert result.output.startswith("otelstats: error:")
    assert len(result.output.strip().splitlines()) == 1


def test_db_info_and_upgrade(runner: CliRunner, db: str, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["db", "info", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["database"] == db
    assert info["backend"] == "sqlite"
    assert info["schema_revision"]
    assert info["rows"]["calls"] == 3
    assert info["size_bytes"] > 0
    fresh = tmp_path / "fresh.db"
    result = runner.invoke(cli, ["db", "upgrade", "--db", str(fresh)])
    assert result.exit_code == 0, result.output
    assert f"schema empty → {info['schema_revision']}" in result.output
    result = runner.invoke(cli, ["db", "info", "--db", str(fresh)])
    assert "calls" in result.output
    assert "schema_revision:" in result.output


def test_db_info_on_postgresql(pg_url: str) -> None:
    Store.open(pg_url).dispose()
    result = CliRunner().invoke(cli, ["db", "info", "--json", "--db", pg_url])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["backend"] == "postgresql"
    assert info["rows"]["calls"] == 0
    assert info["size_bytes"] > 0


def test_run_passes_the_exit_code_through(runner: CliRunner) -> None:
    code = "import sys; sys.exit(3)"
    result = runner.invoke(cli, ["run", "--", sys.executable, "-c", code])
    assert result.exit_code == 3, result.output


def test_run_unknown_command_is_one_line(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["run", "--", "no-such-program-otelstats"])
    assert result.exit_code == 2
    assert result.output.strip() == "otelstats: error: command not found: no-such-program-otelstats"


def test_db_prune_removes_raw_calls_and_keeps_the_totals(runner: CliRunner, db: str) -> None:
    before = json.loads(runner.invoke(cli, ["stats", "--period", "all", "--json"]).output)

    result = runner.invoke(cli, ["db", "prune", "--older-than", "2d"])

    assert result.exit_code == 0, result.output
    assert "removed 1 raw calls" in result.output
    after = json.loads(runner.invoke(cli, ["stats", "--period", "all", "--json"]).output)
    assert after["overview"] == before["overview"]
    info = json.loads(runner.invoke(cli, ["db", "info", "--json"]).output)
    assert info["rows"]["calls"] == 2


def test_db_prune_rejects_a_bad_age(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["db", "prune", "--older-than", "forever"])
    assert result.exit_code == 2
    assert "invalid age 'forever'" in result.output
    assert "Traceback" not in result.output
