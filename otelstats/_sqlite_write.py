"""`Store.write` on SQLite: one transaction on the driver's own connection.

A batch is a dozen statements (the calls, then the additive upserts of `_deltas`). Through
SQLAlchemy's execution layer each costs tens of microseconds before SQLite sees it, about 1 ms per
batch: more than the rows of a hundred calls. Here the same statements (the upserts compiled once
from the ones PostgreSQL runs, see `store`) go to `sqlite3` directly. Its errors are re-raised as
SQLAlchemy's (`DBAPIError.instance`), so callers handle one error type whichever database they
write to.

The connection comes from the engine's pool, so it was set up by `store.create_engine` (WAL,
busy timeout, no implicit transactions); BEGIN IMMEDIATE takes the write lock up front.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from . import _deltas
from .records import CallRecord

INSERT_CALLS = (
    f"INSERT OR IGNORE INTO calls ({', '.join(_deltas.CALL_COLUMNS)}) "  # noqa: S608 (fixed column names)
    f"VALUES ({', '.join('?' * len(_deltas.CALL_COLUMNS))})"
)
_SAVEPOINT = "otelstats_calls"
_MAX_PARAMS = 500  # rows of ids per lookup, under SQLite's bound-parameter limit


def write(
    engine: Engine,
    records: Sequence[CallRecord],
    apply: Callable[[sqlite3.Cursor, list[CallRecord]], None],
) -> list[CallRecord]:
    """Insert the records not stored yet and call `apply(cursor, new)` in the same transaction;
    returns the new records. `apply` adds the derived rows (see `Store.write`)."""
    raw = engine.raw_connection()
    try:
        connection: sqlite3.Connection = raw.driver_connection  # type: ignore[assignment]
        cursor = connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            new = _insert_new(cursor, records)
            if new:
                apply(cursor, new)
            cursor.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.rollback()
            raise
        finally:
            cursor.close()
        return new
    except sqlite3.Error as exc:
        raise DBAPIError.instance(None, None, exc, sqlite3.Error, dialect=engine.dialect) from exc
    finally:
        raw.close()


def _insert_new(cursor: sqlite3.Cursor, records: Sequence[CallRecord]) -> list[CallRecord]:
    """Insert the records not stored yet; return exactly those (so rollups count them once).

    The common case has no duplicates: insert them all, skipping conflicts, and check the count;
    only when some were already stored, undo and find out which are new. BEGIN IMMEDIATE holds
    the write lock, so what the lookup sees cannot change before the insert.
    """
    cursor.execute(f"SAVEPOINT {_SAVEPOINT}")
    cursor.executemany(INSERT_CALLS, [_deltas.call_values(r) for r in records])
    if cursor.rowcount == len(records):
        cursor.execute(f"RELEASE {_SAVEPOINT}")
        return list(records)
    cursor.execute(f"ROLLBACK TO {_SAVEPOINT}")
    cursor.execute(f"RELEASE {_SAVEPOINT}")
    stored = _stored_keys(cursor, records)
    new = [r for r in records if _deltas.call_key(r) not in stored]
    if new:
        cursor.executemany(INSERT_CALLS, [_deltas.call_values(r) for r in new])
    return new


def _stored_keys(cursor: sqlite3.Cursor, records: Sequence[CallRecord]) -> set[tuple[Any, ...]]:
    # start_ns leads the unique index, so this is an index lookup, not a scan.
    starts = sorted({r.start_ns for r in records})
    stored: set[tuple[Any, ...]] = set()
    for i in range(0, len(starts), _MAX_PARAMS):
        chunk = starts[i : i + _MAX_PARAMS]
        query = (
            f"SELECT {', '.join(_deltas.CALL_KEY)} FROM calls "  # noqa: S608 (fixed names, ? per value)
            f"WHERE start_ns IN ({', '.join('?' * len(chunk))})"
        )
        stored.update(tuple(row) for row in cursor.execute(query, chunk))
    return stored
