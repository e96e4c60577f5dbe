"""Every powerlog command on real-shaped releases at several scales, each against its ceiling, on one server.

    .venv/bin/python bench/run.py [--scales 1,3,10,30] [--full] [--name NAME] [--seed 1] [--repeat 1]
                                  [--work /tmp/powerlog-synth] [--no-peer] [--only import]

Per scale (bench/synth.py: the real mids-21.0331 export copied N times, and one derived release changing
5 % of the powers, adding 0.5 %, removing 0.5 %), on one fresh database of one server (DATABASE_URL when
set, else a throwaway embedded PostgreSQL), in this order, each a `powerlog` subprocess whose wall time and
peak RSS (GNU time's %M: that command's own maximum resident set) are taken:

  first import (r00) · project (from empty) · refresh --plain (first population of the view) ·
  incremental import (r01) · no-change re-import of r01 (content-hash shortcut) · no-change re-import of a
  copy of r01 whose PowerSets.json differs by a newline (new content hash: every file hashed, none of the
  record files parsed, since the last import read them; nothing appended) · the same with --read-all (full
  read: every file parsed and diffed) ·
  project (after the incremental import) · refresh (CONCURRENTLY) · refresh --plain · rebuild

`project` runs with POWERLOG_VIEW_REFRESH=scheduler, so it times the read tables alone; the refresh rows
time the view. Then, on the same server in the same run:

- import ceiling: one binary COPY, one transaction, of r00's canonical records (kind, key, jsonb) from a
  file written before timing (bench/import.py's ceiling, streamed);
- rebuild ceiling: the five read tables built in a schema of their own from r01's final records (staged,
  with the ids a rebuild gives, before timing) with one INSERT … SELECT per table (the projector's own
  column expressions), then the unique keys, foreign keys, (powerset_id, level_available), the GIN and
  trigram indexes, the view with its indexes, ANALYZE; then the five history tables, which a rebuild also
  writes: their rows (copied from what `rebuild` left, before timing, since a rebuild too writes each
  history row as a copy of a read-table row) loaded by one INSERT … SELECT each, then their indexes. Once
  on one connection, once with the powers load, the search indexes and the history tables split over two
  connections (the faster counts); each result is checked equal, row for row, to what `rebuild` left
  (projections.fingerprint). Reported: the ratio against the whole (the same work as rebuild) and, in
  brackets, against the read tables alone (the issue's wording, which predates the history tables);
- peer: r00's Added events (the same payload bytes powerlog stores) appended with `store.log.append` in
  chunks of 10,000 in one import transaction, and with eventsourcing 9.5's PostgresApplicationRecorder
  (`insert_events`, one chunk per call) into its own table; events/s of each (skipped with --no-peer or
  when eventsourcing is not installed: `pip install -e '.[bench]'`).

`--full` adds scale 120 with the import, incremental import, project and rebuild rows only. `--only import`
keeps the import rows (first, incremental, the three no-change re-imports) and the import ceiling.
`--repeat N` runs the start-up, first import (the extra runs into fresh databases of their own), no-change
re-import and rebuild rows and the import ceiling N times each and reports the median (not at scale 120). Writes
bench/results/run-NAME.{md,json} (NAME: --name, default the server's major version).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import structlog
import synth
from common import (
    REPO,
    SHARED_DATA,
    Timer,
    compile_project,
    fresh_database,
    log_compression,
    server,
    server_version,
    write_results,
)
from psycopg import sql
from report import machine, packages

from events import EntityAdded, canonical_bytes, encode_event, stream_id
from importer.limits import ReadLimits
from importer.source import read_export
from projections import ddl
from projections.fingerprint import table_hashes
from projections.kinds import SPECS, TableSpec
from projections.tables import HISTORY_TABLES, READ_TABLES, history_table
from store import imports, locks, log
from store.connection import Database
from store.imports import ImportMeta
from store.nul import to_jsonb

POWERLOG = Path(sys.executable).parent / "powerlog"
GNU_TIME = "/usr/bin/time"
JSONB_V1 = b"\x01"
CHUNK = 10_000
# The default 2 GiB guards against archive bombs; scale 120's releases are 7.9 GB of our own files.
MAX_EXPORT_BYTES = 64 * 1024**3
TARGETS = {
    "first_import_vs_ceiling": 0.3,  # >=
    "reimport_vs_first": 0.15,  # <=
    "rebuild_vs_ceiling": 0.8,  # >=
    "append_vs_peer": 2.0,  # >=
    "peak_rss_mb": 300,  # <=
    "rss_growth": 1.3,  # < (scale 120 over scale 1)
}
NO_CHANGE = (
    "no-change re-import (shortcut)",
    "no-change re-import (new content hash)",
    "no-change re-import (full read)",
)
REPEATED = (
    "CLI start-up (powerlog --help)",
    "first import",
    *NO_CHANGE,
    "rebuild",
)
"""The steps `--repeat` runs again (a first import into another fresh database; the new content hash's
copy gains one more newline each time): the ones that take seconds at small scales, where one run on a
shared machine can be off by half."""
FULL_ONLY = (
    "CLI start-up (powerlog --help)",
    "first import",
    "incremental import",
    "project (from empty)",
    "project (incremental)",
    "rebuild",
)


class StepFailed(Exception):
    """A powerlog command exited non-zero: the scale's later steps and ceilings are skipped, and said so."""


