"""The rebuild's swap: a reader never waits more than about a second behind it, it retries while a
transaction holds the read tables and names that transaction when it gives up, and a refresh running into
it (or it into a refresh) neither fails on a missing relation nor leaves the view unlike its query.

Forced by held transactions and locks, observed through pg_locks; never by sleeps."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

import projections
import scheduler
from importer.run import run_import
from projections.ddl import VIEW_QUERY
from projections.fingerprint import table_hashes
from projections.runner import SwapBusy
from store import faults
from store.connection import Database
from tests.conftest import SAMPLES
from tests.scheduler.data import wait_until

Conn = psycopg.Connection[Any]
HOLDER = "long reader"


@pytest.fixture
def projected(make_db: Callable[..., Database]) -> Callable[..., Database]:
    """A database with both sample releases projected and the view refreshed; returns make_db."""
    db = make_db()
    run_import(db, SAMPLES / "mids-20.1224")
    run_import(db, SAMPLES / "mids-21.0331")
    projections.project(db)
    assert scheduler.refresh(db).outcome == "ok"
    return make_db


@contextmanager
def reader_transaction(dsn: str) -> Iterator[Conn]:
    """A reader's transaction left open on `powers`, as a report tool or a psql session leaves one."""
    with psycopg.connect(dsn, application_name=HOLDER) as holder:
        holder.execute("SELECT count(*) FROM powers").fetchone()
        try:
            yield holder
        finally:
            holder.rollback()


