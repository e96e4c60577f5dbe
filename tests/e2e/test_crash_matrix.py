"""The crash matrix: `import`, `project`, `project --follow`, `rebuild` and `scheduler run`, each SIGKILLed
at POWERLOG_CRASH_KILLS (20) seeded moments, on the sample releases (the point is crash safety, not size).

A moment is a fault point and its count (store/faults.py) drawn by a generator seeded with
POWERLOG_CRASH_SEED and the command's name, or, for the scheduler, also a REFRESH held on a table lock
and killed while it waits, or a time offset after start. After each kill the test runs the command
again and checks: the log holds whole imports only (gap-free positions, each import's events exactly
its positions), `verify` passes, the read tables equal a clean rebuild, no shadow, retired or scratch
schema is left, and no `view_refreshes` row still claims to be running (for the scheduler: already before
the re-run, once the killed process's session is gone, `status` shows and stores its row as abandoned).

Marked `crash`: a separate CI step (`pytest -m crash`), left out of the default run.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

import projections
import scheduler
from importer.run import run_import
from projections.audit import rebuilt_hashes, verify
from projections.fingerprint import table_hashes
from projections.tables import HISTORY_TABLES, READ_TABLES
from scheduler.view import ABANDONED
from store import locks
from store.connection import Database
from store.faults import ENV as FAULT_ENV
from tests.conftest import SAMPLES, settings_for
from tests.e2e.cli import powerlog
from tests.e2e.daemons import Daemon, wait_for
from tests.scheduler.data import blocked_refresher, tables_locked

pytestmark = [pytest.mark.crash, pytest.mark.slow]

SEED = int(os.environ.get("POWERLOG_CRASH_SEED", "20261130"))
KILLS = int(os.environ.get("POWERLOG_CRASH_KILLS", "20"))
BATCH = 5  # POWERLOG_IMPORT_BATCH and POWERLOG_PROJECT_BATCH: many fault points in small samples
OLD, NEW = SAMPLES / "mids-20.1224", SAMPLES / "mids-21.0331"
RELEASES = (OLD, NEW)
# 78 + 26 + 26 positions in ranges of at most 5 that stop at each import's end: 16 + 6 + 6 batches.
BATCHES_OF_THREE_IMPORTS = 28
# A rebuild loads the first import in bulk (3 fault points), then projects the other two: 6 + 6 batches.
BULK_LOAD_POINTS, BATCHES_AFTER_THE_FIRST_IMPORT = 3, 12
# An import on top of another adds 26 events: 6 COPYs of at most 5. Into the empty log 20.1224 yields 78
# records; on top of the other sample each yields at least 35 (21.0331; 20.1224: 39), since the two files they
# share byte for byte (EnhDB.json and a powerset file) are taken from the import before, not parsed.
DIFF_COPIES, FIRST_RECORDS, RECORDS = 6, 78, 35


def rng(command: str) -> random.Random:
    return random.Random(f"{SEED}:{command}")


def env_for(dsn: str, **more: str) -> dict[str, str]:
    return {
        "DATABASE_URL": dsn,
        "POWERLOG_IMPORT_BATCH": str(BATCH),
        "POWERLOG_PROJECT_BATCH": str(BATCH),
        "POWERLOG_VIEW_REFRESH": "scheduler",
        **more,
    }


def killed(args: list[str], dsn: str, point: str) -> None:
    result = powerlog(*args, env=env_for(dsn, **{FAULT_ENV: point}))
    assert result.returncode == -signal.SIGKILL, (
        f"{args} at {point}: exit {result.returncode}\n{result.stderr}"
    )
    assert "fault_injected" in result.stderr, (point, result.stderr[-2000:])


def one(conn: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = conn.execute(query, params or None).fetchone()
    assert row is not None
    return row[0]


def check(dsn: str, what: str) -> None:
    """Everything a killed-and-rerun command must leave."""
    db = Database(settings_for(dsn))
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            # Whole imports only: gap-free positions, each completed import's events exactly its range.
            assert one(conn, "SELECT count(*) = coalesce(max(global_position), 0) FROM events"), what
            assert one(conn, "SELECT count(*) FROM imports WHERE status NOT IN ('completed', 'failed')") == 0
            torn = one(
                conn,
                "SELECT count(*) FROM imports i WHERE i.status = 'completed' AND i.first_position IS NOT NULL"
                " AND (SELECT count(*) FROM events e WHERE e.import_id = i.id)"
                " <> i.last_position - i.first_position + 1",
            )
            orphans = one(
                conn,
                "SELECT count(*) FROM events e WHERE NOT EXISTS"
                " (SELECT 1 FROM imports i WHERE i.id = e.import_id AND i.status = 'completed')",
            )
            assert (torn, orphans) == (0, 0), what
            assert one(conn, "SELECT count(*) FROM view_refreshes WHERE outcome = 'running'") == 0, what
            assert one(conn, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'powerlog\\_%'") == 0, what
        # The chain, and the read tables equal to a clean rebuild at their checkpoint (one range per import).
        report = verify(db)
        assert report.ok, (what, report)
    finally:
        db.close()


def imported(dsn: str, *releases: Path) -> Database:
    # Small batches for the killed processes (many fault points); the re-runs may take them whole.
    db = Database(settings_for(dsn, POWERLOG_IMPORT_BATCH=str(BATCH)))
    for release in releases:
        run_import(db, release)
    return db


def emptied(dsn: str) -> None:
    """Read tables, their history and checkpoints emptied, so a projector has the whole log to apply again."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join((*READ_TABLES, *HISTORY_TABLES))}, projection_checkpoints")