# -- powerlog subprocesses --------------------------------------------------------------------------------


def cli(db: Database, *args: str) -> dict[str, Any]:
    """One `powerlog` command in its own process: wall seconds, peak RSS in MB, its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POWERLOG_")}
    env.update(
        DATABASE_URL=db.dsn,
        POWERLOG_HOME=tempfile.gettempdir(),
        POWERLOG_VIEW_REFRESH="scheduler",
        # An import's own time is in its `import_completed` line (JSON on stderr, off a terminal).
        POWERLOG_LOG_LEVEL="info" if args[:1] == ("import",) else "warning",
        POWERLOG_MAX_EXPORT_BYTES=str(MAX_EXPORT_BYTES),
    )
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        cmd = [GNU_TIME, "-f", "%M", "-o", rss.name, str(POWERLOG), *args]
        with Timer() as t:
            done = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if done.returncode != 0:
            raise StepFailed(
                f"powerlog {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:].strip()}"
            )
        rss_kb = float(rss.read().strip().splitlines()[-1])
    return {"seconds": t.seconds, "peak_rss_mb": rss_kb / 1024, "stdout": done.stdout, "stderr": done.stderr}


def import_seconds(stderr: str) -> float | None:
    """The seconds an import reports (from its start, connecting included, to its commit), if it logged them."""
    for line in reversed(stderr.splitlines()):
        if '"import_completed"' in line:
            return float(json.loads(line)["seconds"])
    return None


# -- ceilings -----------------------------------------------------------------------------------------------


def records(export: Path) -> Iterator[tuple[str, str, bytes, bytes]]:
    """(kind, key, canonical bytes, jsonb text) of every record the importer reads, streamed."""
    with read_export(export, ReadLimits(max_total_bytes=MAX_EXPORT_BYTES)) as reader:
        for rec in reader:
            data = canonical_bytes(rec.record)
            yield rec.kind, rec.key, data, to_jsonb(data)


def import_ceiling(db: Database, export: Path) -> dict[str, Any]:
    """Bare binary COPY of the export's canonical records, one transaction, from a file made beforehand."""
    with db.connect() as conn, tempfile.TemporaryFile() as payload:
        conn.execute("CREATE TABLE ceiling_src (kind text, key text, data jsonb)")
        with conn.cursor().copy("COPY ceiling_src FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(["text", "text", "bytea"])
            count = 0
            canonical = 0
            for kind, key, data, stored in records(export):
                cp.write_row((kind, key, JSONB_V1 + stored))
                count += 1
                canonical += len(data)
        with conn.cursor().copy("COPY ceiling_src TO STDOUT (FORMAT BINARY)") as out:
            for block in out:
                payload.write(block)
        conn.execute("DROP TABLE ceiling_src")
        conn.execute(f"CREATE TABLE import_ceiling (kind text, key text, data jsonb{log_compression(conn)})")
        conn.commit()
        payload.seek(0)
        with Timer() as t:
            with conn.cursor().copy("COPY import_ceiling FROM STDIN (FORMAT BINARY)") as cp:
                while block := payload.read(1 << 20):
                    cp.write(block)
            conn.commit()
        conn.execute("DROP TABLE import_ceiling")
        conn.commit()
    return {"seconds": t.seconds, "records": count, "canonical_mb": canonical / 1e6}


CEILING_SCHEMA = "bench_ceiling"
_FOREIGN = {"powersets": "archetype_id", "powers": "powerset_id", "enhancements": "set_id"}


def _stage_final(conn: psycopg.Connection[Any], export: Path) -> None:
    """The final records with the ids a rebuild gives them (position of each stream's first event)."""
    conn.execute("DROP TABLE IF EXISTS ceiling_stage")
    # Held as {"record": …}, as in an event: extracting it gives each row its record detoasted once (a
    # bare jsonb column would be detoasted again by every column expression that reads it).
    conn.execute(
        "CREATE TABLE ceiling_stage (kind text, key text, id bigint, escaped bool,"
        f" data jsonb{log_compression(conn)})"
    )
    with conn.cursor().copy("COPY ceiling_stage (kind, key, escaped, data) FROM STDIN (FORMAT BINARY)") as cp:
        cp.set_types(["text", "text", "bool", "bytea"])
        for kind, key, data, stored in records(export):
            cp.write_row((kind, key, stored is not data, JSONB_V1 + b'{"record":' + stored + b"}"))
    conn.execute(
        "UPDATE ceiling_stage s SET id = e.global_position FROM events e"
        " WHERE e.stream_id = s.kind || ':' || s.key AND e.stream_version = 1"
    )
    conn.execute("CREATE INDEX ON ceiling_stage (kind)")
    conn.execute("ANALYZE ceiling_stage")
    conn.commit()


def _history_stage(table: str) -> sql.Identifier:
    return sql.Identifier(f"ceiling_stage_{history_table(table)}")


def _stage_history(conn: psycopg.Connection[Any]) -> None:
    """The rows of the history tables as `rebuild` left them, copied aside before timing.

    A rebuild writes each history row as a copy of the read-table row it records (projections/temporal.py),
    not from the record again, so the ceiling copies rows too: the same work, done the fastest way."""
    for table in READ_TABLES:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_history_stage(table)))
        conn.execute(
            sql.SQL("CREATE TABLE {} AS SELECT * FROM {}").format(
                _history_stage(table), sql.Identifier("public", history_table(table))
            )
        )
        conn.execute(sql.SQL("ANALYZE {}").format(_history_stage(table)))
    conn.commit()