@contextmanager
def in_thread(fn: Callable[[], Any]) -> Iterator[dict[str, Any]]:
    """Run `fn` in a thread; the dict gets 'result' or 'error' once the block's end has joined it."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:  # reported by the test
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield out
    finally:
        thread.join(120)
        assert not thread.is_alive()


def waiting_behind(conn: Conn, pid: int) -> int | None:
    """A backend waiting for a lock `pid` holds, if any."""
    row = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid)) LIMIT 1", (pid,)
    ).fetchone()
    return int(row[0]) if row else None


def view_equals_its_query(conn: Conn) -> bool:
    query = VIEW_QUERY.format(schema="public")
    row = conn.execute(
        f"SELECT NOT EXISTS (SELECT * FROM power_build_summary EXCEPT ({query}))"
        f" AND NOT EXISTS (({query}) EXCEPT SELECT * FROM power_build_summary)"
    ).fetchone()
    return bool(row and row[0])


def test_a_reader_waits_at_most_about_a_second_behind_a_swap_that_waits_for_an_open_transaction(
    dsn: str, projected: Callable[..., Database], conn: Conn
) -> None:
    db = projected(POWERLOG_SWAP_LOCK_TIMEOUT="0.5", POWERLOG_SWAP_ATTEMPTS="1000")
    rows = table_hashes(conn)
    waits: list[float] = []
    with (
        capture_logs() as logs,
        reader_transaction(dsn) as holder,
        in_thread(lambda: projections.rebuild(db)) as rebuild,
    ):
        try:
            for _ in range(5):
                # Each time the swap is queued behind the open transaction, a new reader comes.
                wait_until(lambda: waiting_behind(conn, holder.info.backend_pid), "the swap to wait", 60)
                with psycopg.connect(dsn, autocommit=True) as reader:
                    reader.execute("SET statement_timeout = '10s'")  # without the fix it waits 30 s
                    start = time.perf_counter()
                    assert reader.execute("SELECT count(*) FROM powers").fetchone() == (18,)
                    waits.append(time.perf_counter() - start)
            assert "result" not in rebuild and "error" not in rebuild  # still trying
        finally:
            holder.commit()  # the holder ends: the swap gets its locks on its next try
    assert "error" not in rebuild, rebuild.get("error")
    assert max(waits) < 1.5, waits
    busy = [e for e in logs if e["event"] == "rebuild_swap_busy"]
    assert len(busy) >= 5 and HOLDER in busy[0]["holders"], busy[:1]
    assert table_hashes(conn) == rows
    assert view_equals_its_query(conn)


def test_a_swap_that_never_gets_the_tables_gives_up_naming_the_transaction_that_holds_them(
    dsn: str, projected: Callable[..., Database], conn: Conn
) -> None:
    db = projected(POWERLOG_SWAP_LOCK_TIMEOUT="0.2", POWERLOG_SWAP_ATTEMPTS="3")
    rows = table_hashes(conn)
    old = conn.execute("SELECT 'powers'::regclass::oid").fetchone()
    with reader_transaction(dsn) as holder, pytest.raises(SwapBusy) as failed:
        pid = holder.info.backend_pid
        projections.rebuild(db)
    message = str(failed.value)
    assert f"PostgreSQL backend {pid} ({HOLDER}, idle in transaction" in message
    assert "3 tries" in message and "The live tables are unchanged" in message
    assert conn.execute("SELECT 'powers'::regclass::oid").fetchone() == old
    assert table_hashes(conn) == rows
    assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'powerlog\\_%'").fetchone() == (
        0,
    )


def test_a_refresh_that_comes_while_the_swap_holds_the_tables_succeeds_over_the_new_ones(
    dsn: str, projected: Callable[..., Database], conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, refresher = projected(), projected()
    real_point = faults.point
    refreshed: dict[str, Any] = {}

    def inside_the_swap(name: str, count: int | None = None) -> None:
        # The swap holds every lock and has moved the tables; a refresh starts now and must wait for it.
        if name == "rebuild_swap":
            thread = threading.Thread(target=lambda: refreshed.update(r=scheduler.refresh(refresher)))
            thread.start()
            refreshed["thread"] = thread
            with psycopg.connect(dsn, autocommit=True) as watcher:
                wait_until(
                    lambda: (
                        watcher.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                            " AND wait_event_type = 'Lock'",
                            (scheduler.view.APPLICATION_NAME,),
                        ).fetchone()
                        == (1,)
                    ),
                    "the refresh to wait for the swap",
                )
        real_point(name, count)

    monkeypatch.setattr(faults, "point", inside_the_swap)
    projections.rebuild(db)
    refreshed["thread"].join(60)
    result = refreshed["r"]
    if result.outcome != "ok":  # recorded as failed, never a missing relation left behind
        assert result.outcome == "failed" and "does not exist" not in (result.error or ""), result
        assert scheduler.refresh(refresher).outcome == "ok"
    assert view_equals_its_query(conn)
    assert scheduler.history(conn, limit=1)[0].outcome == "ok"


def test_a_swap_that_comes_while_a_refresh_runs_waits_for_it_in_short_tries(
    dsn: str, projected: Callable[..., Database], conn: Conn
) -> None:
    db = projected(POWERLOG_SWAP_LOCK_TIMEOUT="0.3", POWERLOG_SWAP_ATTEMPTS="1000")
    refresher = projected()
    with capture_logs() as logs, psycopg.connect(dsn) as blocker:
        # The refresh takes the view, then waits for powers: it is running when the swap comes.
        blocker.execute("LOCK TABLE powers IN ACCESS EXCLUSIVE MODE")
        with in_thread(lambda: scheduler.refresh(refresher)) as refresh:
            wait_until(lambda: waiting_behind(conn, blocker.info.backend_pid), "the refresh to wait")
            with in_thread(lambda: projections.rebuild(db)) as rebuild:
                try:
                    wait_until(
                        lambda: any(e["event"] == "rebuild_swap_busy" for e in logs),
                        "the swap to find it busy",
                        60,
                    )
                finally:
                    blocker.rollback()
    assert "error" not in rebuild and "error" not in refresh, (rebuild, refresh)
    assert refresh["result"].outcome == "ok", refresh["result"]
    assert view_equals_its_query(conn)
