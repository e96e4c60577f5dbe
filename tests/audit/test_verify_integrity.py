"""`verify` checks the log's own bookkeeping (`streams`, and what each import recorded), the summary view,
and cleans up after a verify that was killed; an import refuses a log whose tail was cut.

The faults are made as superuser, behind powerlog's back: the application role can no longer make them
(tests/store/test_privileges.py)."""

from __future__ import annotations

import signal
import time
from typing import Any

import psycopg
import pytest

import projections
import scheduler
from importer.run import run_import
from projections.audit import SCRATCH_LOCK_CLASS, SCRATCH_PREFIX, drop_abandoned_scratch
from store.connection import Database
from store.faults import ENV as FAULT_ENV
from tests.audit.test_verify import (
    IMPORT_1_LAST,
    LOG_END,
    as_superuser,
    import_both,
    report_of,
    squeezed,
    verify,
)
from tests.conftest import SAMPLES, settings_for
from tests.e2e.cli import powerlog

NEW = SAMPLES / "mids-21.0331"


def one(dsn: str, query: str, *params: Any) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query, params or None).fetchone()
    assert row is not None
    return row[0]


def a_power_stream(dsn: str) -> tuple[str, int, int, str]:
    """The first live power's stream: id, version, last position, hash."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT stream_id, version, last_position, hash FROM streams WHERE kind = 'power' AND NOT removed"
            " ORDER BY stream_id LIMIT 1"
        ).fetchone()
    assert row is not None
    return row[0], row[1], row[2], row[3]


# --- streams against the fold of the log -----------------------------------------------------------


def test_a_forged_stream_hash_fails_verify_naming_the_stream(dsn: str) -> None:
    """The fault that lost a change for good: a stream's hash set to another value. The log still says
    what the stream holds."""
    import_both(dsn)
    sid, version, position, real = a_power_stream(dsn)
    forged = "f" * 64
    as_superuser(dsn, f"UPDATE streams SET hash = '{forged}' WHERE stream_id = '{sid}'")
    result, report = verify(dsn)
    assert result.returncode == 1
    assert report["streams"]["ok"] is False and report["streams"]["differing"] == 1
    assert report["failures"] == [
        f"streams: 1 stream(s) differ from the fold of the log: {sid}: recorded version {version},"
        f" position {position}, hash {forged}, log gives version {version}, position {position}, hash {real}"
    ]
    human = powerlog("verify", env={"DATABASE_URL": dsn})
    assert human.returncode == 1
    assert "streams vs the fold of the log: FAILED: 1 stream(s) differ" in human.stdout
    assert squeezed(f"{sid}: recorded version {version}") in squeezed(human.stdout)


@pytest.mark.parametrize(
    ("statement", "recorded", "derived"),
    [
        ("DELETE FROM streams WHERE stream_id = '{sid}'", "no row", "version"),
        (
            "INSERT INTO streams (stream_id, kind, key, version, hash, last_position)"
            " VALUES ('power:Not.In.The.Log', 'power', 'Not.In.The.Log', 1, 'x', 1)",
            "version 1",
            "no event",
        ),
        ("UPDATE streams SET version = version + 1 WHERE stream_id = '{sid}'", "version", "version"),
        ("UPDATE streams SET removed = true WHERE stream_id = '{sid}'", "removed", "version"),
    ],
)
def test_streams_rows_that_are_not_the_fold_of_the_log_fail_verify(
    dsn: str, statement: str, recorded: str, derived: str
) -> None:
    import_both(dsn)
    sid = a_power_stream(dsn)[0]
    as_superuser(dsn, statement.format(sid=sid))
    report = report_of(dsn)
    assert not report.ok and report.streams_differing == 1
    [mismatch] = report.streams_shown
    assert recorded in (mismatch.recorded or "no row") and derived in (mismatch.derived or "no event")
    assert report.chain_error is None and report.imports_errors == []


# --- each import's record against the log: a cut tail --------------------------------------------


def cut_tail(dsn: str) -> None:
    """The fault probe's cut: import 2's events deleted while the read tables stood at import 1."""
    db = Database(settings_for(dsn))
    try:
        run_import(db, SAMPLES / "mids-20.1224")
        projections.project(db)
        run_import(db, NEW)
    finally:
        db.close()
    as_superuser(dsn, f"DELETE FROM events WHERE global_position > {IMPORT_1_LAST}")


def test_a_cut_tail_fails_verify_without_a_kept_head(dsn: str) -> None:
    cut_tail(dsn)
    result, report = verify(dsn)
    assert result.returncode == 1
    assert report["chain"]["ok"] is True  # what is left of the chain is intact
    assert report["imports"]["errors"] == [
        f"import 2 recorded positions {IMPORT_1_LAST + 1}..{LOG_END}, but the log holds none of its events:"
        " they were cut from the log"
    ]
    assert report["streams"]["differing"] == LOG_END - IMPORT_1_LAST
    human = powerlog("verify", env={"DATABASE_URL": dsn})
    assert human.returncode == 1
    assert squeezed("imports: FAILED: import 2 recorded positions 79..104") in squeezed(human.stdout)


def test_an_import_refuses_a_log_cut_short_of_its_last_import(dsn: str) -> None:
    """Before: "no changes, already in the log", and the release could never come back."""
    cut_tail(dsn)
    result = powerlog("import", str(NEW), env={"DATABASE_URL": dsn})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert squeezed(
        f"the log does not end where import 2 left it: that import (positions {IMPORT_1_LAST + 1}..{LOG_END})"
        f" recorded head {LOG_END}, the log's head is now {IMPORT_1_LAST}"
    ) in squeezed(result.stderr + result.stdout)
    assert one(dsn, "SELECT count(*) FROM events") == IMPORT_1_LAST
    assert one(dsn, "SELECT count(*) FROM imports") == 2


def test_an_import_record_with_another_head_fails_verify(dsn: str) -> None:
    import_both(dsn)
    as_superuser(dsn, f"UPDATE imports SET head_chain_hash = '{LOG_END}:' || repeat('ab', 32) WHERE id = 2")
    report = report_of(dsn)
    assert report.imports_errors == [
        f"import 2 recorded head {LOG_END} with another chain hash than the log's at that position"
    ]


def test_an_import_record_with_other_positions_fails_verify(dsn: str) -> None:
    import_both(dsn)
    as_superuser(dsn, "UPDATE imports SET last_position = 100 WHERE id = 2")
    assert report_of(dsn).imports_errors == [
        f"import 2 recorded positions {IMPORT_1_LAST + 1}..100, but the log holds its events at"
        f" {IMPORT_1_LAST + 1}..{LOG_END}"
    ]


# --- the view against its query --------------------------------------------------------------------


def refresh(dsn: str) -> None:
    db = Database(settings_for(dsn))
    try:
        assert scheduler.refresh(db).outcome == "ok"
    finally:
        db.close()


def test_an_altered_view_fails_verify_naming_it(dsn: str) -> None:
    """The view's contents changed while the read tables and the refresh record stay as they were: a
    REFRESH done while one power's name was different, the name then put back."""
    import_both(dsn)
    refresh(dsn)  # recorded at the read tables' position
    honest = report_of(dsn)
    assert honest.ok and honest.view is not None and honest.view.checked and honest.view.ok
    power_id, name = one(dsn, "SELECT array[id::text, display_name] FROM powers ORDER BY id LIMIT 1")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE powers SET display_name = 'Forged' WHERE id = %s", (int(power_id),))
        conn.execute("REFRESH MATERIALIZED VIEW power_build_summary")
        conn.execute("UPDATE powers SET display_name = %s WHERE id = %s", (name, int(power_id)))
    result, report = verify(dsn)
    assert result.returncode == 1
    assert report["failures"] == [
        f"view: power_build_summary differs from its query over the read tables at position {LOG_END}:"
        f" 1 row(s) (power ids {power_id}); `powerlog refresh` rebuilds it"
    ]
    assert report["tables"] and all(t["ok"] for t in report["tables"].values())
    refresh(dsn)
    assert report_of(dsn).ok