def _history_indexes(conn: psycopg.Connection[Any], table: str) -> list[sql.Composable]:
    """The history table's indexes (its primary key's included) as the live schema has them, made in
    CEILING_SCHEMA."""
    rows = conn.execute(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = %s ORDER BY indexname",
        (history_table(table),),
    ).fetchall()
    on = f" ON public.{history_table(table)} "
    return [sql.SQL(str(r[0]).replace(on, f" ON {CEILING_SCHEMA}.{history_table(table)} ")) for r in rows]


def _build_history(db: Database, conn: psycopg.Connection[Any], workers: int) -> None:
    """The history tables, loaded then indexed; with two workers, powers_history on a connection of its own."""
    work: list[list[sql.Composable]] = []
    for table in READ_TABLES:
        name = history_table(table)
        conn.execute(
            sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)").format(
                sql.Identifier(CEILING_SCHEMA, name), sql.Identifier("public", name)
            )
        )
        load = sql.SQL("INSERT INTO {} SELECT * FROM {}").format(
            sql.Identifier(CEILING_SCHEMA, name), _history_stage(table)
        )
        work.append([load, *_history_indexes(conn, table)])
    conn.commit()
    if workers == 1:
        for stmt in (s for w in work for s in w):
            conn.execute(stmt)
        conn.commit()
    else:
        powers = READ_TABLES.index("powers")
        _in_parallel(db, [work[powers], [s for i, w in enumerate(work) if i != powers for s in w]])


def _insert_select(spec: TableSpec, part: tuple[int, int] = (0, 1)) -> sql.Composed:
    """One INSERT … SELECT for a table (or the part `id % n = i` of it): the projector's column expressions
    over the staged record."""
    names = [sql.Identifier("id"), *(sql.Identifier(c) for c in spec.columns)]
    exprs = [sql.SQL("x.id"), *(sql.SQL(e) for e in spec.columns.values())]
    joins = []
    for n, (column, (ref_table, ref_key, record_expr, _)) in enumerate(spec.references.items()):
        alias = sql.Identifier(f"ref{n}")
        names.append(sql.Identifier(column))
        exprs.append(sql.SQL("{}.id").format(alias))
        joins.append(
            sql.SQL("LEFT JOIN {} {} ON {}.{} = " + record_expr).format(
                sql.Identifier(CEILING_SCHEMA, ref_table), alias, alias, sql.Identifier(ref_key)
            )
        )
    return sql.SQL(
        "INSERT INTO {table} ({names}) SELECT {exprs} FROM (SELECT id, CASE WHEN escaped THEN"
        " powerlog_unmark(data->'record') ELSE data->'record' END AS r FROM ceiling_stage"
        " WHERE kind = {kind} AND id % {n} = {i} OFFSET 0) x {joins}"
    ).format(
        table=sql.Identifier(CEILING_SCHEMA, spec.table),
        names=sql.SQL(", ").join(names),
        exprs=sql.SQL(", ").join(exprs),
        kind=sql.Literal(spec.kind),
        n=sql.Literal(part[1]),
        i=sql.Literal(part[0]),
        joins=sql.SQL(" ").join(joins),
    )


