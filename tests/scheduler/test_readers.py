"""Readers keep reading during a concurrent refresh: they never wait on a lock and see old or new, never a mix."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg

import scheduler
from store.connection import Database
from tests.scheduler.data import accuracy_sum, advance, change_one_percent, populate, wait_until

POWERS = 100_000
CHANGED = POWERS // 100  # change_one_percent adds 1 to each of these


@dataclass
class Read:
    start: float
    end: float
    total: float
    one: float  # accuracy of power 100, one of the changed ones


class Reader(threading.Thread):
    """Reads the whole view's sum and one changed row, over and over, on its own connection.

    An exception here would only end the thread, so it is kept in `errors` for the test to assert on.
    """

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.pid = self.conn.info.backend_pid
        self.reads: list[Read] = []
        self.errors: list[BaseException] = []
        self.first_read = threading.Event()  # also set by a failure before any read: see `errors`
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            with self.conn:
                while not self.stop.is_set():
                    start = time.monotonic()
                    # One statement, one snapshot: the sum and the row must agree on old or new.
                    row = self.conn.execute(
                        "SELECT sum(accuracy), max(accuracy) FILTER (WHERE id = 100) FROM power_build_summary"
                    ).fetchone()
                    assert row is not None
                    self.reads.append(Read(start, time.monotonic(), float(row[0] or 0), float(row[1] or 0)))
                    self.first_read.set()
        except BaseException as exc:  # asserted on in the test's thread
            self.errors.append(exc)
            self.first_read.set()  # wakes a test waiting for a read that will never come

    def reads_after(self, moment: float) -> int:
        return sum(1 for r in self.reads if r.start > moment)


class Monitor(threading.Thread):
    """Samples the reader's backend in pg_stat_activity and pg_locks from a third connection (an exception
    is kept in `errors`, like the reader's)."""

    def __init__(self, dsn: str, pid: int) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.pid = pid
        self.samples: list[tuple[float, str | None, str | None, bool]] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self.stop.is_set():
                    row = conn.execute(
                        "SELECT a.wait_event_type, a.state,"
                        " EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted)"
                        " FROM pg_stat_activity a WHERE a.pid = %s",
                        (self.pid,),
                    ).fetchone()
                    if row:
                        self.samples.append((time.monotonic(), row[0], row[1], bool(row[2])))
                    time.sleep(0.002)  # sampling period; keeps the monitor from starving the two it watches
        except BaseException as exc:  # asserted on in the test's thread
            self.errors.append(exc)

    def lock_waits(self) -> list[tuple[float, str | None, str | None, bool]]:
        return [s for s in self.samples if s[1] == "Lock" or s[3]]


def test_reader_never_waits_during_a_concurrent_refresh(
    db: Database, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    populate(conn, POWERS)
    advance(conn, 1)
    assert scheduler.refresh(db, concurrently=False).outcome == "ok"
    old = accuracy_sum(conn)
    change_one_percent(conn)
    advance(conn, 2)
    new = old + CHANGED

    reader = Reader(dsn)
    monitor = Monitor(dsn, reader.pid)
    reader.start()
    monitor.start()
    try:
        assert reader.first_read.wait(30) and reader.errors == [], reader.errors
        began = time.monotonic()
        result = scheduler.refresh_job(db)
        ended = time.monotonic()
        wait_until(lambda: reader.errors or reader.reads_after(ended) >= 2, "reads after the refresh")
    finally:
        reader.stop.set()
        monitor.stop.set()
        reader.join()
        monitor.join()

    assert (reader.errors, monitor.errors) == ([], [])
    assert reader.reads_after(ended) >= 2
    assert result is not None and (result.outcome, result.mode, result.rows) == ("ok", "concurrently", POWERS)
    during = [r for r in reader.reads if r.start >= began and r.end <= ended]
    assert len(during) >= 3, f"the refresh ({result.duration_ms:.0f} ms) overlapped too few reads"
    assert {(r.total, r.one) for r in reader.reads} <= {(old, 1.0), (new, 2.0)}
    assert (reader.reads[0].total, reader.reads[-1].total) == (old, new)
    active = [s for s in monitor.samples if began <= s[0] <= ended and s[2] == "active"]
    assert len(active) >= 5, "the monitor saw too little of the reader during the refresh"
    assert monitor.lock_waits() == []


def test_the_monitor_does_see_a_reader_blocked_by_a_plain_refresh(
    db: Database, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """Proof that the check above can fail: a plain REFRESH holds readers until it commits."""
    populate(conn, 1000)
    with psycopg.connect(dsn) as refresher:
        refresher.execute("REFRESH MATERIALIZED VIEW power_build_summary")  # uncommitted: still locked
        reader = Reader(dsn)
        monitor = Monitor(dsn, reader.pid)
        reader.start()
        monitor.start()
        try:
            wait_until(
                lambda: reader.errors or monitor.errors or monitor.lock_waits(),
                "the monitor to see the reader wait on a lock",
            )
            assert not reader.first_read.is_set(), reader.errors
            refresher.commit()
            assert reader.first_read.wait(30)
        finally:
            reader.stop.set()
            monitor.stop.set()
            refresher.rollback()
            reader.join()
            monitor.join()
    assert (reader.errors, monitor.errors) == ([], [])
    assert monitor.lock_waits() != []
    # Held until the REFRESH committed, the reader's first read saw it whole: 1,000 powers of accuracy 1.
    assert reader.reads and {(r.total, r.one) for r in reader.reads} == {(1000.0, 1.0)}
