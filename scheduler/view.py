"""The view power_build_summary: staleness, one refresh at a time across processes, and its history."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
import structlog
from psycopg import sql
from psycopg.rows import dict_row

from events.errors import PowerlogError
from projections.tables import CHECKPOINTS, VIEW
from store import faults, locks
from store.backend import lower_priority
from store.connection import Database
from store.errors import SchemaError
from store.server import redact

log = structlog.get_logger(__name__)

SOURCE_PROJECTORS = ("archetypes", "powersets", "powers")
APPLICATION_NAME = "powerlog refresh"
ABANDONED = "abandoned: the refreshing process or its connection ended before the refresh finished"

Outcome = Literal["ok", "failed", "skipped", "fresh"]
Mode = Literal["concurrently", "plain"]


class RefreshFailed(PowerlogError):
    """A refresh ran and failed; it is recorded in `view_refreshes`."""


@dataclass(frozen=True)
class RefreshResult:
    """What one call to `refresh` did: 'ok', 'failed', 'skipped' (lock busy) or 'fresh' (nothing to do)."""

    outcome: Outcome
    mode: Mode | None = None
    refresh_id: int | None = None
    rows: int | None = None
    duration_ms: float | None = None
    source_position: int | None = None
    error: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class RefreshRecord:
    """One row of `view_refreshes`."""

    id: int
    view_name: str
    started_at: datetime
    finished_at: datetime | None
    duration_ms: float | None
    rows: int | None
    source_position: int | None
    outcome: str
    error: str | None
    mode: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: timestamps as ISO 8601 strings."""
        out = asdict(self)
        for key in ("started_at", "finished_at"):
            if out[key] is not None:
                out[key] = out[key].isoformat()
        return out


Conn = psycopg.Connection[Any]
_COLUMNS = "id, view_name, started_at, finished_at, duration_ms, rows, source_position, outcome, error, mode"


@contextmanager
def _schema_required() -> Iterator[None]:
    try:
        yield
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedObject) as exc:
        raise SchemaError(
            f"the refresh tables are missing ({' '.join(str(exc).split())}); run `powerlog db upgrade`"
        ) from None


def source_position(conn: Conn) -> int:
    """The log position the view's source tables are projected up to (0 before any projection)."""
    row = conn.execute(
        sql.SQL("SELECT coalesce(max(position), 0) FROM {} WHERE projector = ANY(%s)").format(
            sql.Identifier(CHECKPOINTS)
        ),
        (list(SOURCE_PROJECTORS),),
    ).fetchone()
    assert row is not None
    return int(row[0])


def is_populated(conn: Conn) -> bool:
    """Whether the view holds data (one made WITH NO DATA can be neither read nor refreshed concurrently)."""
    row = conn.execute("SELECT relispopulated FROM pg_class WHERE oid = %s::regclass", (VIEW,)).fetchone()
    assert row is not None
    return bool(row[0])


def mark_abandoned(conn: Conn) -> int:
    """Mark rows left `running` by a refresh whose process or connection is gone as `abandoned`; how many.

    Only a refresh holding the refresh lock inserts and ends a `running` row, and a dead session's lock
    goes with it: if the lock is free, no `running` row has a live refresh behind it. The lock is tried
    only when such a row exists, so a look at a healthy database never makes a refresh skip its tick."""
    found = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM view_refreshes WHERE view_name = %s AND outcome = 'running')", (VIEW,)
    ).fetchone()
    if not (found and found[0]) or not locks.try_acquire(conn, locks.REFRESH):
        return 0
    try:
        with conn.transaction():  # a savepoint in a caller's transaction, which a refusal must not abort
            return _mark_abandoned(conn)
    except psycopg.errors.InsufficientPrivilege:
        return 0  # a reader's session: the next refresh (or a look by the application) marks them
    finally:
        locks.release(conn, locks.REFRESH)


