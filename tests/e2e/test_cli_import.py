"""`powerlog import ...` through the console script, as a user runs it: output, exit codes, what it writes.

Most tests use the small samples (samples/); only --strict reads a real release (its duplicate archetype).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo

from importer.run import run_import
from store import locks, log
from store.connection import Database
from tests.conftest import SAMPLES, SHARED_DATA, settings_for
from tests.e2e.cli import BIN, powerlog

SAMPLE_EXPECTED = json.loads((SAMPLES / "expected.json").read_text())
OLD = SAMPLES / "mids-20.1224"
NEW = SAMPLES / "mids-21.0331"
FIRE_BLAST = "db/Player/Class_Blaster_Blaster_Ranged.Fire_Blast.json"
KINDS = ("archetype", "powerset", "power", "enhancement", "enhancement_set")
OUTCOMES = ("added", "changed", "removed", "unchanged")
HEAD = re.compile(r"log head (\d+):([0-9a-f]{64})")
LOCK_CLASSID, LOCK_OBJID = locks.LOG.key >> 32, locks.LOG.key & 0xFFFFFFFF


# --- helpers -------------------------------------------------------------------------------------------


def import_in_process(dsn: str, path: Path) -> None:
    db = Database(settings_for(dsn))
    try:
        run_import(db, path)
    finally:
        db.close()


def table_counts(stdout: str) -> dict[str, dict[str, int]]:
    """The per-kind rows of the summary table rich drew on stdout."""
    counts = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if cells and cells[0] in KINDS and len(cells) == 1 + len(OUTCOMES):
            counts[cells[0]] = {o: int(v.replace(",", "")) for o, v in zip(OUTCOMES, cells[1:], strict=True)}
    return counts


def json_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def human_lines(stderr: str) -> list[str]:
    """stderr without the JSON log lines: what rich printed for people."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("{")]


def squeezed(text: str) -> str:
    """Text without any whitespace: to find a message whatever the console's line width did to it."""
    return "".join(text.split())


def said(text: str, message: str) -> bool:
    return squeezed(message) in squeezed(text)


def tables(dsn: str) -> tuple[Any, ...]:
    """What an import may write: events, streams (with a digest), imports."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM events), (SELECT max(global_position) FROM events),"
            " (SELECT count(*) FROM streams),"
            " (SELECT md5(string_agg(concat_ws('|', stream_id, version, hash, md5(record), removed),"
            "  ',' ORDER BY stream_id)) FROM streams),"
            " (SELECT count(*) FROM imports)"
        ).fetchone()
    assert row is not None
    return tuple(row)


def imports_rows(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT id, status, label, source_version, errors, first_position, last_position FROM imports ORDER BY id"
        ).fetchall()


def log_head(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return str(log.head(conn))


def waiting_for_log_lock(dsn: str) -> bool:
    """Whether some session of this database waits for the log's advisory lock."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
            " WHERE d.datname = current_database() AND l.locktype = 'advisory' AND NOT l.granted"
            " AND l.classid::int8 = %s AND l.objid::int8 = %s",
            (LOCK_CLASSID, LOCK_OBJID),
        ).fetchone()
    return row is not None and row[0] > 0


def holding_log_lock(dsn: str) -> psycopg.Connection[Any]:
    """A connection in an open transaction that holds the log's append lock (commit or close to let go)."""
    holder = psycopg.connect(dsn)
    assert locks.acquire(holder, locks.LOG, wait=False)
    return holder


# --- success, no changes, dry run ---------------------------------------------------------------------


def test_import_prints_the_summary_table_and_the_head(dsn: str) -> None:
    result = powerlog("import", str(OLD), "--label", "sample 20.1224", env={"DATABASE_URL": dsn})
    assert result.returncode == 0, result.stderr
    unique = SAMPLE_EXPECTED["releases"]["mids-20.1224"]["unique_keys"]
    assert table_counts(result.stdout) == {
        k: {"added": unique[k], "changed": 0, "removed": 0, "unchanged": 0} for k in KINDS
    }
    assert "import 1" in result.stdout  # the table's title
    events = sum(unique.values())
    assert said(
        result.stdout,
        f"import 1: release 20.1224 (2020-12-24T01:31:25.4015136-08:00, issue 27), {events} events at positions 1..{events}",
    )
    head = HEAD.search(result.stdout)
    assert head is not None and head.group(0) == f"log head {log_head(dsn)}"
    assert int(head.group(1)) == events
    # The duplicate archetype of the data is a warning naming both places, and the import went through.
    assert said(
        result.stderr,
        "warning: duplicate archetype key 'Class_Minion_Henchman': kept I12.json: $.Archetypes[8], skipped I12.json: $.Archetypes[12]",
    )
    assert imports_rows(dsn) == [(1, "completed", "sample 20.1224", "20.1224", [], 1, events)]


