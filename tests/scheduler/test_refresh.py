"""A refresh happens when the view is stale, nothing happens when it is fresh, and every refresh is recorded."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

import scheduler
from cli.scheduler import status_rows
from scheduler.view import ABANDONED, _vacuum
from store import locks
from store.connection import Database
from tests.scheduler.data import advance, background_scheduler, change_one_percent, outcomes, populate


def test_fresh_database_is_not_stale_and_the_job_does_nothing(
    db: Database, conn: psycopg.Connection[Any]
) -> None:
    assert scheduler.source_position(conn) == 0
    assert not scheduler.is_stale(conn)
    assert scheduler.refresh_job(db) == scheduler.RefreshResult("fresh", reason="the view is up to date")
    assert outcomes(conn) == []
    assert scheduler.last_refresh(conn) is None


def test_refreshes_when_stale_then_does_nothing_until_the_source_moves(
    db: Database, conn: psycopg.Connection[Any]
) -> None:
    populate(conn, 300)
    advance(conn, 5)
    assert scheduler.source_position(conn) == 5
    assert scheduler.is_stale(conn)

    result = scheduler.refresh_job(db)
    assert result is not None
    assert (result.outcome, result.mode, result.rows, result.source_position) == (
        "ok",
        "concurrently",
        300,
        5,
    )
    [row] = scheduler.history(conn)
    assert (row.outcome, row.mode, row.rows, row.source_position, row.error) == (
        "ok",
        "concurrently",
        300,
        5,
        None,
    )
    assert row.finished_at is not None and row.finished_at >= row.started_at
    assert row.duration_ms is not None and row.duration_ms > 0
    assert scheduler.last_refresh(conn) == row
    assert conn.execute("SELECT count(*) FROM power_build_summary").fetchone() == (300,)
    assert not scheduler.is_stale(conn)

    assert scheduler.refresh_job(db) == scheduler.RefreshResult("fresh", reason="the view is up to date")
    assert outcomes(conn) == ["ok"]

    change_one_percent(conn)
    advance(conn, 6)
    result = scheduler.refresh_job(db)
    assert result is not None and (result.outcome, result.source_position) == ("ok", 6)
    assert outcomes(conn) == ["ok", "ok"]
    assert conn.execute("SELECT sum(accuracy) FROM power_build_summary").fetchone() == (303.0,)


def test_a_manual_refresh_runs_even_when_fresh(db: Database, conn: psycopg.Connection[Any]) -> None:
    assert scheduler.refresh(db).outcome == "ok"
    assert scheduler.refresh(db, concurrently=False).mode == "plain"
    assert [(r.outcome, r.mode) for r in reversed(scheduler.history(conn))] == [
        ("ok", "concurrently"),
        ("ok", "plain"),
    ]


def test_background_scheduler_refreshes_once_and_then_ticks_without_refreshing(
    db: Database, conn: psycopg.Connection[Any]
) -> None:
    populate(conn, 200)
    advance(conn, 3)
    sched, results = background_scheduler(db, interval_s=0.05)
    sched.start()
    try:
        seen = [results.get(timeout=30) for _ in range(4)]
    finally:
        sched.shutdown(wait=True)
    assert seen[0] is not None and seen[0].outcome == "ok"
    assert [r.outcome for r in seen[1:] if r is not None] == ["fresh"] * 3
    assert outcomes(conn) == ["ok"]


def test_a_view_without_data_is_stale_and_refreshed_plainly(
    db: Database, conn: psycopg.Connection[Any]
) -> None:
    populate(conn, 100)
    conn.execute("REFRESH MATERIALIZED VIEW power_build_summary WITH NO DATA")
    assert not scheduler.is_populated(conn)
    assert scheduler.is_stale(conn)  # even at source position 0
    assert scheduler.status(conn)["stale"] is True

    result = scheduler.refresh(db, if_stale=True)
    assert (result.outcome, result.mode, result.rows) == ("ok", "plain", 100)
    assert scheduler.is_populated(conn)
    assert not scheduler.is_stale(conn)


def test_a_row_left_running_is_marked_abandoned_by_the_next_refresh(
    db: Database, conn: psycopg.Connection[Any]
) -> None:
    conn.execute(
        "INSERT INTO view_refreshes (view_name, started_at, outcome, mode)"
        " VALUES ('power_build_summary', now(), 'running', 'concurrently')"
    )
    assert scheduler.refresh(db).outcome == "ok"
    old, new = reversed(scheduler.history(conn))
    assert (old.outcome, old.error) == ("abandoned", ABANDONED)
    assert new.outcome == "ok"


def test_a_row_whose_refresh_died_reads_abandoned_in_status_while_a_live_ones_reads_running(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    # A refresh as scheduler.refresh runs one: the refresh lock held by its session, its row 'running'.
    refresher = psycopg.connect(dsn, autocommit=True)
    try:
        assert locks.try_acquire(refresher, locks.REFRESH)
        refresher.execute(
            "INSERT INTO view_refreshes (view_name, started_at, outcome, mode)"
            " VALUES ('power_build_summary', now(), 'running', 'concurrently')"
        )
        st = scheduler.status(conn)
        assert st["refreshing_now"] is True and st["failures"] == 0
        assert [r.outcome for r in scheduler.history(conn)] == ["running"]
        pid = refresher.info.backend_pid
        # Killed as SIGKILL kills a process: its session ends without a word.
        conn.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
    finally:
        refresher.close()
    st = scheduler.status(conn)
    assert (st["refreshing_now"], st["failures"], st["abandoned"], st["last_error"]) == (
        False,
        1,
        1,
        ABANDONED,
    )
    assert (
        "failed refreshes",
        "1 in all (1 abandoned: their process or connection died), 1 since the last success",
    ) in status_rows(st)
    [row] = scheduler.history(conn)
    assert (row.outcome, row.error) == ("abandoned", ABANDONED)
    # Stored, not only shown: no row claims to be running any more.
    assert conn.execute("SELECT count(*) FROM view_refreshes WHERE outcome = 'running'").fetchone() == (0,)


def test_status_figures(db: Database, conn: psycopg.Connection[Any]) -> None:
    st = scheduler.status(conn)
    assert st["last_refresh_at"] is None and st["refreshed_position"] is None
    assert (st["stale"], st["failures"], st["refreshing_now"]) == (False, 0, False)

    populate(conn, 50)
    advance(conn, 7)
    scheduler.refresh(db)
    conn.execute(
        "INSERT INTO view_refreshes (view_name, started_at, finished_at, outcome, mode, error)"
        " VALUES ('power_build_summary', now(), now(), 'failed', 'concurrently', 'boom')"
    )
    advance(conn, 8)
    st = scheduler.status(conn)
    assert st["source_position"] == 8
    assert st["refreshed_position"] == 7
    assert st["stale"] is True
    assert st["last_refresh_rows"] == 50
    assert st["last_refresh_mode"] == "concurrently"
    assert st["last_refresh_at"] is not None and st["last_refresh_duration_ms"] > 0
    assert (st["failures"], st["failures_since_last_ok"], st["last_error"]) == (1, 1, "boom")

    scheduler.refresh(db)
    st = scheduler.status(conn)
    assert (st["stale"], st["failures"], st["failures_since_last_ok"], st["last_error"]) == (
        False,
        1,
        0,
        None,
    )


def test_a_refreshing_backend_on_this_machine_runs_at_lower_cpu_priority(db: Any) -> None:
    """Readers keep their CPU while a refresh runs (bench/results/refresh.md): the refresh's backend is reniced."""
    import os

    from store.backend import lower_priority, restore_priority

    with db.connect(autocommit=True) as conn:
        pid = conn.info.backend_pid
        if not os.path.exists(f"/proc/{pid}"):
            pytest.skip("the server runs on another machine: its processes cannot be reniced from here")
        if os.geteuid() != 0 and os.stat(f"/proc/{pid}").st_uid != os.geteuid():
            pytest.skip("the server's processes belong to another user and we are not root")
        before = os.getpriority(os.PRIO_PROCESS, pid)
        lower_priority(conn, 10)
        assert os.getpriority(os.PRIO_PROCESS, pid) == max(before, 10)
        lower_priority(conn, 0)  # 0 leaves it alone
        assert os.getpriority(os.PRIO_PROCESS, pid) == max(before, 10)
        restore_priority(conn)
        assert os.getpriority(os.PRIO_PROCESS, pid) == before


