"""Append throughput of the store against a bare COPY of the same bytes, on the same server, same run.

    .venv/bin/python bench/append.py [--sizes 36000,360000] [--repeat 3]

Uses DATABASE_URL when set, else a throwaway embedded PostgreSQL. Writes bench/results/append.{md,json}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from typing import Any

from common import Timer, fresh_database, peak_rss_mb, server, server_version, write_results
from logfill import added, chunks

from store import imports, locks, log
from store.imports import ImportMeta


def through_store(db: Any, n: int) -> tuple[float, int]:
    """Time the store API only (building the events is the caller's work); return it and the bytes written."""
    seconds = 0.0
    with db.connect() as conn:
        with Timer() as t:
            conn.execute("BEGIN")
            locks.acquire(conn, locks.LOG)
            import_id = imports.begin(conn, ImportMeta(source_path="bench"))
        seconds += t.seconds
        for batch in chunks(added(n)):
            with Timer() as t:
                log.append(conn, import_id, batch)
            seconds += t.seconds
        with Timer() as t:
            conn.execute("COMMIT")
        seconds += t.seconds
        size = conn.execute(
            "SELECT pg_total_relation_size('events'), sum(octet_length(data::text)) FROM events"
        ).fetchone()
    assert size is not None
    return seconds, int(size[1])


def bare_copy(db: Any) -> float:
    """COPY the very rows the store wrote (same bytes) into an identical table, in one transaction."""
    with db.connect() as conn:
        conn.execute(
            "CREATE TABLE events_ceiling (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)"
        )
        conn.commit()
        # Read the rows back as COPY binary first (to a file, not memory), so the timed part is nothing but
        # the server taking them.
        with tempfile.TemporaryFile() as payload:
            with conn.cursor().copy("COPY events TO STDOUT (FORMAT BINARY)") as out:
                for block in out:
                    payload.write(block)
            conn.commit()
            payload.seek(0)
            with Timer() as t:
                with conn.cursor().copy("COPY events_ceiling FROM STDIN (FORMAT BINARY)") as cp:
                    while block := payload.read(1 << 20):
                        cp.write(block)
                conn.commit()
        conn.execute("DROP TABLE events_ceiling")
        conn.commit()
    return t.seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="36000,360000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with server() as admin:
        version = server_version(admin)
        for n in sizes:
            store_runs, copy_runs = [], []
            for _ in range(args.repeat):
                with fresh_database(admin) as db:
                    store_s, data_bytes = through_store(db, n)
                    copy_s = bare_copy(db)
                store_runs.append(store_s)
                copy_runs.append(copy_s)
                print(f"{n} events: store {store_s:.2f} s, bare COPY {copy_s:.2f} s", file=sys.stderr)
            store_s, copy_s = statistics.median(store_runs), statistics.median(copy_runs)
            row = {
                "events": n,
                "mb": round(data_bytes / 1e6, 1),
                "store_s": round(store_s, 2),
                "store_events_per_s": round(n / store_s),
                "copy_s": round(copy_s, 2),
                "copy_events_per_s": round(n / copy_s),
                "ratio": round(copy_s / store_s, 3),
                "peak_rss_mb": round(peak_rss_mb()),
                "store_runs_s": [round(x, 2) for x in store_runs],
                "copy_runs_s": [round(x, 2) for x in copy_runs],
            }
            rows.append(row)
    md = [
        "# Append benchmark (`bench/append.py`)",
        "",
        f"PostgreSQL {version}; the Added events of `bench/logfill` (powers of about 1 KB of canonical JSON,",
        "with their powersets and archetypes); one import (one transaction) per size;"
        f" median of {args.repeat} runs, each on a fresh database.",
        "Store = `store.log.append` in chunks of 10,000 (encode, chain hash, binary COPY into `events`, `streams` kept in the",
        "same transaction). Ceiling = a bare binary `COPY` of the very same rows into an identical table.",
        "",
        "| events | MB (jsonb text) | store s | store events/s | bare COPY s | COPY events/s | store / COPY | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['events']:,} | {r['mb']} | {r['store_s']} | {r['store_events_per_s']:,} | {r['copy_s']} | "
            f"{r['copy_events_per_s']:,} | {r['ratio']} | {r['peak_rss_mb']} |"
        )
    md.append("")
    path = write_results("append", {"server_version": version, "runs": rows}, "\n".join(md) + "\n")
    print("\n".join(md))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
