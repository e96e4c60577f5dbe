"""Migration 0009 (lz4 for the log's records) on a database that already holds a release: up, then down."""

from __future__ import annotations

import psycopg

from importer.run import run_import
from migrations import schema
from projections import project
from store import log
from store.connection import Database
from tests.conftest import SAMPLES, import_before_0010, settings_for


def _compression(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, str]:
    rows = conn.execute(
        "SELECT attrelid::regclass::text, attcompression FROM pg_attribute "
        "WHERE (attrelid, attname) IN (('events'::regclass, 'data'), ('streams'::regclass, 'record'))"
    ).fetchall()
    return {str(table): str(method) for table, method in rows}


def _stored(conn: psycopg.Connection[tuple[object, ...]]) -> set[object]:
    """How the events' records are stored: 'lz4', 'pglz', or None for those kept inline uncompressed."""
    return {r[0] for r in conn.execute("SELECT DISTINCT pg_column_compression(data) FROM events").fetchall()}


def test_0009_upgrades_a_database_with_data_and_downgrades(empty_dsn: str) -> None:
    db = Database(settings_for(empty_dsn))
    try:
        schema.upgrade(db, "0008")
        import_before_0010(db, SAMPLES / "mids-20.1224")
        with psycopg.connect(empty_dsn, autocommit=True) as conn:
            has_lz4 = conn.execute(
                "SELECT 'lz4' = ANY (enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
            ).fetchone() == (True,)
            assert _compression(conn) == {"events": "", "streams": ""}
            before = _stored(conn) - {None}
            assert before == {"pglz"}
            schema.upgrade(db)
            # Where the server has lz4 the log's new records take it; elsewhere nothing changed.
            method = "l" if has_lz4 else ""
            assert _compression(conn) == {"events": method, "streams": method}
            run_import(db, SAMPLES / "mids-21.0331")
            assert _stored(conn) - {None} == ({"pglz", "lz4"} if has_lz4 else {"pglz"})
            # Records of both kinds read back whole: the chain verifies and the projection applies them all.
            head = log.verify_chain(conn)
            assert head.position == conn.execute("SELECT max(global_position) FROM events").fetchone()[0]
            assert project(db).position == head.position
            schema.downgrade(db, "0008")
            assert _compression(conn) == {"events": "p" if has_lz4 else "", "streams": "p" if has_lz4 else ""}
            assert log.verify_chain(conn) == head
    finally:
        db.close()
