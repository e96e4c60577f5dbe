"""Lighter appends: no per-row foreign key check from events to imports, no unused streams index.

The foreign key cost a quarter of the append time (each event's insert locked its imports row); only the
store writes events, always inside the transaction that inserted their import, and `verify` checks that
every event's import exists. `streams_kind_idx` was never used by a query.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("events_import_id_fkey", "events", type_="foreignkey")
    op.drop_index("streams_kind_idx", table_name="streams")


def downgrade() -> None:
    op.create_index("streams_kind_idx", "streams", ["kind"])
    op.create_foreign_key("events_import_id_fkey", "events", "imports", ["import_id"], ["id"])
