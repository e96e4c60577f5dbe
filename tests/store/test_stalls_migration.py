"""Migration 0007 (`projection_stalls`) on a database that already holds a release: upgrade, project, down."""

from __future__ import annotations

import psycopg

from migrations import schema
from projections import project
from store.connection import Database
from tests.conftest import SAMPLES, import_before_0010, settings_for


def test_0007_upgrades_a_database_with_data_and_downgrades(empty_dsn: str) -> None:
    db = Database(settings_for(empty_dsn))
    try:
        schema.upgrade(db, "0006")
        import_before_0010(db, SAMPLES / "mids-20.1224")
        schema.upgrade(db)
        with psycopg.connect(empty_dsn, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM events").fetchone() == (78,)
            assert conn.execute("SELECT count(*) FROM projection_stalls").fetchone() == (0,)
            assert conn.execute(
                "SELECT has_table_privilege('powerlog_app', 'projection_stalls', 'INSERT, DELETE')"
            ).fetchone() == (True,)
        assert project(db).position == 78
        schema.downgrade(db, "0006")
        with psycopg.connect(empty_dsn, autocommit=True) as conn:
            assert conn.execute("SELECT to_regclass('projection_stalls')").fetchone() == (None,)
            assert conn.execute("SELECT count(*) FROM events").fetchone() == (78,)
    finally:
        db.close()
