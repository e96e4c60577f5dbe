"""`project --follow` beside a rebuild, at an error it cannot get past, and what it logs."""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

import projections
from events.errors import PowerlogError
from importer.run import run_import
from projections.audit import rebuilt_hashes
from projections.fingerprint import table_hashes
from projections.metrics import FollowerMetrics, Health
from store import locks, log
from store.connection import Database
from tests.conftest import SAMPLES, settings_for
from tests.e2e.cli import powerlog
from tests.e2e.daemons import Daemon, wait_for

# The module, not the function `projections.follow` that its package exports under the same name.
follow_module = sys.modules["projections.follow"]
OLD, NEW = SAMPLES / "mids-20.1224", SAMPLES / "mids-21.0331"


class Running:
    def __init__(self, follower: projections.Follower, thread: threading.Thread, errors: list[BaseException]):
        self.follower, self.thread, self.errors = follower, thread, errors

    def sample(self, name: str, **labels: str) -> float | None:
        return self.follower.metrics.registry.get_sample_value(name, labels or None)

    def at(self, position: int) -> bool:
        return self.sample("powerlog_projection_position") == position and self.follower.state == "caught_up"


@contextmanager
def following(db: Database, health: Health | None = None) -> Iterator[Running]:
    """A follower in a thread (a long poll: only notifications and its own retries wake it)."""
    stop = threading.Event()
    errors: list[BaseException] = []
    follower = projections.Follower(db, stop, poll_s=600, metrics=FollowerMetrics(), health=health)

    def run() -> None:
        try:
            follower.run()
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    thread = threading.Thread(target=run, name="follower")
    thread.start()
    try:
        yield Running(follower, thread, errors)
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive() and errors == []


def head(conn: psycopg.Connection[Any]) -> int:
    return log.head(conn).position


def test_rebuild_while_following_the_follower_pauses_and_never_writes_into_the_swapped_tables(
    dsn: str,
) -> None:
    db = Database(settings_for(dsn, POWERLOG_PROJECT_BATCH="10"))
    run_import(db, OLD)
    in_build = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []

    def hold_the_build(counts: projections.BatchCounts, target: int) -> None:
        if counts.batches == 1:
            in_build.set()
            assert release.wait(60), "the test never let the rebuild go on"

    def rebuild() -> None:
        try:
            projections.rebuild(db, on_batch=hold_the_build)
        except BaseException as exc:
            errors.append(exc)

    with psycopg.connect(dsn, autocommit=True) as conn, following(db) as f:
        first = head(conn)
        wait_for(lambda: f.at(first), "the follower to catch up")
        before = table_hashes(conn)
        rebuilder = threading.Thread(target=rebuild)
        rebuilder.start()
        # The follower gives the lock back between rounds, so the rebuild gets it and builds.
        assert in_build.wait(60), errors
        holder = locks.holder(conn, locks.PROJECTOR)
        assert holder is not None
        run_import(db, NEW)  # its NOTIFY wakes the follower, which finds the lock taken
        second = head(conn)
        wait_for(lambda: f.follower.state == "paused", "the follower to pause")
        assert f.sample("powerlog_follower_state", powerlog_follower_state="paused") == 1
        assert f.sample("powerlog_projection_lag_events") == second - first
        # Nothing written to the live tables while the rebuild holds them.
        assert projections.checkpoint(conn) == first and table_hashes(conn) == before
        release.set()
        rebuilder.join(120)
        assert not rebuilder.is_alive() and errors == []
        # The rebuild applied the events that arrived during its build; the follower finds nothing left.
        assert projections.checkpoint(conn) == second
        wait_for(lambda: f.at(second), "the follower to resume")
        run_import(db, OLD)
        third = head(conn)
        wait_for(lambda: f.at(third), "the follower to apply the next import")
        # Each event applied once: the follower applied the first and third imports, the rebuild the second.
        assert f.sample("powerlog_projection_events_applied_total") == first + (third - second)
        assert table_hashes(conn) == rebuilt_hashes(conn, third, 10)
        assert conn.execute("SELECT count(*), max(global_position) FROM events").fetchone() == (third, third)
        assert conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'powerlog_%'"
        ).fetchone() == (0,)