def _in_parallel(db: Database, work: list[list[sql.Composable]]) -> None:
    """Each list of statements on a connection of its own, all at once, each committed."""
    errors: list[BaseException] = []

    def run(statements: list[sql.Composable]) -> None:
        try:
            with db.connect() as c:
                for stmt in statements:
                    c.execute(stmt)
                c.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _build_ceiling(db: Database, conn: psycopg.Connection[Any], workers: int) -> dict[str, Any]:
    """Build the tables, keys, search indexes and view in CEILING_SCHEMA; with workers=2, the powers load
    and the search indexes are split over two connections (the machine has two cores)."""
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(CEILING_SCHEMA)))
    conn.commit()
    steps: dict[str, float] = {}
    with Timer() as total:
        with Timer() as t:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(CEILING_SCHEMA)))
            for spec in SPECS:
                # Same columns, types and defaults as the live table; constraints come after the load.
                conn.execute(
                    sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(
                        sql.Identifier(CEILING_SCHEMA, spec.table), sql.Identifier("public", spec.table)
                    )
                )
            for spec in SPECS:  # referenced tables first
                if workers == 1 or spec.table != "powers":
                    conn.execute(_insert_select(spec))
            conn.commit()
            if workers > 1:
                powers = next(spec for spec in SPECS if spec.table == "powers")
                _in_parallel(db, [[_insert_select(powers, (i, workers))] for i in range(workers)])
        steps["tables"] = t.seconds
        with Timer() as t:
            for spec in SPECS:
                table = sql.Identifier(CEILING_SCHEMA, spec.table)
                conn.execute(
                    sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (id), ADD UNIQUE ({})").format(
                        table, sql.Identifier(spec.key_column)
                    )
                )
            for spec in SPECS:
                for column, (ref_table, _, _, _) in spec.references.items():
                    conn.execute(
                        sql.SQL(
                            "ALTER TABLE {} ADD FOREIGN KEY ({}) REFERENCES {} (id) ON DELETE SET NULL"
                        ).format(
                            sql.Identifier(CEILING_SCHEMA, spec.table),
                            sql.Identifier(column),
                            sql.Identifier(CEILING_SCHEMA, ref_table),
                        )
                    )
            conn.execute(
                sql.SQL("CREATE INDEX ON {} (powerset_id, level_available)").format(
                    sql.Identifier(CEILING_SCHEMA, "powers")
                )
            )
            conn.commit()
        steps["keys"] = t.seconds
        with Timer() as t:
            indexes = [ddl.search_index(CEILING_SCHEMA, name) for name, _, _ in ddl.SEARCH_INDEXES]
            if workers == 1:
                for stmt in indexes:
                    conn.execute(stmt)
                conn.commit()
            else:  # the effects GIN is about half the work: it on one connection, the rest on the other
                _in_parallel(db, [indexes[:1], indexes[1:]])
        steps["search_indexes"] = t.seconds
        with Timer() as t:
            ddl.create_view(conn, CEILING_SCHEMA)
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(CEILING_SCHEMA, "powers")))
            conn.commit()
        steps["view"] = t.seconds
        read_tables = time.perf_counter() - total.start
        # What the ceiling leaves out and a rebuild does: every version in the history tables.
        with Timer() as t:
            _build_history(db, conn, workers)
            conn.execute(
                sql.SQL("ANALYZE {}").format(sql.Identifier(CEILING_SCHEMA, history_table("powers")))
            )
            conn.commit()
        steps["history"] = t.seconds
    tables = (*READ_TABLES, *HISTORY_TABLES)
    same = table_hashes(conn, CEILING_SCHEMA, tables) == table_hashes(conn, "public", tables)
    view_rows = conn.execute(
        sql.SQL("SELECT (SELECT count(*) FROM {}), (SELECT count(*) FROM public.{})").format(
            sql.Identifier(CEILING_SCHEMA, ddl.VIEW), sql.Identifier(ddl.VIEW)
        )
    ).fetchone()
    conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(CEILING_SCHEMA)))
    conn.commit()
    if not same or view_rows is None or view_rows[0] != view_rows[1]:
        raise SystemExit(f"the rebuild ceiling did not build what rebuild built (view rows {view_rows})")
    return {
        "seconds": round(total.seconds, 3),
        "read_tables_seconds": round(read_tables, 3),
        "steps": {k: round(v, 3) for k, v in steps.items()},
    }


