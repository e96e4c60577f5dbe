"""Migration 0008 (`powerlog_unmark` STRICT) on a database that already holds a release: up, then down."""

from __future__ import annotations

import psycopg

from migrations import schema
from projections import project
from store.connection import Database
from tests.conftest import SAMPLES, import_before_0010, settings_for


def _strict(conn: psycopg.Connection[tuple[object, ...]]) -> object:
    row = conn.execute("SELECT proisstrict FROM pg_proc WHERE proname = 'powerlog_unmark'").fetchone()
    return row[0] if row else None


def test_0008_upgrades_a_database_with_data_and_downgrades(empty_dsn: str) -> None:
    db = Database(settings_for(empty_dsn))
    try:
        schema.upgrade(db, "0007")
        import_before_0010(db, SAMPLES / "mids-20.1224")
        with psycopg.connect(empty_dsn, autocommit=True) as conn:
            assert _strict(conn) is False
            schema.upgrade(db)
            assert _strict(conn) is True
            conn.execute("SET statement_timeout = '10s'")  # before 0008 this call never returned
            assert conn.execute("SELECT powerlog_unmark(NULL)").fetchone() == (None,)
            assert conn.execute(
                "SELECT powerlog_unmark(jsonb_build_object('a', 'x' || chr(57344) || '0y'))"
            ).fetchone() == ({"a": "xy"},)
            assert project(db).position == 78
            schema.downgrade(db, "0007")
            assert _strict(conn) is False
            assert conn.execute("SELECT count(*) FROM events").fetchone() == (78,)
    finally:
        db.close()
