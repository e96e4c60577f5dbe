"""Audits: `verify` (the chain, a kept head, each import's record and `streams` against the log, the read tables
against a rebuild and their recorded fingerprint, the view against its query) and replay counts."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import psycopg
import structlog
from psycopg import sql

from events.errors import PowerlogError
from projections import ddl
from projections.fingerprint import comparable, table_hashes
from projections.projector import catch_up, checkpoint
from projections.tables import LIVE_SCHEMA, READ_TABLES, VIEW
from scheduler.view import is_populated, last_refresh
from store import faults, imports, log
from store.connection import Database
from store.errors import ChainError

logger = structlog.get_logger(__name__)

SCRATCH_PREFIX = "powerlog_verify_"
# Each scratch schema is guarded by a session advisory lock (this class, the schema name's hashtext) taken
# before the schema exists and held until it is dropped: a scratch schema whose lock is free belongs to a
# session that is gone. The two-key form never meets the one-key locks of store.locks.
SCRATCH_LOCK_CLASS = 0x706C7672  # "plvr"
STREAMS_SHOWN = 5
VIEW_IDS_SHOWN = 10


class VerifyError(PowerlogError):
    """The log or the read tables do not hold what they should; the message names what failed."""


@dataclass
class TableCheck:
    table: str
    live: str
    rebuilt: str | None

    @property
    def ok(self) -> bool:
        return self.live == self.rebuilt


@dataclass
class FingerprintCheck:
    import_id: int
    recorded: str | None
    live: str

    @property
    def ok(self) -> bool:
        # An import projected before fingerprints were recorded has none: nothing to hold it against.
        return self.recorded is None or self.recorded == self.live


@dataclass
class ViewCheck:
    """power_build_summary against its defining query over the live read tables, in one snapshot."""

    checked: bool
    differing_ids: list[int] = field(default_factory=list)
    differing: int = 0
    note: str | None = None

    @property
    def ok(self) -> bool:
        return self.differing == 0


@dataclass
class VerifyReport:
    chain_head: log.Head | None = None
    chain_error: ChainError | None = None
    kept_head: log.Head | None = None
    head_error: ChainError | None = None
    checkpoint: int = 0
    tables: list[TableCheck] = field(default_factory=list)
    rebuild_error: str | None = None
    fingerprint: FingerprintCheck | None = None
    imports_errors: list[str] = field(default_factory=list)
    streams_differing: int = 0
    streams_shown: list[log.StreamMismatch] = field(default_factory=list)
    view: ViewCheck | None = None

    @property
    def failures(self) -> list[str]:
        out = []
        if self.chain_error is not None:
            out.append(f"chain: {self.chain_error}")
        if self.head_error is not None:
            out.append(f"head {self.kept_head}: {self.head_error}")
        out.extend(f"imports: {e}" for e in self.imports_errors)
        if self.streams_differing:
            shown = "; ".join(
                f"{m.stream_id}: recorded {m.recorded or 'no row'}, log gives {m.derived or 'no event'}"
                for m in self.streams_shown
            )
            more = self.streams_differing - len(self.streams_shown)
            out.append(
                f"streams: {self.streams_differing} stream(s) differ from the fold of the log: {shown}"
                + (f" and {more} more" if more > 0 else "")
            )
        if self.rebuild_error is not None:
            out.append(f"rebuild: {self.rebuild_error}")
        bad = [t.table for t in self.tables if not t.ok]
        if bad and self.rebuild_error is None:
            out.append(
                f"read tables differ from their rebuild from the log at position {self.checkpoint}: "
                + ", ".join(bad)
            )
        if self.fingerprint is not None and not self.fingerprint.ok:
            out.append(
                f"the read tables' fingerprint differs from the one recorded with import"
                f" {self.fingerprint.import_id}"
            )
        if self.view is not None and not self.view.ok:
            ids = ", ".join(map(str, self.view.differing_ids))
            cut = " …" if self.view.differing > len(self.view.differing_ids) else ""
            out.append(
                f"view: {VIEW} differs from its query over the read tables at position {self.checkpoint}:"
                f" {self.view.differing} row(s) (power ids {ids}{cut}); `powerlog refresh` rebuilds it"
            )
        return out

    @property
    def ok(self) -> bool:
        return not self.failures

    def raise_for_failures(self) -> None:
        if self.failures:
            raise VerifyError("verify failed: " + "; ".join(self.failures))

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failures": self.failures,
            "chain": {
                "ok": self.chain_error is None,
                "head": str(self.chain_head) if self.chain_head else None,
                "bad_position": self.chain_error.position if self.chain_error else None,
                "error": str(self.chain_error) if self.chain_error else None,
            },
            "kept_head": None
            if self.kept_head is None
            else {
                "head": str(self.kept_head),
                "ok": self.head_error is None,
                "error": str(self.head_error) if self.head_error else None,
            },
            "checkpoint": self.checkpoint,
            "tables": {t.table: {"ok": t.ok, "live": t.live, "rebuilt": t.rebuilt} for t in self.tables},
            "rebuild_error": self.rebuild_error,
            "imports": {"ok": not self.imports_errors, "errors": self.imports_errors},
            "streams": {
                "ok": self.streams_differing == 0,
                "differing": self.streams_differing,
                "shown": [m._asdict() for m in self.streams_shown],
            },
            "view": None
            if self.view is None
            else {
                "checked": self.view.checked,
                "ok": self.view.ok,
                "differing": self.view.differing,
                "differing_ids": self.view.differing_ids,
                "note": self.view.note,
            },
            "fingerprint": None
            if self.fingerprint is None
            else {
                "import_id": self.fingerprint.import_id,
                "recorded": self.fingerprint.recorded,
                "live": self.fingerprint.live,
                "ok": self.fingerprint.ok,
            },
        }


def _live_snapshot(
    conn: psycopg.Connection[Any],
) -> tuple[int, dict[str, str], FingerprintCheck | None, ViewCheck]:
    """Checkpoint, table hashes, recorded fingerprint and the view's check, all from one snapshot: a
    projector or a refresh running meanwhile cannot make them disagree."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        position = checkpoint(conn, LIVE_SCHEMA)
        hashes = table_hashes(conn, LIVE_SCHEMA)
        row = imports.ending_at(conn, position)
        check = (
            None
            if row is None
            else FingerprintCheck(
                row.id, row.fingerprint, comparable(conn, row.fingerprint, LIVE_SCHEMA, hashes)
            )
        )
        view = _view_check(conn, position)
    return position, hashes, check, view


