"""Refreshing power_build_summary: plain vs CONCURRENTLY, and what a reader sees meanwhile, same server, same run.

    .venv/bin/python bench/refresh.py [--sizes 3000,30000,300000] [--row-bytes 500]
                                      [--min-refresh-seconds 5] [--min-gap-seconds 0.3] [--max-refreshes 60]
                                      [--read-interval-ms 1] [--runs 3] [--name refresh]

For each size: a fresh database holding that many powers (written straight into the read tables with
generate_series: 50 archetypes, powers/100 powersets, rows of about --row-bytes), the view populated. Then
a reader process on its own connection does point reads by the view's unique key (`WHERE id = %s`, one
every --read-interval-ms) while the benchmark repeats, for each mode (plain, then CONCURRENTLY):

- change 1 % of the powers (a different 1 % each time) and move the source checkpoint;
- idle gap: no refresh, as long as the previous refresh (at least --min-gap-seconds): the baseline,
  interleaved with the refreshes so that load from outside the benchmark hits both alike;
- `scheduler.refresh(db, concurrently=...)`;

until the mode has had at least 3 refreshes and --min-refresh-seconds of refreshing (or --max-refreshes).
A control phase ("busy") then keeps one backend spinning on the CPU, touching no table, for as long as the
median concurrent refresh: what readers see from the CPU a refresh takes away, without any refresh.
Reader latencies are those of the reads that overlapped a refresh, timed from send to result and also
from when each read was due (so reads queued behind a stalled one count their wait). Target: during
CONCURRENTLY refreshes, reader p99 <= 2 x idle p99. Each size is measured --runs times, on a fresh database
each time, the runs interleaving the sizes: at 3K powers a phase holds only about 5,000 reads, so its p99
rests on some 50 of them and one run alone says little. Uses DATABASE_URL when set, else a throwaway
embedded PostgreSQL. Writes bench/results/NAME.{md,json}.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import random
import statistics
import sys
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import Any

import psycopg
import structlog
from common import fresh_database, peak_rss_mb, server, server_version, write_results
from psycopg import sql

import scheduler
from store.connection import Database

TARGET_RATIO = 2.0


def populate(db: Database, powers: int, row_bytes: int) -> None:
    """Archetypes, powersets and powers written directly, every source checkpoint at position 1."""
    sets = max(1, powers // 100)
    pad = max(0, row_bytes - 250)  # the other columns and the effects take about 250 bytes
    with db.connect(autocommit=True) as conn:
        conn.execute(
            "INSERT INTO archetypes (id, class_name, display_name, data)"
            " SELECT g, 'Class_' || g, 'Archetype ' || g, '{}' FROM generate_series(1, 50) g"
        )
        conn.execute(
            "INSERT INTO powersets (id, full_name, display_name, archetype_id, data)"
            " SELECT g, 'Group.Set_' || g, 'Set ' || g, CASE WHEN g %% 10 = 0 THEN NULL ELSE 1 + g %% 50 END,"
            " '{}' FROM generate_series(1, %s) g",
            (sets,),
        )
        conn.execute(
            "INSERT INTO powers (id, full_name, display_name, powerset_id, level_available, accuracy,"
            " damage_scale, endurance_cost, recharge_time, cast_time, range, effects, effect_groups, data)"
            " SELECT g, 'Group.Set_' || (1 + g %% %(sets)s) || '.Power_' || g, 'Power ' || g,"
            " 1 + g %% %(sets)s, 1 + g %% 50, 1.0, 0.5, 5.2, 10.0, 1.1, 80.0,"
            ' \'[{"EffectId": "Damage", "EffectType": 3, "Scale": 0.5, "Aspect": 2, "ToWho": 1}]\','
            " '{\"Damage\": 1}', jsonb_build_object('FullName', 'Power_' || g, 'Desc', repeat('x', %(pad)s))"
            " FROM generate_series(1, %(powers)s) g",
            {"sets": sets, "powers": powers, "pad": pad},
        )
        conn.execute(
            "INSERT INTO projection_checkpoints (projector, position)"
            " SELECT unnest(%s::text[]), 1 ON CONFLICT (projector) DO UPDATE SET position = 1",
            (list(scheduler.SOURCE_PROJECTORS),),
        )
        conn.execute("VACUUM ANALYZE archetypes, powersets, powers")
    result = scheduler.refresh(db, concurrently=False)
    assert result.outcome == "ok" and result.rows == powers, result
    with db.connect(autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE power_build_summary")


def change_one_percent(db: Database, step: int) -> None:
    """Change a different 1 % of the powers each step and move the checkpoint, as a projection would."""
    with db.connect(autocommit=True) as conn:
        conn.execute("UPDATE powers SET accuracy = accuracy + 1 WHERE id %% 100 = %s", (step % 100,))
        conn.execute("UPDATE projection_checkpoints SET position = position + 1 WHERE projector = 'powers'")


def spin(db: Database, seconds: float) -> float:
    """Keep one backend busy on the CPU for `seconds`, touching no table: the control for a refresh."""
    start = time.perf_counter()
    with db.connect(autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "DO $$ BEGIN WHILE clock_timestamp() < statement_timestamp() + {} * interval '1 s' LOOP"
                " END LOOP; END $$"
            ).format(sql.Literal(seconds))
        )
    return time.perf_counter() - start


def _read_loop(
    dsn: str, powers: int, interval_s: float, out: Connection, stop: Event, warm: Event, last_due: Any
) -> None:
    """The reader process: point reads on a fixed schedule until `stop`, then its reads sent through `out`."""
    reads: list[tuple[float, float, float]] = []  # (due, sent, done)
    rng = random.Random(7)
    with psycopg.connect(dsn, autocommit=True) as conn:
        out.send(conn.info.backend_pid)
        due = time.perf_counter()
        while not stop.is_set():
            ahead = due - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
            key = rng.randint(1, powers)
            sent = time.perf_counter()
            row = conn.execute(
                "SELECT id, display_name, powerset_name, archetype_name, accuracy"
                " FROM power_build_summary WHERE id = %s",
                (key,),
            ).fetchone()
            done = time.perf_counter()
            assert row is not None and row[0] == key
            reads.append((due, sent, done))
            last_due.value = due
            if len(reads) == 200:  # past the statement's auto-prepare and a warm cache
                warm.set()
            due += interval_s
    out.send(reads)


def _monitor_loop(dsn: str, pid: int, period_s: float, out: Connection, stop: Event) -> None:
    """The monitor process: the reader backend's wait event every `period_s`, sent through `out` at the end."""
    samples: list[tuple[float, str | None, str | None]] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not stop.wait(period_s):
            row = conn.execute(
                "SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
            if row:
                samples.append((time.perf_counter(), row[0], row[1]))
    out.send(samples)


# Reader and monitor are processes, not threads: a downstream app reading the view is another process, and
# a thread here would wait for the GIL whenever this process runs Python around a refresh, which the
# reader would then misreport as refresh latency. time.perf_counter() is CLOCK_MONOTONIC on Linux, one clock
# for every process, so their timestamps compare with the refresh windows measured here.
_MP = multiprocessing.get_context("spawn")


class Reader:
    """Point reads by unique key on its own connection, in its own process, each timed from when it was due.

    Timing from the due time rather than the send time counts the reads a stalled reader could not even
    send (as a steady stream of API requests would queue): otherwise a 2 s stall would be one slow read.
    """

    def __init__(self, db: Database, powers: int, interval_s: float) -> None:
        self.stop = _MP.Event()
        self.warm = _MP.Event()
        self._last_due = _MP.Value("d", 0.0)
        self._pipe, child = _MP.Pipe(duplex=False)
        self._process = _MP.Process(
            target=_read_loop,
            args=(db.dsn, powers, interval_s, child, self.stop, self.warm, self._last_due),
            daemon=True,
        )
        self._process.start()
        child.close()  # ours closed, a reader that dies ends the pipe: recv() raises instead of hanging
        self.backend_pid: int = self._pipe.recv()
        self.reads: list[tuple[float, float, float]] = []

    def wait_on_schedule(self, since: float, timeout: float = 60.0) -> None:
        """Return once a read due at or after `since` has completed."""
        deadline = time.perf_counter() + timeout
        while self._last_due.value < since and time.perf_counter() < deadline:
            time.sleep(0.001)

    def finish(self) -> None:
        self.stop.set()
        self.reads = self._pipe.recv()
        self._process.join()

    def latencies_ms(self, windows: list[tuple[float, float]], from_due: bool = True) -> list[float]:
        """Latencies of the reads overlapping any of the windows, from their due (or send) time."""
        return [
            (done - (due if from_due else sent)) * 1000
            for due, sent, done in self.reads
            if any(due < w_end and done > w_start for w_start, w_end in windows)
        ]


class Monitor:
    """Samples the reader's backend in pg_stat_activity every few ms, from its own process: did it ever wait
    on a lock?"""

    def __init__(self, db: Database, pid: int, period_s: float = 0.005) -> None:
        self.stop = _MP.Event()
        self._pipe, child = _MP.Pipe(duplex=False)
        self._process = _MP.Process(
            target=_monitor_loop, args=(db.dsn, pid, period_s, child, self.stop), daemon=True
        )
        self._process.start()
        child.close()
        self.samples: list[tuple[float, str | None, str | None]] = []

    def finish(self) -> None:
        self.stop.set()
        self.samples = self._pipe.recv()
        self._process.join()

    def lock_waits(self, windows: list[tuple[float, float]]) -> int:
        """Samples inside the windows that caught the reader waiting on a heavyweight lock."""
        return sum(
            1 for t, kind, _ in self.samples if kind == "Lock" and any(a <= t <= b for a, b in windows)
        )


def summary(latencies: list[float]) -> dict[str, Any]:
    if not latencies:
        return {"reads": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    return {
        "reads": len(ordered),
        "p50_ms": round(pct(50), 3),
        "p99_ms": round(pct(99), 3),
        "max_ms": round(ordered[-1], 3),
    }


def _row(
    reader: Reader, monitor: Monitor, powers: int, phase: str, windows: list[tuple[float, float]]
) -> dict[str, Any]:
    queued = summary(reader.latencies_ms(windows))
    return {
        "lock_wait_samples": monitor.lock_waits(windows),
        "powers": powers,
        "phase": phase,
        **summary(reader.latencies_ms(windows, from_due=False)),
        "queued_p50_ms": queued["p50_ms"],
        "queued_p99_ms": queued["p99_ms"],
        "queued_max_ms": queued["max_ms"],
    }


def measure_size(db: Database, powers: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    start = time.perf_counter()
    populate(db, powers, args.row_bytes)
    print(f"{powers:,} powers populated in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    reader = Reader(db, powers, args.read_interval_ms / 1000)
    monitor = Monitor(db, reader.backend_pid)
    phases: list[tuple[str, list[tuple[float, float]], list[float]]] = []
    idle_windows: list[tuple[float, float]] = []
    step = 0
    try:
        reader.warm.wait(60)
        for mode in ("plain", "concurrently", "busy"):
            windows: list[tuple[float, float]] = []
            seconds: list[float] = []
            while len(seconds) < 3 or (
                sum(seconds) < args.min_refresh_seconds and len(seconds) < args.max_refreshes
            ):
                step += 1
                change_one_percent(db, step)
                # The idle baseline interleaves with the refreshes, so load from outside hits both alike;
                # it starts once the reader has worked off any backlog a stall left behind.
                reader.wait_on_schedule(since=time.perf_counter())
                gap_start = time.perf_counter()
                time.sleep(max(args.min_gap_seconds, seconds[-1] if seconds else 0))
                idle_windows.append((gap_start, time.perf_counter()))
                w_start = time.perf_counter()
                if mode == "busy":
                    seconds.append(spin(db, statistics.median(phases[-1][2])))
                else:
                    result = scheduler.refresh(db, concurrently=mode == "concurrently")
                    assert result.outcome == "ok" and result.mode == mode, result
                    seconds.append((result.duration_ms or 0) / 1000)
                windows.append((w_start, time.perf_counter()))
            phases.append((mode, windows, seconds))
    finally:
        reader.finish()
        monitor.finish()
    rows = [{**_row(reader, monitor, powers, "idle", idle_windows), "refreshes": 0, "refresh_s": None}]
    for mode, windows, seconds in phases:
        rows.append(
            {
                **_row(reader, monitor, powers, mode, windows),
                "refreshes": len(seconds) if mode != "busy" else 0,
                "refresh_s": round(statistics.median(seconds), 3),
                "refresh_s_all": [round(s, 3) for s in seconds],
            }
        )
    idle = rows[0]
    for row in rows:
        for key in ("p99_ms", "queued_p99_ms"):
            ratio = row[key] / idle[key] if row[key] and idle[key] else None
            row[key.replace("_ms", "_vs_idle")] = round(ratio, 2) if ratio is not None else None
        row["peak_rss_mb"] = round(peak_rss_mb())
        print(row, file=sys.stderr)
    return rows


def markdown(version: str, args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Refresh benchmark (`bench/refresh.py`)",
        "",
        f"PostgreSQL {version}; power rows of about {args.row_bytes} bytes; before each refresh 1 % of the powers",
        "change. Refresh s = median time of the REFRESH statement over the phase's refreshes (`scheduler.refresh`).",
        f"Reader: point reads by unique key on `power_build_summary`, one due every {args.read_interval_ms} ms, from",
        "another connection in its own process; a phase's reads are those that overlapped its refreshes. Idle: the reads",
        "in the gaps before each refresh (none running), interleaved with the refreshes so that load from outside",
        "the benchmark (the machine is shared) falls on both alike. p50/p99/max: each read from send to result.",
        "Queued p99: each read from when it was due, so reads that could not be sent while an earlier one was",
        "stalled count their wait (what a steady stream of API requests would see).",
        "Busy (control): instead of a refresh, one backend spins on the CPU for as long as the median concurrent",
        "refresh, touching no table (the machine has 2 cores for server, reader and everything else).",
        "Lock-wait samples: a third connection samples the reader's wait_event_type in pg_stat_activity every",
        "5 ms; the count of samples in the phase that found it waiting on a lock.",
        f"Target: during CONCURRENTLY refreshes reader p99 <= {TARGET_RATIO:g} x idle p99.",
        "",
        f"Each size was measured {args.runs} time(s), each time on a fresh database; the runs interleave the sizes.",
        "",
        "| powers | run | phase | refreshes | refresh s | reads | p50 ms | p99 ms | max ms | p99 / idle | "
        "queued p99 ms | queued p99 / idle | lock-wait samples |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["powers"], r["run"])):
        refresh_s = "—" if r["refresh_s"] is None else f"{r['refresh_s']:.3f}"
        lines.append(
            f"| {r['powers']:,} | {r['run']} | {r['phase']} | {r['refreshes']} | {refresh_s} | {r['reads']:,} | "
            f"{r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | {r['p99_vs_idle']} | "
            f"{r['queued_p99_ms']} | {r['queued_p99_vs_idle']} | {r['lock_wait_samples']} |"
        )

    concurrent = [r for r in rows if r["phase"] == "concurrently"]
    sizes = sorted({r["powers"] for r in concurrent})

    def run_by_run(key: str) -> str:
        return "; ".join(
            f"{n:,}: " + ", ".join(str(r[key]) for r in concurrent if r["powers"] == n) for n in sizes
        )

    missed = [
        r for r in concurrent if not (r["p99_vs_idle"] is not None and r["p99_vs_idle"] <= TARGET_RATIO)
    ]
    verdict = (
        "NOT met in " + ", ".join(f"run {r['run']} at {r['powers']:,}" for r in missed)
        if missed
        else "met in every run at every size"
    )
    verdicts = [
        f"- p99 / idle during CONCURRENTLY, run by run ({run_by_run('p99_vs_idle')}): target {verdict}.",
        f"- Queued p99 / idle during CONCURRENTLY, run by run ({run_by_run('queued_p99_vs_idle')}): not the"
        " target, shown for what a request stream would see; one stall of the reader process, from the"
        " refresh or from anything else on the machine, makes a run of reads late, so it varies more.",
    ]
    lines += [
        "",
        *verdicts,
        f"- Peak RSS of the benchmark process: {max(r['peak_rss_mb'] for r in rows)} MB.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="3000,30000,300000", help="comma-separated power counts")
    parser.add_argument("--row-bytes", type=int, default=500, help="approximate size of a power row")
    parser.add_argument(
        "--min-gap-seconds", type=float, default=0.3, help="shortest idle gap before each refresh"
    )
    parser.add_argument("--max-refreshes", type=int, default=60, help="most refreshes per mode and size")
    parser.add_argument("--min-refresh-seconds", type=float, default=5.0, help="refresh time per phase")
    parser.add_argument("--read-interval-ms", type=float, default=1.0, help="pause between reads")
    parser.add_argument("--runs", type=int, default=3, help="times each size is measured")
    parser.add_argument(
        "--name", default="refresh", help="results file name under bench/results/ (without extension)"
    )
    args = parser.parse_args()
    # The per-refresh log lines would drown the figures.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    rows: list[dict[str, Any]] = []
    with server() as admin:
        version = server_version(admin)
        for run in range(1, args.runs + 1):
            for n in (int(s) for s in args.sizes.split(",")):
                with fresh_database(admin) as db:
                    rows += [{**row, "run": run} for row in measure_size(db, n, args)]
    md = markdown(version, args, rows)
    results = {"server_version": version, "settings": vars(args), "target_ratio": TARGET_RATIO, "runs": rows}
    path = write_results(args.name, results, md)
    print(md)
    print(f"written to {path}")


if __name__ == "__main__":
    try:
        main()
    except psycopg.Error as exc:
        sys.exit(f"error: {exc}")
