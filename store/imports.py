"""The `imports` table: one row per import, written in the same transaction as its events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from store import log
from store.connection import Database
from store.errors import LogIncomplete, UnknownImport
from store.log import Appended


@dataclass
class ImportMeta:
    """What an import says about its source, before it knows what it will append."""

    source_path: str
    label: str | None = None
    source_version: str | None = None
    source_date: str | None = None
    source_issue: int | None = None
    content_hash: str | None = None


@dataclass
class ImportRow:
    id: int
    source_path: str
    label: str | None
    source_version: str | None
    source_date: str | None
    source_issue: int | None
    content_hash: str | None
    status: str
    counts: dict[str, dict[str, int]]
    warnings: list[Any]
    errors: list[Any]
    started_at: datetime
    completed_at: datetime | None
    first_position: int | None
    last_position: int | None
    head_chain_hash: str | None
    fingerprint: str | None = field(default=None)

    @property
    def outcome(self) -> str:
        """'completed', 'no changes' (completed, appended nothing) or 'failed'."""
        if self.status == "completed" and self.first_position is None:
            return "no changes"
        return self.status


def _values(meta: ImportMeta) -> tuple[Any, ...]:
    """The row's source columns, in the order both INSERTs name them."""
    return (
        meta.source_path,
        meta.label,
        meta.source_version,
        meta.source_date,
        meta.source_issue,
        meta.content_hash,
    )


def begin(conn: psycopg.Connection[Any], meta: ImportMeta) -> int:
    """Insert the import's row inside its transaction (which holds `store.locks.LOG`); a rollback removes
    it with the events. Refused (`LogIncomplete`) when the log no longer ends where the last completed
    import left it."""
    check_log_reaches_last_import(conn)
    row = conn.execute(
        "INSERT INTO imports (source_path, label, source_version, source_date, source_issue, content_hash,"
        " status) VALUES (%s, %s, %s, %s, %s, %s, 'completed') RETURNING id",
        _values(meta),
    ).fetchone()
    assert row is not None
    return int(row[0])


def complete(
    conn: psycopg.Connection[Any],
    import_id: int,
    content_hash: str | None,
    counts: dict[str, dict[str, int]],
    warnings: list[Any],
    appended: Appended | None,
    head_chain_hash: str,
) -> None:
    """Fill in what the import did, in the same transaction as its events.

    The application role may not UPDATE `imports` (migration 0006): a function owned by the schema's owner
    records it, after checking the positions and head against the log."""
    conn.execute(
        "SELECT powerlog_complete_import(%s::int8, %s::text, %s, %s, %s::int8, %s::int8, %s::text)",
        (
            import_id,
            content_hash,
            Jsonb(counts),
            Jsonb(warnings),
            appended.first_position if appended else None,
            appended.last_position if appended else None,
            head_chain_hash,
        ),
    )


def check_log_reaches_last_import(conn: psycopg.Connection[Any]) -> None:
    """Fail unless the log's head is the head the last completed import recorded.

    Only imports append, one at a time, each recording the head it left: any other head means events were
    cut from (or added to) the log outside powerlog. Diffing against `streams` then would call a release
    whose events were lost "already in the log", and it could never come back."""
    last = last_completed(conn)
    if last is None or last.head_chain_hash is None:
        return
    head = log.head(conn)
    if str(head) == last.head_chain_hash:
        return
    recorded = last.head_chain_hash.partition(":")[0]
    held = f"positions {last.first_position}..{last.last_position}" if last.first_position else "no events"
    raise LogIncomplete(
        head.position,
        f"the log does not end where import {last.id} left it: that import ({held}) recorded head"
        f" {recorded}, the log's head is now {head.position}; events were cut from or added to the log"
        " outside powerlog. Nothing was imported: restore the database from a backup"
        " (`powerlog verify` names what is missing)",
    )


def record_failure(db: Database, meta: ImportMeta, errors: list[str], warnings: list[Any]) -> int:
    """Record a failed attempt in a transaction of its own (the import's own one was rolled back)."""
    with db.connect() as conn:
        row = conn.execute(
            "INSERT INTO imports (source_path, label, source_version, source_date, source_issue, content_hash,"
            " status, errors, warnings, completed_at) VALUES (%s, %s, %s, %s, %s, %s, 'failed', %s, %s,"
            " clock_timestamp()) RETURNING id",
            (*_values(meta), Jsonb(errors), Jsonb(warnings)),
        ).fetchone()
    assert row is not None
    return int(row[0])


_COLUMNS = (
    "id, source_path, label, source_version, source_date, source_issue, content_hash, status, counts,"
    " warnings, errors, started_at, completed_at, first_position, last_position, head_chain_hash, fingerprint"
)


def get(conn: psycopg.Connection[Any], import_id: int) -> ImportRow | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM imports WHERE id = %s", (import_id,)).fetchone()
    return None if row is None else ImportRow(*row)


def state(conn: psycopg.Connection[Any], import_id: int) -> tuple[ImportRow, int]:
    """A completed import's row and the log position right after it committed (0 while the log was empty)."""
    row = get(conn, import_id)
    if row is None:
        raise UnknownImport(f"there is no import {import_id} (see `powerlog imports`)")
    if row.status != "completed":
        raise UnknownImport(f"import {import_id} failed; the log holds nothing from it")
    return row, log.position_after_import(conn, import_id)


def last_with_content(conn: psycopg.Connection[Any], content_hash: str) -> ImportRow | None:
    """The newest completed import of an export with this content hash."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM imports WHERE status = 'completed' AND content_hash = %s ORDER BY id DESC LIMIT 1",
        (content_hash,),
    ).fetchone()
    return None if row is None else ImportRow(*row)


def ending_at(conn: psycopg.Connection[Any], position: int) -> ImportRow | None:
    """The newest completed import whose events end at this log position."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM imports WHERE status = 'completed' AND last_position = %s"
        " ORDER BY id DESC LIMIT 1",
        (position,),
    ).fetchone()
    return None if row is None else ImportRow(*row)


def boundaries(conn: psycopg.Connection[Any], after: int, until: int) -> dict[int, int]:
    """Last position -> import id, for each completed import whose events end in (after, until]."""
    rows = conn.execute(
        "SELECT last_position, id FROM imports WHERE status = 'completed' AND last_position > %s"
        " AND last_position <= %s",
        (after, until),
    ).fetchall()
    return {int(pos): int(i) for pos, i in rows}


def failed_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM imports WHERE status = 'failed'").fetchone()
    return int(row[0]) if row else 0


def all_imports(conn: psycopg.Connection[Any]) -> list[ImportRow]:
    return [ImportRow(*r) for r in conn.execute(f"SELECT {_COLUMNS} FROM imports ORDER BY id").fetchall()]


def last_completed(conn: psycopg.Connection[Any]) -> ImportRow | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM imports WHERE status = 'completed' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    return None if row is None else ImportRow(*row)


def set_fingerprint(conn: psycopg.Connection[Any], import_id: int, fingerprint: str) -> None:
    """Record the read tables' fingerprint as they stand right after this import was projected."""
    conn.execute("SELECT powerlog_set_fingerprint(%s::int8, %s::text)", (import_id, fingerprint))
