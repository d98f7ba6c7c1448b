from __future__ import annotations

import sqlalchemy as sa

from otelstats.store import Store
from tests.factories import record


def test_write_is_idempotent_on_span_id(store: Store) -> None:
    first, second = record(), record()
    assert store.write([first, first, second]) == 2
    assert store.write([first]) == 0
    with store.engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT COUNT(*) FROM calls")) == 2
        assert conn.scalar(sa.text("SELECT SUM(requests) FROM rollups")) == 2
