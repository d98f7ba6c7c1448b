"""Facts about a database for `otelstats db info`: where, schema revision, row counts, size,
and what is spooled or was dropped.

Read-only: it never migrates, so it also describes an old or foreign database.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .models import Base
from .store import Store, schema_revision


def row_counts(engine: Engine) -> dict[str, int]:
    """Rows per otelstats table (tables not created yet are left out)."""
    counts: dict[str, int] = {}
    with engine.connect() as conn:
        existing = set(sa.inspect(conn).get_table_names())
        for table in Base.metadata.sorted_tables:
            if table.name in existing:
                counts[table.name] = int(
                    conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                )
    return counts


def size_bytes(store: Store) -> int | None:
    """Bytes on disk: the SQLite file with its WAL, or the PostgreSQL tables with indexes."""
    path = store.path
    if path is not None:
        sidecars = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
        return sum(p.stat().st_size for p in sidecars if p.exists())
    if store.engine.dialect.name != "postgresql":
        return None
    with store.engine.connect() as conn:
        existing = set(sa.inspect(conn).get_table_names())
        total = 0
        for table in Base.metadata.sorted_tables:
            if table.name in existing:
                total += int(
                    conn.execute(
                        sa.select(sa.func.pg_total_relation_size(sa.cast(table.name, sa.Text)))
                    ).scalar_one()
                )
    return total


def spooled(store: Store) -> dict[str, Any]:
    """Records waiting in the spool journal (written while the database was unusable) and
    records that had to be dropped, as reported by the exporters once it was usable again."""
    from .exporter import journal_for

    journal = journal_for(None, store.url)
    try:
        with journal.open("rb") as handle:
            pending = sum(1 for line in handle if line.strip())
    except OSError:
        pending = 0
    counters = store.counters() if schema_revision(store.engine) else {}
    return {
        "journal": str(journal),
        "pending_records": pending,
        "dropped_records": counters.get("dropped_records", 0),
    }


def describe(store: Store) -> dict[str, Any]:
    """Everything `db info` prints, as a JSON-ready dict."""
    return {
        "database": store.describe(),
        "backend": store.engine.dialect.name,
        "schema_revision": schema_revision(store.engine),
        "size_bytes": size_bytes(store),
        "rows": row_counts(store.engine),
        "spool": spooled(store),
    }
