"""The store: URL resolution, the default file, SQLite pragmas, idempotent writes, and rollup,
conversation and all-time rows that equal what the records imply (on SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from otelstats.errors import ConfigError, StorageError
from otelstats.store import BUSY_TIMEOUT_MS, Store, resolve_url
from tests.factories import record

B = datetime(2026, 5, 13, 9, 0, tzinfo=timezone.utc)  # a bucket boundary
B_S = int(B.timestamp())


def rows(store: Store, table: str, order: str) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        result = conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY {order}"))
        return [dict(row._mapping) for row in result]


def plain(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Decimal/int/float differences between backends aside, compare numbers as numbers."""
    return [
        {k: (pytest.approx(float(v)) if isinstance(v, float) else v) for k, v in row.items()}
        for row in values
    ]


# --- resolve_url and the default file ---------------------------------------------------------


def test_resolve_plain_path(tmp_path: Path) -> None:
    url = resolve_url(tmp_path / "a" / "stats.db")
    assert url.get_backend_name() == "sqlite"
    assert url.database == str((tmp_path / "a" / "stats.db").resolve())
    assert resolve_url(str(tmp_path / "x.db")).database == str(tmp_path / "x.db")


def test_resolve_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_url("~/stats.db").database == str(tmp_path / "stats.db")


def test_resolve_urls(tmp_path: Path) -> None:
    assert resolve_url(f"sqlite:///{tmp_path}/u.db").database == f"{tmp_path}/u.db"
    pg = resolve_url("postgresql://me@db.example/stats")
    assert pg.drivername == "postgresql+psycopg"  # the driver we install
    assert (pg.username, pg.host, pg.database) == ("me", "db.example", "stats")
    explicit = resolve_url("postgresql+psycopg://me@db.example/stats")
    assert explicit.drivername == "postgresql+psycopg"


@pytest.mark.parametrize("db", ["mysql://u@h/db", "oracle://h/x", "http://example.com/x"])
def test_resolve_refuses_other_databases(db: str) -> None:
    with pytest.raises(ConfigError, match="unsupported database"):
        resolve_url(db)


def test_resolve_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="directory"):
        resolve_url(tmp_path)


def test_default_file_in_user_data_dir_created_on_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    expected = tmp_path / "data" / "otelstats" / "stats.db"
    assert resolve_url(None).database == str(expected)
    assert resolve_url("  ").database == str(expected)
    assert not expected.parent.exists()  # resolving creates nothing
    store = Store.open()
    try:
        assert store.path == expected
        assert store.describe() == str(expected)
        assert store.write([record()]) == 1
        assert expected.is_file()
    finally:
        store.dispose()


def test_unusable_location_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match="cannot create the directory"):
        Store.open(blocker / "stats.db")


def test_describe_hides_the_password() -> None:
    store = Store(sa.create_engine("postgresql+psycopg://me:secret@db.example/stats"))
    assert "secret" not in store.describe()
    assert store.path is None


# --- SQLite pragmas ---------------------------------------------------------------------------


def test_sqlite_wal_and_busy_timeout(sqlite_store: Store) -> None:
    with sqlite_store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == BUSY_TIMEOUT_MS
    # WAL is a property of the file: another client sees it too.
    assert sqlite_store.path is not None
    with closing(sqlite3.connect(sqlite_store.path)) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


# --- idempotent writes ------------------------------------------------------------------------


def test_write_is_idempotent_on_span_id(store: Store) -> None:
    first, second = record(B), record(B)
    assert store.write([]) == 0
    assert store.write([first, first, second]) == 2
    assert store.write([first]) == 0  # again, in a later batch
    assert store.write([first, record(B)]) == 1  # a batch mixing old and new
    with store.engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT COUNT(*) FROM calls")) == 3
        assert conn.scalar(sa.text("SELECT SUM(requests) FROM rollups")) == 3
        assert conn.scalar(sa.text("SELECT SUM(requests) FROM metric_totals")) == 3


def test_same_span_id_in_another_trace_is_another_call(store: Store) -> None:
    a = record(B)
    b = record(B, trace_id="f" * 32, span_id=a.span_id)
    assert store.write([a, b]) == 2


_REFUSE = {
    "sqlite": [
        "CREATE TRIGGER refuse BEFORE INSERT ON metric_histograms "
        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$",
        "CREATE TRIGGER refuse BEFORE INSERT ON metric_histograms "
        "FOR EACH ROW EXECUTE FUNCTION refuse()",
    ],
}