def test_reimport_of_the_same_release_says_no_changes(dsn: str) -> None:
    import_in_process(dsn, OLD)
    before = tables(dsn)
    head = log_head(dsn)
    result = powerlog("import", str(OLD), env={"DATABASE_URL": dsn})
    assert result.returncode == 0, result.stderr
    assert "no changes" in result.stdout
    unique = SAMPLE_EXPECTED["releases"]["mids-20.1224"]["unique_keys"]
    assert table_counts(result.stdout) == {
        k: {"added": 0, "changed": 0, "removed": 0, "unchanged": unique[k]} for k in KINDS
    }
    assert f"log head {head}" in result.stdout
    after = tables(dsn)
    assert after[:4] == before[:4]  # no event, streams untouched
    rows = imports_rows(dsn)
    assert len(rows) == 2 and rows[-1][1] == "completed" and rows[-1][5:] == (None, None)


def test_a_copy_with_unchanged_files_says_they_were_not_parsed_unless_read_all(
    dsn: str, tmp_path: Path
) -> None:
    import_in_process(dsn, OLD)
    copy = tmp_path / "copy"
    shutil.copytree(OLD, copy)
    (copy / "PowerSets.json").write_bytes(b"[]")  # another content hash; the same records
    unique = SAMPLE_EXPECTED["releases"]["mids-20.1224"]["unique_keys"]
    unchanged = {k: {"added": 0, "changed": 0, "removed": 0, "unchanged": unique[k]} for k in KINDS}

    result = powerlog("import", str(copy), env={"DATABASE_URL": dsn})
    assert result.returncode == 0, result.stderr
    assert "7 of 8 files unchanged since an earlier import: not parsed" in result.stdout
    assert "no changes" in result.stdout
    assert table_counts(result.stdout) == unchanged

    result = powerlog("import", "--read-all", str(copy), env={"DATABASE_URL": dsn})  # no shortcut either
    assert result.returncode == 0, result.stderr
    assert "not parsed" not in result.stdout
    assert table_counts(result.stdout) == unchanged
    assert "--read-all" in powerlog("import", "--help").stdout


def test_dry_run_prints_the_diff_and_writes_nothing(dsn: str) -> None:
    import_in_process(dsn, OLD)
    before = tables(dsn)
    result = powerlog("import", str(NEW), "--dry-run", env={"DATABASE_URL": dsn})
    assert result.returncode == 0, result.stderr
    assert "dry run: nothing written" in result.stdout
    assert table_counts(result.stdout) == SAMPLE_EXPECTED["diff"]
    diff_events = sum(c["added"] + c["changed"] + c["removed"] for c in SAMPLE_EXPECTED["diff"].values())
    assert said(result.stdout, f"{diff_events} events would be appended")
    assert tables(dsn) == before  # no event, no stream change, no imports row


def test_dry_run_into_an_empty_log_writes_nothing(dsn: str) -> None:
    result = powerlog("import", str(OLD), "--dry-run", env={"DATABASE_URL": dsn})
    assert result.returncode == 0, result.stderr
    assert (
        table_counts(result.stdout)["power"]["added"]
        == SAMPLE_EXPECTED["releases"]["mids-20.1224"]["unique_keys"]["power"]
    )
    assert tables(dsn) == (0, None, 0, None, 0)


# --- failures: one clear line, exit 1, no event ----------------------------------------------------------


def test_bad_input_is_one_line_naming_file_and_place_exit_1_and_recorded_as_failed(
    dsn: str, tmp_path: Path
) -> None:
    export = tmp_path / "export"
    shutil.copytree(OLD, export)
    broken = export / FIRE_BLAST
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    result = powerlog("import", str(export), env={"DATABASE_URL": dsn})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = human_lines(result.stderr)
    assert len(lines) == 1, f"expected the error on one line, got {lines!r}"
    assert lines[0].startswith("error: ")
    assert re.search(rf"{re.escape(FIRE_BLAST)}: line \d+, column \d+: ", lines[0]), lines[0]
    assert result.stdout == ""
    assert tables(dsn)[:4] == (0, None, 0, None)
    rows = imports_rows(dsn)
    assert len(rows) == 1
    _, status, _, version, errors, first, last = rows[0]
    assert (status, version, first, last) == ("failed", "20.1224", None, None)
    assert len(errors) == 1 and FIRE_BLAST in errors[0] and "line" in errors[0]
    failed = [line for line in json_lines(result.stderr) if line["event"] == "import_failed"]
    assert len(failed) == 1 and failed[0]["level"] == "error" and failed[0]["import_id"] == rows[0][0]


