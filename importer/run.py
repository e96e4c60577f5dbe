"""One import: read an export, diff it against the log's stream heads, append the difference atomically."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import psycopg
import structlog

from events.mids import KINDS
from importer import diff as chunking
from importer.appender import Appender
from importer.diff import Differ, empty_counts
from importer.errors import ImportInputError, ImportInterrupted
from importer.limits import ReadLimits
from importer.source import ExportHeader, ExportReader, FileKeys, read_export
from importer.unchanged import UnchangedFiles
from store import faults, files, imports, locks, log
from store.connection import Database
from store.errors import ConcurrencyError
from store.imports import ImportMeta

logger = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Progress:
    """Where a running import is: for a progress bar."""

    files_done: int
    files_total: int
    records: int
    file: str


@dataclass
class ImportResult:
    source_path: str
    header: ExportHeader | None
    content_hash: str | None
    counts: dict[str, dict[str, int]]
    warnings: list[dict[str, Any]]
    dry_run: bool
    import_id: int | None = None
    appended: log.Appended | None = None
    head: log.Head | None = None
    seconds: float = 0.0
    waited_for_lock: bool = False
    records: int = 0
    files: int = 0
    shortcut: bool = False
    """Whether the export was recognised by its content hash as the last import, without parsing it."""
    files_reused: int = 0
    """Files not parsed: their bytes were as an earlier import read them, with the log unchanged since."""
    started: float = field(default_factory=time.perf_counter)
    committed: bool = False

    @property
    def events(self) -> int:
        return sum(c["added"] + c["changed"] + c["removed"] for c in self.counts.values())

    @property
    def no_changes(self) -> bool:
        return self.events == 0


def _utf8(text: str) -> str:
    """A file name need not be UTF-8 (Python keeps its stray bytes as lone surrogates), but the database
    takes only UTF-8: such bytes are stored as \\xNN."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that stands for no byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


BATCH_BYTES: Final = 8 * 1024 * 1024
"""Bytes of records an append batch holds at most (besides POWERLOG_IMPORT_BATCH events). A batch is also
appended as soon as the differ's chunk that gave it is done: held over until it filled, the changes of
an incremental import (a few in each chunk, each with its old and new record and its patch) kept about
18 MB more at the peak of a scale 30 import, and only from scale 10 up, where they fill a batch."""
LIVE_FETCH: Final = 1000
"""Live streams fetched at a time by the server-side cursor that looks for removed entities. It runs last,
above what the import holds by then: with 5,000 (and keys written 1 MB at a time, store/files.py) a scale
120 incremental import peaked at 90.3 MB, with 1,000 at 85.2 (single runs)."""


def run_import(
    db: Database,
    path: str | os.PathLike[str],
    *,
    label: str | None = None,
    dry_run: bool = False,
    strict: bool = False,
    read_all: bool = False,
    wait: bool = True,
    limits: ReadLimits | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_wait: Callable[[locks.Holder | None], None] | None = None,
) -> ImportResult:
    """Import one export in one transaction; with `dry_run`, compute the same diff and write nothing.

    A file whose bytes an earlier import read, with the log unchanged since, is not parsed again (its keys
    are taken from `file_keys`); `read_all` parses every file regardless, even of the export imported last.

    Bad input raises `ImportInputError` after recording the failed attempt in `imports`; nothing else
    is written. A concurrent import is waited for (or `LockBusy` with `wait=False`).
    """
    source_path = str(Path(path).resolve()) if Path(path).exists() else str(path)
    source_path = _utf8(source_path)
    limits = limits or ReadLimits(max_total_bytes=db.settings.max_export_bytes)
    meta = ImportMeta(source_path=source_path, label=label)
    result = ImportResult(source_path, None, None, empty_counts(), [], dry_run)
    structlog.contextvars.bind_contextvars(source=source_path)
    try:
        with db.connect() as conn:
            try:
                _run(conn, db, path, meta, result, strict, read_all, wait, limits, on_progress, on_wait)
            except KeyboardInterrupt:
                if result.committed:
                    raise
                raise ImportInterrupted(
                    "interrupted: the import was rolled back; nothing was written to the log"
                ) from None
            except (ImportInputError, ConcurrencyError) as exc:
                conn.rollback()
                if not dry_run:
                    failed = imports.record_failure(db, meta, [_utf8(str(exc))], result.warnings)
                    logger.error("import_failed", import_id=failed, error=str(exc))
                raise
    finally:
        structlog.contextvars.unbind_contextvars("source", "import_id")
    result.seconds = time.perf_counter() - result.started
    return result


