"""Across processes only the holder of the advisory lock refreshes; never two refreshes at once."""

from __future__ import annotations

import functools
import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from apscheduler.events import EVENT_JOB_EXECUTED  # type: ignore[import-untyped]
from structlog.testing import capture_logs

import scheduler
from store import locks
from store.connection import Database
from tests.advisory import advisory_pids
from tests.scheduler.data import advance, blocked_refresher, outcomes, populate, tables_locked, wait_until


def _advisory_holders(conn: psycopg.Connection[Any]) -> list[int]:
    return advisory_pids(conn, locks.REFRESH, granted=True)


def _refreshed_at(conn: psycopg.Connection[Any], position: int) -> bool:
    last = scheduler.last_refresh(conn)
    return last is not None and last.source_position == position


def test_the_job_skips_while_another_session_holds_the_lock(
    db: Database, conn: psycopg.Connection[Any]
) -> None:
    populate(conn, 100)
    advance(conn, 1)
    with psycopg.connect(db.dsn, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (locks.REFRESH.key,))
        other_pid = other.info.backend_pid
        with capture_logs() as logs:
            result = scheduler.refresh_job(db)
        assert result == scheduler.RefreshResult("skipped", reason="another process is refreshing")
        [skip] = [e for e in logs if e["event"] == "refresh_skipped"]
        assert skip["reason"] == "another process is refreshing"
        assert skip["holder_pid"] == other_pid
        assert outcomes(conn) == []  # a skip is logged, not recorded
        other.execute("SELECT pg_advisory_unlock(%s)", (locks.REFRESH.key,))
    result = scheduler.refresh_job(db)
    assert result is not None and result.outcome == "ok"
    assert outcomes(conn) == ["ok"]
    assert _advisory_holders(conn) == []  # released after the refresh


def test_two_schedulers_one_refreshes_the_other_skips(
    dsn: str, conn: psycopg.Connection[Any], make_db: Callable[..., Database]
) -> None:
    populate(conn, 1000)
    advance(conn, 1)
    db_a, db_b = make_db(), make_db()
    results: dict[str, queue.Queue[scheduler.RefreshResult | None]] = {"a": queue.Queue(), "b": queue.Queue()}
    scheds = {}
    for name, db in (("a", db_a), ("b", db_b)):
        # One long interval: only the immediate first tick runs during the test.
        sched = scheduler.build_scheduler(db, interval_s=3600, misfire_grace_s=1, blocking=False)
        sched.add_listener(lambda event, q=results[name]: q.put(event.retval), EVENT_JOB_EXECUTED)
        scheds[name] = sched
    try:
        with tables_locked(dsn):
            scheds["a"].start()
            refresher = wait_until(lambda: blocked_refresher(conn), "scheduler A's REFRESH to wait on powers")
            assert _advisory_holders(conn) == [refresher]
            scheds["b"].start()
            skipped = results["b"].get(timeout=30)
            assert skipped is not None and skipped.outcome == "skipped"
            assert results["a"].empty()  # A is still refreshing
            assert _advisory_holders(conn) == [refresher]
            assert outcomes(conn) == ["running"]
            assert scheduler.status(conn)["refreshing_now"] is True
        done = results["a"].get(timeout=30)
    finally:
        for sched in scheds.values():
            sched.shutdown(wait=True)
    assert done is not None and done.outcome == "ok"
    assert outcomes(conn) == ["ok"]


def _refreshes_waiting_for_a_lock(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND state = 'active' AND query LIKE 'REFRESH MATERIALIZED VIEW%' AND wait_event_type = 'Lock'"
    ).fetchone()
    return int(row[0]) if row else 0


def test_never_two_refreshes_at_once(
    dsn: str, conn: psycopg.Connection[Any], make_db: Callable[..., Database]
) -> None:
    """Two schedulers ticking every 20 ms: a watcher counts the REFRESH statements running at once.

    The first refresh is held on a locked `powers` until the watcher has seen it and the other scheduler
    has tried too (it must skip; were the advisory lock broken, its REFRESH would be running beside it).
    """
    populate(conn, 2000)
    dbs = [make_db() for _ in range(2)]
    scheds = [scheduler.build_scheduler(db, interval_s=0.02, misfire_grace_s=1, blocking=False) for db in dbs]
    skipped: list[scheduler.RefreshResult] = []

    def on_executed(event: Any) -> None:
        if event.retval is not None and event.retval.outcome == "skipped":
            skipped.append(event.retval)

    for sched in scheds:
        sched.add_listener(on_executed, EVENT_JOB_EXECUTED)
    stop = threading.Event()
    most_at_once = [0]
    samples = [0]  # the watcher's samples taken so far
    sampled = threading.Condition()
    errors: list[BaseException] = []

    def watch() -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as c:
                while not stop.is_set():
                    row = c.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND state = 'active' AND query LIKE 'REFRESH MATERIALIZED VIEW%'"
                    ).fetchone()
                    with sampled:
                        most_at_once[0] = max(most_at_once[0], int(row[0]) if row else 0)
                        samples[0] += 1
                        sampled.notify_all()
        except BaseException as exc:  # asserted on in the test's thread
            errors.append(exc)
            with sampled:
                sampled.notify_all()

    watcher = threading.Thread(target=watch)
    watcher.start()
    for sched in scheds:
        sched.start()
    try:
        with tables_locked(dsn):
            advance(conn, 1)  # the view was fresh until now: this refresh is the first one
            wait_until(lambda: _refreshes_waiting_for_a_lock(conn), "a refresh to wait on powers")
            tried = len(skipped)
            wait_until(
                lambda: len(skipped) > tried or _refreshes_waiting_for_a_lock(conn) > 1,
                "the other scheduler to try while the first refresh runs",
            )
            # The sample in flight may have begun before the refreshes got here; the next one cannot have.
            with sampled:
                wanted = samples[0] + 2
                assert sampled.wait_for(lambda: samples[0] >= wanted or errors, timeout=30)
        wait_until(functools.partial(_refreshed_at, conn, 1), "a refresh at 1")
        for position in range(2, 9):
            advance(conn, position)
            wait_until(functools.partial(_refreshed_at, conn, position), f"a refresh at {position}")
    finally:
        for sched in scheds:
            sched.shutdown(wait=True)
        stop.set()
        watcher.join()
    assert errors == []
    assert most_at_once[0] <= 1
    assert most_at_once[0] == 1, "the watcher never saw a refresh running"
    assert skipped, "the second scheduler never tried while the first refreshed"
    rows = sorted(scheduler.history(conn, limit=100), key=lambda r: r.started_at)
    assert len(rows) >= 8 and {r.outcome for r in rows} == {"ok"}
    for earlier, later in itertools.pairwise(rows):
        assert earlier.finished_at is not None and later.started_at >= earlier.finished_at
