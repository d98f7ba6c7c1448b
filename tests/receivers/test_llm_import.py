"""`otelstats import llm-logs`: a logs.db built by the real `llm` package imports once, exactly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llm
import pytest
import sqlite_utils
from click.testing import CliRunner
from llm.migrations import migrate

from otelstats.importers.llm_logs import default_logs_path, import_llm_logs
from otelstats.receivers.commands import import_
from otelstats.store import Store

from .conftest import calls


class EchoModel(llm.Model):
    """A real llm model plugin class: llm itself builds, times and logs its responses."""

    model_id = "echo-test"

    def execute(
        self, prompt: Any, stream: bool, response: Any, conversation: Any = None
    ) -> Iterator[str]:
        words = (prompt.prompt or "").split()
        response.set_usage(input=len(words), output=len(words) + 1)
        yield from words


@pytest.fixture(scope="module")
def logs_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per module (llm's setup is slow); tests only read it."""
    path = tmp_path_factory.mktemp("llm") / "logs.db"
    db = sqlite_utils.Database(path)
    migrate(db)
    model = EchoModel()
    conversation = model.conversation()
    for text in ("one two three", "four five"):
        response = conversation.prompt(text)
        response.text()
        response.log_to_db(db)
    single = model.prompt("six")
    single.text()
    single.log_to_db(db)
    # A row as llm versions before 0.36 logged it, in the legacy responses table.
    db["conversations"].insert({"id": "legacy-conv", "name": "old", "model": "gpt-4o-mini"})
    db["responses"].insert(
        {
            "id": "01legacy0000000000000000000",
            "model": "gpt-4o-mini",
            "prompt": "hi",
            "response": "hello",
            "conversation_id": "legacy-conv",
            "duration_ms": 1500,
            "datetime_utc": "2024-05-01T12:00:00.000000",
            "input_tokens": 10,
            "output_tokens": 20,
        }
    )
    db.close()
    return path


def test_llm_logs_import_once(logs_db: Path, sqlite_store: Store) -> None:
    first = import_llm_logs(logs_db, sqlite_store)
    second = import_llm_logs(logs_db, sqlite_store)
    assert (first.rows, first.imported, first.skipped) == (4, 4, 0)
    assert (second.rows, second.imported) == (4, 0)

    rows = calls(sqlite_store)
    assert len(rows) == 4
    legacy = rows[0]
    assert legacy["model"] == "gpt-4o-mini"
    assert legacy["provider"] == "openai"
    assert (legacy["input_tokens"], legacy["output_tokens"]) == (10, 20)
    assert legacy["duration_s"] == 1.5
    assert legacy["conversation_id"] == "legacy-conv"
    echo = rows[1:]
    assert [(r["input_tokens"], r["output_tokens"]) for r in echo] == [(3, 4), (2, 3), (1, 2)]
    assert echo[0]["conversation_id"] == echo[1]["conversation_id"] != echo[2]["conversation_id"]
    assert all(r["outcome"] == "ok" and r["model"] == "echo-test" for r in echo)


def test_import_command_with_progress(logs_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    runner = CliRunner()
    result = runner.invoke(import_, ["llm-logs", str(logs_db), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "4 call(s) imported" in result.output
    again = runner.invoke(import_, ["llm-logs", str(logs_db), "--db", str(db)])
    assert "0 call(s) imported, 4 already present" in again.output


def test_missing_or_foreign_database_is_a_clear_error(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(
        import_, ["llm-logs", str(tmp_path / "nope.db"), "--db", str(tmp_path / "s.db")]
    )
    assert missing.exit_code != 0
    assert "no llm logs database" in str(missing.exception)
    other = tmp_path / "other.db"
    sqlite_utils.Database(other)["t"].insert({"a": 1})
    foreign = runner.invoke(import_, ["llm-logs", str(other), "--db", str(tmp_path / "s.db")])
    assert "no llm `responses` or `turns` table" in str(foreign.exception)


def test_default_path_follows_llm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path))
    assert default_logs_path() == llm.user_dir() / "logs.db"
