"""The database: URL resolution, engines (SQLite pragmas or PostgreSQL), migrations, the writer.

`Store.write(records)` is idempotent on (start_ns, trace_id, span_id), i.e. on the span (its
start time never changes on redelivery): a record already stored changes nothing, so retries
after a crash or a duplicate delivery never double-count. On SQLite the batch runs on the driver's
own connection (`_sqlite_write`); on PostgreSQL through SQLAlchemy Core; both add the same
derived rows (`_additive`), in the same order.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from . import _deltas, _sqlite_write
from .config import default_db_path, sqlite_file
from .errors import ConfigError, StorageError
from .migrations import HEAD
from .models import (
    Call,
    Conversation,
    ConversationBucket,
    Counter,
    DayGeneration,
    MetricHistogram,
    MetricTotal,
    Rollup,
)
from .records import CallRecord

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
_PG_MIGRATION_LOCK = 0x6F74_6C73  # "otls": serialises concurrent migrate() calls on PostgreSQL
_WRITE_OPTION = "otelstats_write"
_PG_INSERT_CALLS = (
    f"INSERT INTO calls ({', '.join(_deltas.CALL_COLUMNS)}) "  # noqa: S608 (fixed column names)
    f"VALUES ({', '.join(['%s'] * len(_deltas.CALL_COLUMNS))}) "
    f"ON CONFLICT ({', '.join(_deltas.CALL_KEY)}) DO NOTHING"
)


def resolve_url(db: str | Path | None) -> sa.URL:
    """A file path or a SQLAlchemy URL → URL; None → the default file in the user data dir."""
    if db is None or (isinstance(db, str) and not db.strip()):
        db = default_db_path()
    if isinstance(db, str) and "://" in db:
        try:
            url = make_url(db)
        except ArgumentError as exc:
            raise ConfigError(f"invalid database URL {db!r}: {exc}") from None
        if url.get_backend_name() not in {"sqlite", "postgresql"}:
            raise ConfigError(
                f"unsupported database {url.get_backend_name()!r} in {db!r}: "
                "use a file path, sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
            )
        if url.get_backend_name() == "postgresql" and url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        return url
    path = Path(db).expanduser()
    if path.is_dir():
        raise ConfigError(f"--db {str(path)!r} is a directory; give a file path such as stats.db")
    return sa.URL.create("sqlite", database=str(path.resolve()))


def create_engine(url: sa.URL) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and write-lock-up-front writers."""
    path = sqlite_file(url)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the directory for the database {str(path)!r}: {exc.strerror}. "
                "Choose another location with --db or OTELSTATS_DB."
            ) from None
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)

    engine = sa.create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling would defer BEGIN; take it over so that
        # writers can ask for BEGIN IMMEDIATE below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if path is not None:
            # Only change what needs changing: setting a journal mode takes locks, and a new
            # connection must not wait a whole busy timeout behind a writer to learn it is WAL.
            if cursor.execute("PRAGMA page_count").fetchone()[0] == 0:
                # Only possible on a new file; lets retention give space back in small steps.
                cursor.execute("PRAGMA auto_vacuum = INCREMENTAL")
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Writers take the write lock up front: a deferred transaction that reads first and
        # then writes can fail with SQLITE_BUSY at once instead of waiting the busy timeout.
        options = connection.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return  # VACUUM and friends must run outside any transaction
        write = options.get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _insert(engine_or_conn: Engine | Connection, table: sa.Table) -> Any:
    dialect = engine_or_conn.dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


@functools.lru_cache(maxsize=16)
def _upsert_statement(dialect: str, table: sa.Table, sums: tuple[str, ...]) -> Any:
    """INSERT … ON CONFLICT (primary key) DO UPDATE SET sum = sum + excluded.sum (DO NOTHING
    without sums), built once."""
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    keys = [c.name for c in table.primary_key.columns]
    if not sums:
        return stmt.on_conflict_do_nothing(index_elements=keys)
    return stmt.on_conflict_do_update(
        index_elements=keys, set_={name: table.c[name] + stmt.excluded[name] for name in sums}
    )


