"""Server restarts (fast and immediate) on a server of this module's own, PostgreSQL 18 and 15.

The daemons (`project --follow`, `scheduler run`) reconnect by themselves, catch up what they missed, and
their metrics show the lag back at 0; one-shot commands fail with one line, exit 1, and leave nothing
half-written. Each fault is placed with the fault points' pause (`POWERLOG_TEST_FAULT_PAUSE`): the
process stops at a known point, the test restarts the server, then lets it go on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

import projections
import scheduler
from importer.run import run_import
from projections.audit import rebuilt_hashes
from projections.fingerprint import table_hashes
from store import log
from store.connection import Database
from store.faults import ENV as FAULT_ENV
from store.faults import PAUSE_ENV
from tests.conftest import SAMPLES, settings_for
from tests.e2e.cli import powerlog
from tests.e2e.daemons import Daemon, free_port, wait_for
from tests.servers import PrivateServer, private_server

pytestmark = [pytest.mark.faults, pytest.mark.slow]

__all__ = ["private_server"]  # the fixture, used by name

OLD, NEW = SAMPLES / "mids-20.1224", SAMPLES / "mids-21.0331"


def head(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return log.head(conn).position


def equal_to_a_clean_rebuild(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        position = projections.checkpoint(conn)
        assert position == log.head(conn).position
        assert table_hashes(conn) == rebuilt_hashes(conn, position, 10_000)


def at(
    daemon: Daemon, position: int, position_metric: str, lag_metric: str, state: str | None = None
) -> dict[str, float] | None:
    """The daemon's metrics once it has reached `position` with no lag (and, if given, is in `state`).

    A round sets the position and lag gauges a moment before the state gauge: a scrape in between sees the
    position reached while the state still says catching up, so a test that asserts the state waits for it.
    """
    m = daemon.metrics()
    reached = m.get(position_metric) == position and m.get(lag_metric) == 0
    return m if reached and (state is None or m.get(state) == 1) else None


def test_follower_and_scheduler_survive_two_restarts_and_their_lag_returns_to_0(
    private_server: PrivateServer, tmp_path: Path
) -> None:
    dsn = private_server.new_database()
    db = Database(settings_for(dsn))
    run_import(db, OLD)
    pause = tmp_path / "follower-paused"
    env = {"DATABASE_URL": dsn, "POWERLOG_VIEW_REFRESH": "scheduler", "POWERLOG_LOG_LEVEL": "info"}
    # --poll 600: nothing but a notification or a reconnection wakes the follower within this test.
    follower = Daemon(
        ["project", "--follow", "--poll", "600", "--stall-threshold", "0.5"],
        {**env, FAULT_ENV: "follow_reconnect:1", PAUSE_ENV: str(pause)},
        tmp_path / "follower.log",
        free_port(),
    )
    sched = Daemon(
        ["scheduler", "run", "--interval", "0.2", "--stall-threshold", "0.5"],
        env,
        tmp_path / "scheduler.log",
        free_port(),
    )
    stopped = False
    try:
        first = head(dsn)
        wait_for(
            lambda: at(follower, first, "powerlog_projection_position", "powerlog_projection_lag_events"),
            "follow",
        )
        wait_for(
            lambda: at(sched, first, "powerlog_view_refreshed_position", "powerlog_view_lag_events"),
            "refresh",
        )
        assert follower.health()[0] == sched.health()[0] == 200

        # Restart 1, fast. The follower is held at its first reconnection attempt while an import commits:
        # its NOTIFY reaches nobody, so only the catch-up after reconnecting can find it.
        private_server.stop("fast")
        wait_for(pause.exists, "the follower to try to reconnect")
        _, body = wait_for(lambda: (h := follower.health())[0] == 503 and h, "/healthz to fail")
        assert body["state"] == "reconnecting" and "reason" in body and body["threshold_s"] == 0.5
        _, body = wait_for(lambda: (h := sched.health())[0] == 503 and h, "the scheduler's /healthz to fail")
        assert body["state"] == "reconnecting"
        private_server.start()
        run_import(db, NEW)
        second = head(dsn)
        assert second > first
        pause.unlink()
        wait_for(
            lambda: at(follower, second, "powerlog_projection_position", "powerlog_projection_lag_events"),
            "1",
        )
        wait_for(
            lambda: at(sched, second, "powerlog_view_refreshed_position", "powerlog_view_lag_events"), "1"
        )

        # Restart 2, immediate (the server crashes and recovers), then another import.
        private_server.restart("immediate")
        run_import(db, OLD)  # back to 20.1224: removed entities return
        third = head(dsn)
        assert third > second
        caught_up = "powerlog_follower_state{powerlog_follower_state=caught_up}"
        ok = "powerlog_scheduler_state{powerlog_scheduler_state=ok}"
        f = wait_for(
            lambda: at(
                follower, third, "powerlog_projection_position", "powerlog_projection_lag_events", caught_up
            ),
            "2",
        )
        s = wait_for(
            lambda: at(sched, third, "powerlog_view_refreshed_position", "powerlog_view_lag_events", ok), "2"
        )
        assert f["powerlog_projection_lag_seconds"] == 0
        assert f["powerlog_reconnects_total"] >= 2 and s["powerlog_reconnects_total"] >= 1
        assert f["powerlog_projection_events_applied_total"] == third
        assert f[caught_up] == 1 and s[ok] == 1
        assert s["powerlog_view_refresh_duration_seconds_count"] >= 3
        assert s["powerlog_view_refresh_failures_total"] >= 1
        assert wait_for(lambda: follower.health()[0] == 200, "the follower healthy again")
        assert wait_for(lambda: sched.health()[0] == 200, "the scheduler healthy again")
        codes = follower.stop(), sched.stop()
        stopped = True
    finally:
        if not stopped:
            follower.kill()
            sched.kill()
    assert codes == (0, 0), (follower.log_path.read_text()[-3000:], sched.log_path.read_text()[-3000:])
    equal_to_a_clean_rebuild(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert not scheduler.is_stale(conn)

    lines = follower.lines()
    events = [line["event"] for line in lines]
    assert "follow_round" not in events
    reconnecting = [line for line in lines if line["event"] == "follow_reconnecting"]
    assert len(reconnecting) >= 2 and all(r["level"] == "warning" and r["reason"] for r in reconnecting)
    assert all(0 < r["retry_in_s"] <= 30 for r in reconnecting)
    assert events.count("follow_reconnected") >= 2
    # States, not rounds: it caught up once at the start and once after each import.
    assert events.count("follow_caught_up") <= 4, events
    assert "fault_paused" in events and events[-1] == "follow_stopped"
    sched_events = sched.events()
    assert "scheduler_reconnecting" in sched_events and "scheduler_reconnected" in sched_events
    assert not any(
        line.get("level") == "error" and line["event"] == "refresh_tick_failed" for line in sched.lines()
    )


def paused(command: list[str], env: dict[str, str], marker: Path) -> Daemon:
    """A one-shot command started with a pause point; returns once it is paused there."""
    proc = Daemon(command, {**env, PAUSE_ENV: str(marker)}, marker.with_suffix(".log"))
    wait_for(
        lambda: marker.exists() or proc.proc.poll() is not None, f"{command[0]} to reach its fault point"
    )
    assert marker.exists(), marker.with_suffix(".log").read_text()
    return proc


def one_clear_line(stderr: str) -> str:
    """The command's own message: exactly one line that is not a JSON log line, and no traceback."""
    said = [line for line in stderr.splitlines() if line.strip() and not line.startswith("{")]
    assert len(said) == 1 and "Traceback" not in stderr, stderr
    return said[0]


