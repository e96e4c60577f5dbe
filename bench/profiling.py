"""Where an import and a rebuild spend their time and memory, on a scaled real release.

    .venv/bin/python bench/profiling.py [--scale 3] [--top 15]

On one fresh database (DATABASE_URL, else a throwaway embedded PostgreSQL): imports r00 in-process under
cProfile, with every SQL statement and COPY timed (wall time waiting on the server, by statement, its
literals cut off) and a tracemalloc snapshot taken at the first `log.append` of the import (when the first
batch of events is pending); projects, imports r01 and projects it, then rebuilds, each under the same instruments. Prints the
top functions (own time and cumulative), the SQL split, and the allocation sites held at that moment.
Writes bench/results/profile-<name>.md.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import re
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import structlog
import synth
from common import REPO, SHARED_DATA, fresh_database, server, server_version, write_results

from importer.run import run_import
from projections import project, rebuild
from store import log

SQL_TIME: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])


def _label(query: Any) -> str:
    text = query.as_string(None) if hasattr(query, "as_string") else str(query)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"'[^']*'", "'…'", text)
    return text[:110]


@contextmanager
def timed_sql() -> Iterator[None]:
    """Time every Cursor.execute and Cursor.copy by statement."""
    execute = psycopg.Cursor.execute
    copy = psycopg.Cursor.copy

    def timed_execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return execute(self, query, *args, **kwargs)
        finally:
            entry = SQL_TIME[_label(query)]
            entry[0] += time.perf_counter() - start
            entry[1] += 1

    @contextmanager
    def timed_copy(self: Any, statement: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        start = time.perf_counter()
        try:
            with copy(self, statement, *args, **kwargs) as cp:
                yield cp
        finally:
            entry = SQL_TIME[_label(statement)]
            entry[0] += time.perf_counter() - start
            entry[1] += 1

    psycopg.Cursor.execute = timed_execute  # type: ignore[method-assign]
    psycopg.Cursor.copy = timed_copy  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        psycopg.Cursor.execute = execute  # type: ignore[method-assign]
        psycopg.Cursor.copy = copy  # type: ignore[method-assign]


def profiled(title: str, fn: Callable[[], Any], top: int) -> tuple[str, float]:
    SQL_TIME.clear()
    prof = cProfile.Profile()
    start = time.perf_counter()
    with timed_sql():
        prof.enable()
        fn()
        prof.disable()
    wall = time.perf_counter() - start
    lines = [f"## {title}: {wall:.2f} s wall", ""]
    sql_total = sum(v[0] for v in SQL_TIME.values())
    lines += [
        f"Inside SQL statements and COPYs (waiting on the server, sending, receiving): {sql_total:.2f} s"
        f" ({100 * sql_total / wall:.0f} %); the rest ({wall - sql_total:.2f} s) is Python in this process"
        " (COPY blocks count as SQL time while they are open, Python building rows inside them included).",
        "",
        "| statement | calls | seconds | % of wall |",
        "|---|---|---|---|",
    ]
    for label, (seconds, calls) in sorted(SQL_TIME.items(), key=lambda kv: -kv[1][0])[:top]:
        lines.append(
            f"| `{label.replace('|', '/')}` | {calls} | {seconds:.2f} | {100 * seconds / wall:.0f} |"
        )
    for sort in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(prof, stream=out).strip_dirs().sort_stats(sort).print_stats(top)
        body = out.getvalue()
        body = body[body.find("ncalls") :]
        lines += ["", f"cProfile, top {top} by {sort}:", "", "```", body.rstrip(), "```"]
    return "\n".join(lines), wall


def memory_at_first_append(db: Any, export: Path, top: int) -> str:
    """tracemalloc's view of what an import holds when its first batch goes to `log.append`."""
    append = log.append
    report: list[str] = []

    def spying(conn: Any, import_id: int, batch: Any) -> Any:
        if not report:
            current, peak = tracemalloc.get_traced_memory()
            snap = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)]
            )
            report.append(
                f"At the first `log.append` ({len(batch):,} events pending): traced {current / 1e6:.0f} MB"
                f" (peak so far {peak / 1e6:.0f} MB). Top allocation sites held:"
            )
            report.append("")
            report.append("```")
            for stat in snap.statistics("lineno")[:top]:
                frame = stat.traceback[0]
                name = frame.filename.replace(str(REPO) + "/", "")
                name = re.sub(r".*site-packages/", "", name)
                report.append(f"{stat.size / 1e6:8.1f} MB {stat.count:9,} blocks  {name}:{frame.lineno}")
            report.append("```")
        return append(conn, import_id, batch)

    log.append = spying  # type: ignore[assignment]
    tracemalloc.start(1)
    try:
        run_import(db, export)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        log.append = append
    report.append("")
    report.append(f"Traced peak over the whole import: {peak / 1e6:.0f} MB (Python allocations only).")
    return "\n".join(report)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=int, default=3)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--name", default=None)
    parser.add_argument("--source", type=Path, default=SHARED_DATA / "mids-21.0331")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "powerlog-synth")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    out = args.work / f"{args.source.name}-s{args.scale:03d}-seed1"
    manifest = synth.ensure(out, args.scale, releases=1, seed=1, source=args.source)
    r00, r01 = (out / r["path"] for r in manifest["releases"][:2])
    sections = []
    with server() as admin:
        version = server_version(admin)
        name = args.name or f"pg{version.split('.')[0]}"
        with fresh_database(admin) as db:
            text, _ = profiled(
                f"first import of r00 (scale {args.scale})", lambda: run_import(db, r00), args.top
            )
            sections.append(text)
            project(db)
            text, _ = profiled("incremental import of r01", lambda: run_import(db, r01), args.top)
            sections.append(text)
            text, _ = profiled("project after the incremental import", lambda: project(db), args.top)
            sections.append(text)
            text, _ = profiled("rebuild (after r00 and r01)", lambda: rebuild(db), args.top)
            sections.append(text)
        with fresh_database(admin) as db:
            sections.append("## Memory of the first import\n\n" + memory_at_first_append(db, r00, args.top))
    md = (
        f"# Profile (`bench/profiling.py`, scale {args.scale})\n\nPostgreSQL {version}; in-process, so the"
        " instruments slow it (cProfile about 1.3-2x).\n\n" + "\n\n".join(sections) + "\n"
    )
    path = write_results(f"profile-{name}", {"scale": args.scale, "server_version": version}, md)
    print(md)
    print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