def test_rebuild_beside_a_running_follow_process_does_not_wait_for_it(dsn: str, tmp_path: Path) -> None:
    """Before, `project --follow` held the projector lock for its whole life: a rebuild behind it could
    only time out. Now it takes it per round, so `rebuild --no-wait` gets in while it idles."""
    run_import(Database(settings_for(dsn)), OLD)
    env = {"DATABASE_URL": dsn, "POWERLOG_LOG_LEVEL": "info"}
    follower = Daemon(["project", "--follow", "--poll", "600"], env, tmp_path / "follow.log")
    try:
        wait_for(lambda: "follow_caught_up" in follower.events(), "the follower to catch up")
        rebuilt = powerlog("rebuild", "--no-wait", env={"DATABASE_URL": dsn})
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert "rebuilt the read tables from 78 events" in rebuilt.stdout
        run_import(Database(settings_for(dsn)), NEW)
        wait_for(lambda: follower.events().count("follow_applied") == 2, "the follower to apply the import")
        assert follower.stop() == 0
    finally:
        follower.kill()
    events = follower.events()
    # Changes of state only: caught up once; each import applied is one line; idle rounds say nothing.
    assert events.count("follow_caught_up") == 1 and events.count("follow_applied") == 2, events
    assert "follow_round" not in events


def test_an_error_that_is_not_the_connection_stalls_the_follower_which_keeps_running(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(settings_for(dsn))
    run_import(db, OLD)
    real_catch_up = follow_module.catch_up
    failing = threading.Event()
    failing.set()
    tries: list[int] = []

    def refusing(*args: Any, **kwargs: Any) -> projections.BatchCounts:
        if failing.is_set():
            tries.append(1)
            raise PowerlogError("event 5 cannot be applied: a test says so")
        return real_catch_up(*args, **kwargs)

    monkeypatch.setattr(follow_module, "catch_up", refusing)
    health = Health(threshold_s=0.2)
    with capture_logs() as logs, following(db, health) as f:
        wait_for(lambda: f.follower.state == "stalled" and len(tries) >= 2, "the follower to stall and retry")
        assert f.sample("powerlog_follower_state", powerlog_follower_state="stalled") == 1
        _, body = wait_for(lambda: (r := health.report())[0] is False and r, "/healthz to fail")
        assert body["state"] == "stalled" and "event 5 cannot be applied" in body["reason"]
        assert body["lag_events"] == 78
        failing.clear()  # fixed meanwhile: the next retry goes through
        wait_for(lambda: f.at(78), "the follower to get going again")
        assert health.report()[0] is True
    stalled = [e for e in logs if e["event"] == "follow_stalled"]
    # Said once, with the reason, however many times it was retried.
    assert (
        len(stalled) == 1 and stalled[0]["log_level"] == "error" and "a test says so" in stalled[0]["reason"]
    )
    assert len(tries) >= 2


def test_status_shows_the_lag_in_events_and_in_seconds(dsn: str) -> None:
    db = Database(settings_for(dsn))
    run_import(db, OLD)
    projections.project(db)
    run_import(db, NEW)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # As if the second import had come an hour ago (the log's trigger forbids updates; replica mode
        # skips it for this test's session only).
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "UPDATE events SET recorded_at = recorded_at - interval '1 hour' WHERE global_position > 78"
        )
    result = powerlog("status", "--json", env={"DATABASE_URL": dsn})
    assert result.returncode == 0, result.stderr
    for p in json.loads(result.stdout)["projectors"].values():
        assert (p["position"], p["lag"]) == (78, 26)
        assert 3600 <= p["lag_seconds"] < 3600 + 300
    shown = powerlog("status", env={"DATABASE_URL": dsn, "COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    assert "lag (events)" in shown.stdout and "lag (seconds)" in shown.stdout
    assert re.search(r"powers\s+│\s+78\s+│\s+26\s+│\s+3,6\d\d\s+│\s+21", shown.stdout), shown.stdout
    projections.project(db)
    caught_up = json.loads(powerlog("status", "--json", env={"DATABASE_URL": dsn}).stdout)
    assert all(p == {"position": 104, "lag": 0, "lag_seconds": 0.0} for p in caught_up["projectors"].values())
