"""Full rebuild of the read tables from a log of 360K+ events, against the same server's set-based
ceiling (one INSERT ... SELECT of the events table into an identical table), in the same run.

    .venv/bin/python bench/project.py [--events 360000] [--repeat 3]

Uses DATABASE_URL when set, else a throwaway embedded PostgreSQL. Writes bench/results/project.{md,json}.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from common import Timer, fresh_database, peak_rss_mb, server, server_version, write_results
from logfill import fill

from projections import ddl, rebuild
from projections.projector import catch_up


def ceiling(db: object) -> float:
    with db.connect(autocommit=True) as conn:  # type: ignore[attr-defined]
        conn.execute("DROP TABLE IF EXISTS events_ceiling")
        conn.execute(
            "CREATE TABLE events_ceiling (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)"
        )
        with Timer() as t:
            conn.execute("INSERT INTO events_ceiling SELECT * FROM events")
        conn.execute("DROP TABLE events_ceiling")
    return t.seconds


def tables_only(db: object) -> float:
    """The table-loading part of a rebuild alone (no search indexes, view or swap)."""
    with db.connect(autocommit=True) as conn:  # type: ignore[attr-defined]
        with conn.transaction():
            ddl.drop_schema(conn, "bench_load")
            ddl.create_tables(conn, "bench_load")
        with Timer() as t:
            catch_up(conn, "bench_load", range_size=db.settings.project_batch)  # type: ignore[attr-defined]
        with conn.transaction():
            ddl.drop_schema(conn, "bench_load")
    return t.seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=360_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with server() as admin:
        version = server_version(admin)
        with fresh_database(admin) as db:
            with Timer() as t:
                events = fill(db, args.events)
            print(f"log of {events:,} events built in {t.seconds:.1f} s", file=sys.stderr)
            runs = []
            for _ in range(args.repeat):
                c = ceiling(db)
                load = tables_only(db)
                full = rebuild(db).seconds
                runs.append((c, load, full))
                print(
                    f"ceiling {c:.2f} s, table load {load:.2f} s, full rebuild {full:.2f} s", file=sys.stderr
                )
            with db.connect() as conn:
                mb = conn.execute("SELECT sum(pg_column_size(data)) / 1e6 FROM events").fetchone()[0]  # type: ignore[index]
    c, load, full = (statistics.median(r[i] for r in runs) for i in range(3))
    result = {
        "server_version": version,
        "events": events,
        "jsonb_mb": round(float(mb), 1),
        "ceiling_s": round(c, 2),
        "table_load_s": round(load, 2),
        "full_rebuild_s": round(full, 2),
        "ceiling_events_per_s": round(events / c),
        "table_load_events_per_s": round(events / load),
        "full_rebuild_events_per_s": round(events / full),
        "table_load_vs_ceiling": round(c / load, 3),
        "full_rebuild_vs_ceiling": round(c / full, 3),
        "peak_rss_mb": round(peak_rss_mb()),
        "runs": runs,
    }
    md = f"""# Projection benchmark (`bench/project.py`)

PostgreSQL {version}; a log of {events:,} events ({result["jsonb_mb"]} MB of jsonb as stored) built through the
store API by two imports: {args.events:,} records added (archetypes, sets of 100 powers of about 1 KB, each
with 3 effects), then 1 % of the powers changed. Median of {args.repeat} runs.

| path | seconds | events/s | vs ceiling |
|---|---|---|---|
| ceiling: `INSERT INTO copy SELECT * FROM events` (identical table) | {result["ceiling_s"]} | {result["ceiling_events_per_s"]:,} | 1 |
| projection table load (set-based, checkpoint per 10K positions) | {result["table_load_s"]} | {result["table_load_events_per_s"]:,} | {result["table_load_vs_ceiling"]} |
| full `rebuild` (load + search indexes + view + swap) | {result["full_rebuild_s"]} | {result["full_rebuild_events_per_s"]:,} | {result["full_rebuild_vs_ceiling"]} |

Peak RSS of the benchmark process: {result["peak_rss_mb"]} MB.
"""
    path = write_results("project", result, md)
    print(md)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
