"""StatsSpanExporter against real SQLite files and real failures (as root, chattr/file parents)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SpanExportResult

from otelstats.collector import build_registry
from otelstats.dbinfo import describe
from otelstats.exporter import StatsSpanExporter
from otelstats.store import Store

from .conftest import MakeSpans
from .helpers import count_calls, make_mutable


def test_duplicate_export_writes_exactly_once(tmp_path: Path, make_spans: MakeSpans) -> None:
    db = tmp_path / "stats.db"
    exporter = StatsSpanExporter(db)
    spans = make_spans(7)
    assert not db.exists()  # opened lazily, on the first export
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert count_calls(db) == 7
    stats = exporter.stats
    assert (stats.written, stats.duplicates, stats.pending, stats.dropped) == (7, 7, 0, 0)


def test_non_genai_spans_are_ignored(tmp_path: Path, make_spans: MakeSpans) -> None:
    db = tmp_path / "stats.db"
    exporter = StatsSpanExporter(db)
    assert exporter.export(make_spans(3, genai=False)) is SpanExportResult.SUCCESS
    assert exporter.export(make_spans(2)) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert count_calls(db) == 2


def test_accepts_an_open_store(sqlite_store: Store, make_spans: MakeSpans) -> None:
    exporter = StatsSpanExporter(sqlite_store)
    assert exporter.export(make_spans(4)) is SpanExportResult.SUCCESS
    assert sqlite_store.path is not None
    assert count_calls(sqlite_store.path) == 4


def test_read_only_database_spools_then_recovers(
    tmp_path: Path,
    make_spans: MakeSpans,
    immutable: Callable[[Path], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    db = folder / "stats.db"
    Store.open(db).dispose()
    immutable(db)
    immutable(folder)  # no WAL, no journal next to it either: memory only

    exporter = StatsSpanExporter(db)
    with caplog.at_level(logging.ERROR, logger="otelstats.exporter"):
        assert exporter.export(make_spans(3)) is SpanExportResult.FAILURE
        assert exporter.export(make_spans(2)) is SpanExportResult.FAILURE
    errors = [r for r in caplog.records if "cannot write to the database" in r.getMessage()]
    assert len(errors) == 1  # one clear message, not one per batch
    assert str(db) in errors[0].getMessage()
    stats = exporter.stats
    assert (stats.written, stats.pending, stats.dropped) == (0, 5, 0)
    assert stats.last_error is not None

    make_mutable(folder)
    make_mutable(db)
    assert exporter.force_flush()
    exporter.shutdown()
    assert count_calls(db) == 5
    assert (exporter.stats.written, exporter.stats.pending, exporter.stats.dropped) == (5, 0, 0)
    assert exporter.stats.last_error is None


def test_full_memory_spool_without_journal_counts_drops(
    tmp_path: Path, make_spans: MakeSpans
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a regular file where a directory should be")
    db = blocker / "stats.db"
    exporter = StatsSpanExporter(db, spool_records=5)
    assert exporter.export(make_spans(4)) is SpanExportResult.FAILURE
    assert exporter.export(make_spans(4)) is SpanExportResult.FAILURE
    assert (exporter.stats.pending, exporter.stats.dropped) == (5, 3)

    blocker.unlink()
    blocker.mkdir()
    assert exporter.force_flush()
    exporter.shutdown()
    assert count_calls(db) == 5
    assert (exporter.stats.written, exporter.stats.pending, exporter.stats.dropped) == (5, 0, 3)
    # What was lost is part of the record once the database works again: db info and /metrics.
    store = Store.open(db)
    try:
        assert describe(store)["spool"] == {
            "journal": str(db.with_name("stats.db-spool.jsonl")),
            "pending_records": 0,
            "dropped_records": 3,
        }
        registry = build_registry(store)
        assert registry.get_sample_value("otelstats_records_dropped_total") == 3
    finally:
        store.dispose()


def test_corrupt_database_spills_to_journal_and_a_later_process_replays_it(
    tmp_path: Path, make_spans: MakeSpans
) -> None:
    db = tmp_path / "stats.db"
    db.write_bytes(b"this is not a database" * 100)
    journal = tmp_path / "stats.db-spool.jsonl"

    first = StatsSpanExporter(db, spool_records=4)
    for _ in range(3):
        assert first.export(make_spans(3)) is SpanExportResult.FAILURE
    assert journal.exists()  # memory overflowed into the journal
    assert (first.stats.pending, first.stats.dropped) == (9, 0)
    first.shutdown()  # the rest goes to the journal too
    assert len(journal.read_text().splitlines()) == 9

    db.unlink()  # the user moves the broken file away
    second = StatsSpanExporter(db)
    assert second.export(make_spans(1)) is SpanExportResult.SUCCESS
    second.shutdown()
    assert count_calls(db) == 10
    assert second.stats.written == 10
    assert not journal.exists()


def test_database_deleted_while_running_starts_a_new_one(
    tmp_path: Path, make_spans: MakeSpans
) -> None:
    db = tmp_path / "stats.db"
    exporter = StatsSpanExporter(db)
    assert exporter.export(make_spans(2)) is SpanExportResult.SUCCESS
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    assert exporter.export(make_spans(3)) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert count_calls(db) == 3


_HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


def test_write_lock_held_by_another_process_beyond_busy_timeout(
    tmp_path: Path, make_spans: MakeSpans
) -> None:
    db = tmp_path / "stats.db"
    Store.open(db).dispose()
    exporter = StatsSpanExporter(db)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        # Waits the real busy timeout (store.BUSY_TIMEOUT_MS), then gives the batch back.
        assert exporter.export(make_spans(6)) is SpanExportResult.FAILURE
        assert exporter.stats.pending == 6
        assert exporter.stats.last_error is not None
        assert exporter.stats.last_error.startswith("busy")
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=30)
        assert holder.stdout is not None
        holder.stdout.close()
    # Nobody calls export again: the retry thread writes them once the lock is released.
    deadline = time.monotonic() + 60
    while exporter.stats.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (exporter.stats.written, exporter.stats.pending, exporter.stats.dropped) == (6, 0, 0)
    exporter.shutdown()
    assert count_calls(db) == 6


_DISK_FULL = """
import json, resource, signal, sys
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otelstats.collector import build_registry
from otelstats.dbinfo import describe
from otelstats.exporter import StatsSpanExporter

