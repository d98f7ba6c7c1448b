"""calls: one time-ordered unique index (start_ns, trace_id, span_id) replaces the unique
(trace_id, span_id) constraint and the start_ns index.

Span and trace ids are random, so every insert into an index that leads with them lands on a
random page: at a million rows a batch of 100 new calls dirtied ~100 index pages and cost ~20 µs
a row, growing with the history. Leading with start_ns, new rows go to the right edge of one
index (~3 µs a row, whatever the history's size), and that index also serves every start_ns
range (retention, exports), so the separate start_ns index goes. The key still identifies a span
(a span's start time never changes on redelivery).

SQLite cannot drop a table's UNIQUE constraint: the table is rebuilt (alembic batch mode), once,
which copies every row (about 4 s per million calls on a 2-core machine). The old table's pages
stay in the file as free pages that new rows reuse (retention gives them back to the filesystem).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

KEY = ["start_ns", "trace_id", "span_id"]


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_constraint("uq_calls_span", type_="unique")
        batch.drop_index("ix_calls_start_ns")
    op.create_index("uq_calls_start_span", "calls", KEY, unique=True)


def downgrade() -> None:
    op.drop_index("uq_calls_start_span", table_name="calls")
    with op.batch_alter_table("calls") as batch:
        batch.create_unique_constraint("uq_calls_span", ["trace_id", "span_id"])
    op.create_index("ix_calls_start_ns", "calls", ["start_ns"])