def test_missing_path_is_a_clear_message_exit_1(dsn: str, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-export"
    result = powerlog("import", str(missing), env={"DATABASE_URL": dsn})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    text = " ".join(human_lines(result.stderr))
    assert text.startswith("error: ")
    assert said(text, f"{missing}: an existing export directory or archive; nothing is there")
    assert tables(dsn)[:4] == (0, None, 0, None)


@pytest.mark.slow
def test_strict_turns_the_real_duplicate_archetype_into_an_error(dsn: str) -> None:
    result = powerlog("import", str(SHARED_DATA / "mids-21.0331"), "--strict", env={"DATABASE_URL": dsn})
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    text = " ".join(human_lines(result.stderr))
    assert text.startswith("error: ")
    assert "Class_Minion_Henchman" in text
    assert said(text, "I12.json: $.Archetypes[42]") and said(text, "I12.json: $.Archetypes[17]")
    assert tables(dsn)[:4] == (0, None, 0, None)
    assert [r[1] for r in imports_rows(dsn)] == ["failed"]


# --- another import holds the log ------------------------------------------------------------------------


def test_no_wait_fails_at_once_while_another_import_holds_the_log(dsn: str) -> None:
    holder = holding_log_lock(dsn)
    try:
        result = powerlog("import", str(OLD), "--no-wait", env={"DATABASE_URL": dsn}, timeout=60)
    finally:
        holder.rollback()
        holder.close()
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    text = " ".join(human_lines(result.stderr))
    assert text.startswith("error: ") and said(text, "another import")
    assert tables(dsn)[:4] == (0, None, 0, None)


def test_without_no_wait_it_says_it_waits_and_completes_once_the_lock_is_released(dsn: str) -> None:
    holder = holding_log_lock(dsn)
    proc = subprocess.Popen(
        [str(BIN), "import", str(OLD)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DATABASE_URL": dsn, "POWERLOG_LOCK_TIMEOUT": "120"},
    )
    try:
        deadline = time.monotonic() + 60
        while not waiting_for_log_lock(dsn):  # poll the server, not the clock
            assert proc.poll() is None, f"import ended before waiting: {proc.communicate()}"
            assert time.monotonic() < deadline, "the import never queued for the log lock"
            time.sleep(0.05)
        assert tables(dsn)[:4] == (0, None, 0, None)
        holder.commit()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        holder.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert said(stderr, "another import is running: waiting for it to finish")
    assert any(line["event"] == "waiting_for_other_import" for line in json_lines(stderr))
    done = [line for line in json_lines(stderr) if line["event"] == "import_completed"]
    assert len(done) == 1 and done[0]["waited_for_lock"] is True
    events = sum(SAMPLE_EXPECTED["releases"]["mids-20.1224"]["unique_keys"].values())
    assert tables(dsn)[:2] == (events, events)
    assert f"log head {log_head(dsn)}" in stdout
    assert [r[1] for r in imports_rows(dsn)] == ["completed"]


def test_lock_timeout_gives_up_waiting_with_a_message(dsn: str) -> None:
    holder = holding_log_lock(dsn)
    try:
        result = powerlog(
            "import", str(OLD), env={"DATABASE_URL": dsn, "POWERLOG_LOCK_TIMEOUT": "0.5"}, timeout=60
        )
    finally:
        holder.rollback()
        holder.close()
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    assert said(result.stderr, "waited 0.5 s for another import to finish")
    assert tables(dsn)[:4] == (0, None, 0, None)


# --- log lines ---------------------------------------------------------------------------------------------


def test_log_lines_are_json_off_a_terminal_and_hold_no_password(dsn: str) -> None:
    secret = "pw-import-7f3c9"
    # The test servers trust local connections, so a password in the DSN is accepted and unused.
    with_password = conninfo.make_conninfo(dsn, password=secret)
    result = powerlog("import", str(OLD), env={"DATABASE_URL": with_password})
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stderr)
    assert lines, result.stderr
    for line in lines:
        assert {"event", "level", "timestamp"} <= line.keys()
        assert line["level"] in ("debug", "info", "warning", "error")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", line["timestamp"])
    by_event = {line["event"]: line for line in lines}
    done = by_event["import_completed"]
    assert done["source"] == str(OLD.resolve()) and done["import_id"] == 1
    assert done["events"] == sum(SAMPLE_EXPECTED["releases"]["mids-20.1224"]["unique_keys"].values())
    assert done["head"] == log_head(dsn)
    assert by_event["duplicate_key"]["level"] == "warning"
    # Besides JSON, stderr holds only what rich prints for people: here, the duplicate warning.
    assert squeezed(" ".join(human_lines(result.stderr))) == squeezed(
        "warning: duplicate archetype key 'Class_Minion_Henchman': kept I12.json: $.Archetypes[8],"
        " skipped I12.json: $.Archetypes[12]"
    )
    assert secret not in result.stdout + result.stderr