def rebuild_ceiling(db: Database, export: Path) -> dict[str, Any]:
    """The rebuild's end state from the final records, on one connection and on two; the faster is the
    ceiling. Each is checked equal, row for row, to what rebuild left in the live tables."""
    with db.connect() as conn:
        _stage_final(conn, export)
        _stage_history(conn)
        serial = _build_ceiling(db, conn, 1)
        parallel = _build_ceiling(db, conn, 2)
        conn.execute("DROP TABLE ceiling_stage")
        for table in READ_TABLES:
            conn.execute(sql.SQL("DROP TABLE {}").format(_history_stage(table)))
        conn.commit()
    best = min((serial, parallel), key=lambda r: r["seconds"])
    return {
        "seconds": best["seconds"],
        "read_tables_seconds": min(serial["read_tables_seconds"], parallel["read_tables_seconds"]),
        "steps": best["steps"],
        "workers": 1 if best is serial else 2,
        "one_connection": serial,
        "two_connections": parallel,
    }


# -- the peer: eventsourcing --------------------------------------------------------------------------------


def _chunks(export: Path) -> Iterator[list[tuple[log.Pending, bytes]]]:
    """r00's Added events in chunks: the Pending powerlog appends and the payload bytes it stores."""
    batch: list[tuple[log.Pending, bytes]] = []
    for kind, key, data, _ in records(export):
        ev = EntityAdded(kind=kind, key=key, record=msgspec_decode(data), hash=_sha(data))
        batch.append((log.Pending(ev, 0, data), encode_event(ev, data)))
        if len(batch) >= CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


def msgspec_decode(data: bytes) -> Any:
    import msgspec

    return msgspec.json.decode(data)


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def append_vs_peer(db: Database, export: Path) -> dict[str, Any] | None:
    try:
        from eventsourcing.persistence import StoredEvent
        from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
    except ImportError:
        print("eventsourcing is not installed (pip install -e '.[bench]'): no peer row", file=sys.stderr)
        return None
    info = psycopg.conninfo.conninfo_to_dict(db.dsn)

    def recorder(table: str, functions: bool) -> tuple[Any, Any]:
        datastore = PostgresDatastore(
            dbname=str(info.get("dbname")),
            host=str(info.get("host", "127.0.0.1")),
            port=str(info.get("port", 5432)),
            user=str(info.get("user", "postgres")),
            password=str(info.get("password", "")),
            enable_db_functions=functions,
        )
        rec = PostgresApplicationRecorder(datastore, events_table_name=table)
        rec.create_table()
        return datastore, rec

    # eventsourcing's database-function insert (enable_db_functions: one call per chunk, no pipeline). Its
    # default insert_events (pipelined: LOCK TABLE, NOTIFY, INSERT … unnest) never returns once a call
    # carries a few MB of these records (psycopg 3.3 pipeline; bench/README), so it is not measured here.
    fn_store, fn = recorder("es_events", True)
    ours = theirs = 0.0
    events = payload = 0
    with db.connect() as conn:
        with Timer() as t:
            conn.execute("BEGIN")
            locks.acquire(conn, locks.LOG)
            import_id = imports.begin(conn, ImportMeta(source_path=str(export), label="bench append"))
        ours += t.seconds
        for chunk in _chunks(export):
            stored = [
                StoredEvent(
                    originator_id=uuid.uuid5(uuid.NAMESPACE_URL, stream_id(p.event.kind, p.event.key)),
                    originator_version=1,
                    topic="powerlog:EntityAdded",
                    state=state,
                )
                for p, state in chunk
            ]
            with Timer() as t:
                log.append(conn, import_id, [p for p, _ in chunk])
            ours += t.seconds
            with Timer() as t:
                fn.insert_events(stored)
            theirs += t.seconds
            events += len(chunk)
            payload += sum(len(s) for _, s in chunk)
        with Timer() as t:
            conn.execute("COMMIT")
        ours += t.seconds
        row = conn.execute("SELECT count(*) FROM es_events").fetchone()
        assert row is not None and row[0] == events, (row, events)
    fn_store.close()
    return {
        "events": events,
        "payload_mb": round(payload / 1e6, 1),
        "powerlog_s": round(ours, 3),
        "eventsourcing_s": round(theirs, 3),
        "powerlog_events_per_s": round(events / ours),
        "eventsourcing_events_per_s": round(events / theirs),
        "ratio": round(theirs / ours, 3),
    }


# -- one scale ----------------------------------------------------------------------------------------------


