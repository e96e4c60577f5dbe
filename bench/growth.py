"""How powerlog holds up as things grow: the log, the view's refreshes, and commit-to-visible in follow mode.

    .venv/bin/python bench/growth.py append  [--events 1100000] [--batch 10000] [--probe-every 100000]
    .venv/bin/python bench/growth.py view    [--scale 3] [--refreshes 50]
    .venv/bin/python bench/growth.py visible [--scale 1] [--releases 20] [--interval 1]

Each part runs on DATABASE_URL when set, else a throwaway embedded PostgreSQL, and writes
bench/results/growth-<part>-<name>.{md,json} (--name, default the server's major version).

- append: real-shaped Added events (the real release's powers, canonical JSON of 2-20 KB, renamed per
  copy) appended through `store.log.append`, one import (one transaction) per --batch events, until the
  log holds --events. Every --probe-every events it also times 20 small imports of 100 events. Reported per
  window: batch throughput (events/s, MB/s) and small-import latency p50/p99, against the log's size.
- view: a scale-N release imported and projected, the view populated; then --refreshes rounds of "change 5 %
  of the powers in the read table, REFRESH … CONCURRENTLY", with the view's pg_total_relation_size after
  each; against a fresh build of the same rows; then whether VACUUM (ANALYZE) of the view pays (its size,
  the next refresh, and point and range reads before and after); then, from a plain refresh's fresh
  build, --refreshes more rounds with a plain VACUUM after each concurrent refresh (its size and time).
- visible: `powerlog project --follow` and `powerlog scheduler run --interval I` as subprocesses; each of
  --releases derived releases (bench/synth.py: 5 % changed, 0.5 % added and removed) is imported
  in-process, and the time from the import's commit to (a) the read tables holding it (checkpoints at its
  last position, and a changed power's new value read back) and (b) the view holding it is polled every
  5 ms; p50/p99 over the releases.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import structlog
import synth
from common import REPO, SHARED_DATA, Timer, fresh_database, server, server_version, write_results

from events import EntityAdded, canonical_bytes
from importer.run import run_import
from importer.source import read_export
from projections import project
from scheduler import refresh
from store import imports, locks, log
from store.connection import Database
from store.imports import ImportMeta

POWERLOG = Path(sys.executable).parent / "powerlog"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- append -------------------------------------------------------------------------------------------------


def real_powers(export: Path) -> list[tuple[str, bytes, Any]]:
    """(FullName, canonical bytes, record) of every real power: the shapes the appends repeat."""
    out = []
    with read_export(export) as reader:
        for rec in reader:
            if rec.kind == "power":
                out.append((rec.key, canonical_bytes(rec.record), rec.record))
    return out


def events(powers: list[tuple[str, bytes, Any]], start: int, n: int) -> Iterator[log.Pending]:
    """n Added events of real powers under new keys (`<name>_g<copy>`), numbered from `start`."""
    for i in range(start, start + n):
        name, data, record = powers[i % len(powers)]
        key = f"{name}_g{i // len(powers):05d}"
        # The canonical form's top-level "FullName" is the only '"FullName":"' (effects hold PowerFullName).
        new = data.replace(f'"FullName":"{name}"'.encode(), f'"FullName":"{key}"'.encode(), 1)
        ev = EntityAdded(kind="power", key=key, record=record, hash=hashlib.sha256(new).hexdigest())
        yield log.Pending(ev, 0, new)


def one_import(db: Database, batch: list[log.Pending]) -> float:
    with db.connect() as conn, Timer() as t:
        conn.execute("BEGIN")
        locks.acquire(conn, locks.LOG)
        import_id = imports.begin(conn, ImportMeta(source_path="bench growth"))
        appended = log.append(conn, import_id, batch)
        imports.complete(conn, import_id, None, {}, [], appended, str(log.head(conn)))
        conn.execute("COMMIT")
    return t.seconds


def append_part(db: Database, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    powers = real_powers(args.source)
    total = 0
    windows: list[dict[str, Any]] = []
    window: dict[str, Any] = {"events": 0, "mb": 0.0, "seconds": 0.0}
    while total < args.events:
        n = min(args.batch, args.events - total)
        batch = list(events(powers, total, n))
        mb = sum(len(p.record or b"") for p in batch) / 1e6
        window["seconds"] += one_import(db, batch)
        window["events"] += n
        window["mb"] += mb
        total += n
        if window["events"] >= args.probe_every or total >= args.events:
            latencies = []
            for _ in range(20):
                small = list(events(powers, total, 100))
                latencies.append(one_import(db, small) * 1000)
                total += 100
            with db.connect() as conn:
                size = conn.execute("SELECT pg_total_relation_size('events')").fetchone()
            assert size is not None
            windows.append(
                {
                    "log_events": total,
                    "events_mb": round(size[0] / 1e6),
                    "batch_events_per_s": round(window["events"] / window["seconds"]),
                    "batch_mb_per_s": round(window["mb"] / window["seconds"], 1),
                    "small_import_p50_ms": round(pct(latencies, 0.5), 1),
                    "small_import_p99_ms": round(pct(latencies, 0.99), 1),
                }
            )
            print(windows[-1], file=sys.stderr)
            window = {"events": 0, "mb": 0.0, "seconds": 0.0}
    md = [
        f"Appends of real-shaped power events (canonical JSON of the real powers, renamed), {args.batch:,} per"
        " import; every window also 20 imports of 100 events.",
        "",
        "| log events | events table MB | batch events/s | batch MB/s | 100-event import p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
        *(
            f"| {w['log_events']:,} | {w['events_mb']:,} | {w['batch_events_per_s']:,} | {w['batch_mb_per_s']}"
            f" | {w['small_import_p50_ms']} | {w['small_import_p99_ms']} |"
            for w in windows
        ),
    ]
    return {"windows": windows, "batch": args.batch}, "\n".join(md)


# -- view ---------------------------------------------------------------------------------------------------


def view_size(conn: Any) -> int:
    row = conn.execute("SELECT pg_total_relation_size('power_build_summary')").fetchone()
    return int(row[0])


def reads(conn: Any) -> dict[str, float]:
    """Median ms of 200 point reads by id and of 20 range reads by (powerset_id, level_available)."""
    ids = [r[0] for r in conn.execute("SELECT id FROM powers ORDER BY random() LIMIT 200").fetchall()]
    sets = [r[0] for r in conn.execute("SELECT id FROM powersets ORDER BY random() LIMIT 20").fetchall()]
    point, ranged = [], []
    for i in ids:
        with Timer() as t:
            conn.execute("SELECT * FROM power_build_summary WHERE id = %s", (i,)).fetchall()
        point.append(t.seconds * 1000)
    for s in sets:
        with Timer() as t:
            conn.execute(
                "SELECT id, full_name FROM power_build_summary WHERE powerset_id = %s AND level_available <= 20",
                (s,),
            ).fetchall()
        ranged.append(t.seconds * 1000)
    return {"point_ms": round(statistics.median(point), 3), "range_ms": round(statistics.median(ranged), 3)}


def change_and_refresh(conn: Any, round_no: int) -> float:
    conn.execute("UPDATE powers SET recharge_time = recharge_time + 1 WHERE id %% 20 = %s", (round_no % 20,))
    with Timer() as t:
        conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY power_build_summary")
    return t.seconds


def view_part(db: Database, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    out = args.work / f"{args.source.name}-s{args.scale:03d}-seed1"
    manifest = synth.ensure(out, args.scale, releases=1, seed=1, source=args.source)
    run_import(db, out / manifest["releases"][0]["path"])
    project(db)
    assert refresh(db).outcome == "ok"
    sizes, times = [], []
    with db.connect(autocommit=True) as conn:
        fresh = view_size(conn)
        before = reads(conn)
        for i in range(args.refreshes):
            times.append(change_and_refresh(conn, i))
            sizes.append(view_size(conn))
        grown = reads(conn)
        # One more round without VACUUM, then VACUUM (ANALYZE) and one more round.
        next_plain = change_and_refresh(conn, args.refreshes)
        with Timer() as vt:
            conn.execute("VACUUM (ANALYZE) power_build_summary")
        vacuumed_size = view_size(conn)
        vacuumed_reads = reads(conn)
        next_vacuumed = change_and_refresh(conn, args.refreshes + 1)
        size_after_vacuum_round = view_size(conn)
        conn.execute("REFRESH MATERIALIZED VIEW power_build_summary")  # a plain refresh rewrites it whole
        rebuilt = view_size(conn)
        rebuilt_reads = reads(conn)
        rows = conn.execute("SELECT count(*) FROM power_build_summary").fetchone()[0]
        # The other way: from that fresh build, VACUUM after every concurrent refresh, so that each
        # refresh's dead rows are free space for the next one's.
        kept_sizes, kept_refresh, kept_vacuum = [], [], []
        for i in range(args.refreshes):
            kept_refresh.append(change_and_refresh(conn, args.refreshes + 2 + i))
            with Timer() as vt_each:
                conn.execute("VACUUM power_build_summary")
            kept_vacuum.append(vt_each.seconds)
            kept_sizes.append(view_size(conn))
        kept_reads = reads(conn)
    result = {
        "scale": args.scale,
        "rows": rows,
        "fresh_mb": round(fresh / 1e6, 1),
        "after_refreshes_mb": [round(s / 1e6, 1) for s in sizes],
        "refresh_s": [round(t, 3) for t in times],
        "reads_fresh": before,
        "reads_after_refreshes": grown,
        "next_refresh_without_vacuum_s": round(next_plain, 3),
        "vacuum_s": round(vt.seconds, 3),
        "after_vacuum_mb": round(vacuumed_size / 1e6, 1),
        "reads_after_vacuum": vacuumed_reads,
        "next_refresh_after_vacuum_s": round(next_vacuumed, 3),
        "after_vacuum_and_refresh_mb": round(size_after_vacuum_round / 1e6, 1),
        "plain_refresh_rebuilt_mb": round(rebuilt / 1e6, 1),
        "reads_rebuilt": rebuilt_reads,
        "vacuumed_each": {
            "after_refreshes_mb": [round(s / 1e6, 1) for s in kept_sizes],
            "refresh_s": [round(t, 3) for t in kept_refresh],
            "vacuum_s": [round(t, 3) for t in kept_vacuum],
            "reads": kept_reads,
        },
    }
    md = [
        f"Scale {args.scale} ({rows:,} view rows); {args.refreshes} rounds of: 5 % of the powers changed in"
        " the read table, then REFRESH … CONCURRENTLY.",
        "",
        "| state | view MB | point read ms (median) | range read ms (median) |",
        "|---|---|---|---|",
        f"| fresh build | {result['fresh_mb']} | {before['point_ms']} | {before['range_ms']} |",
        f"| after {args.refreshes} concurrent refreshes | {result['after_refreshes_mb'][-1]} |"
        f" {grown['point_ms']} | {grown['range_ms']} |",
        f"| then VACUUM (ANALYZE) ({result['vacuum_s']} s) | {result['after_vacuum_mb']} |"
        f" {vacuumed_reads['point_ms']} | {vacuumed_reads['range_ms']} |",
        f"| after one more refresh | {result['after_vacuum_and_refresh_mb']} | | |",
        f"| plain REFRESH (rewrites the view) | {result['plain_refresh_rebuilt_mb']} |"
        f" {rebuilt_reads['point_ms']} | {rebuilt_reads['range_ms']} |",
        "",
        f"Concurrent refresh: first {times[0]:.2f} s, median {statistics.median(times):.2f} s, last"
        f" {times[-1]:.2f} s; the next one without VACUUM {next_plain:.2f} s, after VACUUM {next_vacuumed:.2f} s.",
        "",
        "View size after each refresh (MB): " + ", ".join(str(s) for s in result["after_refreshes_mb"]),
        "",
        f"Then, from the plain refresh's fresh build, {args.refreshes} more rounds with `VACUUM` after each"
        f" concurrent refresh: the view {kept_sizes[-1] / 1e6:.1f} MB after the last (largest"
        f" {max(kept_sizes) / 1e6:.1f} MB); refresh median {statistics.median(kept_refresh):.2f} s, VACUUM"
        f" median {statistics.median(kept_vacuum):.3f} s (max {max(kept_vacuum):.3f} s); reads then: point"
        f" {kept_reads['point_ms']} ms, range {kept_reads['range_ms']} ms.",
        "",
        "View size after each refresh and VACUUM (MB): " + ", ".join(f"{s / 1e6:.1f}" for s in kept_sizes),
    ]
    return result, "\n".join(md)


# -- visible ------------------------------------------------------------------------------------------------


def daemon(db: Database, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POWERLOG_")}
    env.update(DATABASE_URL=db.dsn, POWERLOG_VIEW_REFRESH="scheduler", POWERLOG_LOG_LEVEL="warning")
    return subprocess.Popen(
        [str(POWERLOG), *args], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )


def visible_part(db: Database, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    out = args.work / f"{args.source.name}-s{args.scale:03d}-seed1-k{args.releases}"
    manifest = synth.ensure(out, args.scale, releases=args.releases, seed=1, source=args.source)
    releases = manifest["releases"]
    run_import(db, out / releases[0]["path"])
    project(db)
    assert refresh(db).outcome == "ok"
    follower = daemon(db, "project", "--follow", "--poll", "5")
    refresher = daemon(db, "scheduler", "run", "--interval", str(args.interval))
    tables_ms, view_ms = [], []
    try:
        time.sleep(3)  # both daemons up, caught up, idle
        for release in releases[1:]:
            key = release["keys"]["power"]["changed"][0]
            result = run_import(db, out / release["path"])
            committed = time.perf_counter()
            assert result.appended is not None
            last = result.appended.last_position
            want = _recharge(out / release["path"], key)
            t_tables = t_view = None
            with db.connect(autocommit=True) as conn:
                while t_view is None or t_tables is None:
                    now = time.perf_counter()
                    if now - committed > 60:
                        raise SystemExit(f"{release['name']} not visible after 60 s")
                    if t_tables is None:
                        row = conn.execute(
                            "SELECT (SELECT min(position) FROM projection_checkpoints) >= %s,"
                            " (SELECT recharge_time FROM powers WHERE full_name = %s)",
                            (last, key),
                        ).fetchone()
                        if row and row[0]:
                            assert row[1] == want, (key, row[1], want)
                            t_tables = now
                    if t_view is None:
                        row = conn.execute(
                            "SELECT coalesce(max(source_position), 0) >= %s FROM view_refreshes"
                            " WHERE outcome = 'ok'",
                            (last,),
                        ).fetchone()
                        if row and row[0]:
                            t_view = now
                    time.sleep(0.005)
            tables_ms.append((t_tables - committed) * 1000)
            view_ms.append((t_view - committed) * 1000)
            print(
                f"{release['name']}: tables {tables_ms[-1]:.0f} ms, view {view_ms[-1]:.0f} ms",
                file=sys.stderr,
            )
            time.sleep(1)
    finally:
        for proc in (follower, refresher):
            proc.send_signal(signal.SIGTERM)
        for proc in (follower, refresher):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    result = {
        "scale": args.scale,
        "releases": len(tables_ms),
        "interval_s": args.interval,
        "tables_ms": [round(v) for v in tables_ms],
        "view_ms": [round(v) for v in view_ms],
        "tables_p50_ms": round(pct(tables_ms, 0.5)),
        "tables_p99_ms": round(pct(tables_ms, 0.99)),
        "view_p50_ms": round(pct(view_ms, 0.5)),
        "view_p99_ms": round(pct(view_ms, 0.99)),
    }
    md = [
        f"Scale {args.scale}, {len(tables_ms)} imports of a 5 %-change release; `project --follow` and"
        f" `scheduler run --interval {args.interval}` as subprocesses; from the import's commit (run_import"
        " returned) to the state being readable, polled every 5 ms. p99 over "
        f"{len(tables_ms)} samples is their maximum or near it.",
        "",
        "| readable in | p50 ms | p99 ms | target |",
        "|---|---|---|---|",
        f"| read tables (checkpoint at the import's last position, a changed power read back) |"
        f" {result['tables_p50_ms']} | {result['tables_p99_ms']} | p99 <= 1000 |",
        f"| power_build_summary (a refresh at or past that position) | {result['view_p50_ms']} |"
        f" {result['view_p99_ms']} | |",
    ]
    return result, "\n".join(md)


def _recharge(export: Path, key: str) -> float | None:
    """A changed power's RechargeTime as the release has it (what the read table must show)."""
    for path in (export / "db").rglob("*.json"):
        raw = path.read_bytes()
        if f'"{key}"'.encode() not in raw:
            continue
        doc = msgspec.json.decode(raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw)
        for p in doc["Powers"]:
            if p["FullName"] == key:
                value = p.get("RechargeTime")
                return float(value) if isinstance(value, int | float) else None
    raise SystemExit(f"{key} not found in {export}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", choices=("append", "view", "visible"))
    parser.add_argument("--name", default=None)
    parser.add_argument("--source", type=Path, default=SHARED_DATA / "mids-21.0331")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "powerlog-synth")
    parser.add_argument("--events", type=int, default=1_100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--probe-every", type=int, default=100_000)
    parser.add_argument("--scale", type=int, default=None)
    parser.add_argument("--refreshes", type=int, default=50)
    parser.add_argument("--releases", type=int, default=20)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    if args.scale is None:
        args.scale = 3 if args.part == "view" else 1
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    parts = {"append": append_part, "view": view_part, "visible": visible_part}
    with server() as admin:
        version = server_version(admin)
        name = args.name or f"pg{version.split('.')[0]}"
        with fresh_database(admin) as db:
            result, body = parts[args.part](db, args)
    result["server_version"] = version
    md = f"# Growth: {args.part} (`bench/growth.py {args.part}`)\n\nPostgreSQL {version}.\n\n{body}\n"
    path = write_results(f"growth-{args.part}-{name}", result, md)
    print(md)
    print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
