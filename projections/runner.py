"""How projections are driven: catch up once, follow the log, rebuild without downtime, replay as of an import."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from psycopg import sql

from events.errors import PowerlogError
from projections import bulk, ddl, dependents
from projections.beside import beside
from projections.projector import BatchCounts, catch_up, checkpoint
from projections.tables import CHECKPOINTS, HISTORY_TABLES, LIVE_SCHEMA, READ_TABLES, VIEW, history_table
from store import faults, imports, locks
from store.connection import Database
from store.errors import LockBusy
from store.log import head

log = structlog.get_logger(__name__)

SHADOW_SCHEMA = "powerlog_shadow"
RETIRED_SCHEMA = "powerlog_retired"

OnWait = Callable[[locks.Holder | None], None]


class ReplayError(PowerlogError):
    """A replay cannot be done as asked (unknown import, schema already there...)."""


@contextmanager
def _projector_lock(
    db: Database, conn: psycopg.Connection[Any], wait: bool, on_wait: OnWait | None
) -> Iterator[None]:
    """Hold the projector lock (waiting at most POWERLOG_LOCK_TIMEOUT) while the block writes projections."""
    locks.acquire(conn, locks.PROJECTOR, wait=wait, timeout_s=db.settings.lock_timeout_s, on_wait=on_wait)
    try:
        yield
    finally:
        if not conn.closed and not conn.broken:
            locks.release(conn, locks.PROJECTOR)


def project(
    db: Database,
    wait: bool = True,
    on_batch: Callable[[BatchCounts, int], None] | None = None,
    on_wait: OnWait | None = None,
) -> BatchCounts:
    """Catch the live read tables up with the log, then return."""
    with db.connect(autocommit=True) as conn, _projector_lock(db, conn, wait, on_wait):
        counts = catch_up(conn, LIVE_SCHEMA, range_size=db.settings.project_batch, on_batch=on_batch)
    log.info("projected", events=counts.events, position=counts.position, batches=counts.batches)
    return counts


@dataclass
class RebuildResult:
    counts: BatchCounts
    seconds: float
    swap_ms: float


def _build(
    db: Database,
    conn: psycopg.Connection[Any],
    schema: str,
    until: int | None,
    on_batch: Callable[[BatchCounts, int], None] | None,
) -> BatchCounts:
    with conn.transaction():
        ddl.drop_schema(conn, schema)
        ddl.create_tables(conn, schema)
    target = head(conn).position if until is None else until
    loaded = bulk.load_first_import(db, conn, schema, target, on_batch)
    counts = catch_up(conn, schema, range_size=db.settings.project_batch, until=target, on_batch=on_batch)
    if loaded is not None:
        loaded.add(counts)
        return loaded
    return counts


def _finish(db: Database, conn: psycopg.Connection[Any], schema: str) -> None:
    """Search indexes, view, privileges and statistics of a freshly built schema.

    The largest index is built on a second connection meanwhile: it is most of this work, and the server
    has another core for it. Nobody reads the schema before it is finished, so the two need not share a
    transaction; a failure on either side fails the whole, and the next build starts from a new schema."""
    with beside(db, ddl.search_index(schema, ddl.LARGEST_SEARCH_INDEX)) as largest:
        with conn.transaction():
            ddl.create_search_indexes(conn, schema, but=(ddl.LARGEST_SEARCH_INDEX,))
            ddl.create_view(conn, schema)
            ddl.grant(conn, schema)
        largest.join()
    # After the index: ANALYZE would queue behind its build's lock anyway.
    for table in ("powers", history_table("powers")):
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, table)))


def rebuild(
    db: Database,
    wait: bool = True,
    on_batch: Callable[[BatchCounts, int], None] | None = None,
    on_wait: OnWait | None = None,
) -> RebuildResult:
    """Build fresh tables in a shadow schema from position 0 and swap them in with one short transaction.

    The projector lock is held from the start: the shadow schema is one, so a second rebuild (or a
    projector) waits for this one instead of writing into it."""
    started = time.perf_counter()
    with db.connect(autocommit=True) as conn, _projector_lock(db, conn, wait, on_wait):
        counts = _build(db, conn, SHADOW_SCHEMA, None, on_batch)
        # Events that arrived during the build; then the view, over the final tables.
        more = catch_up(conn, SHADOW_SCHEMA, range_size=db.settings.project_batch)
        counts.events += more.events
        counts.position = checkpoint(conn, SHADOW_SCHEMA)
        _finish(db, conn, SHADOW_SCHEMA)
        faults.point("rebuild_built")
        try:
            swap_ms = _swap(db, conn)
        except PowerlogError:
            # Refused or busy: the live tables are as they were; the shadow would only be in the way.
            with conn.transaction():
                ddl.drop_schema(conn, SHADOW_SCHEMA)
            raise
    seconds = time.perf_counter() - started
    log.info(
        "rebuilt",
        events=counts.events,
        position=counts.position,
        seconds=round(seconds, 2),
        swap_ms=round(swap_ms, 1),
    )
    return RebuildResult(counts, seconds, swap_ms)


class SwapBusy(LockBusy):
    """The swap could not get the read tables within its attempts: a transaction keeps them in use."""


# Raised by a lock wait cut short (lock_timeout, the statement_timeout around the LOCK, a deadlock).
_BUSY = (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled, psycopg.errors.DeadlockDetected)
_BACKOFF_CAP_S = 5.0


def _swap(db: Database, conn: psycopg.Connection[Any]) -> float:
    """Swap the shadow tables in, keeping what users built on the live ones; the milliseconds it took.

    Readers queue behind a lock the swap waits for, so it never waits long: each try waits at most
    POWERLOG_SWAP_LOCK_TIMEOUT for all its locks, then gives them back (readers go on) and tries again
    after a backoff, POWERLOG_SWAP_ATTEMPTS times, before it gives up naming who holds the tables."""
    settings = db.settings
    holders = ""
    for attempt in range(1, settings.swap_attempts + 1):
        start = time.perf_counter()
        try:
            with conn.transaction():
                plan = _swap_once(conn, settings.swap_lock_timeout_s)
        except _BUSY as exc:
            holders = _holders(conn)
            log.warning(
                "rebuild_swap_busy",
                attempt=attempt,
                attempts=settings.swap_attempts,
                reason=type(exc).__name__,
                holders=holders or None,
            )
            if attempt < settings.swap_attempts:
                time.sleep(min(_BACKOFF_CAP_S, 0.1 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0))
            continue
        except psycopg.errors.DependentObjectsStillExist as exc:
            detail = " ".join((exc.diag.message_detail or "").split())
            raise dependents.DependentsRefused(
                f"rebuild would drop what depends on the read tables: {detail or exc}; nothing was changed"
            ) from None
        swap_ms = (time.perf_counter() - start) * 1000
        log.info("rebuild_swapped", attempt=attempt, swap_ms=round(swap_ms, 1), kept=plan.kept or None)
        return swap_ms
    raise SwapBusy(
        f"rebuild built its tables but could not swap them in: {settings.swap_attempts} tries each waited "
        f"{settings.swap_lock_timeout_s:g} s for the read tables, in use by {holders or 'another session'}. "
        "The live tables are unchanged; end that transaction and run rebuild again "
        "(or raise POWERLOG_SWAP_ATTEMPTS)"
    )


def _lock_all(conn: psycopg.Connection[Any], first: dependents.Plan, timeout: str) -> None:
    """Lock what the swap changes, in one statement so that `timeout` bounds the whole of it: it is the
    longest a reader waits behind us. Users' views first, then the view, then the tables: the order in
    which a reader of them takes its locks, so neither waits on the other in a cycle."""
    tables = [sql.Identifier(LIVE_SCHEMA, t) for t in (*READ_TABLES, *HISTORY_TABLES, CHECKPOINTS)]
    owner = conn.execute(
        "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = %s::regclass",
        (sql.Identifier(LIVE_SCHEMA, VIEW).as_string(conn),),
    ).fetchone()
    assert owner is not None
    steps = [
        # LOCK refuses materialized views; a change of owner to the same owner takes its exclusive lock.
        *[sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.SQL(n)) for n in first.lock],
        sql.SQL("ALTER MATERIALIZED VIEW {} OWNER TO {}").format(
            sql.Identifier(LIVE_SCHEMA, VIEW), sql.Identifier(str(owner[0]))
        ),
        sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.SQL(", ").join(tables)),
        *[sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(sql.SQL(n)) for n in first.fk_tables],
    ]
    body = "; ".join(step.as_string(conn) for step in steps)
    row = conn.execute(
        "SELECT current_setting('statement_timeout'), set_config('statement_timeout', %s, true)", (timeout,)
    ).fetchone()
    conn.execute(sql.SQL("DO {}").format(sql.Literal(f"BEGIN {body}; END")))
    conn.execute("SELECT set_config('statement_timeout', %s, true)", (row[0] if row else "0",))


def _swap_once(conn: psycopg.Connection[Any], timeout_s: float) -> dependents.Plan:
    """One try at the swap, inside the caller's transaction: raises one of _BUSY if a lock is not had in time."""
    timeout = f"{max(1, int(timeout_s * 1000))}ms"
    # Every lock this try waits for, the catalog look-ups' included, waits at most the timeout.
    conn.execute("SELECT set_config('lock_timeout', %s, true)", (timeout,))
    first = dependents.capture(conn, LIVE_SCHEMA, SHADOW_SCHEMA)  # what to lock; captured again under it
    _lock_all(conn, first, timeout)
    plan = dependents.capture(conn, LIVE_SCHEMA, SHADOW_SCHEMA)
    if not set(plan.lock) <= set(first.lock) or not set(plan.fk_tables) <= set(first.fk_tables):
        # A view or foreign key made between the two looks: it was not locked; try again.
        raise psycopg.errors.LockNotAvailable("a dependent appeared during the swap")
    ddl.drop_schema(conn, RETIRED_SCHEMA)
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(RETIRED_SCHEMA)))
    dependents.run(conn, plan.drop)
    ddl.move_all(conn, LIVE_SCHEMA, RETIRED_SCHEMA)
    ddl.move_all(conn, SHADOW_SCHEMA, LIVE_SCHEMA)
    dependents.recreate(conn, plan)
    # Without CASCADE: anything still depending on the old tables stops the swap instead of going with them.
    ddl.drop_all(conn, RETIRED_SCHEMA)
    conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(RETIRED_SCHEMA)))
    ddl.drop_schema(conn, SHADOW_SCHEMA)
    faults.point("rebuild_swap")
    return plan


