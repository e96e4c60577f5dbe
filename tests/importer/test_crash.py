"""A killed import leaves nothing behind and can simply be run again.

`powerlog import` runs as a real process (the console script) and is SIGKILLed by the importer's own fault
injection (`POWERLOG_TEST_FAULT`) at points picked by a seeded random generator: a record being read, right
after a COPY batch went to the server, and just before COMMIT. After each kill the log, `streams` and
`imports` must be exactly as before, the hash chain must verify and the dead session's log lock must be
gone; then an import without a fault completes with the exact diff of expected.json, and one more says
"no changes".

The kills share one database: each one starts from the state the previous one must have left untouched,
so a leftover of any kill shows up in the checks of the next one and in the final run. Set
POWERLOG_CRASH_SEED to try other points.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from importer.run import run_import
from store import faults, locks, log
from store.connection import Database
from store.faults import ENV as FAULT_ENV
from tests.conftest import SHARED_DATA, settings_for
from tests.e2e.cli import powerlog

pytestmark = pytest.mark.slow

EXPECTED = json.loads((SHARED_DATA / "expected.json").read_text())
OLD = SHARED_DATA / "mids-20.1224"
NEW = SHARED_DATA / "mids-21.0331"
DIFF = EXPECTED["diff_20.1224_to_21.0331"]
DIFF_EVENTS = sum(c["added"] + c["changed"] + c["removed"] for c in DIFF.values())  # 3,259
OLD_EVENTS = sum(EXPECTED["releases"]["mids-20.1224"]["unique_keys"].values())  # 4,959
# The records the reader yields, the `record` points: 4,955 (its duplicate archetype is skipped, not yielded)
# less the 1,531 of EnhDB.json and three powerset files, byte for byte as in 20.1224 and so not parsed (their
# keys are taken from the first import: tests/importer/test_unchanged_files.py).
NEW_RECORDS = 3424

DEFAULT_SEED = 20210331
SEED = int(os.environ.get("POWERLOG_CRASH_SEED", DEFAULT_SEED))
BATCH = 500  # POWERLOG_IMPORT_BATCH: several COPYs inside the one transaction
# A COPY goes out every 500 events (POWERLOG_IMPORT_BATCH; importer.run.BATCH_BYTES, 8 MB, is never reached
# first here) and at the end of each of the differ's chunks (8 MB of records): the first import (4,959
# Added events) makes thirteen COPYs, the 21.0331 diff (3,255 changed, 4 removed) nine and a tenth of the
# tombstones. The test below checks both counts against the real imports.
OLD_BATCHES = 13
DIFF_BATCHES = 10
LOCK_CLASSID, LOCK_OBJID = locks.LOG.key >> 32, locks.LOG.key & 0xFFFFFFFF


# What crash_points picks for the default seed, written out.
DEFAULT_POINTS = ("after_batch:8", ["record:1909", "after_batch:6", "record:581", "before_commit"])


def crash_points(seed: int) -> tuple[str, list[str]]:
    """A kill point for the first import, and four for the 21.0331 import on top of it."""
    rng = random.Random(seed)
    first = f"after_batch:{rng.randint(1, OLD_EVENTS // BATCH - 1)}"
    points = [
        f"record:{rng.randint(1, NEW_RECORDS)}",
        f"record:{rng.randint(1, NEW_RECORDS)}",
        f"after_batch:{rng.randint(1, DIFF_BATCHES)}",
        "before_commit",
    ]
    rng.shuffle(points)
    return first, points


@dataclass(frozen=True)
class LogState:
    events: int
    max_position: int | None
    head: str
    streams: int
    streams_digest: str | None
    imports: tuple[tuple[Any, ...], ...]


def state(dsn: str) -> LogState:
    """Everything an import writes, in a form to compare (streams' records included, as md5s)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        events = conn.execute("SELECT count(*), max(global_position) FROM events").fetchone()
        streams = conn.execute(
            "SELECT count(*), md5(string_agg(concat_ws('|', stream_id, kind, key, version, hash, md5(record),"
            " removed, last_position), ',' ORDER BY stream_id)) FROM streams"
        ).fetchone()
        imports = conn.execute(
            "SELECT id, status, source_version, counts::text, first_position, last_position, head_chain_hash"
            " FROM imports ORDER BY id"
        ).fetchall()
        head = log.head(conn)
    assert events is not None and streams is not None
    return LogState(events[0], events[1], str(head), streams[0], streams[1], tuple(imports))


def verified_head(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return str(log.verify_chain(conn))


def wait_for_lock_release(dsn: str, timeout: float = 30.0) -> None:
    """The killed client's session must go, and its transaction-scoped log lock with it."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
                " WHERE d.datname = current_database() AND l.locktype = 'advisory'"
                " AND l.classid::int8 = %s AND l.objid::int8 = %s",
                (LOCK_CLASSID, LOCK_OBJID),
            ).fetchone()
            if row == (0,):
                return
            assert time.monotonic() < deadline, "the killed import's log lock is still held"
            time.sleep(0.05)


def json_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def kill_import(dsn: str, path: Any, point: str) -> None:
    result = powerlog(
        "import",
        str(path),
        env={"DATABASE_URL": dsn, "POWERLOG_IMPORT_BATCH": str(BATCH), FAULT_ENV: point},
    )
    assert result.returncode == -9, f"{point}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    fired = [line["point"] for line in json_lines(result.stderr) if line["event"] == "fault_injected"]
    assert fired == [point], result.stderr
    assert "import_completed" not in result.stderr


def test_killed_imports_leave_nothing_and_the_import_then_completes(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_point, points = crash_points(SEED)

    # A kill in the middle of the very first import (COPYs already sent, more to come) leaves an empty log.
    empty = state(dsn)
    assert empty.events == 0 and empty.streams == 0 and empty.imports == ()
    kill_import(dsn, OLD, first_point)
    wait_for_lock_release(dsn)
    assert state(dsn) == empty, first_point
    assert verified_head(dsn) == empty.head

    # In this process the fault points only count: the first kill point must be one of this import's
    # COPYs, with more to come.
    reached: dict[str, int] = {}
    real_point = faults.point

    def count_point(name: str, count: int = 0) -> None:
        reached[name] = max(reached.get(name, 0), count)
        real_point(name, count)

    monkeypatch.setattr(faults, "point", count_point)
    db = Database(settings_for(dsn, POWERLOG_IMPORT_BATCH=str(BATCH)))
    try:
        old = run_import(db, OLD, label="20.1224")
    finally:
        db.close()
        monkeypatch.undo()
    assert reached == {"record": OLD_EVENTS, "after_batch": OLD_BATCHES, "before_commit": 0}
    assert int(first_point.split(":")[1]) < OLD_BATCHES
    assert old.appended is not None and old.appended.last_position == OLD_EVENTS
    before = state(dsn)
    assert before.events == before.max_position == OLD_EVENTS
    assert before.head == str(old.head)
    assert [(r[1], r[2]) for r in before.imports] == [("completed", "20.1224")]

    # verify_chain re-hashes the whole log (seconds): each check runs in a thread while the next killed
    # process reads the export. Those never commit, so the committed log a check reads is the one the
    # kill left; every check is awaited before the import that does commit.
    with ThreadPoolExecutor(max_workers=1) as pool:
        checks = [("before the kills", pool.submit(verified_head, dsn))]
        for point in points:
            kill_import(dsn, NEW, point)
            wait_for_lock_release(dsn)
            # Whole or nothing; nothing is what a kill before COMMIT must leave.
            assert state(dsn) == before, f"the import killed at {point} left something behind"
            checks.append((point, pool.submit(verified_head, dsn)))
        for point, check in checks:
            assert check.result() == before.head, point

        # A fault one COPY past DIFF_BATCHES must not fire: the kill points cover every COPY there is.
        done = powerlog(
            "import",
            str(NEW),
            env={
                "DATABASE_URL": dsn,
                "POWERLOG_IMPORT_BATCH": str(BATCH),
                FAULT_ENV: f"after_batch:{DIFF_BATCHES + 1}",
            },
        )
        assert done.returncode == 0, done.stderr
        assert "fault_injected" not in done.stderr
        completed = state(dsn)
        final_check = pool.submit(verified_head, dsn)  # the next run appends no event
        again = powerlog("import", str(NEW), env={"DATABASE_URL": dsn})
        assert final_check.result() == completed.head

    assert completed.events == completed.max_position == OLD_EVENTS + DIFF_EVENTS
    new_rows = [r for r in completed.imports if r not in before.imports]
    assert len(new_rows) == 1
    _, status, version, counts, first, last, head = new_rows[0]
    assert (status, version) == ("completed", "21.0331")
    assert json.loads(counts) == DIFF
    assert (first, last) == (OLD_EVENTS + 1, OLD_EVENTS + DIFF_EVENTS)
    assert head == completed.head
    said = " ".join(done.stdout.split())  # whatever the console's width did to the lines
    assert f"log head {completed.head}" in said
    assert re.search(rf"{DIFF_EVENTS:,} events at positions {first}\.\.{last}", said)

    assert again.returncode == 0, again.stderr
    assert "no changes" in again.stdout
    final = state(dsn)
    assert (final.events, final.head, final.streams_digest) == (
        completed.events,
        completed.head,
        completed.streams_digest,
    )
    assert [r[1] for r in final.imports] == ["completed"] * 3


def test_crash_points_are_seeded() -> None:
    """The default seed picks exactly the points written down, another seed others, and the same seed the
    same ones (no global random state); every point lies within the real imports' ranges. The test above
    holds those ranges to the real imports: it counts the first import's records and COPYs, sees no
    COPY past DIFF_BATCHES in the 21.0331 import, and sees each kill fire at its point."""
    assert crash_points(DEFAULT_SEED) == DEFAULT_POINTS
    assert crash_points(DEFAULT_SEED + 1) != DEFAULT_POINTS
    assert crash_points(SEED) == crash_points(SEED)
    first, points = crash_points(SEED)
    assert first.startswith("after_batch:") and 1 <= int(first.split(":")[1]) < OLD_EVENTS // BATCH
    assert "before_commit" in points and len(points) == 4
    for point in points:
        name, _, arg = point.partition(":")
        assert name in ("record", "after_batch", "before_commit")
        if name == "record":
            assert 1 <= int(arg) <= NEW_RECORDS
        if name == "after_batch":
            assert 1 <= int(arg) <= DIFF_BATCHES