def whole_batches(dsn: str, what: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        position = projections.checkpoint(conn)
        # The rows of whole batches: what a rebuild up to the checkpoint gives, however it is cut in ranges.
        assert table_hashes(conn) == rebuilt_hashes(conn, position, 10_000), f"{what}: rows at {position}"
        return position


def test_import_killed_at_20_seeded_moments(dsn: str) -> None:
    r = rng("import")
    db = imported(dsn)
    try:
        for kill in range(KILLS):
            release = RELEASES[kill % 2]
            first = kill == 0
            copies = 78 // BATCH if first else DIFF_COPIES
            point = r.choice(
                [
                    f"record:{r.randint(1, FIRST_RECORDS if first else RECORDS)}",
                    f"after_batch:{r.randint(1, copies)}",
                    "before_commit",
                ]
            )
            with psycopg.connect(dsn, autocommit=True) as conn:
                before = (
                    conn.execute("SELECT count(*), max(id) FROM imports").fetchone(),
                    one(conn, "SELECT count(*) FROM events"),
                )
            killed(["import", str(release)], dsn, point)
            with psycopg.connect(dsn, autocommit=True) as conn:
                after = (
                    conn.execute("SELECT count(*), max(id) FROM imports").fetchone(),
                    one(conn, "SELECT count(*) FROM events"),
                )
            assert after == before, f"kill {kill} at {point} left something"
            run_import(db, release)  # the re-run
            projections.project(db)
            check(dsn, f"import kill {kill} at {point}")
    finally:
        db.close()


def test_project_killed_at_20_seeded_moments(dsn: str) -> None:
    r = rng("project")
    db = imported(dsn, OLD, NEW, OLD)
    for kill in range(KILLS):
        point = f"project_batch:{r.randint(1, BATCHES_OF_THREE_IMPORTS)}"
        emptied(dsn)
        killed(["project"], dsn, point)
        whole_batches(dsn, f"project kill {kill} at {point}")
        projections.project(db)  # the re-run
        check(dsn, f"project kill {kill} at {point}")


def caught_up(dsn: str, daemon: Daemon) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        at_head = projections.checkpoint(conn) == one(conn, "SELECT max(global_position) FROM events")
    return at_head and "follow_caught_up" in daemon.events()


def kill_follower_woken_by_an_import(
    dsn: str, db: Database, release: Path, point: str, log_path: Path
) -> None:
    follower = Daemon(["project", "--follow", "--poll", "600"], env_for(dsn, **{FAULT_ENV: point}), log_path)
    try:
        wait_for(lambda: caught_up(dsn, follower), "the follower to idle")
        assert run_import(db, release).events > 0  # a NOTIFY, and batches to be killed in
        assert follower.proc.wait(60) == -signal.SIGKILL, log_path.read_text()[-2000:]
    finally:
        follower.kill()


def rerun_follower(dsn: str, log_path: Path) -> None:
    rerun = Daemon(["project", "--follow", "--poll", "600"], {"DATABASE_URL": dsn}, log_path)
    try:
        wait_for(lambda: caught_up(dsn, rerun), "the re-run follower to catch up")
        assert rerun.stop() == 0
    finally:
        rerun.kill()


def test_follow_killed_at_20_seeded_moments(dsn: str, tmp_path: Path) -> None:
    r = rng("follow")
    db = imported(dsn, OLD, NEW, OLD)
    last = OLD
    try:
        for kill in range(KILLS):
            if r.random() < 0.5:
                # Killed catching up a backlog as it starts.
                point = f"project_batch:{r.randint(1, BATCHES_OF_THREE_IMPORTS)}"
                emptied(dsn)
                killed(["project", "--follow", "--poll", "600"], dsn, point)
            else:
                # Killed applying an import it was woken for.
                point = f"project_batch:{r.randint(1, DIFF_COPIES)}"
                last = NEW if last == OLD else OLD  # the other release: an import with events to apply
                kill_follower_woken_by_an_import(dsn, db, last, point, tmp_path / f"f{kill}.log")
            whole_batches(dsn, f"follow kill {kill} at {point}")
            rerun_follower(dsn, tmp_path / f"rerun-{kill}.log")
            check(dsn, f"follow kill {kill} at {point}")
    finally:
        db.close()


def test_rebuild_killed_at_20_seeded_moments(dsn: str) -> None:
    r = rng("rebuild")
    db = imported(dsn, OLD, NEW, OLD)
    try:
        projections.project(db)
        with psycopg.connect(dsn, autocommit=True) as conn:
            live = table_hashes(conn)
        for kill in range(KILLS):
            point = r.choice(
                [
                    f"bulk_load:{r.randint(1, BULK_LOAD_POINTS)}",
                    f"project_batch:{r.randint(1, BATCHES_AFTER_THE_FIRST_IMPORT)}",
                    "rebuild_built",
                    "rebuild_swap",
                ]
            )
            killed(["rebuild"], dsn, point)
            with psycopg.connect(dsn, autocommit=True) as conn:
                assert table_hashes(conn) == live, f"rebuild kill {kill} at {point} touched the live tables"
            projections.rebuild(db)  # the re-run drops what the dead one left in its shadow schema
            check(dsn, f"rebuild kill {kill} at {point}")
    finally:
        db.close()


def backend_gone(dsn: str, pid: int) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return bool(one(conn, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", pid) == 0)


def kill_scheduler_while_its_refresh_waits(dsn: str, log_path: Path) -> None:
    with tables_locked(dsn), psycopg.connect(dsn, autocommit=True) as conn:
        sched = Daemon(["scheduler", "run", "--interval", "0.1"], env_for(dsn), log_path)
        pid: int = wait_for(lambda: blocked_refresher(conn) or 0, "the REFRESH to wait on the lock")
        sched.kill()
    # The orphaned backend runs its REFRESH once the lock is gone, then finds its client gone and ends.
    wait_for(lambda: backend_gone(dsn, pid), "the orphaned backend to end")


def kill_scheduler_after(dsn: str, seconds: float, log_path: Path) -> None:
    sched = Daemon(["scheduler", "run", "--interval", "0.1"], env_for(dsn), log_path)
    start = time.monotonic()
    # A seeded time offset: the moment is the point here, whatever the scheduler is doing then.
    wait_for(lambda: time.monotonic() - start >= seconds or sched.proc.poll() is not None, "the moment")
    sched.kill()


def abandoned_once_its_session_is_gone(dsn: str, moment: str) -> None:
    """What a look at the database shows after the kill, before anything runs again: no refresh running."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        # The killed process's backend ends when it finds its client gone (after its REFRESH, if one runs).
        wait_for(lambda: locks.holder(conn, locks.REFRESH) is None, "the dead refresh's session to end")
        st = scheduler.status(conn)
        assert st["refreshing_now"] is False, moment
        outcomes = [r.outcome for r in scheduler.history(conn)]
        assert "running" not in outcomes, (moment, outcomes)
        assert one(conn, "SELECT count(*) FROM view_refreshes WHERE outcome = 'running'") == 0, moment
        if moment in ("refresh_running", "refresh_waiting"):
            # Killed with its row written and its REFRESH not recorded as done.
            assert outcomes[0] == "abandoned", (moment, outcomes)
            assert st["last_error"] == ABANDONED, moment


def test_scheduler_killed_at_20_seeded_moments(dsn: str, tmp_path: Path) -> None:
    r = rng("scheduler")
    db = imported(dsn, OLD)
    try:
        projections.project(db)
        assert scheduler.refresh(db).outcome == "ok"
        for kill in range(KILLS):
            run_import(db, RELEASES[(kill + 1) % 2])  # something to refresh
            projections.project(db)
            moment = r.choice(["refresh_running", "refresh_waiting", f"after {r.uniform(0.0, 1.5):.2f} s"])
            if moment == "refresh_running":
                killed(["scheduler", "run", "--interval", "0.1"], dsn, "refresh_running:1")
            elif moment == "refresh_waiting":
                kill_scheduler_while_its_refresh_waits(dsn, tmp_path / f"s{kill}.log")
            else:
                kill_scheduler_after(dsn, float(moment.split()[1]), tmp_path / f"s{kill}.log")
            abandoned_once_its_session_is_gone(dsn, moment)
            result = scheduler.refresh(db, if_stale=True)  # the re-run
            assert result.outcome in ("ok", "fresh"), (moment, result)
            with psycopg.connect(dsn, autocommit=True) as conn:
                assert not scheduler.is_stale(conn)
            check(dsn, f"scheduler kill {kill} at {moment}")
    finally:
        db.close()
