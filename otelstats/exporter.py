"""StatsSpanExporter: finished GenAI spans → CallRecords → the Store, without ever raising.

Runs behind a BatchSpanProcessor, so the database is opened, migrated and written on the
processor's thread, never on the LLM caller's. When the database cannot be written (busy, read-only,
disk full, corrupt, deleted) records wait in a bounded spool (see `_spool`) and a retry thread
writes them once it works again; what had to be dropped is counted in `stats`.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ._forks import in_fork_children
from ._spool import Journal, MemorySpool
from .config import Settings, default_db_path, sqlite_file
from .records import span_to_record

if TYPE_CHECKING:
    import sqlalchemy as sa

    from .store import Store

log = logging.getLogger(__name__)

WRITE_CHUNK = 500
"""Records per transaction when draining the spool (keeps each write lock short)."""
RETRY_FIRST_S = 0.25
RETRY_MAX_S = 5.0


@dataclass(frozen=True)
class ExporterStats:
    """Counters for /metrics, logs and `otelstats db info`."""

    written: int
    """Records this exporter stored for the first time."""
    duplicates: int
    """Records delivered again that were already stored (not counted twice)."""
    pending: int
    """Records waiting in the spool (memory + this database's journal)."""
    dropped: int
    """Records lost because the spool was full or its journal unreadable."""
    last_error: str | None


def _problem(exc: BaseException) -> tuple[str, str]:
    """(kind, advice) for a database failure, from the driver's message or errno."""
    text = str(getattr(exc, "orig", None) or exc).lower()
    code = getattr(exc, "errno", None)
    if "locked" in text or "busy" in text:
        return "busy", "another process holds the write lock; retrying."
    if (
        "readonly" in text
        or "read-only" in text
        or code in {errno.EACCES, errno.EPERM, errno.EROFS}
    ):
        return "read-only", "make the file and its directory writable, or set OTELSTATS_DB."
    if "full" in text or "disk i/o" in text or code in {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}:
        # SQLite reports a write refused for lack of space (ENOSPC, EFBIG) as a disk I/O error.
        return "disk", "the disk is full or failing: free some space, or set OTELSTATS_DB."
    if "not a database" in text or "malformed" in text:
        return (
            "corrupt",
            "move the file away (otelstats then starts a new one), or set OTELSTATS_DB.",
        )
    if "unable to open" in text or "not a directory" in text or code == errno.ENOTDIR:
        return "unopenable", "check that the path's directories exist and are writable."
    return "error", "check the database, or set OTELSTATS_DB to another location."


def journal_for(db: str | Path | None, url: sa.URL | None) -> Path:
    """`<db>-spool.jsonl` next to a SQLite file; in the user data dir for a server database."""
    if url is None:
        path = Path(db if db is not None else default_db_path()).expanduser().resolve()
        return path.with_name(path.name + "-spool.jsonl")
    file = sqlite_file(url)
    if file is not None:
        return file.with_name(file.name + "-spool.jsonl")
    digest = hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()[:12]
    return default_db_path().parent / f"spool-{digest}.jsonl"


def _is_url(db: str | Path | None) -> bool:
    return isinstance(db, str) and "://" in db


class StatsSpanExporter(SpanExporter):
    """Persist GenAI spans to a Store; never raises into the SDK or the application.

    `db` is a Store, a file path or a SQLAlchemy URL; None reads OTELSTATS_DB (so the class can
    be named by `OTEL_TRACES_EXPORTER`, which builds exporters without arguments).
    """

    def __init__(
        self,
        db: Store | str | Path | None = None,
        *,
        spool_records: int = 10_000,
        journal_path: Path | None = None,
        journal_max_bytes: int = 64 * 2**20,
    ) -> None:
        self._store: Store | None = None
        self._url: sa.URL | None = None
        target: str | Path | None = None
        if db is not None and not isinstance(db, (str, Path)):
            self._store = db
            self._url = db.url
        else:
            target = db if db is not None else Settings.from_env().db
            if _is_url(target):
                from .store import resolve_url  # a URL is checked now: bad input fails loudly

                self._url = resolve_url(target)
        # A plain path is resolved on the first export (off the caller's thread), so that
        # instrument() does not pay for importing SQLAlchemy at application start-up.
        self._db = target
        self._file_id: tuple[int, int] | None = None
        self._memory = MemorySpool(spool_records)
        self._journal = Journal(journal_path or journal_for(target, self._url), journal_max_bytes)
        self._journal_pending = 0
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._retry_thread: threading.Thread | None = None
        self._closed = False
        self._written = 0
        self._duplicates = 0
        self._dropped = 0
        self._dropped_unrecorded = 0
        """Dropped records not yet added to the database's `dropped_records` counter."""
        self._last_error: str | None = None
        self._logged: set[str] = set()
        in_fork_children(self._after_fork_in_child)

    # -- public -----------------------------------------------------------------------------

    @property
    def stats(self) -> ExporterStats:
        with self._lock:
            return ExporterStats(
                written=self._written,
                duplicates=self._duplicates,
                pending=len(self._memory) + self._journal_pending,
                dropped=self._dropped,
                last_error=self._last_error,
            )

    @property
    def describe(self) -> str:
        """Where records go, for messages (no password)."""
        if self._url is None:
            return str(Path(self._db if self._db is not None else default_db_path()).expanduser())
        path = sqlite_file(self._url)
        if path is not None:
            return str(path)
        return self._url.render_as_string(hide_password=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            records = [r for r in map(span_to_record, spans) if r is not None]
        except Exception as exc:  # span_to_record is total; this guards against the unexpected
            self._log_once("mapping", f"otelstats could not read a span: {exc!r}")
            return SpanExportResult.FAILURE
        if self._closed:
            self._log_once("closed", "otelstats exporter already shut down; spans ignored")
            return SpanExportResult.FAILURE
        with self._lock:
            self._memory.extend(records)
            return SpanExportResult.SUCCESS if self._drain() else SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Try once more to write everything spooled; True when nothing is pending."""
        with self._lock:
            return self._drain()

    def shutdown(self) -> None:
        """Write what is spooled; what still cannot be written goes to the journal."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake.set()
            if not self._drain():
                self._spill(len(self._memory))
                if len(self._memory):
                    self._drop(len(self._memory), "the database and its journal are unwritable")
                    self._memory.take_oldest(len(self._memory))
            if self._store is not None:
                self._store.dispose()

    # -- writing ----------------------------------------------------------------------------

    def _drain(self) -> bool:
        """Write journal then memory; on failure keep them spooled. True when all written."""
        if self._store is None and not len(self._memory) and not self._journal_pending:
            return True  # nothing to write: do not create a database just to close it
        try:
            store = self._open()
            self._replay_journal(store)
            while len(self._memory):
                batch = list(self._memory.items)[:WRITE_CHUNK]
                self._count_written(store.write(batch), len(batch))
                self._memory.take_oldest(len(batch))
            if self._dropped_unrecorded:
                # What was lost becomes part of the record, for `db info` and /metrics.
                store.add_to_counter("dropped_records", self._dropped_unrecorded)
                self._dropped_unrecorded = 0
        except Exception as exc:
            self._failed(exc)
            return False
        if self._last_error is not None:
            log.warning("otelstats: the database %s is writable again", self.describe)
            self._last_error = None
            self._logged.clear()
        return True

    def _count_written(self, new: int, delivered: int) -> None:
        self._written += new
        self._duplicates += delivered - new

    def _open(self) -> Store:
        """The Store, (re)opened when missing or when its SQLite file was deleted or replaced."""
        from .store import Store, create_engine, resolve_url

        if self._url is None:
            self._url = resolve_url(self._db)
        path = sqlite_file(self._url)
        if self._store is not None and path is not None and self._file_id is not None:
            try:
                st = path.stat()
                current: tuple[int, int] | None = (st.st_dev, st.st_ino)
            except OSError:
                current = None
            if current != self._file_id:
                log.warning("otelstats: %s was deleted or replaced; starting a new one", path)
                self._store.dispose()
                self._store = None
        if self._store is None:
            store = Store(create_engine(self._url))
            try:
                store.migrate()
            except BaseException:
                store.dispose()
                raise
            self._store = store
        if path is not None and self._file_id is None:
            st = path.stat()
            self._file_id = (st.st_dev, st.st_ino)
        return self._store

    def _replay_journal(self, store: Store) -> None:
        with self._journal.claim() as (records, bad):
            for start in range(0, len(records), WRITE_CHUNK):
                batch = records[start : start + WRITE_CHUNK]
                self._count_written(store.write(batch), len(batch))
        if bad:
            self._drop(bad, f"{bad} unreadable line(s) in {self._journal.path}")
        if records:
            log.warning(
                "otelstats: wrote %d spooled record(s) from %s", len(records), self._journal.path
            )
        self._journal_pending = 0

    def _failed(self, exc: BaseException) -> None:
        kind, advice = _problem(exc)
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        self._last_error = f"{kind}: {detail}"
        if self._store is not None and kind != "busy":
            # A broken file may be fixed or replaced behind our back: reconnect next time.
            self._store.dispose()
        self._log_once(
            kind,
            f"otelstats cannot write to the database {self.describe} ({detail}): {advice} "
            f"Calls are kept and written once it works again.",
            level=logging.INFO if kind == "busy" else logging.ERROR,
        )
        overflow = self._memory.overflow()
        if overflow:
            self._spill(len(self._memory))
            overflow = self._memory.overflow()
            if overflow:
                self._memory.take_oldest(overflow)
                self._drop(overflow, f"the spool is full ({self._memory.limit} records)")
        self._start_retry()

    def _spill(self, count: int) -> None:
        """Move the oldest `count` memory records to the journal, as many as it takes."""
        if count <= 0:
            return
        batch = list(self._memory.items)[:count]
        try:
            kept = self._journal.append(batch)
        except OSError as exc:
            self._log_once(
                "journal", f"otelstats cannot write its spool journal {self._journal.path}: {exc}"
            )
            return
        self._memory.take_oldest(kept)
        self._journal_pending += kept

    def _drop(self, count: int, why: str) -> None:
        self._dropped += count
        self._dropped_unrecorded += count
        log.error(
            "otelstats dropped %d record(s): %s (%d dropped so far)", count, why, self._dropped
        )

    def _log_once(self, key: str, message: str, level: int = logging.ERROR) -> None:
        if key in self._logged:
            log.debug("%s", message)
            return
        self._logged.add(key)
        log.log(level, "%s", message)

    # -- retrying ---------------------------------------------------------------------------

    def _start_retry(self) -> None:
        if self._closed or (self._retry_thread is not None and self._retry_thread.is_alive()):
            return
        self._wake.clear()
        self._retry_thread = threading.Thread(
            target=self._retry_loop, name="otelstats-exporter-retry", daemon=True
        )
        self._retry_thread.start()

    def _retry_loop(self) -> None:
        delay = RETRY_FIRST_S
        while not self._wake.wait(delay):
            with self._lock:
                if self._closed or self._drain():
                    return
            delay = min(delay * 2, RETRY_MAX_S)

    def _after_fork_in_child(self) -> None:
        # The parent keeps its spool and its connections; the child starts clean with its own.
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._retry_thread = None
        self._memory = MemorySpool(self._memory.limit)
        self._journal_pending = 0
        self._written = self._duplicates = self._dropped = self._dropped_unrecorded = 0
        if self._store is not None:
            self._store.engine.dispose(close=False)