def noop_copy(release: Path, target: Path) -> Path:
    """A copy of a release (hard links) whose PowerSets.json gains a newline: a new content hash, the same
    entities, so an import reads and diffs every file and appends nothing."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(release, target, copy_function=os.link)
    notes = target / "PowerSets.json"
    data = notes.read_bytes()
    notes.unlink()
    notes.write_bytes(data + b"\n")
    return target


def _newline(release: Path) -> Callable[[], None]:
    """Before each run of the new content hash row: one more newline, so its content hash is new again."""

    def add() -> None:
        with (release / "PowerSets.json").open("ab") as notes:
            notes.write(b"\n")

    return add


def _steps(
    step: Any, db: Database, r00: Path, r01: Path, out: Path, full_only: bool, only: str | None = None
) -> None:
    step("CLI start-up (powerlog --help)", db, "--help")

    step("first import", db, "import", str(r00))
    if only != "import":
        step("project (from empty)", db, "project")
        step("refresh --plain (first)", db, "refresh", "--plain")
    step("incremental import", db, "import", str(r01))
    step("no-change re-import (shortcut)", db, "import", str(r01))
    if not full_only:
        noop = noop_copy(r01, out / "r01-noop")
        step("no-change re-import (new content hash)", db, "import", str(noop), before=_newline(noop))
        step("no-change re-import (full read)", db, "import", "--read-all", str(noop))
        shutil.rmtree(noop)
    if only == "import":
        return
    step("project (incremental)", db, "project")
    step("refresh (concurrently)", db, "refresh")
    step("refresh --plain", db, "refresh", "--plain")
    step("rebuild", db, "rebuild")


def run_scale(admin: str, scale: int, args: argparse.Namespace, full_only: bool) -> dict[str, Any]:
    subset = f"-sets{args.sets}" if args.sets else ""
    out = args.work / f"{args.source.name}-s{scale:03d}-seed{args.seed}{subset}"
    with Timer() as t:
        manifest = synth.ensure(out, scale, releases=1, seed=args.seed, source=args.source, sets=args.sets)
    r00, r01 = (out / r["path"] for r in manifest["releases"][:2])
    print(f"scale {scale}: releases ready in {t.seconds:.1f} s", file=sys.stderr)
    steps: dict[str, dict[str, Any]] = {}

    repeat = 1 if full_only else args.repeat

    def step(name: str, db: Database, *command: str, before: Callable[[], None] | None = None) -> None:
        if full_only and name not in FULL_ONLY:
            return
        # The machine is shared: the 1-minute load average before each step says how much it was.
        load = os.getloadavg()[0]
        runs = []
        times = repeat if name in REPEATED else 1
        for i in range(times):
            if before is not None and i > 0:
                before()
            if name == "first import" and i < times - 1:
                with fresh_database(admin) as other:  # the last run is into the database the rows go on with
                    runs.append(cli(other, *command))
            else:
                runs.append(cli(db, *command))
        seconds = [r["seconds"] for r in runs]
        steps[name] = {
            "seconds": statistics.median(seconds),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "load_1m_before": round(load, 2),
        }
        if times > 1:
            steps[name]["runs_s"] = [round(t, 3) for t in seconds]
        if name == "rebuild":
            reported = [
                float(m.group(1)) for r in runs if (m := re.search(r"in ([0-9.]+) s; swapped", r["stdout"]))
            ]
            steps[name]["reported_s"] = statistics.median(reported) if reported else None
        if command[:1] == ("import",):
            own = [t for r in runs if (t := import_seconds(r["stderr"])) is not None]
            steps[name]["reported_s"] = statistics.median(own) if len(own) == len(runs) else None
        print(
            f"  {name}: {steps[name]['seconds']:.2f} s, {steps[name]['peak_rss_mb']:.0f} MB"
            + (f" (median of {', '.join(f'{t:.2f}' for t in seconds)})" if times > 1 else ""),
            file=sys.stderr,
        )

    row: dict[str, Any] = {
        "scale": scale,
        "powers": manifest["releases"][0]["powers"],
        "source_mb": round(manifest["releases"][0]["bytes"] / 1e6, 1),
        "changes": manifest["releases"][1]["counts"]["power"],
        "steps": steps,
    }
    with fresh_database(admin) as db:
        try:
            _steps(step, db, r00, r01, out, full_only, args.only)
        except StepFailed as exc:
            row["failed"] = str(exc)
            print(f"  FAILED: {exc}", file=sys.stderr)
            return row
        with db.connect() as conn:
            size = conn.execute(
                "SELECT pg_total_relation_size('events'), pg_total_relation_size('powers'),"
                " pg_total_relation_size('power_build_summary'), pg_database_size(current_database())"
            ).fetchone()
        assert size is not None
        row["sizes_mb"] = dict(
            zip(("events", "powers", "view", "database"), (round(s / 1e6) for s in size), strict=True)
        )
        ceilings = [import_ceiling(db, r00) for _ in range(repeat)]
        row["import_ceiling"] = dict(ceilings[0], seconds=statistics.median(c["seconds"] for c in ceilings))
        if repeat > 1:
            row["import_ceiling"]["runs_s"] = [round(c["seconds"], 3) for c in ceilings]
        print(f"  import ceiling: {row['import_ceiling']['seconds']:.2f} s", file=sys.stderr)
        if args.only == "import":
            return row
        row["rebuild_ceiling"] = rebuild_ceiling(db, r01)
        print(
            f"  rebuild ceiling: {row['rebuild_ceiling']['seconds']:.2f} s {row['rebuild_ceiling']['steps']}",
            file=sys.stderr,
        )
    if not full_only and not args.no_peer:
        with fresh_database(admin) as db:
            row["append"] = append_vs_peer(db, r00)
            if row["append"]:
                print(f"  append vs eventsourcing: {row['append']}", file=sys.stderr)
    return row


# -- report -------------------------------------------------------------------------------------------------


def ratios(row: dict[str, Any]) -> dict[str, float]:
    s = row["steps"]
    out = {}
    if "first import" in s and "import_ceiling" in row:
        out["first_import_vs_ceiling"] = row["import_ceiling"]["seconds"] / s["first import"]["seconds"]
        for name in NO_CHANGE:
            if name in s:
                out[f"{name} vs first"] = s[name]["seconds"] / s["first import"]["seconds"]
        # The same on the times the imports report, which leave out starting Python and its libraries
        # (`CLI start-up` above): the in-process ceiling leaves them out too.
        first = s["first import"].get("reported_s")
        if first:
            out["first_import_reported_vs_ceiling"] = row["import_ceiling"]["seconds"] / first
            for name in NO_CHANGE:
                if s.get(name, {}).get("reported_s"):
                    out[f"{name} reported vs first"] = s[name]["reported_s"] / first
    if "rebuild" in s and "rebuild_ceiling" in row:
        # Read and history tables, as rebuild builds them; and the read tables alone, as the issue words it.
        out["rebuild_vs_ceiling"] = row["rebuild_ceiling"]["seconds"] / s["rebuild"]["seconds"]
        if "read_tables_seconds" in row["rebuild_ceiling"]:
            out["rebuild_vs_read_tables_ceiling"] = (
                row["rebuild_ceiling"]["read_tables_seconds"] / s["rebuild"]["seconds"]
            )
        # The time the command reports, from its start to the swap: what the in-process ceiling is timed
        # over too (neither counts starting Python and importing the CLI, `CLI start-up` above).
        if s["rebuild"].get("reported_s"):
            out["rebuild_reported_vs_ceiling"] = (
                row["rebuild_ceiling"]["seconds"] / s["rebuild"]["reported_s"]
            )
    if row.get("append"):
        out["append_vs_peer"] = row["append"]["ratio"]
    return {k: round(v, 3) for k, v in out.items()}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Scale benchmark `{result['name']}` (`bench/run.py`)",
        "",
        f"{result['label']}",
        "",
        f"PostgreSQL {result['server_version']}; source `{result['source']}` scaled by bench/synth.py"
        f" (seed {result['seed']}); each step a `powerlog` subprocess (wall time, GNU time's peak RSS);"
        " ceilings on the same server in the same run. Ratios: ceiling time / powerlog time"
        " (>= target is good), except re-import / first import (<= target is good)."
        + (
            f" Start-up, first import, the no-change re-imports, rebuild and the import ceiling: median of"
            f" {result['repeat']} runs (each run in the JSON), below scale 120."
            if result.get("repeat", 1) > 1
            else ""
        ),
        "",
        "| scale | powers | source MB | step | seconds | peak RSS MB | ceiling s | ratio | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["scales"]:
        r = ratios(row)
        first = True
        for name, st in row["steps"].items():
            ceiling = ratio = target = ""
            if name == "first import" and "import_ceiling" in row:
                ceiling = f"{row['import_ceiling']['seconds']:.2f}"
                ratio = f"{r['first_import_vs_ceiling']:.2f}"
                if "first_import_reported_vs_ceiling" in r:
                    ratio += f"; {r['first_import_reported_vs_ceiling']:.2f} on the time it reports"
                target = f">= {TARGETS['first_import_vs_ceiling']}"
            elif name.startswith("no-change"):
                ratio = f"{r[f'{name} vs first']:.2f} of first"
                if f"{name} reported vs first" in r:
                    ratio += f"; {r[f'{name} reported vs first']:.2f} on the times they report"
                target = f"<= {TARGETS['reimport_vs_first']}"
            elif name == "rebuild" and "rebuild_ceiling" in row:
                c = row["rebuild_ceiling"]
                ceiling = f"{c['seconds']:.2f} ({c['read_tables_seconds']:.2f} read tables alone)"
                ratio = f"{r['rebuild_vs_ceiling']:.2f} ({r['rebuild_vs_read_tables_ceiling']:.2f})"
                if "rebuild_reported_vs_ceiling" in r:
                    ratio += f"; {r['rebuild_reported_vs_ceiling']:.2f} on the time it reports"
                target = f">= {TARGETS['rebuild_vs_ceiling']}"
            head = f"| {row['scale']} | {row['powers']:,} | {row['source_mb']:,} " if first else "| | | "
            first = False
            lines.append(
                f"{head}| {name} | {st['seconds']:.2f} | {st['peak_rss_mb']:.0f} | {ceiling} | {ratio} | {target} |"
            )
        if row.get("failed"):
            lines.append(
                f"| | | | **failed**: {' '.join(row['failed'].split())} (later steps and ceilings skipped) | | | | | |"
            )
        if row.get("append"):
            a = row["append"]
            lines.append(
                f"| | | | append {a['events']:,} events ({a['payload_mb']} MB): powerlog"
                f" {a['powerlog_events_per_s']:,}/s vs eventsourcing {a['eventsourcing_events_per_s']:,}/s"
                f" | {a['powerlog_s']:.2f} | | {a['eventsourcing_s']:.2f} | {a['ratio']:.2f} |"
                f" >= {TARGETS['append_vs_peer']} |"
            )
    lines += [
        "",
        "Rebuild ceiling steps (s), the faster of one connection and two (powers load, search indexes and"
        " history tables split over two); the read-tables-alone ceiling is the same without its history"
        " step: "
        + "; ".join(
            f"scale {row['scale']}: one connection {row['rebuild_ceiling']['one_connection']['seconds']}"
            f" ({', '.join(f'{k} {v}' for k, v in row['rebuild_ceiling']['one_connection']['steps'].items())}),"
            f" two {row['rebuild_ceiling']['two_connections']['seconds']}"
            f" ({', '.join(f'{k} {v}' for k, v in row['rebuild_ceiling']['two_connections']['steps'].items())})"
            for row in result["scales"]
            if "rebuild_ceiling" in row
        ),
        "",
        "Sizes after the run (MB): "
        + "; ".join(
            f"scale {row['scale']}: " + ", ".join(f"{k} {v:,}" for k, v in row["sizes_mb"].items())
            for row in result["scales"]
            if "sizes_mb" in row
        ),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scales", default="1,3,10,30")
    parser.add_argument("--full", action="store_true", help="add scale 120 (import, project, rebuild rows)")
    parser.add_argument("--name", default=None)
    parser.add_argument("--label", default="", help="a line saying what this run is (e.g. a baseline)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--source", type=Path, default=SHARED_DATA / "mids-21.0331")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "powerlog-synth")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument(
        "--only",
        choices=["import"],
        default=None,
        help="import: only the import rows (first, incremental, no-change re-imports) and the import ceiling",
    )
    parser.add_argument("--sets", type=int, default=None, help="only this many powerset files (a quick try)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the start-up, first import, no-change re-import and rebuild rows and the import ceiling"
        " this many times and report the median (not at scale 120)",
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    if not Path(GNU_TIME).exists():
        raise SystemExit(f"{GNU_TIME} (GNU time) is needed for each command's own peak RSS")
    compile_project()
    scales = [int(s) for s in args.scales.split(",") if s]
    plan = [(s, False) for s in scales] + ([(120, True)] if args.full else [])
    with server() as admin:
        version = server_version(admin)
        name = args.name or f"pg{version.split('.')[0]}"
        rows = [run_scale(admin, s, args, full_only) for s, full_only in plan]
    result = {
        "name": name,
        "label": args.label,
        "server_version": version,
        "source": args.source.name,
        "seed": args.seed,
        "repeat": args.repeat,
        "targets": TARGETS,
        # For bench/report.py: where and with what the figures were taken.
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": machine(),
        "packages": packages(),
        "scales": [dict(row, ratios=ratios(row)) for row in rows],
    }
    path = write_results(f"run-{name}", result, markdown(result))
    print(path.read_text())
    print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