def _mark_abandoned(conn: Conn) -> int:
    """With the refresh lock held: every row still `running` belongs to a refresh that died."""
    cur = conn.execute(
        "UPDATE view_refreshes SET outcome = 'abandoned', error = %s"
        " WHERE view_name = %s AND outcome = 'running'",
        (ABANDONED, VIEW),
    )
    if cur.rowcount:
        log.warning("refresh_marked_abandoned", view=VIEW, rows=cur.rowcount)
    return cur.rowcount


def history(conn: Conn, limit: int = 10) -> list[RefreshRecord]:
    """The view's most recent refreshes, newest first (rows of dead refreshes marked abandoned first)."""
    mark_abandoned(conn)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT {_COLUMNS} FROM view_refreshes WHERE view_name = %s ORDER BY id DESC LIMIT %s",
            (VIEW, limit),
        ).fetchall()
    return [RefreshRecord(**row) for row in rows]


def last_refresh(conn: Conn) -> RefreshRecord | None:
    """The last successful refresh of the view, or None if it never had one."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {_COLUMNS} FROM view_refreshes WHERE view_name = %s AND outcome = 'ok'"
            " ORDER BY id DESC LIMIT 1",
            (VIEW,),
        ).fetchone()
    return RefreshRecord(**row) if row else None


def _refreshed_position(conn: Conn) -> int:
    last = last_refresh(conn)
    return (last.source_position or 0) if last else 0


def is_stale(conn: Conn) -> bool:
    """True when the source tables moved past the last successful refresh, or the view holds no data."""
    return not is_populated(conn) or source_position(conn) > _refreshed_position(conn)


def record_built(conn: Conn, position: int) -> None:
    """Record a view that a rebuild created WITH DATA over tables projected up to `position` (mode 'rebuild'):
    it is as fresh as a refresh there, so the next `--if-stale` refresh has nothing to do."""
    with _schema_required():
        conn.execute(
            "INSERT INTO view_refreshes"
            " (view_name, started_at, finished_at, rows, source_position, outcome, mode)"
            f" SELECT %s, clock_timestamp(), clock_timestamp(), count(*), %s, 'ok', 'rebuild' FROM {VIEW}",
            (VIEW, position),
        )


def status(conn: Conn) -> dict[str, Any]:
    """The view's refresh figures for `powerlog status`, JSON-ready."""
    with _schema_required():
        mark_abandoned(conn)
        position = source_position(conn)
        populated = is_populated(conn)
        last = last_refresh(conn)
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE outcome IN ('failed', 'abandoned')),"
            " count(*) FILTER (WHERE outcome IN ('failed', 'abandoned') AND id > %s),"
            " count(*) FILTER (WHERE outcome = 'abandoned')"
            " FROM view_refreshes WHERE view_name = %s",
            (last.id if last else 0, VIEW),
        ).fetchone()
        assert row is not None
        latest = history(conn, limit=1)
        holder = locks.holder(conn, locks.REFRESH)
    refreshed_position = (last.source_position or 0) if last else 0
    last_failed = next((r for r in latest if r.outcome in ("failed", "abandoned")), None)
    return {
        "view": VIEW,
        "populated": populated,
        "stale": not populated or position > refreshed_position,
        "source_position": position,
        "refreshed_position": refreshed_position if last else None,
        "last_refresh_at": last.finished_at.isoformat() if last and last.finished_at else None,
        "last_refresh_duration_ms": last.duration_ms if last else None,
        "last_refresh_rows": last.rows if last else None,
        "last_refresh_mode": last.mode if last else None,
        "refreshing_now": holder is not None,
        "failures": int(row[0]),
        "failures_since_last_ok": int(row[1]),
        "abandoned": int(row[2]),
        "last_error": last_failed.error if last_failed else None,
    }


def _one_line(exc: BaseException, dsn: str) -> str:
    text = " ".join(str(exc).split()) or "no message"
    return redact(f"{type(exc).__name__}: {text}", dsn)


