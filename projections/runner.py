"""How projections are driven: catch up once, follow the log, rebuild without downtime, replay as of an import."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from psycopg import sql

from events.errors import PowerlogError
from projections import ddl
from projections.projector import LIVE_SCHEMA, BatchCounts, catch_up, checkpoint, log_head
from store.audit import import_state
from store.connection import Database
from store.log import NOTIFY_CHANNEL

log = structlog.get_logger(__name__)

# Session-level: one process at a time writes the live read tables (a crash releases it).
PROJECTOR_LOCK_KEY = 0x70726F6A  # "proj"
SHADOW_SCHEMA = "powerlog_shadow"
RETIRED_SCHEMA = "powerlog_retired"


class ProjectorBusy(PowerlogError):
    """Another process is projecting and we were asked not to wait."""


class ReplayError(PowerlogError):
    """A replay cannot be done as asked (unknown import, schema already there...)."""


def _take_lock(conn: psycopg.Connection[Any], wait: bool, on_wait: Callable[[], None] | None = None) -> None:
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (PROJECTOR_LOCK_KEY,)).fetchone()
    if row and row[0]:
        return
    if not wait:
        raise ProjectorBusy(
            "another powerlog process is projecting (project, follow or rebuild); try again later"
        )
    log.info("waiting_for_other_projector")
    if on_wait:
        on_wait()
    conn.execute("SELECT pg_advisory_lock(%s)", (PROJECTOR_LOCK_KEY,))


def _release_lock(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s)", (PROJECTOR_LOCK_KEY,))


def project(
    db: Database,
    wait: bool = True,
    on_batch: Callable[[BatchCounts, int], None] | None = None,
    on_wait: Callable[[], None] | None = None,
) -> BatchCounts:
    """Catch the live read tables up with the log, then return."""
    with db.connect(autocommit=True) as conn:
        _take_lock(conn, wait, on_wait)
        try:
            counts = catch_up(conn, LIVE_SCHEMA, range_size=db.settings.project_batch, on_batch=on_batch)
        finally:
            _release_lock(conn)
    log.info("projected", events=counts.events, position=counts.position, batches=counts.batches)
    return counts


def follow(
    db: Database,
    stop: threading.Event,
    poll_s: float = 5.0,
    on_round: Callable[[BatchCounts, int], None] | None = None,
) -> None:
    """Project, then wait for NOTIFY (or `poll_s` at most) and project again, until `stop` is set."""
    with db.connect(autocommit=True) as conn, db.connect(autocommit=True) as listener:
        _take_lock(conn, wait=True)
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL)))
        try:
            while not stop.is_set():
                counts = catch_up(conn, LIVE_SCHEMA)
                head = log_head(conn)
                lag = head - counts.position
                log.info("follow_round", applied=counts.events, position=counts.position, head=head, lag=lag)
                if on_round:
                    on_round(counts, lag)
                # Wake on the first notification, or after poll_s in case one was missed.
                deadline = time.monotonic() + poll_s
                while not stop.is_set() and time.monotonic() < deadline:
                    if any(True for _ in listener.notifies(timeout=min(0.5, poll_s), stop_after=1)):
                        break
        finally:
            _release_lock(conn)


@dataclass
class RebuildResult:
    counts: BatchCounts
    seconds: float
    swap_ms: float


def _build(
    conn: psycopg.Connection[Any],
    schema: str,
    until: int | None,
    on_batch: Callable[[BatchCounts, int], None] | None,
) -> BatchCounts:
    with conn.transaction():
        ddl.drop_schema(conn, schema)
        ddl.create_tables(conn, schema)
    return catch_up(conn, schema, until=until, on_batch=on_batch)


def _finish(conn: psycopg.Connection[Any], schema: str) -> None:
    with conn.transaction():
        ddl.create_search_indexes(conn, schema)
        ddl.create_view(conn, schema)
        ddl.grant(conn, schema)
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, "powers")))


def rebuild(db: Database, on_batch: Callable[[BatchCounts, int], None] | None = None) -> RebuildResult:
    """Build fresh tables in a shadow schema from position 0 and swap them in with one short transaction."""
    started = time.perf_counter()
    with db.connect(autocommit=True) as conn:
        counts = _build(conn, SHADOW_SCHEMA, None, on_batch)
        _take_lock(conn, wait=True)
        try:
            # Events that arrived during the build; then the view, over the final tables.
            more = catch_up(conn, SHADOW_SCHEMA)
            counts.events += more.events
            counts.position = checkpoint(conn, SHADOW_SCHEMA)
            _finish(conn, SHADOW_SCHEMA)
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
            swap_ms = (time.perf_counter() - swap_start) * 1000
        finally:
            _release_lock(conn)
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
        _, until = import_state(conn, as_of)
        if ddl.schema_exists(conn, schema) and not replace:
            raise ReplayError(f"schema {schema!r} already exists; use --replace to overwrite it")
        counts = _build(conn, schema, until, on_batch)
        _finish(conn, schema)
    log.info("replayed", as_of=as_of, schema=schema, position=until, events=counts.events)
    return counts