def test_a_stale_view_is_not_compared(dsn: str) -> None:
    import_both(dsn)
    refresh(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE view_refreshes SET source_position = 1")
    report = report_of(dsn)
    assert report.ok and report.view is not None and not report.view.checked
    assert report.view.note == f"stale: refreshed at position 1, the read tables are at {LOG_END}"


# --- scratch schemas of a killed verify ------------------------------------------------------------


def scratch_schemas(dsn: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s) ORDER BY 1", (SCRATCH_PREFIX,)
        ).fetchall()
    return [r[0] for r in rows]


def scratch_locks_held(dsn: str) -> int:
    return int(
        one(
            dsn,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objsubid = 2"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            SCRATCH_LOCK_CLASS,
        )
    )


def test_a_killed_verify_leaves_a_scratch_schema_the_next_verify_drops(dsn: str) -> None:
    import_both(dsn)
    killed = powerlog("verify", env={"DATABASE_URL": dsn, FAULT_ENV: "verify_rebuilt"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert "fault_injected" in killed.stderr
    [left] = scratch_schemas(dsn)
    # Its backend notices the dead client and ends, which frees the schema's lock.
    deadline = time.monotonic() + 30
    while scratch_locks_held(dsn) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert scratch_locks_held(dsn) == 0
    again = powerlog("verify", env={"DATABASE_URL": dsn})
    assert again.returncode == 0, again.stderr
    assert "abandoned_scratch_dropped" in again.stderr and left in again.stderr
    assert scratch_schemas(dsn) == []


def test_the_scratch_schema_of_a_running_verify_is_kept(dsn: str) -> None:
    live = SCRATCH_PREFIX + "running"
    with psycopg.connect(dsn, autocommit=True) as owner, psycopg.connect(dsn, autocommit=True) as other:
        owner.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (SCRATCH_LOCK_CLASS, live))
        owner.execute(f"CREATE SCHEMA {live}")
        other.execute(f"CREATE SCHEMA {SCRATCH_PREFIX}gone")  # nobody holds its lock
        assert drop_abandoned_scratch(other) == [SCRATCH_PREFIX + "gone"]
        assert scratch_schemas(dsn) == [live]
        owner.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (SCRATCH_LOCK_CLASS, live))
        assert drop_abandoned_scratch(other) == [live]
    assert scratch_schemas(dsn) == []
