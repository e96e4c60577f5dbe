"""How projections are driven: catch up once, follow the log, rebuild without downtime, replay as of an import."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from psycopg import sql

from events.errors import PowerlogError
from projections import ddl
from projections.projector import BatchCounts, catch_up, checkpoint
from projections.tables import LIVE_SCHEMA, history_table
from store import faults, imports, locks
from store.connection import Database

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
    return catch_up(conn, schema, range_size=db.settings.project_batch, until=until, on_batch=on_batch)


def _finish(conn: psycopg.Connection[Any], schema: str) -> None:
    with conn.transaction():
        ddl.create_search_indexes(conn, schema)
        ddl.create_view(conn, schema)
        ddl.grant(conn, schema)
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
        _finish(conn, SHADOW_SCHEMA)
        faults.point("rebuild_built")
        swap_start = time.perf_counter()
        with conn.transaction():
            # Readers block for the length of this transaction only, then see the new tables.
            conn.execute("SET LOCAL lock_timeout = '30s'")
            ddl.drop_schema(conn, RETIRED_SCHEMA)
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(RETIRED_SCHEMA)))
            ddl.move_all(conn, LIVE_SCHEMA, RETIRED_SCHEMA)
            ddl.move_all(conn, SHADOW_SCHEMA, LIVE_SCHEMA)
            ddl.drop_schema(conn, RETIRED_SCHEMA)
            ddl.drop_schema(conn, SHADOW_SCHEMA)
            faults.point("rebuild_swap")
        swap_ms = (time.perf_counter() - swap_start) * 1000
    seconds = time.perf_counter() - started
    log.info(
        "rebuilt",
        events=counts.events,
        position=counts.position,
        seconds=round(seconds, 2),
        swap_ms=round(swap_ms, 1),
    )
    return RebuildResult(counts, seconds, swap_ms)


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
        _finish(conn, schema)
    log.info("replayed", as_of=as_of, schema=schema, position=until, events=counts.events)
    return counts