def test_a_write_failing_midway_stores_nothing_and_raises_one_error_type(store: Store) -> None:
    """The database refuses the batch's last statement: the calls and rollups written before it
    are rolled back, the error is SQLAlchemy's whichever backend (what the receivers and the
    exporter catch), and the connection is fit for the next write."""
    batch = [record(B), record(B + timedelta(minutes=20), conversation_id="c-1")]
    with store.engine.begin() as conn:
        for statement in _REFUSE[store.engine.dialect.name]:
            conn.exec_driver_sql(statement)
    with pytest.raises(sa.exc.DBAPIError, match="refused by the test"):
        store.write(batch)
    derived = ("calls", "rollups", "metric_totals", "day_generations", "conversations", "counters")
    with store.engine.connect() as conn:
        assert [conn.scalar(sa.text(f"SELECT COUNT(*) FROM {t}")) for t in derived] == [0] * 6

    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            "DROP TRIGGER refuse ON metric_histograms"
            if store.engine.dialect.name == "postgresql"
            else "DROP TRIGGER refuse"
        )
    assert store.write(batch) == 2
    with store.engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT SUM(requests) FROM rollups")) == 2
        assert conn.scalar(sa.text("SELECT SUM(count) FROM metric_histograms")) > 0
        assert conn.scalar(sa.text("SELECT value FROM counters WHERE name = 'conversations'")) == 1


# --- rows equal what the records imply --------------------------------------------------------


def test_rollup_rows_by_hand(store: Store) -> None:
    store.write(
        [
            # bucket B, model a, ok: non-streaming 2 s (latency 2.0, 20 tok / 2 s = 10 tok/s)
            record(B, request_model="a", input_tokens=10, output_tokens=20, duration_s=2.0),
            # bucket B, model a, ok: streaming, first chunk 0.5 s, 11 tokens in 1.5 s → 10 tok/s
            record(B + timedelta(seconds=899), request_model="a", input_tokens=5,
                   output_tokens=11, streaming=True, time_to_first_chunk_s=0.5, duration_s=1.5,
                   cached_input_tokens=3, reasoning_tokens=4),
            # bucket B, model a, error: counted in its own row, no latency or speed
            record(B, request_model="a", outcome="error", error_type="Boom", input_tokens=None,
                   output_tokens=None, tokens_source="none", duration_s=0.25),
            # next bucket, model a, ok: tokens counted from chunks
            record(B + timedelta(seconds=900), request_model="a", input_tokens=None,
                   output_tokens=4, tokens_source="counted", duration_s=1.0),
        ]
    )  # fmt: skip
    common = {"model": "a", "provider": "openai", "operation": "chat"}
    assert rows(store, "rollups", "bucket_start, outcome") == plain(
        [
            common | {"bucket_start": B_S, "outcome": "error", "requests": 1, "input_tokens": 0,
                      "output_tokens": 0, "cached_input_tokens": 0, "reasoning_tokens": 0,
                      "counted_calls": 0, "unreported_calls": 1, "duration_sum_s": 0.25,
                      "latency_sum_s": 0.0, "latency_count": 0, "tps_sum": 0.0, "tps_count": 0},
            common | {"bucket_start": B_S, "outcome": "ok", "requests": 2, "input_tokens": 15,
                      "output_tokens": 31, "cached_input_tokens": 3, "reasoning_tokens": 4,
                      "counted_calls": 0, "unreported_calls": 0, "duration_sum_s": 3.5,
                      "latency_sum_s": 2.5, "latency_count": 2, "tps_sum": 20.0, "tps_count": 2},
            common | {"bucket_start": B_S + 900, "outcome": "ok", "requests": 1,
                      "input_tokens": 0, "output_tokens": 4, "cached_input_tokens": 0,
                      "reasoning_tokens": 0, "counted_calls": 1, "unreported_calls": 0,
                      "duration_sum_s": 1.0, "latency_sum_s": 1.0, "latency_count": 1,
                      "tps_sum": 4.0, "tps_count": 1},
        ]
    )  # fmt: skip
    totals = rows(store, "metric_totals", "outcome")
    assert totals == plain(
        [
            {"operation": "chat", "provider": "openai", "model": "a", "outcome": "error",
             "error_type": "Boom", "requests": 1, "input_tokens": 0, "output_tokens": 0,
             "duration_sum_s": 0.25, "ttfc_sum_s": 0.0, "ttfc_count": 0, "input_token_calls": 0,
             "output_token_calls": 0},
            {"operation": "chat", "provider": "openai", "model": "a", "outcome": "ok",
             "error_type": "", "requests": 3, "input_tokens": 15, "output_tokens": 35,
             "duration_sum_s": 4.5, "ttfc_sum_s": 0.5, "ttfc_count": 1, "input_token_calls": 2,
             "output_token_calls": 3},
        ]
    )  # fmt: skip


