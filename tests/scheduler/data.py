"""Synthetic read-table contents for the scheduler tests, written straight into the tables with SQL."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from apscheduler.events import EVENT_JOB_EXECUTED  # type: ignore[import-untyped]

from scheduler import SOURCE_PROJECTORS
from scheduler.view import APPLICATION_NAME

T = TypeVar("T")

Conn = psycopg.Connection[Any]


def populate(conn: Conn, powers: int, pad: int = 100) -> None:
    """`powers` powers in powers/100 powersets over 50 archetypes (every tenth powerset a pool, no archetype)."""
    sets = max(1, powers // 100)
    conn.execute(
        "INSERT INTO archetypes (id, class_name, display_name, data)"
        " SELECT g, 'Class_' || g, 'Archetype ' || g, '{}' FROM generate_series(1, 50) g"
    )
    conn.execute(
        "INSERT INTO powersets (id, full_name, display_name, archetype_id, data)"
        " SELECT g, 'Group.Set_' || g, 'Set ' || g, CASE WHEN g %% 10 = 0 THEN NULL ELSE 1 + g %% 50 END, '{}'"
        " FROM generate_series(1, %s) g",
        (sets,),
    )
    conn.execute(
        "INSERT INTO powers (id, full_name, display_name, powerset_id, level_available, accuracy,"
        " endurance_cost, recharge_time, effects, effect_groups, data)"
        " SELECT g, 'Group.Set_' || (1 + g %% %(sets)s) || '.Power_' || g, 'Power ' || g,"
        ' 1 + g %% %(sets)s, 1 + g %% 50, 1.0, 5.2, 10.0, \'[{"EffectType": 3, "Scale": 1.0}]\','
        " '{\"Damage\": 1}', jsonb_build_object('n', g, 'pad', repeat('x', %(pad)s))"
        " FROM generate_series(1, %(powers)s) g",
        {"sets": sets, "powers": powers, "pad": pad},
    )
    conn.execute("ANALYZE archetypes, powersets, powers")


def advance(conn: Conn, position: int) -> None:
    """Set every source projector's checkpoint to `position`, as the projections would."""
    for name in SOURCE_PROJECTORS:
        conn.execute(
            "INSERT INTO projection_checkpoints (projector, position) VALUES (%s, %s)"
            " ON CONFLICT (projector) DO UPDATE SET position = excluded.position, updated_at = now()",
            (name, position),
        )


def change_one_percent(conn: Conn) -> None:
    """Add 1 to the accuracy of every hundredth power."""
    conn.execute("UPDATE powers SET accuracy = accuracy + 1 WHERE id % 100 = 0")


def accuracy_sum(conn: Conn) -> float:
    row = conn.execute("SELECT sum(accuracy) FROM power_build_summary").fetchone()
    assert row is not None
    return float(row[0] or 0)


def wait_until(predicate: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    """Poll `predicate` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)  # polling interval, not a synchronization delay


def blocked_refresher(conn: Conn) -> int | None:
    """The pid of a powerlog refresh whose REFRESH statement waits for a lock, if there is one."""
    row = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s"
        " AND query LIKE 'REFRESH MATERIALIZED VIEW%%' AND wait_event_type = 'Lock'",
        (APPLICATION_NAME,),
    ).fetchone()
    return int(row[0]) if row else None


@contextmanager
def tables_locked(dsn: str) -> Iterator[Conn]:
    """Hold an ACCESS EXCLUSIVE lock on `powers` (a REFRESH then waits) until the block ends."""
    with psycopg.connect(dsn) as holder:
        holder.execute("LOCK TABLE powers IN ACCESS EXCLUSIVE MODE")
        try:
            yield holder
        finally:
            holder.rollback()


def outcomes(conn: Conn) -> list[str]:
    """The outcomes in `view_refreshes`, oldest first."""
    return [str(r[0]) for r in conn.execute("SELECT outcome FROM view_refreshes ORDER BY id").fetchall()]


def background_scheduler(db: Any, interval_s: float) -> tuple[Any, queue.Queue[Any]]:
    """A background scheduler (not started) and the queue each tick's result goes to."""
    import scheduler

    results: queue.Queue[scheduler.RefreshResult | None] = queue.Queue()
    sched = scheduler.build_scheduler(db, interval_s=interval_s, misfire_grace_s=1, blocking=False)
    sched.add_listener(lambda event: results.put(event.retval), EVENT_JOB_EXECUTED)
    return sched, results
