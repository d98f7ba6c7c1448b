"""Fixtures for the reliability tests: subprocess runners, a fake OpenAI server, DB inspection.

Scenarios that need a process of their own (concurrency, SIGKILL) run small programs in fresh
interpreters with real `otelstats.instrument()` and the real openai SDK against FakeOpenAIServer;
the tests then read the SQLite file with the stdlib driver, independently of the code under test.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from otelstats.fake_server import FakeOpenAIServer
from tests.pipeline.helpers import count_calls

__all__ = ["count_calls"]  # re-exported for the tests here


def table_rows(db: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table (sorted), for byte-for-byte comparisons of the data."""
    conn = sqlite3.connect(db)
    try:
        names = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {
            name: sorted(conn.execute(f'SELECT * FROM "{name}"').fetchall(), key=repr)
            for name in names
        }
    finally:
        conn.close()


def child_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a child interpreter: user data dir (conversation salt) in tmp_path."""
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg"), **extra}
    env.pop("OTELSTATS_DB", None)
    return env


def write_script(tmp_path: Path, name: str, body: str) -> Path:
    script = tmp_path / name
    script.write_text(textwrap.dedent(body))
    return script


def python(script: Path, *args: str) -> list[str]:
    return [sys.executable, str(script), *args]


def run(
    script: Path, *args: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        python(script, *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(script.parent, **env),
    )


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAIServer]:
    """A real OpenAI-compatible HTTP server on 127.0.0.1 (port 0)."""
    with FakeOpenAIServer() as server:
        yield server