def _run(
    conn: psycopg.Connection[Any],
    db: Database,
    path: str | os.PathLike[str],
    meta: ImportMeta,
    result: ImportResult,
    strict: bool,
    read_all: bool,
    wait: bool,
    limits: ReadLimits,
    on_progress: Callable[[Progress], None] | None,
    on_wait: Callable[[locks.Holder | None], None] | None,
) -> None:
    # Read the header first: a missing or broken I12.json fails before we queue behind another import.
    with read_export(path, limits, strict) as reader, contextlib.ExitStack() as stack:
        result.header = reader.header
        meta.source_version = str(reader.header.version)
        meta.source_date = reader.header.date
        meta.source_issue = reader.header.issue
        conn.execute("BEGIN" if not result.dry_run else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        if not result.dry_run:
            got = locks.acquire(
                conn,
                locks.LOG,
                wait=wait,
                timeout_s=db.settings.lock_timeout_s,
                on_wait=on_wait,
            )
            result.waited_for_lock = not got
        # Into an empty log nothing can be taken from an earlier import: no pass over the bytes to hash
        # them first (they are hashed as they are read).
        head = log.head(conn)
        earlier = not read_all and head.position > 0
        if earlier and _already_in_log(conn, reader, result, strict, head):
            result.files = len(reader.files)
            _finish(conn, meta, result)
            return
        # The last import's keys per kind: the reader's record of keys read is sized once for about as many.
        live = log.live_counts(conn)
        reader.expect(live)
        # The diff reads the log as it was before this import (the lock keeps other writers out, and each
        # key is read once), on a connection of its own: the import's is busy appending meanwhile.
        reads = conn if result.dry_run else stack.enter_context(db.connect())
        if earlier:
            base = files.reusable_import(conn, str(head), reader.reading)
            if base is not None:
                unchanged = UnchangedFiles(reads, *base, reader)
                if unchanged:
                    reader.reuse(unchanged)
                    logger.info("unchanged_files", files=len(unchanged), read_by_import=base[0])
        recorder = files.Recorder(reader.reading)
        differ = Differ(
            lambda sids: log.heads_of(reads, sids),
            lambda sids: log.current_records(reads, sids),
            chunk_records=chunking.CHUNK_RECORDS,
            chunk_bytes=chunking.CHUNK_BYTES,
            counts=result.counts,
        )
        import_id: int | None = None
        pending: list[log.Pending] = []
        pending_bytes = 0
        batches = 0
        files_total = len(reader.files)
        current_file = ""
        files_done = 0

        def begin() -> int:
            nonlocal import_id
            if import_id is None:
                import_id = imports.begin(conn, meta)
                result.import_id = import_id
                structlog.contextvars.bind_contextvars(import_id=import_id)
            return import_id

        def appended(done: log.Appended | None) -> None:  # on the appender's thread
            nonlocal batches
            batches += 1
            if done is not None:
                first = result.appended.first_position if result.appended else done.first_position
                result.appended = log.Appended(first, done.last_position, done.head)
            faults.point("after_batch", batches)

        appender = stack.enter_context(_appender(conn, appended, result.dry_run))

        def flush() -> None:
            nonlocal pending_bytes
            batch = pending[:]
            pending.clear()
            pending_bytes = 0
            if result.dry_run or not batch:
                return
            assert appender is not None
            appender.submit(begin(), batch)

        def add(events: Iterable[log.Pending]) -> None:
            nonlocal pending_bytes
            for p in events:
                pending.append(p)
                pending_bytes += len(p.record or b"")
                if len(pending) >= db.settings.import_batch or pending_bytes >= BATCH_BYTES:
                    flush()
            flush()  # what a chunk gave goes now, not with the next chunks' (see BATCH_BYTES)

        def file_read(rel: str, keys: FileKeys | None) -> None:
            digest = reader.digest(rel)
            # A name that is not UTF-8 is stored escaped: it never matches again, and that file is parsed.
            if not result.dry_run and digest is not None and recorder.add(_utf8(rel), digest, keys):
                recorder.write(conn, begin())

        reader.on_file(file_read)
        for rec in reader:
            file = rec.location.partition(":")[0]
            if file != current_file:
                if current_file:
                    files_done += 1
                current_file = file
                if on_progress:
                    on_progress(Progress(files_done, files_total, result.records, file))
            result.records += 1
            faults.point("record", result.records)
            add(differ.feed(rec.kind, rec.key, rec.data))
        add(differ.flush())
        # Every record has been read: the streams not seen are the ones to remove. A key read is either live
        # or counted added (a key taken from an unchanged file is live: see UnchangedFiles), so a kind whose
        # keys read, less those added, number its live streams lost none, and its streams are not walked.
        gone = [k for k in KINDS if live.get(k, 0) != reader.counts[k] - result.counts[k]["added"]]
        if gone:
            add(differ.removals(log.live_streams(reads, LIVE_FETCH, gone), reader.seen, gone))
        if appender is not None:
            appender.finish()
        result.files = files_total
        result.files_reused = reader.files_reused
        for kind, reused in reader.reused.items():
            result.counts[kind]["unchanged"] += reused
            result.records += reused
        if recorder and not result.dry_run:
            recorder.write(conn, begin())
        result.warnings = [w.as_dict() for w in reader.warnings]
        result.content_hash = reader.content_hash
        if on_progress:
            on_progress(Progress(files_total, files_total, result.records, current_file))

    if import_id is not None:
        result.import_id = import_id
    _finish(conn, meta, result)


@contextlib.contextmanager
def _appender(
    conn: psycopg.Connection[Any], appended: Callable[[log.Appended | None], None], dry_run: bool
) -> Iterator[Appender | None]:
    if dry_run:
        yield None
        return
    appender = Appender(conn, appended)
    try:
        yield appender
    finally:
        appender.close()


def _finish(conn: psycopg.Connection[Any], meta: ImportMeta, result: ImportResult) -> None:
    if result.dry_run:
        conn.rollback()
        return
    if result.import_id is None:  # nothing changed: still record that this export was imported
        result.import_id = imports.begin(conn, meta)
    head = log.head(conn)
    result.head = head
    imports.complete(
        conn,
        result.import_id,
        result.content_hash,
        result.counts,
        result.warnings,
        result.appended,
        str(head),
    )
    faults.point("before_commit")
    conn.commit()
    result.committed = True
    logger.info(
        "import_completed",
        import_id=result.import_id,
        events=result.events,
        head=str(head),
        counts=result.counts,
        waited_for_lock=result.waited_for_lock,
        seconds=round(time.perf_counter() - result.started, 3),
    )


def _already_in_log(
    conn: psycopg.Connection[Any], reader: ExportReader, result: ImportResult, strict: bool, head: log.Head
) -> bool:
    """True when this very export was the last thing imported: the log is then exactly what reading it
    would give, so there is nothing to parse. Decided under the log lock, from raw bytes only."""
    content_hash = reader.hash_files()
    last = imports.last_with_content(conn, content_hash)
    if last is None or last.head_chain_hash != str(head):
        return False
    if strict and last.warnings:
        return False  # let the full read raise the duplicate as --strict asks
    for kind, c in last.counts.items():
        result.counts[kind] = {
            "added": 0,
            "changed": 0,
            "removed": 0,
            "unchanged": c["added"] + c["changed"] + c["unchanged"],
        }
    result.warnings = list(last.warnings)
    for w in result.warnings:
        logger.warning("duplicate_key", **{k: v for k, v in w.items() if k != "event"})
    result.content_hash = content_hash
    result.shortcut = True
    logger.info("export_already_in_log", content_hash=content_hash)
    return True
