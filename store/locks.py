"""Named advisory locks, taken the same way everywhere: at once if free, else wait at most a timeout, and
fail with one error that says who holds the lock.

The keys live together here so no two locks can collide.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog

from store.errors import LockBusy

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class AdvisoryLock:
    key: int
    name: str
    busy: str
    """What a holder is doing, for messages: "another import is writing to the log"."""
    waiting: str
    """The log event of a process that starts to wait for it."""
    awaited: str
    """What a waiter waits for: "another import to finish"."""
    transaction: bool
    """Transaction-scoped (released at commit or rollback) rather than held by the session until released."""


# Appends are serialized, so positions commit in the order they are given and a reader that has seen
# position N never later finds a committed event below N.
LOG = AdvisoryLock(
    0x706F7765726C6F67,  # "powerlog"
    "log",
    "another import is writing to the log",
    "waiting_for_other_import",
    "another import to finish",
    transaction=True,
)
# One process at a time writes the live read tables (a crash ends the session and releases it).
PROJECTOR = AdvisoryLock(
    0x70726F6A,  # "proj"
    "projector",
    "another powerlog process is projecting (project, follow or rebuild)",
    "waiting_for_other_projector",
    "the other projector to finish",
    transaction=False,
)
# One refresh of power_build_summary at a time, across every process and host sharing the database.
REFRESH = AdvisoryLock(
    0x706C5F7265667273,  # "pl_refrs"
    "refresh",
    "another process is refreshing power_build_summary",
    "waiting_for_other_refresh",
    "the other refresh to finish",
    transaction=False,
)


@dataclass(frozen=True)
class Holder:
    """The backend holding a lock, as pg_stat_activity shows it."""

    pid: int
    application: str
    client: str
    state: str

    def __str__(self) -> str:
        return f"held by PostgreSQL backend {self.pid} ({self.application}, from {self.client}, {self.state})"


def holder(conn: psycopg.Connection[Any], lock: AdvisoryLock) -> Holder | None:
    """Who holds the lock now, if anyone."""
    # A bigint advisory key shows in pg_locks split into classid (high half) and objid (low half).
    row = conn.execute(
        "SELECT l.pid, coalesce(nullif(a.application_name, ''), 'no application name'),"
        " coalesce(host(a.client_addr), 'a local socket'), coalesce(a.state, 'unknown state')"
        " FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
        " AND l.classid::bigint = %s AND l.objid::bigint = %s"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " LIMIT 1",
        (lock.key >> 32, lock.key & 0xFFFFFFFF),
    ).fetchone()
    return None if row is None else Holder(int(row[0]), str(row[1]), str(row[2]), str(row[3]))


def try_acquire(conn: psycopg.Connection[Any], lock: AdvisoryLock) -> bool:
    """Take the lock if it is free; never waits."""
    fn = "pg_try_advisory_xact_lock" if lock.transaction else "pg_try_advisory_lock"
    row = conn.execute(f"SELECT {fn}(%s)", (lock.key,)).fetchone()
    return bool(row and row[0])


def acquire(
    conn: psycopg.Connection[Any],
    lock: AdvisoryLock,
    *,
    wait: bool = True,
    timeout_s: float | None = None,
    on_wait: Callable[[Holder | None], None] | None = None,
) -> bool:
    """Take the lock: True if it was free, False if we had to wait for it.

    Held by another session: `LockBusy` at once with `wait=False`, else wait (telling `on_wait`), at most
    `timeout_s` seconds, then `LockBusy`. A transaction-scoped lock needs the caller's transaction open.
    """
    if try_acquire(conn, lock):
        return True
    other = holder(conn, lock)
    who = f" ({other})" if other else ""
    if not wait:
        raise LockBusy(f"{lock.busy}{who}; run again later or drop --no-wait")
    log.info(lock.waiting, lock=lock.name, holder=str(other) if other else None, timeout_s=timeout_s)
    if on_wait:
        on_wait(other)
    fn = "pg_advisory_xact_lock" if lock.transaction else "pg_advisory_lock"
    try:
        if timeout_s is None:
            conn.execute(f"SELECT {fn}(%s)", (lock.key,))
        else:
            # A transaction (or a savepoint in the caller's) so that the timeout is local to this wait:
            # it is set back once the lock is ours, and undone with the savepoint if it is not.
            with conn.transaction():
                row = conn.execute(
                    "SELECT current_setting('lock_timeout'), set_config('lock_timeout', %s, true)",
                    (f"{max(1, int(timeout_s * 1000))}ms",),
                ).fetchone()
                conn.execute(f"SELECT {fn}(%s)", (lock.key,))
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (row[0] if row else "0",))
    except psycopg.errors.LockNotAvailable:
        raise LockBusy(f"waited {timeout_s:g} s for {lock.awaited}; it is still running{who}") from None
    return False


def release(conn: psycopg.Connection[Any], lock: AdvisoryLock) -> None:
    """Give back a session-scoped lock (a transaction-scoped one goes with its transaction)."""
    if not lock.transaction:
        conn.execute("SELECT pg_advisory_unlock(%s)", (lock.key,))
