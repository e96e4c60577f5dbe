"""A pooled session goes back to the pool as it came: what one borrower set on it never reaches the next."""

from __future__ import annotations

import os

import pytest

from store import locks
from store.backend import lower_priority
from store.connection import Database
from tests.conftest import settings_for


def test_the_pool_resets_what_a_borrower_set_on_its_session(dsn: str) -> None:
    # One session in the pool, so the second loan is the very session the first one changed.
    db = Database(settings_for(dsn, POWERLOG_POOL_SIZE="1"))
    try:
        with db.pooled() as conn:
            default_timeout = conn.execute("SHOW lock_timeout").fetchone()
            pid = conn.info.backend_pid
            local = os.path.exists(f"/proc/{pid}")
            nice_before = os.getpriority(os.PRIO_PROCESS, pid) if local else None
            conn.execute("SET lock_timeout = '1234ms'")
            conn.execute("SET application_name = 'borrowed'")
            assert locks.try_acquire(conn, locks.REFRESH)
            lower_priority(conn, 10)
        with db.pooled() as conn:
            assert conn.info.backend_pid == pid
            assert conn.execute("SHOW lock_timeout").fetchone() == default_timeout
            assert conn.execute("SHOW application_name").fetchone() == ("powerlog",)
            assert locks.holder(conn, locks.REFRESH) is None
            if local:
                assert os.getpriority(os.PRIO_PROCESS, pid) == nice_before
    finally:
        db.close()
    if not local:
        pytest.skip("the server runs on another machine: niceness was not checked (the rest was)")
