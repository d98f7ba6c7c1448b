"""The schema comes only from migrations/: a blank database migrates to exactly these columns,
runs down to nothing and back up, and models.py describes the same schema alembic builds.

The expected columns are written out literally here (not derived from models.py), so a change to
either side that is not matched by a migration fails this file.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from otelstats.migrations import HEAD
from otelstats.models import Base
from otelstats.store import Store
from tests.factories import record

NULL, NOT_NULL = True, False

# (column, nullable) in table order, and the primary key.
SCHEMA: dict[str, tuple[list[tuple[str, bool]], list[str]]] = {
    "calls": (
        [
            ("id", NOT_NULL),
            ("trace_id", NOT_NULL),
            ("span_id", NOT_NULL),
            ("start_ns", NOT_NULL),
            ("end_ns", NOT_NULL),
            ("operation", NOT_NULL),
            ("provider", NOT_NULL),
            ("model", NOT_NULL),
            ("request_model", NULL),
            ("response_model", NULL),
            ("server_address", NULL),
            ("server_port", NULL),
            ("input_tokens", NULL),
            ("output_tokens", NULL),
            ("tokens_source", NOT_NULL),
            ("cached_input_tokens", NULL),
            ("reasoning_tokens", NULL),
            ("streaming", NOT_NULL),
            ("duration_s", NOT_NULL),
            ("time_to_first_chunk_s", NULL),
            ("tokens_per_second", NULL),
            ("finish_reasons", NULL),
            ("outcome", NOT_NULL),
            ("error_type", NULL),
            ("conversation_id", NULL),
            ("service_name", NULL),
            ("service_instance_id", NULL),
        ],
        ["id"],
    ),
    "rollups": (
        [
            ("bucket_start", NOT_NULL),
            ("model", NOT_NULL),
            ("provider", NOT_NULL),
            ("operation", NOT_NULL),
            ("outcome", NOT_NULL),
            ("requests", NOT_NULL),
            ("input_tokens", NOT_NULL),
            ("output_tokens", NOT_NULL),
            ("cached_input_tokens", NOT_NULL),
            ("reasoning_tokens", NOT_NULL),
            ("counted_calls", NOT_NULL),
            ("unreported_calls", NOT_NULL),
            ("duration_sum_s", NOT_NULL),
            ("latency_sum_s", NOT_NULL),
            ("latency_count", NOT_NULL),
            ("tps_sum", NOT_NULL),
            ("tps_count", NOT_NULL),
        ],
        ["bucket_start", "model", "provider", "operation", "outcome"],
    ),
    "conversation_buckets": (
        [("bucket_start", NOT_NULL), ("conversation_id", NOT_NULL)],
        ["bucket_start", "conversation_id"],
    ),
    "conversations": (
        [("conversation_id", NOT_NULL), ("first_bucket", NOT_NULL)],
        ["conversation_id"],
    ),
    "day_generations": (
        [("utc_day", NOT_NULL), ("generation", NOT_NULL)],
        ["utc_day"],
    ),
    "counters": (
        [("name", NOT_NULL), ("value", NOT_NULL)],
        ["name"],
    ),
    "metric_totals": (
        [
            ("operation", NOT_NULL),
            ("provider", NOT_NULL),
            ("model", NOT_NULL),
            ("outcome", NOT_NULL),
            ("error_type", NOT_NULL),
            ("requests", NOT_NULL),
            ("input_tokens", NOT_NULL),
            ("output_tokens", NOT_NULL),
            ("duration_sum_s", NOT_NULL),
            ("ttfc_sum_s", NOT_NULL),
            ("ttfc_count", NOT_NULL),
            ("input_token_calls", NOT_NULL),
            ("output_token_calls", NOT_NULL),
        ],
        ["operation", "provider", "model", "outcome", "error_type"],
    ),
    "metric_histograms": (
        [
            ("operation", NOT_NULL),
            ("provider", NOT_NULL),
            ("model", NOT_NULL),
            ("outcome", NOT_NULL),
            ("error_type", NOT_NULL),
            ("metric", NOT_NULL),
            ("le_index", NOT_NULL),
            ("count", NOT_NULL),
        ],
        ["operation", "provider", "model", "outcome", "error_type", "metric", "le_index"],
    ),
}
INDEXES = {"calls": {"uq_calls_start_span": ["start_ns", "trace_id", "span_id"]}}
UNIQUE: dict[str, dict[str, list[str]]] = {}


def _tables(store: Store) -> set[str]:
    return set(sa.inspect(store.engine).get_table_names())


def _version(store: Store) -> str | None:
    with store.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_blank_database_gets_exactly_these_columns(store: Store) -> None:
    inspector = sa.inspect(store.engine)
    assert set(inspector.get_table_names()) == {*SCHEMA, "alembic_version"}
    for table, (columns, primary_key) in SCHEMA.items():
        found = [(c["name"], c["nullable"]) for c in inspector.get_columns(table)]
        assert found == columns, table
        assert inspector.get_pk_constraint(table)["constrained_columns"] == primary_key, table
        indexes = {
            i["name"]: i["column_names"]
            for i in inspector.get_indexes(table)
            if "duplicates_constraint" not in i  # PostgreSQL lists a unique constraint's index
        }
        assert indexes == INDEXES.get(table, {}), table
        unique = {u["name"]: u["column_names"] for u in inspector.get_unique_constraints(table)}
        assert unique == UNIQUE.get(table, {}), table
    assert _version(store) == "0002"


def test_models_agree_with_the_migrated_schema(store: Store) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_upgrade_downgrade_upgrade(store: Store) -> None:
    store.write([record()])
    store.downgrade("base")
    assert _tables(store) <= {"alembic_version"}
    assert _version(store) is None
    store.migrate()
    assert _tables(store) == {*SCHEMA, "alembic_version"}
    assert _version(store) == "0002"
    # The rebuilt schema is usable (and empty: downgrading to base drops the data).
    assert store.write([record()]) == 1


def test_migrate_is_idempotent(store: Store) -> None:
    store.write([record()])
    store.migrate()
    store.migrate()
    with store.engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT COUNT(*) FROM calls")) == 1


def test_the_head_otelstats_knows_is_alembics() -> None:
    config = Config()
    config.set_main_option("script_location", str(resources.files("otelstats") / "migrations"))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD


def test_a_database_at_head_is_opened_without_alembic(tmp_path: Path) -> None:
    """A process writing to an existing database does not load alembic (its CPU and memory);
    one that finds an older schema still upgrades it."""
    db = tmp_path / "stats.db"
    Store.open(db).dispose()
    probe = (
        "import sys; from otelstats.store import Store; "
        f"Store.open({str(db)!r}).dispose(); print('alembic' in sys.modules)"
    )
    run = [sys.executable, "-c", probe]
    assert subprocess.run(run, capture_output=True, text=True, check=True).stdout == "False\n"
    store = Store.open(db)
    try:
        store.downgrade("0001")
        assert subprocess.run(run, capture_output=True, text=True, check=True).stdout == "True\n"
        assert _version(store) == HEAD
    finally:
        store.dispose()


def test_open_without_migrate_leaves_a_blank_database(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "blank.db", migrate=False)
    try:
        assert _tables(store) == set()
        store.migrate()
        assert _tables(store) == {*SCHEMA, "alembic_version"}
    finally:
        store.dispose()


def test_migrations_never_import_models() -> None:
    # A revision describes a fixed schema; importing today's models would silently change what
    # an old revision creates.
    versions = Path(__file__).parent.parent / "otelstats" / "migrations" / "versions"
    revisions = sorted(versions.glob("0*.py"))
    assert revisions
    for revision in revisions:
        text = revision.read_text()
        assert "models" not in text.replace("# models", ""), revision.name


def test_sqlite_aggregate_tables_are_clustered_by_primary_key(sqlite_store: Store) -> None:
    """Range scans over buckets read rows in key order: aggregate tables are WITHOUT ROWID."""
    with sqlite_store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
        ddl = {str(row[0]): str(row[1]) for row in rows}
    clustered = {name for name, sql in ddl.items() if sql and "WITHOUT ROWID" in sql}
    assert clustered == {
        "rollups",
        "conversation_buckets",
        "conversations",
        "day_generations",
        "counters",
        "metric_totals",
        "metric_histograms",
    }