def _view_stats(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """(vacuum_count, pg_total_relation_size) of the view."""
    row = conn.execute(
        "SELECT vacuum_count, pg_total_relation_size(relid) FROM pg_stat_user_tables"
        " WHERE relname = 'power_build_summary'"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_each_concurrent_refresh_vacuums_the_view_so_that_it_keeps_its_size(
    db: Database, conn: psycopg.Connection[Any]
) -> None:
    populate(conn, 3000, pad=500)
    assert scheduler.refresh(db, concurrently=False).mode == "plain"  # a plain refresh leaves no dead rows
    vacuums, fresh = _view_stats(conn)
    for i in range(10):
        # A tenth of the rows each round: ten rounds without a VACUUM leave as many dead rows as live ones.
        conn.execute("UPDATE powers SET accuracy = accuracy + 1 WHERE id %% 10 = %s", (i,))
        assert scheduler.refresh(db).mode == "concurrently"
    after, size = _view_stats(conn)
    assert after == vacuums + 10
    assert size < 1.3 * fresh, (fresh, size)
    assert conn.execute("SELECT sum(accuracy) FROM power_build_summary").fetchone() == (6000.0,)


def test_a_vacuum_that_fails_is_logged_and_does_not_raise(db: Database, dsn: str) -> None:
    # VACUUM refuses to run inside a transaction block: a failure as any other, after the refresh's record.
    with capture_logs() as logs, psycopg.connect(dsn) as in_transaction:
        in_transaction.execute("SELECT 1")
        _vacuum(db, in_transaction, 7)
    [failed] = [e for e in logs if e["event"] == "view_vacuum_failed"]
    assert (failed["log_level"], failed["view"], failed["refresh_id"]) == (
        "warning",
        "power_build_summary",
        7,
    )
    assert "VACUUM cannot run inside a transaction block" in failed["error"]
