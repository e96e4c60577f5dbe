"""The log's records (`events.data`, `streams.record`) are compressed with lz4 where the server has it.

Power records are 8-20 KB of JSON, so every one is compressed on its way into the log, and pglz (the
default) was most of an append's time on the server: appending a scale 1 release (4,955 events, 44 MB) took
1.05 s with pglz and 0.68 s with lz4 on PostgreSQL 15, and reading the log back for a rebuild decompresses
faster too. lz4 compresses these records less: the events table of the benchmark's releases is about a fifth
larger (scale 10: 139 MB against 115 MB; scale 120: 1,652 MB against 1,358 MB), the database 5 % larger.

Rows already stored keep the compression they were written with (PostgreSQL reads both); only new rows take
lz4. A server built without lz4 (the embedded PostgreSQL's is one: `default_toast_compression` offers only
pglz there) keeps pglz, and this revision changes nothing on it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (("events", "data"), ("streams", "record"))


def _set(method: str) -> None:
    alters = "".join(
        f"EXECUTE 'ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION {method}';"
        for table, column in COLUMNS
    )
    op.execute(
        "DO $$ BEGIN "
        "IF EXISTS (SELECT FROM pg_settings WHERE name = 'default_toast_compression' "
        "AND 'lz4' = ANY (enumvals)) THEN "
        f"{alters} "
        "END IF; END $$"
    )


def upgrade() -> None:
    _set("lz4")


def downgrade() -> None:
    _set("pglz")
