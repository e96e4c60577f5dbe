"""The schema revision this code needs, and the one a database is at, without loading alembic.

Every command checks the schema before it works. Through alembic that check cost about 0.45 s of each
command's start-up (importing alembic and SQLAlchemy's engine, reading every revision file): a third of a
no-change re-import. `HEAD` is written down here instead, and a test keeps it equal to alembic's head.
"""

from __future__ import annotations

from typing import Any

import psycopg

HEAD = "0011"
"""The newest revision in migrations/versions; a new revision moves it (tests/store/test_migrations.py)."""


def stored_revision(conn: psycopg.Connection[Any]) -> str | None:
    """The revision recorded in the database (alembic's `alembic_version`), or None before any upgrade."""
    if conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone() != (True,):
        return None
    row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if row is None else str(row[0])
