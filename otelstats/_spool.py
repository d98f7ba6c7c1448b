"""The exporter's spool: records waiting for a database that cannot be written right now.

Memory first (bounded), then an append-only JSON-lines journal next to the database, so records
survive the process when the outage outlasts it. The journal is shared by every process writing
the same database; `flock` keeps one replayer at a time, and `Store.write` being idempotent makes
a replay that is interrupted and repeated harmless.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from .records import CallRecord

try:  # POSIX only; on Windows the journal works without cross-process locking.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

_FIELDS = {f.name for f in dataclasses.fields(CallRecord)}


def record_to_line(record: CallRecord) -> str:
    return json.dumps(dataclasses.asdict(record), separators=(",", ":")) + "\n"


def line_to_record(line: str) -> CallRecord | None:
    """A journal line back to a record; None for a torn or foreign line."""
    try:
        data = json.loads(line)
        if not isinstance(data, dict) or not _FIELDS.issuperset(data):
            return None
        data["finish_reasons"] = tuple(data.get("finish_reasons") or ())
        return CallRecord(**data)
    except (ValueError, TypeError):
        return None


@contextlib.contextmanager
def _locked(handle: IO[Any]) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class Journal:
    """An append-only file of records; bounded in bytes."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    @contextlib.contextmanager
    def _open_locked(self) -> Iterator[IO[str]]:
        """Open for append and lock; retry if a replayer unlinked the file meanwhile."""
        while True:
            handle = open(self.path, "a+", encoding="utf-8", errors="replace")  # noqa: SIM115
            try:
                with _locked(handle):
                    try:
                        same = os.path.samestat(os.fstat(handle.fileno()), os.stat(self.path))
                    except FileNotFoundError:
                        same = False
                    if same:
                        yield handle
                        return
            finally:
                handle.close()

    def append(self, records: Sequence[CallRecord]) -> int:
        """Append what fits under `max_bytes`; returns how many were kept. Raises OSError."""
        lines = [record_to_line(r) for r in records]
        with self._open_locked() as handle:
            room = self.max_bytes - handle.seek(0, os.SEEK_END)
            kept: list[str] = []
            for line in lines:
                room -= len(line.encode())
                if room < 0:
                    break
                kept.append(line)
            handle.write("".join(kept))
            handle.flush()
            os.fsync(handle.fileno())
        return len(kept)

    @contextlib.contextmanager
    def claim(self) -> Iterator[tuple[list[CallRecord], int]]:
        """Lock the journal and yield (records, unreadable lines); remove it if the body succeeds.

        If the body raises (the database failed again), the journal is left as it was.
        """
        if not self.path.exists():
            yield [], 0
            return
        with self._open_locked() as handle:
            handle.seek(0)
            records: list[CallRecord] = []
            bad = 0
            for line in handle:
                if not line.strip():
                    continue
                record = line_to_record(line)
                if record is None:
                    bad += 1
                else:
                    records.append(record)
            yield records, bad
            # Unlinked while still locked: appenders re-check the inode after locking.
            self.path.unlink()


class MemorySpool:
    """The bounded in-memory part of the spool (oldest first)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: deque[CallRecord] = deque()

    def __len__(self) -> int:
        return len(self.items)

    def extend(self, records: Sequence[CallRecord]) -> None:
        self.items.extend(records)

    def overflow(self) -> int:
        return max(len(self.items) - self.limit, 0)

    def take_oldest(self, count: int) -> list[CallRecord]:
        return [self.items.popleft() for _ in range(min(count, len(self.items)))]
