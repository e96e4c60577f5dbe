"""Audits of the read tables: `verify` (chain, kept head, rebuild vs live, recorded fingerprint) and replay counts."""

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
from store import imports, log
from store.connection import Database
from store.errors import ChainError

logger = structlog.get_logger(__name__)

SCRATCH_PREFIX = "powerlog_verify_"


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
class VerifyReport:
    chain_head: log.Head | None = None
    chain_error: ChainError | None = None
    kept_head: log.Head | None = None
    head_error: ChainError | None = None
    checkpoint: int = 0
    tables: list[TableCheck] = field(default_factory=list)
    rebuild_error: str | None = None
    fingerprint: FingerprintCheck | None = None

    @property
    def failures(self) -> list[str]:
        out = []
        if self.chain_error is not None:
            out.append(f"chain: {self.chain_error}")
        if self.head_error is not None:
            out.append(f"head {self.kept_head}: {self.head_error}")
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
) -> tuple[int, dict[str, str], FingerprintCheck | None]:
    """Checkpoint, table hashes and recorded fingerprint, all from one snapshot: a projector running
    meanwhile cannot make the live tables and their checkpoint disagree."""
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
    return position, hashes, check


def rebuilt_hashes(conn: psycopg.Connection[Any], until: int, range_size: int) -> dict[str, str]:
    """Build the read tables from the log up to `until` in a scratch schema, hash them, drop the schema."""
    scratch = SCRATCH_PREFIX + secrets.token_hex(4)
    try:
        with conn.transaction():
            ddl.create_tables(conn, scratch)
        catch_up(conn, scratch, range_size=range_size, until=until)
        return table_hashes(conn, scratch)
    finally:
        with conn.transaction():
            ddl.drop_schema(conn, scratch)


def verify(db: Database, kept: log.Head | None = None) -> VerifyReport:
    """Check the hash chain, the kept head (if any), and that rebuilding from the log gives the live tables."""
    report = VerifyReport(kept_head=kept)
    with db.connect(autocommit=True) as conn:
        try:
            report.chain_head = log.verify_chain(conn)
        except ChainError as exc:
            report.chain_error = exc
        if kept is not None:
            try:
                log.check_head(conn, kept)
            except ChainError as exc:
                report.head_error = exc
        report.checkpoint, live, report.fingerprint = _live_snapshot(conn)
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