def test_histogram_buckets_use_le_semantics(store: Store) -> None:
    # 1.28 s sits exactly on a boundary: Prometheus `le` puts it in that bucket (index 7).
    store.write([record(B, duration_s=1.28, input_tokens=16, output_tokens=17)])
    found = {
        (r["metric"], r["le_index"]): r["count"]
        for r in rows(store, "metric_histograms", "metric, le_index")
    }
    assert found == {("duration", 7): 1, ("input_tokens", 2): 1, ("output_tokens", 3): 1}


def test_conversation_rows(store: Store) -> None:
    store.write(
        [
            record(B, conversation_id="x"),
            record(B + timedelta(minutes=5), conversation_id="x"),
            record(B + timedelta(minutes=20), conversation_id="x"),
            record(B, conversation_id="y"),
            record(B),
        ]
    )
    store.write([record(B, conversation_id="x")])  # seen again in a later batch
    assert rows(store, "conversation_buckets", "bucket_start, conversation_id") == [
        {"bucket_start": B_S, "conversation_id": "x"},
        {"bucket_start": B_S, "conversation_id": "y"},
        {"bucket_start": B_S + 900, "conversation_id": "x"},
    ]


def test_batches_add_up_to_one_write(store: Store) -> None:
    records = [
        record(
            B + timedelta(minutes=7 * n),
            request_model=f"m{n % 3}",
            outcome="error" if n % 5 == 0 else "ok",
            streaming=n % 2 == 0,
            time_to_first_chunk_s=0.1 * (n % 4) if n % 2 == 0 else None,
            input_tokens=n,
            output_tokens=3 * n,
            conversation_id=f"c{n % 4}",
        )
        for n in range(40)
    ]
    for start in range(0, 40, 7):
        store.write(records[start : start + 7])
    expected: dict[tuple[Any, ...], list[float]] = {}
    for r in records:
        bucket = r.start_ns // 10**9 // 900 * 900
        sums = expected.setdefault((bucket, r.model, r.outcome), [0, 0, 0, 0, 0.0, 0, 0.0])
        latency, tps = r.latency_s, r.tokens_per_second
        for index, value in enumerate(
            (1, r.input_tokens or 0, r.output_tokens or 0, int(latency is not None),
             latency or 0.0, int(tps is not None), tps or 0.0)
        ):  # fmt: skip
            sums[index] += value
    names = ("requests", "input_tokens", "output_tokens", "latency_count", "latency_sum_s",
             "tps_count", "tps_sum")  # fmt: skip
    found = {
        (row["bucket_start"], row["model"], row["outcome"]): [row[name] for name in names]
        for row in rows(store, "rollups", "bucket_start")
    }
    assert found == {key: pytest.approx(values) for key, values in expected.items()}
    conversations = {(r.start_ns // 10**9 // 900 * 900, r.conversation_id) for r in records}
    assert len(rows(store, "conversation_buckets", "bucket_start")) == len(conversations)
    with store.engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT SUM(requests) FROM metric_totals")) == 40
        assert conn.scalar(sa.text("SELECT SUM(output_tokens) FROM rollups")) == 3 * sum(range(40))


def test_conversations_and_day_generations(store: Store) -> None:
    day = B_S // 86_400
    store.write(
        [
            record(B + timedelta(minutes=20), conversation_id="x"),
            record(B, conversation_id="x"),
            record(B + timedelta(days=1), conversation_id="y"),
        ]
    )
    store.write([record(B, conversation_id="x"), record(B)])
    assert rows(store, "conversations", "conversation_id") == [
        {"conversation_id": "x", "first_bucket": B_S},
        {"conversation_id": "y", "first_bucket": B_S + 86_400},
    ]
    # Every write that touches a UTC day bumps its generation (caches of past days use it).
    assert rows(store, "day_generations", "utc_day") == [
        {"utc_day": day, "generation": 2},
        {"utc_day": day + 1, "generation": 1},
    ]