def _view_check(conn: psycopg.Connection[Any], position: int) -> ViewCheck:
    """The view's rows against its query, both ways, when it was last refreshed at the read tables'
    position. A stale view is not compared: it shows an older state on purpose, and the next refresh
    rebuilds it whole from the tables."""
    if not is_populated(conn):
        return ViewCheck(False, note="not populated; the next refresh fills it")
    last = last_refresh(conn)
    refreshed = (last.source_position or 0) if last else 0
    if refreshed != position:
        return ViewCheck(
            False, note=f"stale: refreshed at position {refreshed}, the read tables are at {position}"
        )
    # Row against row by power id (the view's unique key): a hash join, several times faster than EXCEPT
    # ALL, which sorts every jsonb column.
    query = sql.SQL(ddl.VIEW_QUERY).format(schema=sql.Identifier(LIVE_SCHEMA))
    rows = conn.execute(
        sql.SQL(
            "SELECT coalesce(v.id, q.id) AS id, count(*) OVER () FROM {view} v FULL JOIN ({query}) q ON q.id = v.id"
            " WHERE ROW(v.*) IS DISTINCT FROM ROW(q.*) ORDER BY 1 LIMIT %s"
        ).format(view=sql.Identifier(LIVE_SCHEMA, VIEW), query=query),
        (VIEW_IDS_SHOWN,),
    ).fetchall()
    return ViewCheck(True, [int(r[0]) for r in rows], int(rows[0][1]) if rows else 0)