def log_state(dsn: str) -> tuple[Any, ...]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        events = conn.execute("SELECT count(*), coalesce(max(global_position), 0) FROM events").fetchone()
        imports = conn.execute("SELECT id, status FROM imports ORDER BY id").fetchall()
        return events, tuple(imports), str(log.verify_chain(conn))


RESTARTS = [pytest.param("fast", id="fast"), pytest.param("immediate", id="immediate")]


@pytest.mark.parametrize("mode", RESTARTS)
def test_import_during_a_restart_fails_with_one_line_and_writes_nothing(
    private_server: PrivateServer, tmp_path: Path, mode: str
) -> None:
    dsn = private_server.new_database()
    run_import(Database(settings_for(dsn)), OLD)
    before = log_state(dsn)
    env = {"DATABASE_URL": dsn, "POWERLOG_IMPORT_BATCH": "5", FAULT_ENV: "after_batch:2"}
    proc = paused(["import", str(NEW)], env, tmp_path / "paused")
    private_server.restart(mode)
    (tmp_path / "paused").unlink()
    assert proc.proc.wait(60) == 1
    line = one_clear_line(proc.log_path.read_text())
    assert line.startswith("database error: ") and "connection" in line, line
    assert log_state(dsn) == before
    again = powerlog("import", str(NEW), env={"DATABASE_URL": dsn})
    assert again.returncode == 0, again.stderr
    assert log_state(dsn)[0][0] == before[0][0] + 26


