"""Ingest: records persisted per second by Store.write (rollups included) against raw sqlite3
executemany of the same rows into the same `calls` table, side by side in one run.

    .venv/bin/python -m benchmarks.bench_ingest            # full: 200k records, 5 rounds
    .venv/bin/python -m benchmarks.bench_ingest --quick    # CI: a few thousand, 2 rounds
    .venv/bin/python -m benchmarks.bench_ingest --pg postgresql+psycopg://postgres@127.0.0.1/test
    .venv/bin/python -m benchmarks.bench_ingest --history 1000000   # + writes into a big history

Target (issue 8): Store.write at least 50 % of raw executemany. Medians over rounds.
`--history N` also measures Store.write into a database already holding N calls, with today's
schema and with revision 0001's (whose unique key led with the random trace id): the write cost
should not depend on how much history there is.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from benchmarks.history import make_records
from otelstats import _deltas
from otelstats.records import CallRecord
from otelstats.store import Store

BATCH = 512  # the BatchSpanProcessor's default max_export_batch_size


def bench_store(store: Store, records: list[CallRecord]) -> float:
    start = time.perf_counter()
    for i in range(0, len(records), BATCH):
        store.write(records[i : i + BATCH])
    return len(records) / (time.perf_counter() - start)


def bench_raw(path: Path, records: list[CallRecord]) -> float:
    """Raw sqlite3 executemany into the same migrated schema (calls only, no rollups)."""
    rows = [_deltas.call_row(r) for r in records]
    columns = list(rows[0])
    sql = f"INSERT INTO calls ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    start = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, [tuple(r[c] for c in columns) for r in rows[i : i + BATCH]])
        conn.execute("COMMIT")
    rate = len(rows) / (time.perf_counter() - start)
    conn.close()
    return rate


def bench_pg(url: str, records: list[CallRecord]) -> float:
    """Store.write into a schema of its own (created and dropped here) on PostgreSQL."""
    schema = "otelstats_bench_ingest"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    scoped = sa.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    store = Store.open(scoped.render_as_string(hide_password=False))
    try:
        return bench_store(store, records)
    finally:
        store.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def bench_history(history: int, n: int, revision: str) -> float:
    """Store.write rate into a database at `revision` already holding `history` calls."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "history.db", migrate=False)
        store.migrate(revision)
        for offset in range(0, history, 50_000):
            store.write(make_records(min(50_000, history - offset), offset))
        rate = bench_store(store, make_records(n, history))
        store.dispose()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small and fast, for CI")
    parser.add_argument("-n", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pg", help="also measure Store.write on this PostgreSQL URL")
    parser.add_argument(
        "--history", type=int, default=0, help="also write into a database holding this many calls"
    )
    args = parser.parse_args()
    n, rounds = (3_000, 2) if args.quick else (args.n, args.rounds)

    ours, raw, pg = [], [], []
    for round_ in range(rounds):
        records = make_records(n, round_ * n)
        with tempfile.TemporaryDirectory() as tmp:
            store = Store.open(Path(tmp) / "ours.db")
            ours.append(bench_store(store, records))
            store.dispose()
            raw_store = Store.open(Path(tmp) / "raw.db")  # same schema via the migrations
            raw_store.dispose()
            raw.append(bench_raw(Path(tmp) / "raw.db", records))
        if args.pg:
            pg.append(bench_pg(args.pg, records))
    ours_m, raw_m = statistics.median(ours), statistics.median(raw)
    print(f"records per round: {n}, rounds: {rounds}, batch: {BATCH}")
    print(f"raw sqlite3 executemany (calls only): {raw_m:12,.0f} rows/s")
    print(f"otelstats Store.write (+rollups):     {ours_m:12,.0f} records/s")
    print(f"ratio (target >= 0.50):               {ours_m / raw_m:12.2f}")
    if pg:
        print(f"otelstats Store.write on PostgreSQL:  {statistics.median(pg):12,.0f} records/s")
    if args.history or args.quick:  # (quick: a small history, so this path never rots)
        history = 2_000 if args.quick else args.history
        for revision, label in (("head", "today's schema"), ("0001", "revision 0001's key")):
            rate = bench_history(history, min(n, 20_000), revision)
            print(f"Store.write into {history:,} calls, {label + ':':21}{rate:12,.0f} records/s")


if __name__ == "__main__":
    main()