def _holders(conn: psycopg.Connection[Any]) -> str:
    """The sessions holding locks on the live read tables, oldest transaction first, for messages."""
    rows = conn.execute(
        "SELECT DISTINCT a.pid, coalesce(nullif(a.application_name, ''), 'no application name'),"
        " coalesce(a.state, 'unknown state'), a.xact_start, left(regexp_replace(a.query, '\\s+', ' ', 'g'), 60)"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE l.granted AND l.locktype = 'relation' AND l.pid <> pg_backend_pid()"
        " AND n.nspname = %s AND c.relname = ANY(%s)"
        " ORDER BY a.xact_start NULLS LAST LIMIT 3",
        (LIVE_SCHEMA, [VIEW, *READ_TABLES, *HISTORY_TABLES, CHECKPOINTS]),
    ).fetchall()
    return ", ".join(
        f"PostgreSQL backend {pid} ({app}, {state}"
        + (f" since {start:%H:%M:%S}" if start else "")
        + (f", last query: {query}" if query else "")
        + ")"
        for pid, app, state, start, query in rows
    )


def replay(
    db: Database,
    as_of: int,
    schema: str,
    replace: bool = False,
    on_batch: Callable[[BatchCounts, int], None] | None = None,
) -> BatchCounts:
    """Build the read tables and view exactly as they were after import `as_of`, into `schema`."""
    if schema in (LIVE_SCHEMA, SHADOW_SCHEMA, RETIRED_SCHEMA) or schema.startswith("pg_"):
        raise ReplayError(f"schema {schema!r} is reserved; choose another name")
    with db.connect(autocommit=True) as conn:
        _, until = imports.state(conn, as_of)
        if ddl.schema_exists(conn, schema) and not replace:
            raise ReplayError(f"schema {schema!r} already exists; use --replace to overwrite it")
        counts = _build(db, conn, schema, until, on_batch)
        _finish(db, conn, schema)
    log.info("replayed", as_of=as_of, schema=schema, position=until, events=counts.events)
    return counts
