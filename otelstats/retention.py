"""Retention: remove old raw calls while rollups and all-time totals stay, then reclaim space.

Pruning never changes a number the dashboard's All Time or Prometheus shows: those read rollups
and totals, which are never deleted. Deletes run in short transactions so writers (the exporter
of a running app) wait at most one chunk, and SQLite space is returned incrementally.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import sqlalchemy as sa

from .errors import ConfigError
from .models import Call
from .store import Store

_AGE = re.compile(r"^\s*(\d{1,6})\s*([dhw])\s*$")
_UNIT_SECONDS = {"h": 3600, "d": 86400, "w": 7 * 86400}
DELETE_CHUNK = 5000
VACUUM_PAGES = 2000


def parse_age(text: str) -> int:
    """'90d', '12h', '4w' → seconds; anything else is a ConfigError."""
    match = _AGE.match(text)
    if not match or int(match.group(1)) == 0:
        raise ConfigError(f"invalid age {text!r}: use a number with d, h or w, such as 90d")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


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
    calls: sa.Table = Call.__table__  # type: ignore[assignment]
    before = _file_size(store)
    deleted = 0
    while True:
        with store.writer() as conn, conn.begin():
            select_ids = sa.select(calls.c.id).where(calls.c.start_ns < cutoff)
            ids = conn.scalars(select_ids.order_by(calls.c.id).limit(DELETE_CHUNK)).all()
            if not ids:
                break
            conn.execute(sa.delete(calls).where(calls.c.id.in_(ids)))
            deleted += len(ids)
    if store.engine.dialect.name == "sqlite":
        _reclaim_sqlite(store)
    after = _file_size(store)
    reclaimed = before - after if before is not None and after is not None else None
    return PruneResult(deleted_calls=deleted, cutoff_ns=cutoff, reclaimed_bytes=reclaimed)


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
        while True:
            with store.writer() as conn, conn.begin():
                free = conn.exec_driver_sql("PRAGMA freelist_count").scalar() or 0
                if free:
                    conn.exec_driver_sql(f"PRAGMA incremental_vacuum({VACUUM_PAGES})")
            if not free:
                break
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