@pytest.mark.parametrize("mode", RESTARTS)
def test_projection_during_a_restart_fails_with_one_line_and_keeps_whole_batches(
    private_server: PrivateServer, tmp_path: Path, mode: str
) -> None:
    dsn = private_server.new_database()
    run_import(Database(settings_for(dsn)), OLD)
    env = {"DATABASE_URL": dsn, "POWERLOG_PROJECT_BATCH": "20", FAULT_ENV: "project_batch:2"}
    proc = paused(["project"], env, tmp_path / "paused")
    private_server.restart(mode)
    (tmp_path / "paused").unlink()
    assert proc.proc.wait(60) == 1
    assert one_clear_line(proc.log_path.read_text()).startswith("database error: ")
    with psycopg.connect(dsn, autocommit=True) as conn:
        # The batch in flight is gone, the one before it is whole.
        assert projections.checkpoint(conn) == 20
        assert table_hashes(conn) == rebuilt_hashes(conn, 20, 20)
    again = powerlog("project", env={"DATABASE_URL": dsn})
    assert again.returncode == 0, again.stderr
    equal_to_a_clean_rebuild(dsn)


@pytest.mark.parametrize(("mode", "point"), [("fast", "rebuild_built"), ("immediate", "rebuild_swap")])
def test_rebuild_during_a_restart_fails_with_one_line_and_the_live_tables_stay(
    private_server: PrivateServer, tmp_path: Path, mode: str, point: str
) -> None:
    dsn = private_server.new_database()
    db = Database(settings_for(dsn))
    run_import(db, OLD)
    run_import(db, NEW)
    projections.project(db)
    with psycopg.connect(dsn, autocommit=True) as conn:
        live = table_hashes(conn)
    proc = paused(["rebuild"], {"DATABASE_URL": dsn, FAULT_ENV: point}, tmp_path / "paused")
    private_server.restart(mode)
    (tmp_path / "paused").unlink()
    assert proc.proc.wait(60) == 1
    assert one_clear_line(proc.log_path.read_text()).startswith("database error: ")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert table_hashes(conn) == live
    again = powerlog("rebuild", env={"DATABASE_URL": dsn})
    assert again.returncode == 0, again.stderr
    equal_to_a_clean_rebuild(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert table_hashes(conn) == live
        assert conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'powerlog_%'"
        ).fetchone() == (0,)


@pytest.mark.parametrize("mode", RESTARTS)
def test_refresh_during_a_restart_fails_with_one_line_and_the_next_one_succeeds(
    private_server: PrivateServer, tmp_path: Path, mode: str
) -> None:
    dsn = private_server.new_database()
    db = Database(settings_for(dsn))
    run_import(db, OLD)
    projections.project(db)
    assert scheduler.refresh(db).outcome == "ok"
    run_import(db, NEW)
    projections.project(db)
    db.close()
    proc = paused(["refresh"], {"DATABASE_URL": dsn, FAULT_ENV: "refresh_running"}, tmp_path / "paused")
    private_server.restart(mode)
    (tmp_path / "paused").unlink()
    assert proc.proc.wait(60) == 1
    one_clear_line(proc.log_path.read_text())
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert scheduler.is_stale(conn)
        assert conn.execute("SELECT count(*) FROM power_build_summary").fetchone() == (
            21,
        )  # the old contents
    again = powerlog("refresh", env={"DATABASE_URL": dsn})
    assert again.returncode == 0, again.stderr
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert not scheduler.is_stale(conn)
        outcomes = [r.outcome for r in reversed(scheduler.history(conn))]
    # Failed if the refresh could record its end; abandoned if the server was gone for that too.
    assert outcomes in (["ok", "failed", "ok"], ["ok", "abandoned", "ok"]), outcomes


def test_a_scheduler_tick_during_a_restart_is_recorded_and_the_next_tick_refreshes(
    private_server: PrivateServer, tmp_path: Path
) -> None:
    dsn = private_server.new_database()
    db = Database(settings_for(dsn))
    run_import(db, OLD)
    projections.project(db)
    db.close()
    marker = tmp_path / "paused"
    sched = Daemon(
        ["scheduler", "run", "--interval", "0.2"],
        {"DATABASE_URL": dsn, FAULT_ENV: "refresh_running:1", PAUSE_ENV: str(marker)},
        tmp_path / "scheduler.log",
        free_port(),
    )
    try:
        wait_for(marker.exists, "the first tick to start its refresh")
        private_server.restart("immediate")
        marker.unlink()  # refresh_running:1 fires once only: every later refresh runs through
        position = head(dsn)
        m = wait_for(
            lambda: at(sched, position, "powerlog_view_refreshed_position", "powerlog_view_lag_events"), "ok"
        )
        assert m["powerlog_view_refresh_failures_total"] >= 1
        assert sched.stop() == 0
    finally:
        sched.kill()
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert not scheduler.is_stale(conn)
        history = list(reversed(scheduler.history(conn)))
    assert [r.outcome for r in history][-1] == "ok" and history[0].outcome in ("failed", "abandoned"), history
    assert "refresh_failed" in sched.events() or "refresh_marked_abandoned" in sched.events()