def _record_failure(db: Database, conn: Conn, refresh_id: int, error: str) -> None:
    """Mark the row failed, on a new connection if the refreshing one is gone (terminated, server restart)."""
    stmt = (
        "UPDATE view_refreshes SET outcome = 'failed', error = %s, finished_at = clock_timestamp(),"
        " duration_ms = 1000 * extract(epoch FROM clock_timestamp() - started_at) WHERE id = %s"
    )
    try:
        if not conn.broken and not conn.closed:
            conn.rollback()  # no-op in autocommit; clears an aborted state otherwise
            conn.execute(stmt, (error, refresh_id))
            return
        with db.connect(autocommit=True) as other:
            other.execute(stmt, (error, refresh_id))
    except Exception as exc:
        # Left 'running': the next refresh, or `status`, marks it abandoned once this session is gone.
        log.warning("refresh_failure_not_recorded", refresh_id=refresh_id, reason=_one_line(exc, db.dsn))


def refresh(db: Database, *, if_stale: bool = False, concurrently: bool = True) -> RefreshResult:
    """Refresh the view once if this process gets the refresh lock; a failed refresh is recorded and returned.

    Plain (non-concurrent) refreshes block readers for their whole duration: use them only when asked, or
    when the view holds no data (CONCURRENTLY refuses an unpopulated view and readers cannot read it anyway).
    A connection failure before the refresh starts raises (`ServerUnavailable`): there is nothing to record.
    """
    # A pooled session: opening a backend per refresh costs a fork and a cold cache, which readers on
    # a small machine feel (bench/results/refresh.md).
    # What the refresh sets on the session (lock_timeout, application name, niceness) is undone by the
    # pool before the session is lent again (store.connection.reset_session).
    with db.pooled() as conn:
        conn.execute("SELECT set_config('application_name', %s, false)", (APPLICATION_NAME,))
        return _refresh_on(db, conn, if_stale, concurrently)


def _refresh_on(db: Database, conn: Conn, if_stale: bool, concurrently: bool) -> RefreshResult:
    """The body of `refresh`, on a session that is ours until it returns."""
    with _schema_required():
        if if_stale and not is_stale(conn):
            log.debug("refresh_not_needed", view=VIEW)
            return RefreshResult("fresh", reason="the view is up to date")
        if not locks.try_acquire(conn, locks.REFRESH):
            reason = "another process is refreshing"
            holder = locks.holder(conn, locks.REFRESH)
            log.info("refresh_skipped", view=VIEW, reason=reason, holder_pid=holder.pid if holder else None)
            return RefreshResult("skipped", reason=reason)
    try:
        return _refresh_locked(db, conn, if_stale, concurrently)
    finally:
        # Given back here rather than by the pool's reset, which runs later in a pool worker: the next
        # refresh may be lent another session and must find the lock free.
        if not conn.broken and not conn.closed:
            with suppress(psycopg.Error):  # a session that failed here is discarded by the pool, lock and all
                locks.release(conn, locks.REFRESH)


def _refresh_locked(db: Database, conn: Conn, if_stale: bool, concurrently: bool) -> RefreshResult:
    with _schema_required():
        # Under the lock: another process may have just refreshed, and nobody else is running now.
        if if_stale and not is_stale(conn):
            log.debug("refresh_not_needed", view=VIEW, reason="refreshed by another process meanwhile")
            return RefreshResult("fresh", reason="the view is up to date")
        _mark_abandoned(conn)
        populated = is_populated(conn)
        mode: Mode = "concurrently" if concurrently and populated else "plain"
        if concurrently and not populated:
            log.info("refresh_plain_unpopulated", view=VIEW, reason="the view holds no data yet")
        # Read before the REFRESH: its snapshot is later, so the view holds at least this position.
        position = source_position(conn)
        row = conn.execute(
            "INSERT INTO view_refreshes (view_name, started_at, outcome, mode, source_position)"
            " VALUES (%s, clock_timestamp(), 'running', %s, %s) RETURNING id",
            (VIEW, mode, position),
        ).fetchone()
        assert row is not None
        refresh_id = int(row[0])
    faults.point("refresh_running")
    return _run(db, conn, refresh_id, mode, position)