def _scratch_lock(conn: psycopg.Connection[Any], schema: str, wait: bool) -> bool:
    if wait:
        conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (SCRATCH_LOCK_CLASS, schema))
        return True
    row = conn.execute(
        "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (SCRATCH_LOCK_CLASS, schema)
    ).fetchone()
    return row is not None and bool(row[0])


def _scratch_unlock(conn: psycopg.Connection[Any], schema: str) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (SCRATCH_LOCK_CLASS, schema))


def drop_abandoned_scratch(conn: psycopg.Connection[Any]) -> list[str]:
    """Drop the scratch schemas of verifies that died before dropping them (their session's lock is free);
    those of running verifies stay. Needs an autocommit connection. Returns the names dropped."""
    rows = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s) ORDER BY 1", (SCRATCH_PREFIX,)
    ).fetchall()
    dropped = []
    for (name,) in rows:
        if not _scratch_lock(conn, name, wait=False):
            continue  # a live session is still using it
        try:
            ddl.drop_schema(conn, name)
            dropped.append(name)
        finally:
            _scratch_unlock(conn, name)
    if dropped:
        logger.warning("abandoned_scratch_dropped", schemas=dropped)
    return dropped


def rebuilt_hashes(conn: psycopg.Connection[Any], until: int, range_size: int) -> dict[str, str]:
    """Build the read tables from the log up to `until` in a scratch schema, hash them, drop the schema.

    `conn` must be in autocommit mode: the scratch schema's lock is held by its session until it is gone."""
    scratch = SCRATCH_PREFIX + secrets.token_hex(4)
    _scratch_lock(conn, scratch, wait=True)
    try:
        with conn.transaction():
            ddl.create_tables(conn, scratch)
        catch_up(conn, scratch, range_size=range_size, until=until)
        faults.point("verify_rebuilt")
        return table_hashes(conn, scratch)
    finally:
        try:
            with conn.transaction():
                ddl.drop_schema(conn, scratch)
        finally:
            _scratch_unlock(conn, scratch)


def verify(db: Database, kept: log.Head | None = None) -> VerifyReport:
    """Check the hash chain, the kept head (if any), what each import recorded and `streams` against the log,
    that rebuilding from the log gives the live tables, and the view against its query."""
    report = VerifyReport(kept_head=kept)
    with db.connect(autocommit=True) as conn:
        drop_abandoned_scratch(conn)
        try:
            report.chain_head = log.verify_chain(conn)
        except ChainError as exc:
            report.chain_error = exc
        if kept is not None:
            try:
                log.check_head(conn, kept)
            except ChainError as exc:
                report.head_error = exc
        report.imports_errors = log.imports_against_log(conn)
        report.streams_differing, report.streams_shown = log.streams_against_log(conn, STREAMS_SHOWN)
        report.checkpoint, live, report.fingerprint, report.view = _live_snapshot(conn)
        try:
            rebuilt: dict[str, str] = rebuilt_hashes(conn, report.checkpoint, db.settings.project_batch)
        except (PowerlogError, psycopg.DatabaseError) as exc:
            # An altered log may not even fold; that is reported, with whatever else failed.
            report.rebuild_error = " ".join(str(exc).split())
            rebuilt = {}
        report.tables = [TableCheck(t, live[t], rebuilt.get(t)) for t in live]
    logger.info("verified", ok=report.ok, failures=report.failures)
    return report


def schema_rows(conn: psycopg.Connection[Any], schema: str) -> dict[str, int]:
    """Rows per read table and in the summary view of a schema."""
    out = {}
    for name in (*READ_TABLES, VIEW):
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name))).fetchone()
        out[name] = int(row[0]) if row else 0
    return out
