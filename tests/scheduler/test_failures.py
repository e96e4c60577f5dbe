"""A failed refresh is logged and recorded, the scheduler keeps running, and the next tick succeeds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

import scheduler
from scheduler.view import _one_line
from store.connection import Database
from store.errors import ServerUnavailable
from tests.conftest import settings_for
from tests.scheduler.data import (
    advance,
    background_scheduler,
    blocked_refresher,
    outcomes,
    populate,
    tables_locked,
    wait_until,
)


def test_refresh_killed_mid_way_is_recorded_and_the_next_tick_succeeds(
    db: Database, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    populate(conn, 1000)
    advance(conn, 4)
    sched, results = background_scheduler(db, interval_s=0.1)
    try:
        with capture_logs() as logs, tables_locked(dsn):
            sched.start()
            pid = wait_until(lambda: blocked_refresher(conn), "the scheduler's REFRESH to wait on powers")
            # What a server restart does to the refreshing session.
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            failed = results.get(timeout=30)
        ok = results.get(timeout=30)
        assert sched.running
    finally:
        sched.shutdown(wait=True)
    assert failed is not None and failed.outcome == "failed"
    assert failed.error is not None and "terminating connection" in failed.error
    assert ok is not None and (ok.outcome, ok.source_position, ok.rows) == ("ok", 4, 1000)
    first, second = reversed(scheduler.history(conn))
    assert (first.outcome, first.error, first.finished_at is not None) == ("failed", failed.error, True)
    assert second.outcome == "ok"
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["refresh_failed"]
    assert not scheduler.is_stale(conn)


def test_lock_timeout_fails_the_tick_and_the_next_one_succeeds(
    dsn: str, conn: psycopg.Connection[Any], make_db: Callable[..., Database]
) -> None:
    populate(conn, 100)
    advance(conn, 2)
    db = make_db(POWERLOG_LOCK_TIMEOUT="0.2")
    with tables_locked(dsn):
        failed = scheduler.refresh_job(db)
    assert failed is not None and failed.outcome == "failed"
    assert failed.error is not None and failed.error.startswith("LockNotAvailable: canceling statement")
    assert outcomes(conn) == ["failed"]
    assert scheduler.status(conn)["failures_since_last_ok"] == 1
    assert scheduler.is_stale(conn)

    ok = scheduler.refresh_job(db)
    assert ok is not None and ok.outcome == "ok"
    assert outcomes(conn) == ["failed", "ok"]
    assert scheduler.status(conn)["failures_since_last_ok"] == 0


def test_unreachable_server_is_logged_and_not_raised_by_the_job() -> None:
    db = Database(settings_for("postgresql://postgres:pw-xyz@127.0.0.1:1/nowhere"))
    with pytest.raises(ServerUnavailable):
        scheduler.refresh(db)
    with capture_logs() as logs:
        assert scheduler.refresh_job(db) is None
    [entry] = logs
    assert (entry["event"], entry["log_level"], entry["attempt"]) == ("scheduler_reconnecting", "warning", 1)
    assert "cannot connect to PostgreSQL" in entry["reason"] and "pw-xyz" not in entry["reason"]


def test_error_text_is_one_line_without_the_password() -> None:
    exc = RuntimeError("could not do it\n  with password s3cret in\tit")
    text = _one_line(exc, "postgresql://alice:s3cret@db.example/powerlog")
    assert text == "RuntimeError: could not do it with password *** in it"