def _upsert_add(
    conn: Connection, table: sa.Table, rows: list[dict[str, Any]], sums: tuple[str, ...]
) -> None:
    if rows:
        conn.execute(_upsert_statement(conn.dialect.name, table, sums), rows)


@functools.lru_cache(maxsize=32)
def _sqlite_upsert(
    table: sa.Table, columns: tuple[str, ...], sums: tuple[str, ...]
) -> tuple[str, tuple[str, ...]]:
    """`_upsert_statement` compiled once for SQLite and these columns: (SQL, parameter order)."""
    compiled = _upsert_statement("sqlite", table, sums).compile(
        dialect=sqlite.dialect(), column_keys=list(columns)
    )
    return compiled.string, tuple(compiled.positiontup or ())


def _upsert_add_sqlite(
    cursor: sqlite3.Cursor, table: sa.Table, rows: list[dict[str, Any]], sums: tuple[str, ...]
) -> int:
    """`_upsert_add` on SQLite's own cursor; returns how many rows were inserted or updated."""
    if not rows:
        return 0
    sql, names = _sqlite_upsert(table, tuple(rows[0]), sums)
    cursor.executemany(sql, [tuple(row[name] for name in names) for row in rows])
    return int(cursor.rowcount)


def schema_revision(engine: Engine) -> str | None:
    """The alembic revision the schema is at (read without alembic), or None for an empty
    database."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        value = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    return None if value is None else str(value)


class Store:
    """One database: its engine, its schema and the only writer of its rows."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, db: str | Path | None = None, *, migrate: bool = True) -> Store:
        store = cls(create_engine(resolve_url(db)))
        if migrate:
            store.migrate()
        return store

    @property
    def url(self) -> sa.URL:
        return self.engine.url

    @property
    def path(self) -> Path | None:
        """The SQLite file, or None for PostgreSQL / in-memory."""
        return sqlite_file(self.engine.url)

    def describe(self) -> str:
        """Where the data lives, for messages (no password)."""
        path = self.path
        return str(path) if path else self.engine.url.render_as_string(hide_password=True)

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to `revision` (idempotent; safe from several processes at once)."""
        if revision == "head" and self._at_head():
            return
        self._alembic("upgrade", revision)

    def _at_head(self) -> bool:
        """The schema is at the newest revision already: what every process that writes to an
        existing database finds. Read with SQLAlchemy alone; asking alembic costs ~150 ms of CPU
        and ~15 k objects kept in the app for good (longer pauses of its garbage collector)."""
        try:
            return schema_revision(self.engine) == HEAD
        except SQLAlchemyError:  # unreadable: alembic will say why
            return False

    def downgrade(self, revision: str) -> None:
        self._alembic("downgrade", revision)

    def _alembic(self, action: str, revision: str) -> None:
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(resources.files("otelstats") / "migrations"))
        try:
            with self.writer() as conn, conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
                config.attributes["connection"] = conn
                getattr(command, action)(config, revision)
        except SQLAlchemyError as exc:
            raise StorageError(
                f"cannot {action} the database at {self.describe()}: {exc.__class__.__name__}: "
                f"{exc.orig if hasattr(exc, 'orig') else exc}"
            ) from exc

    def write(self, records: Sequence[CallRecord]) -> int:
        """Persist records and their rollups in one transaction; returns how many were new."""
        unique = list({_deltas.call_key(r): r for r in records}.values())
        if not unique:
            return 0
        if self.engine.dialect.name == "sqlite":
            return len(_sqlite_write.write(self.engine, unique, _add_derived_sqlite))
        with self.writer() as conn, conn.begin():
            new = self._insert_new_calls(conn, unique)
            if new:
                _add_derived(conn, _deltas.fold(new))
        return len(new)

    @staticmethod
    def _insert_new_calls(conn: Connection, records: list[CallRecord]) -> list[CallRecord]:
        """PostgreSQL: insert the records not stored yet; return exactly those (so rollups
        count them once). Writers do not serialise: the unique index says which rows were new.
        Raw executemany is several times faster than INSERT … RETURNING row by row, so that
        runs only when some of the records were stored already."""
        values = [_deltas.call_values(r) for r in records]
        savepoint = conn.begin_nested()
        result = conn.exec_driver_sql(_PG_INSERT_CALLS, values)
        if result.rowcount == len(records):
            savepoint.commit()
            return records
        savepoint.rollback()
        calls: sa.Table = Call.__table__  # type: ignore[assignment]
        key = _deltas.CALL_KEY
        stmt = (
            _insert(conn, calls)
            .on_conflict_do_nothing(index_elements=list(key))
            .returning(*(calls.c[name] for name in key))
        )
        rows = [_deltas.call_row(r) for r in records]
        inserted = {tuple(row) for row in conn.execute(stmt, rows)}
        return [r for r in records if _deltas.call_key(r) in inserted]

    def writer(self) -> Connection:
        """A connection whose transactions take the SQLite write lock at BEGIN."""
        return self.engine.connect().execution_options(**{_WRITE_OPTION: True})

    def add_to_counter(self, name: str, value: int) -> None:
        """Add `value` to the named all-time counter (e.g. `dropped_records`)."""
        if value:
            with self.writer() as conn, conn.begin():
                _upsert_add(conn, Counter.__table__, [{"name": name, "value": value}], ("value",))  # type: ignore[arg-type]

    def counters(self) -> dict[str, int]:
        """Every all-time counter the writers keep, by name."""
        table: sa.Table = Counter.__table__  # type: ignore[assignment]
        with self.engine.connect() as conn:
            return {str(row.name): int(row.value) for row in conn.execute(sa.select(table))}

    def dispose(self) -> None:
        self.engine.dispose()


def _additive(
    deltas: _deltas.Deltas,
) -> list[tuple[sa.Table, list[dict[str, Any]], tuple[str, ...]]]:
    """The derived tables a batch adds to, with the columns summed on conflict (none: insert if
    absent), in the one order every writer follows."""
    return [
        (Rollup.__table__, deltas.rollups, _deltas.ROLLUP_SUMS),  # type: ignore[list-item]
        (ConversationBucket.__table__, deltas.conversations, ()),  # type: ignore[list-item]
        (DayGeneration.__table__, deltas.days, ("generation",)),  # type: ignore[list-item]
        (MetricTotal.__table__, deltas.totals, _deltas.TOTAL_SUMS),  # type: ignore[list-item]
        (MetricHistogram.__table__, deltas.histograms, ("count",)),  # type: ignore[list-item]
    ]


def _add_derived(conn: Connection, deltas: _deltas.Deltas) -> None:
    """Through SQLAlchemy (PostgreSQL): rollups, totals, histograms, then new conversations."""
    for table, rows, sums in _additive(deltas):
        _upsert_add(conn, table, rows, sums)
    if deltas.first_seen:
        conversations: sa.Table = Conversation.__table__  # type: ignore[assignment]
        stmt = (
            _insert(conn, conversations)
            .on_conflict_do_nothing()
            .returning(conversations.c.conversation_id)
        )
        new_conversations = len(conn.execute(stmt, deltas.first_seen).all())
        if new_conversations:
            counter = {"name": "conversations", "value": new_conversations}
            _upsert_add(conn, Counter.__table__, [counter], ("value",))  # type: ignore[arg-type]


def _add_derived_sqlite(cursor: sqlite3.Cursor, new: list[CallRecord]) -> None:
    """The same on SQLite's own cursor, under the write lock (see `_sqlite_write`)."""
    deltas = _deltas.fold(new)
    for table, rows, sums in _additive(deltas):
        _upsert_add_sqlite(cursor, table, rows, sums)
    # Under the write lock; sqlite3 sums the rows each execution really inserted.
    conversations: sa.Table = Conversation.__table__  # type: ignore[assignment]
    new_conversations = _upsert_add_sqlite(cursor, conversations, deltas.first_seen, ())
    if new_conversations:
        counter = {"name": "conversations", "value": new_conversations}
        _upsert_add_sqlite(cursor, Counter.__table__, [counter], ("value",))  # type: ignore[arg-type]