def _run(db: Database, conn: Conn, refresh_id: int, mode: Mode, position: int) -> RefreshResult:
    log.info("refresh_started", view=VIEW, refresh_id=refresh_id, mode=mode, source_position=position)
    # A table locked by someone else (a rebuild swapping tables) must fail this tick, not hang it forever.
    conn.execute(f"SET lock_timeout = {int(db.settings.lock_timeout_s * 1000)}")
    stmt = f"REFRESH MATERIALIZED VIEW {'CONCURRENTLY ' if mode == 'concurrently' else ''}{VIEW}"
    # Readers win the CPU: a refresh is background work, and on a small machine its backend otherwise
    # takes a core from the backends answering readers (bench/results/refresh.md).
    lower_priority(conn, db.settings.refresh_nice)
    start = time.perf_counter()
    try:
        conn.execute(stmt)
        duration_ms = (time.perf_counter() - start) * 1000
        count = conn.execute(f"SELECT count(*) FROM {VIEW}").fetchone()
        assert count is not None
        rows = int(count[0])
        conn.execute(
            "UPDATE view_refreshes SET outcome = 'ok', finished_at = clock_timestamp(), duration_ms = %s,"
            " rows = %s, source_position = %s WHERE id = %s",
            (duration_ms, rows, position, refresh_id),
        )
    except Exception as exc:
        error = _one_line(exc, db.dsn)
        _record_failure(db, conn, refresh_id, error)
        log.error("refresh_failed", view=VIEW, refresh_id=refresh_id, mode=mode, error=error)
        return RefreshResult(
            "failed",
            mode=mode,
            refresh_id=refresh_id,
            duration_ms=(time.perf_counter() - start) * 1000,
            source_position=position,
            error=error,
        )
    except BaseException as exc:  # Ctrl-C in `powerlog refresh`: record it, then let it stop the command
        _record_failure(db, conn, refresh_id, _one_line(exc, db.dsn) if str(exc) else "interrupted by user")
        raise
    log.info(
        "refresh_done",
        view=VIEW,
        refresh_id=refresh_id,
        mode=mode,
        rows=rows,
        duration_ms=round(duration_ms, 1),
        source_position=position,
    )
    if mode == "concurrently":
        _vacuum(db, conn, refresh_id)
    return RefreshResult(
        "ok", mode=mode, refresh_id=refresh_id, rows=rows, duration_ms=duration_ms, source_position=position
    )


def _vacuum(db: Database, conn: Conn, refresh_id: int) -> None:
    """VACUUM the view after a concurrent refresh, still under the refresh lock and at the refresh's niceness.

    A concurrent refresh rewrites every changed row and leaves the old one dead, and back to back autovacuum
    does not keep up: 50 refreshes of 5 % took a scale 3 view from 31.1 to 103.4 MB. With a VACUUM after each
    it stayed at 33.6 MB, the VACUUM 6 ms against a 0.64 s refresh (bench/results/growth-view-s25-pg15.md).
    The refresh is recorded by then: a VACUUM that fails (a rebuild holding the view past lock_timeout)
    leaves the dead rows to autovacuum and the next refresh.
    """
    start = time.perf_counter()
    try:
        conn.execute(f"VACUUM {VIEW}")
    except psycopg.Error as exc:
        log.warning("view_vacuum_failed", view=VIEW, refresh_id=refresh_id, error=_one_line(exc, db.dsn))
        return
    log.info(
        "view_vacuumed", view=VIEW, refresh_id=refresh_id, ms=round((time.perf_counter() - start) * 1000, 1)
    )
