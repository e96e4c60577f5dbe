"""Migration 0011: completing an import reads that import's events, not the log from its start; up and down
on a database with a log in it."""

from __future__ import annotations

from typing import Any

import psycopg

from migrations import schema
from store import imports, locks, log
from store.connection import Database
from store.imports import ImportMeta
from tests.conftest import settings_for
from tests.store.test_log import added

EARLIER = 3000
SIGNATURE = "powerlog_complete_import(bigint, text, jsonb, jsonb, bigint, bigint, text)"


def _import(conn: psycopg.Connection[Any], keys: range) -> int:
    """One import of an Added event per key, on `conn`; the heap rows of `events` its completion fetched."""
    conn.execute("BEGIN")
    locks.acquire(conn, locks.LOG)
    import_id = imports.begin(conn, ImportMeta(source_path="test"))
    appended = log.append(conn, import_id, [added("power", f"P.{k}", {"n": k}) for k in keys])
    before = _fetched(conn)
    imports.complete(conn, import_id, None, {}, [], appended, str(log.head(conn)))
    fetched = _fetched(conn) - before
    conn.execute("COMMIT")
    return fetched


def _fetched(conn: psycopg.Connection[Any]) -> int:
    # This transaction's own counts, before they are flushed to the shared statistics.
    row = conn.execute(
        "SELECT coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0) FROM pg_stat_xact_user_tables"
        " WHERE relname = 'events'"
    ).fetchone()
    assert row is not None
    return int(row[0])


def _small_imports(dsn: str, start: int) -> list[int]:
    """Eight one-event imports on one session (its plans cached, as a long-lived importer's are)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [_import(conn, range(start + i, start + i + 1)) for i in range(8)]


def test_0011_completes_an_import_by_its_own_events(empty_dsn: str) -> None:
    db = Database(settings_for(empty_dsn))
    try:
        schema.upgrade(db, "0010")
        with psycopg.connect(empty_dsn, autocommit=True) as conn:
            _import(conn, range(EARLIER))
            conn.execute("ANALYZE events")
        # Before: the min/max shortcut over events_pkey walks the log from position 1 to the new import.
        assert min(_small_imports(empty_dsn, EARLIER)[5:]) >= EARLIER

        schema.upgrade(db)
        with psycopg.connect(empty_dsn, autocommit=True) as conn:
            head = log.head(conn)
            after = _small_imports(empty_dsn, EARLIER + 8)
            # The head, then the new event for min and for max: a handful of rows, whatever the log holds.
            assert max(after) <= 3, after
            assert conn.execute(
                f"SELECT has_function_privilege('powerlog_app', '{SIGNATURE}', 'EXECUTE'),"
                f" has_function_privilege('public', '{SIGNATURE}', 'EXECUTE')"
            ).fetchone() == (True, False)
            assert conn.execute("SELECT count(*) FROM imports WHERE completed_at IS NOT NULL").fetchone() == (
                17,
            )
            assert log.verify_chain(conn) == log.head(conn) != head

            schema.downgrade(db, "0010")
            source = conn.execute(
                "SELECT prosrc FROM pg_proc WHERE proname = 'powerlog_complete_import'"
            ).fetchone()
            assert source is not None and "min(global_position)," in source[0] and "+ 0" not in source[0]
            assert conn.execute(
                f"SELECT has_function_privilege('powerlog_app', '{SIGNATURE}', 'EXECUTE')"
            ).fetchone() == (True,)
    finally:
        db.close()
