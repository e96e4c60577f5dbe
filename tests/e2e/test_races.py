"""Races forced by locks, not sleeps: two imports and two projectors released at the same instant.

The test holds the log lock and the projector lock itself, starts two of each command as real processes,
waits (polling pg_locks) until all of them queue, and lets them go. Positions stay gap-free, each import
is whole, each event is applied once, and the tables equal a clean rebuild.
"""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

import psycopg

from projections.audit import rebuilt_hashes, verify
from projections.fingerprint import table_hashes
from store import locks
from store.connection import Database
from tests.conftest import SAMPLES, settings_for
from tests.e2e.cli import BIN
from tests.e2e.daemons import wait_for

OLD, NEW = SAMPLES / "mids-20.1224", SAMPLES / "mids-21.0331"


def start(dsn: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"DATABASE_URL": dsn, "POWERLOG_PROJECT_BATCH": "7", "POWERLOG_VIEW_REFRESH": "scheduler"})
    return subprocess.Popen(
        [str(BIN), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def queued(conn: psycopg.Connection[Any], lock: locks.AdvisoryLock) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND classid::bigint = %s AND objid::bigint = %s",
        (lock.key >> 32, lock.key & 0xFFFFFFFF),
    ).fetchone()
    return int(row[0]) if row else 0


def finish(procs: list[subprocess.Popen[str]]) -> list[str]:
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        outs.append(stdout)
    return outs


def test_two_imports_and_two_projectors_at_once(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as watcher, psycopg.connect(dsn) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (locks.LOG.key,))
        importers = [start(dsn, "import", str(OLD)), start(dsn, "import", str(NEW))]
        wait_for(lambda: queued(watcher, locks.LOG) == 2, "both imports to queue for the log lock")
        holder.commit()  # both race for the lock now
        finish(importers)

        # Whole imports, gap-free positions, in the order the lock was granted.
        rows = watcher.execute(
            "SELECT i.id, i.first_position, i.last_position, count(e.*) FROM imports i"
            " JOIN events e ON e.import_id = i.id WHERE i.status = 'completed' GROUP BY i.id ORDER BY i.id"
        ).fetchall()
        assert len(rows) == 2
        (_, f1, l1, n1), (_, f2, l2, n2) = rows
        assert (f1, n1) == (1, l1) and (f2, n2) == (l1 + 1, l2 - l1)
        head = l2
        assert watcher.execute("SELECT count(*), max(global_position) FROM events").fetchone() == (head, head)

        watcher.execute("SELECT pg_advisory_lock(%s)", (locks.PROJECTOR.key,))
        projectors = [start(dsn, "project"), start(dsn, "project")]
        wait_for(
            lambda: queued(watcher, locks.PROJECTOR) == 2, "both projectors to queue for the projector lock"
        )
        watcher.execute("SELECT pg_advisory_unlock(%s)", (locks.PROJECTOR.key,))
        outs = finish(projectors)

        applied = []
        for out in outs:
            text = " ".join(out.split())
            found = re.search(r"applied ([\d,]+) events, now at position (\d+)", text)
            if found:
                applied.append(int(found.group(1).replace(",", "")))
            else:
                assert f"read tables already at position {head}: nothing to apply" in text, text
        # Each event applied once: one projector applied them all, the other found nothing left.
        assert applied == [head]
        assert table_hashes(watcher) == rebuilt_hashes(watcher, head, 10_000)
    db = Database(settings_for(dsn))
    try:
        assert verify(db).ok
    finally:
        db.close()
