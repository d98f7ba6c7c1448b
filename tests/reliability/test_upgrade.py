"""Upgrading from the first released schema (alembic revision "0001") keeps every row.

The old database is built with the old migration (`Store.open(..., migrate=False)` then
`migrate("0001")`) and filled with rows that revision-0001 code wrote from real instrumented
calls (frozen in data/rows_0001.json by data/make_rows_0001.py), so this stays a real upgrade
test as revisions are added: it always starts from "0001" and always ends at head.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from otelstats import queries
from otelstats.records import CallRecord
from otelstats.store import Store

ROWS = json.loads((Path(__file__).parent / "data" / "rows_0001.json").read_text())


def _reflect(conn: sa.Connection, name: str) -> sa.Table:
    return sa.Table(name, sa.MetaData(), autoload_with=conn)


def _load_0001(store: Store) -> None:
    with store.engine.begin() as conn:
        for name, dump in ROWS.items():
            table = _reflect(conn, name)
            booleans = {c.name for c in table.columns if isinstance(c.type, sa.Boolean)}
            rows = [
                {
                    c: bool(v) if c in booleans else v
                    for c, v in zip(dump["columns"], row, strict=True)
                }
                for row in dump["rows"]
            ]
            conn.execute(table.insert(), rows)
            if conn.dialect.name == "postgresql" and "id" in dump["columns"]:
                # Explicit ids, as a pg_dump restore writes them: move the sequence on, as it does.
                sequence = f"pg_get_serial_sequence('{name}', 'id')"
                conn.execute(sa.text(f"SELECT setval({sequence}, max(id)) FROM {name}"))


def _old_rows(store: Store, name: str) -> list[tuple[Any, ...]]:
    """The table's rows, restricted to the columns revision 0001 had, in a stable order."""
    columns = ROWS[name]["columns"]
    with store.engine.connect() as conn:
        table = _reflect(conn, name)
        query = sa.select(*(table.c[c] for c in columns))
        rows = [tuple(row) for row in conn.execute(query)]
    return sorted(rows, key=repr)


def _frozen_rows(name: str) -> list[tuple[Any, ...]]:
    dump = ROWS[name]
    streaming = dump["columns"].index("streaming") if "streaming" in dump["columns"] else None
    rows = []
    for row in dump["rows"]:
        values = list(row)
        if streaming is not None:
            values[streaming] = bool(values[streaming])
        rows.append(tuple(values))
    return sorted(rows, key=repr)


@pytest.fixture(params=["sqlite", "postgresql"])
def old_store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A database at revision 0001 holding the frozen rows, on each backend."""
    url = tmp_path / "old.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    store = Store.open(url, migrate=False)
    store.migrate("0001")
    _load_0001(store)
    yield store
    store.dispose()


def test_upgrade_from_0001_keeps_every_row_and_aggregate(old_store: Store) -> None:
    with old_store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0001"
    before = {name: _old_rows(old_store, name) for name in ROWS}
    assert before["calls"] == _frozen_rows("calls")  # (the load itself lost nothing)

    old_store.migrate("head")

    for name in ROWS:
        assert _old_rows(old_store, name) == before[name], name

    calls = [dict(zip(ROWS["calls"]["columns"], r, strict=True)) for r in ROWS["calls"]["rows"]]
    stats = queries.stats(old_store.engine, "all", "UTC")
    overview = stats["overview"]
    assert overview["requests"] == len(calls) == 60
    assert overview["prompt_tokens"] == sum(c["input_tokens"] or 0 for c in calls)
    assert overview["completion_tokens"] == sum(c["output_tokens"] or 0 for c in calls)
    assert overview["errors"] == sum(c["outcome"] != "ok" for c in calls) > 0
    assert overview["conversations"] == len({c["conversation_id"] for c in calls}) == 7
    per_model = Counter(c["model"] for c in calls)
    assert {m["model"]: m["requests"] for m in stats["models"]} == per_model
    assert "'); DROP TABLE calls;--" in per_model  # hostile names came through verbatim
    assert sum(d["requests"] for d in stats["daily"]) == 60

    # The upgraded database keeps working: a new call is stored next to the old ones.
    from tests.factories import record

    assert old_store.write([record()]) == 1
    assert queries.stats(old_store.engine, "all", "UTC")["overview"]["requests"] == 61
    # ... and an old call delivered again is still recognised (the key changed in 0002).
    assert old_store.write([_as_record(calls[0])]) == 0
    assert queries.stats(old_store.engine, "all", "UTC")["overview"]["requests"] == 61


def test_downgrade_to_0001_keeps_every_row(old_store: Store) -> None:
    old_store.migrate("head")
    before = _old_rows(old_store, "calls")
    old_store.downgrade("0001")
    assert _old_rows(old_store, "calls") == before
    inspector = sa.inspect(old_store.engine)
    unique = {u["name"]: u["column_names"] for u in inspector.get_unique_constraints("calls")}
    assert unique == {"uq_calls_span": ["trace_id", "span_id"]}
    old_store.migrate("head")
    assert _old_rows(old_store, "calls") == before


def _as_record(row: dict[str, Any]) -> CallRecord:
    """A stored 0001 row as the CallRecord that wrote it (for redelivery)."""
    fields = {f.name for f in dataclasses.fields(CallRecord)}
    values = {k: v for k, v in row.items() if k in fields}
    values["finish_reasons"] = (
        tuple(row["finish_reasons"].split(",")) if row["finish_reasons"] else ()
    )
    values["streaming"] = bool(row["streaming"])
    return CallRecord(**values)


def test_frozen_rows_match_what_this_code_writes_at_0001(tmp_path: Path) -> None:
    """Guards the fixture: revision 0001 still builds exactly the tables and columns dumped.

    If this fails, revision 0001 was edited in place. Once released it must never change (add a
    revision instead); before a release, regenerate data/rows_0001.json with make_rows_0001.py.
    """
    store = Store.open(tmp_path / "new.db", migrate=False)
    store.migrate("0001")
    try:
        tables = set(sa.inspect(store.engine).get_table_names()) - {"alembic_version"}
        assert tables == set(ROWS)
        with store.engine.connect() as conn:
            for name, dump in ROWS.items():
                assert [c.name for c in _reflect(conn, name).columns] == dump["columns"], name
    finally:
        store.dispose()
