"""Importing a real release against the bare-COPY ceiling of the same bytes, on the same server, same run.

    .venv/bin/python bench/import.py [--export ../shared/data/mids-21.0331] [--repeat 3]

Measures, on one server (DATABASE_URL when set, else a throwaway embedded PostgreSQL):

- first import: `importer.run.run_import` of the export into a fresh migrated database (in-process);
- no-change re-import: the same export again into that database (appends nothing);
- ceiling: one binary COPY, in one transaction, of every canonical record of the export (as read by
  `importer.source.read_export` before timing) into a table (kind text, key text, data jsonb);
- peak RSS of this process, and of a `powerlog import` subprocess importing the export into a fresh database.

Each timing is the median of --repeat runs (the machine is shared). Throughput is given over the MB of
canonical records (the bytes the ceiling COPYs), so import/ceiling is a ratio of times; the import's MB/s
over the source files' bytes is shown beside it. Writes bench/results/import.{md,json}.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import structlog
from common import (
    REPO,
    SHARED_DATA,
    Timer,
    fresh_database,
    log_compression,
    peak_rss_mb,
    server,
    server_version,
    write_results,
)

from events import canonical_bytes
from importer.run import run_import
from importer.source import read_export
from store.connection import Database
from store.nul import to_jsonb

FIRST_TARGET = 0.3  # first import >= 0.3 x the ceiling's throughput
REIMPORT_TARGET = 0.15  # no-change re-import <= 15 % of the first import's time
JSONB_V1 = b"\x01"  # jsonb's binary input: a version byte, then the JSON text


def canonical_records(export: Path) -> tuple[list[tuple[str, str, bytes]], list[str]]:
    """(kind, key, jsonb binary) of every record, and the files the importer reads."""
    rows: list[tuple[str, str, bytes]] = []
    with read_export(export) as reader:
        for rec in reader:
            rows.append((rec.kind, rec.key, JSONB_V1 + to_jsonb(canonical_bytes(rec.record))))
        files = list(reader.files)
    return rows, files


def source_bytes(export: Path, files: list[str]) -> int:
    """Bytes of the files an import reads: I12.json, EnhDB.json and every db/**/*.json."""
    names = {"I12.json", "EnhDB.json", *files}
    return sum((export / name).stat().st_size for name in names)


def import_once(db: Database, export: Path) -> tuple[float, Any]:
    with Timer() as t:
        result = run_import(db, export)
    return t.seconds, result


def bare_copy(db: Database, rows: list[tuple[str, str, bytes]]) -> float:
    """Binary COPY of the rows into a new table, one transaction; the time of COPY and COMMIT."""
    with db.connect() as conn:
        conn.execute("DROP TABLE IF EXISTS import_ceiling")
        conn.execute(f"CREATE TABLE import_ceiling (kind text, key text, data jsonb{log_compression(conn)})")
        conn.commit()
        with Timer() as t:
            with conn.cursor().copy("COPY import_ceiling (kind, key, data) FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(["text", "text", "bytea"])  # bytea: the jsonb binary bytes go over as they are
                for row in rows:
                    cp.write_row(row)
            conn.commit()
        count = conn.execute("SELECT count(*) FROM import_ceiling").fetchone()
        assert count is not None and count[0] == len(rows)
        conn.execute("DROP TABLE import_ceiling")
        conn.commit()
    return t.seconds


def subprocess_import(db: Database, export: Path) -> dict[str, float]:
    """`powerlog import` in its own process: its wall time and peak RSS (GNU time, else RUSAGE_CHILDREN)."""
    binary = Path(sys.executable).parent / "powerlog"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "POWERLOG_TEST_FAULT")}
    env["DATABASE_URL"] = db.dsn
    gnu_time = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as out:
        cmd = [str(binary), "import", str(export)]
        if gnu_time:
            cmd = [gnu_time, "-f", "%M", "-o", out.name, *cmd]
        with Timer() as t:
            done = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"powerlog import failed ({done.returncode}):\n{done.stderr}")
        if gnu_time:
            rss_kb = float(out.read().strip().splitlines()[-1])
        else:
            import resource

            rss_kb = float(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return {"seconds": t.seconds, "peak_rss_mb": rss_kb / 1024}


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--export", type=Path, default=SHARED_DATA / "mids-21.0331")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    export: Path = args.export.resolve()
    # Quiet the importer's per-import log lines: only errors, so the progress below stays readable.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))

    rows, files = canonical_records(export)
    canonical_mb = sum(len(r[2]) - 1 for r in rows) / 1e6
    source_mb = source_bytes(export, files) / 1e6
    print(
        f"{export.name}: {len(rows):,} records, {canonical_mb:.1f} MB canonical, {source_mb:.1f} MB source",
        file=sys.stderr,
    )

    first_s: list[float] = []
    reimport_s: list[float] = []
    copy_s: list[float] = []
    events = 0
    with server() as admin:
        version = server_version(admin)
        for i in range(args.repeat):
            with fresh_database(admin) as db:
                seconds, result = import_once(db, export)
                first_s.append(seconds)
                events = result.events
                assert events == len(rows), (events, len(rows))
                for _ in range(args.repeat if i == 0 else 0):
                    seconds, again = import_once(db, export)
                    assert again.no_changes, again.counts
                    reimport_s.append(seconds)
                copy_s.append(bare_copy(db, rows))
            print(
                f"run {i + 1}: first {first_s[-1]:.2f} s, ceiling {copy_s[-1]:.2f} s"
                + (f", re-imports {', '.join(f'{s:.2f}' for s in reimport_s)} s" if i == 0 else ""),
                file=sys.stderr,
            )
        bench_rss = peak_rss_mb()
        with fresh_database(admin) as db:
            child = subprocess_import(db, export)
        print(
            f"powerlog import subprocess: {child['seconds']:.1f} s, {child['peak_rss_mb']:.0f} MB",
            file=sys.stderr,
        )

    first, reimport, ceiling = median(first_s), median(reimport_s), median(copy_s)
    results: dict[str, Any] = {
        "export": export.name,
        "server_version": version,
        "repeat": args.repeat,
        "records": len(rows),
        "events_first_import": events,
        "source_mb": round(source_mb, 2),
        "canonical_mb": round(canonical_mb, 2),
        "first_import_s": round(first, 3),
        "first_import_runs_s": [round(s, 3) for s in first_s],
        "first_import_mb_per_s": round(canonical_mb / first, 2),
        "first_import_source_mb_per_s": round(source_mb / first, 2),
        "first_import_events_per_s": round(events / first),
        "reimport_s": round(reimport, 3),
        "reimport_runs_s": [round(s, 3) for s in reimport_s],
        "reimport_mb_per_s": round(canonical_mb / reimport, 2),
        "ceiling_copy_s": round(ceiling, 3),
        "ceiling_runs_s": [round(s, 3) for s in copy_s],
        "ceiling_mb_per_s": round(canonical_mb / ceiling, 2),
        "first_over_ceiling": round(ceiling / first, 3),
        "first_over_ceiling_target": FIRST_TARGET,
        "reimport_over_first": round(reimport / first, 3),
        "reimport_over_first_target": REIMPORT_TARGET,
        "bench_peak_rss_mb": round(bench_rss),
        "cli_import_s": round(child["seconds"], 2),
        "cli_import_peak_rss_mb": round(child["peak_rss_mb"]),
    }

    def verdict(ok: bool) -> str:
        return "meets target" if ok else "**misses target**"

    md = [
        "# Import benchmark (`bench/import.py`)",
        "",
        f"PostgreSQL {version}; export `{export.name}`: {len(rows):,} records, {source_mb:.1f} MB of source files"
        f" ({len(files):,} files), {canonical_mb:.1f} MB of canonical records. Median of {args.repeat} runs each;",
        "MB/s over the canonical records' MB (what the ceiling COPYs), so a throughput ratio is a ratio of times.",
        "",
        "| path | median s | runs s | MB/s | events/s |",
        "|---|---|---|---|---|",
        f"| first import (`run_import`, empty log, {events:,} events) | {first:.2f} | "
        f"{', '.join(f'{s:.2f}' for s in first_s)} | {canonical_mb / first:.1f} "
        f"({source_mb / first:.1f} of source) | {events / first:,.0f} |",
        f"| no-change re-import (0 events) | {reimport:.2f} | {', '.join(f'{s:.2f}' for s in reimport_s)} | "
        f"{canonical_mb / reimport:.1f} | |",
        f"| ceiling: bare binary COPY (kind, key, jsonb), one transaction | {ceiling:.2f} | "
        f"{', '.join(f'{s:.2f}' for s in copy_s)} | {canonical_mb / ceiling:.1f} | {len(rows) / ceiling:,.0f} |",
        "",
        "| ratio | measured | target | |",
        "|---|---|---|---|",
        f"| first import / ceiling (throughput) | {ceiling / first:.2f} | >= {FIRST_TARGET} | "
        f"{verdict(ceiling / first >= FIRST_TARGET)} |",
        f"| no-change re-import / first import (time) | {reimport / first:.2f} | <= {REIMPORT_TARGET} | "
        f"{verdict(reimport / first <= REIMPORT_TARGET)} |",
        "",
        "| peak RSS | MB |",
        "|---|---|",
        f"| this benchmark process (export's canonical records held for the ceiling, {args.repeat * 2} imports) "
        f"| {bench_rss:.0f} |",
        f"| `powerlog import {export.name}` subprocess (first import, {child['seconds']:.1f} s wall) "
        f"| {child['peak_rss_mb']:.0f} |",
        "",
    ]
    path = write_results("import", results, "\n".join(md))
    print(path.read_text())
    print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
