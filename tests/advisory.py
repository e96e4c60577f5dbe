"""Who holds or waits for one of powerlog's advisory locks in the test's database, read from pg_locks."""

from __future__ import annotations

from typing import Any

import psycopg

from store.locks import AdvisoryLock


def advisory_pids(conn: psycopg.Connection[Any], lock: AdvisoryLock, *, granted: bool) -> list[int]:
    """The backends holding `lock` (granted) or waiting for it (not granted), in this database only."""
    # A bigint key shows in pg_locks split into classid (high half) and objid (low half), objsubid 1.
    # pg_locks is the whole server's: a test on another worker holds the same key in its own database.
    rows = conn.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted = %s AND objsubid = 1"
        " AND classid::bigint = %s AND objid::bigint = %s"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (granted, lock.key >> 32, lock.key & 0xFFFFFFFF),
    ).fetchall()
    return [int(r[0]) for r in rows]
