"""Retention: remove old raw calls while rollups and all-time totals stay, then reclaim space.

Pruning never changes a number the dashboard's All Time or Prometheus shows: those read rollups
and totals, which are never deleted. Deletes run in short transactions so writers (the exporter
of a running app) wait at most one chunk, and SQLite space is returned incrementally.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa

from .config import Settings, parse_age
from .models import Call
from .store import Store

DELETE_CHUNK = 5000
VACUUM_PAGES = 2000


__all__ = ["PruneResult", "enforce", "parse_age", "prune", "run_periodically"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PruneResult:
    deleted_calls: int
    cutoff_ns: int
    reclaimed_bytes: int | None


def _file_size(store: Store) -> int | None:
    path = store.path
    if path is None:
        return None
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def prune(store: Store, older_than_s: int, *, now_ns: int | None = None) -> PruneResult:
    """Delete raw calls that started more than `older_than_s` ago; keep rollups and totals."""
    cutoff = (time.time_ns() if now_ns is None else now_ns) - older_than_s * 1_000_000_000
    before = _file_size(store)
    deleted = _delete_chunks(store, cutoff)
    if store.engine.dialect.name == "sqlite":
        _reclaim_sqlite(store)
    after = _file_size(store)
    reclaimed = before - after if before is not None and after is not None else None
    return PruneResult(deleted_calls=deleted, cutoff_ns=cutoff, reclaimed_bytes=reclaimed)


def _delete_chunks(store: Store, cutoff_ns: int, limit: int | None = None) -> int:
    """Delete raw calls that started before `cutoff_ns`, oldest first, in short transactions;
    at most `limit` of them."""
    calls: sa.Table = Call.__table__  # type: ignore[assignment]
    deleted = 0
    while limit is None or deleted < limit:
        chunk = DELETE_CHUNK if limit is None else min(DELETE_CHUNK, limit - deleted)
        with store.writer() as conn, conn.begin():
            select_ids = sa.select(calls.c.id).where(calls.c.start_ns < cutoff_ns)
            ids = conn.scalars(select_ids.order_by(calls.c.start_ns).limit(chunk)).all()
            if not ids:
                break
            conn.execute(sa.delete(calls).where(calls.c.id.in_(ids)))
            deleted += len(ids)
    return deleted


def _shrink_to(store: Store, max_bytes: int) -> int:
    """Remove the oldest raw calls until the SQLite file fits in `max_bytes` (or none are left)."""
    deleted = 0
    while (size := _file_size(store)) is not None and size > max_bytes:
        with store.engine.connect() as conn:
            remaining = int(conn.scalar(sa.select(sa.func.count()).select_from(Call)) or 0)
        if not remaining:
            break
        # Remove about the share of rows the file is over by (at least one chunk), then look again.
        share = max((size - max_bytes) / size, 0.05)
        removed = _delete_chunks(store, 2**62, limit=max(int(remaining * share), DELETE_CHUNK))
        _reclaim_sqlite(store)
        deleted += removed
        if not removed:
            break
    return deleted


def enforce(store: Store, settings: Settings, *, now_ns: int | None = None) -> int:
    """Apply the retention settings once; returns how many raw calls were removed."""
    deleted = 0
    if settings.retention_s is not None:
        deleted += prune(store, settings.retention_s, now_ns=now_ns).deleted_calls
    if settings.max_db_mb is not None and store.path is not None:
        deleted += _shrink_to(store, settings.max_db_mb * 2**20)
    return deleted


def run_periodically(
    store: Store, settings: Settings, stop: threading.Event, interval_s: float = 3600.0
) -> None:
    """`enforce` now and then every `interval_s` until `stop` is set (a serve background
    thread); failures are logged and retried at the next round, never raised."""
    while True:
        try:
            removed = enforce(store, settings)
            if removed:
                log.info("otelstats: retention removed %d old raw calls", removed)
        except Exception as exc:  # a failed round must not stop the server or the next round
            log.warning("otelstats: retention failed: %s: %s", type(exc).__name__, exc)
        if stop.wait(interval_s):
            return


def _reclaim_sqlite(store: Store) -> None:
    """Give free pages back to the file system in small steps (incremental vacuum), or with
    one VACUUM when the database was created before auto_vacuum was set."""
    with store.engine.connect() as conn:
        mode = conn.exec_driver_sql("PRAGMA auto_vacuum").scalar()
    if mode != 2:  # not INCREMENTAL: a one-time full VACUUM switches it over
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("PRAGMA auto_vacuum = INCREMENTAL")
            conn.exec_driver_sql("VACUUM")
    else:
        # Python's sqlite3 steps a PRAGMA that returns no rows only once, which frees one page;
        # executescript steps it to the end. The driver runs in autocommit (store.create_engine),
        # so each step is its own short write transaction under the busy timeout.
        with store.engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            while raw.execute("PRAGMA freelist_count").fetchone()[0]:
                raw.executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES})")
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