memory = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(memory))
tracer = provider.get_tracer("disk-full")

def spans(n):
    memory.clear()
    for i in range(n):
        attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                 "gen_ai.request.model": "m", "gen_ai.usage.input_tokens": i}
        with tracer.start_as_current_span("chat", attributes=attrs):
            pass
    return memory.get_finished_spans()

exporter = StatsSpanExporter(sys.argv[1])
first = exporter.export(spans(2)).name
# A 1-byte file-size limit: every write that grows a file fails with EFBIG, as on a full disk
# (SIGXFSZ ignored so the write returns the error instead of killing the process).
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (1, hard))
full = [exporter.export(spans(3)).name for _ in range(3)]
during = exporter.stats
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
flushed = exporter.force_flush()
exporter.shutdown()
print(json.dumps({"first": first, "full": full, "pending": during.pending,
                  "error": during.last_error, "flushed": flushed,
                  "written": exporter.stats.written, "dropped": exporter.stats.dropped}))
"""


def test_disk_full_spools_then_writes_everything(tmp_path: Path) -> None:
    db = tmp_path / "stats.db"
    result = subprocess.run(
        [sys.executable, "-c", _DISK_FULL, str(db)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["first"] == "SUCCESS"
    assert outcome["full"] == ["FAILURE"] * 3
    assert outcome["pending"] == 9
    assert outcome["error"].startswith("disk")
    assert outcome["flushed"] is True
    assert (outcome["written"], outcome["dropped"]) == (11, 0)
    assert count_calls(db) == 11
