"""`verify` against a tampered log or read tables, on the small sample releases (one fresh database per test).

The releases are imported through the console script, so the head a user would have kept is the one it
printed; the tampering is done as superuser, the only way past the log's append-only trigger.
"""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg
import pytest

import projections
from importer.run import run_import
from projections import audit as table_audit
from store.connection import Database
from store.log import Head
from tests.conftest import SAMPLES, settings_for
from tests.e2e.cli import powerlog

HEAD = re.compile(r"log head (\d+:[0-9a-f]{64})")
IMPORT_1_LAST = 78  # samples/mids-20.1224 appends positions 1..78, samples/mids-21.0331 79..104
LOG_END = 104


def squeezed(text: str) -> str:
    """Without whitespace: rich may wrap a long message at any space."""
    return "".join(text.split())


def import_both(dsn: str, cli: bool = False) -> list[str]:
    """Import the two sample releases (with the console script if `cli`), project, and return the log
    heads the imports printed."""
    heads = []
    db = Database(settings_for(dsn))
    try:
        for release in ("mids-20.1224", "mids-21.0331"):
            if not cli:
                heads.append(str(run_import(db, SAMPLES / release).head))
                continue
            result = powerlog("import", str(SAMPLES / release), env={"DATABASE_URL": dsn})
            assert result.returncode == 0, result.stderr
            found = HEAD.search(result.stdout)
            assert found, result.stdout
            heads.append(found.group(1))
        projections.project(db)
    finally:
        db.close()
    return heads


def as_superuser(dsn: str, *statements: str) -> None:
    """Change the log behind powerlog's back: only possible with its append-only trigger disabled."""
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
        for stmt in statements:
            conn.execute(stmt)
        conn.execute("ALTER TABLE events ENABLE TRIGGER events_no_update_delete")


def verify(dsn: str, *args: str) -> tuple[Any, dict[str, Any]]:
    """Run `powerlog verify --json`; returns the process and its report."""
    result = powerlog("verify", "--json", *args, env={"DATABASE_URL": dsn})
    assert "Traceback" not in result.stderr
    return result, json.loads(result.stdout)


def report_of(dsn: str, kept: str | None = None) -> table_audit.VerifyReport:
    db = Database(settings_for(dsn))
    try:
        return table_audit.verify(db, Head.parse(kept) if kept else None)
    finally:
        db.close()


def test_verify_passes_on_an_honest_log_with_its_heads(dsn: str) -> None:
    heads = import_both(dsn, cli=True)
    assert heads[1].startswith(f"{LOG_END}:")
    result, report = verify(dsn, "--head", heads[1])
    assert result.returncode == 0, result.stderr
    assert report["ok"] is True and report["failures"] == []
    assert report["kept_head"] == {"head": heads[1], "ok": True, "error": None}
    assert report["chain"]["head"] == heads[1]
    assert report["fingerprint"]["import_id"] == 2 and report["fingerprint"]["ok"] is True
    assert all(t["ok"] for t in report["tables"].values())
    human = powerlog("verify", env={"DATABASE_URL": dsn})
    assert human.returncode == 0, human.stderr
    assert "chain: ok, 104 events" in human.stdout and "fingerprint of import 2: ok" in human.stdout


def test_a_tampered_event_fails_naming_the_first_bad_position(dsn: str) -> None:
    import_both(dsn)
    # Two events altered; the first one is reported. Position 30 is an EntityAdded of import 1.
    as_superuser(
        dsn,
        "UPDATE events SET data = jsonb_set(data, '{record,DisplayName}', '\"Tampered\"')"
        " WHERE global_position IN (30, 60)",
    )
    result, report = verify(dsn)
    assert result.returncode == 1
    assert report["chain"]["bad_position"] == 30 and report["ok"] is False
    assert squeezed("error: verify failed: chain: the hash chain breaks at position 30") in squeezed(
        result.stderr
    )
    assert report_of(dsn).chain_error.position == 30  # type: ignore[union-attr]


def test_a_missing_event_in_the_middle_is_a_gap_at_its_position(dsn: str) -> None:
    import_both(dsn)
    as_superuser(dsn, "DELETE FROM events WHERE global_position = 50")
    result, report = verify(dsn)
    assert result.returncode == 1
    assert report["chain"]["bad_position"] == 50
    assert "the log has a gap: position 50 is missing" in report["chain"]["error"]


def test_an_edited_read_table_row_names_the_table(dsn: str) -> None:
    import_both(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE powers SET display_name = 'x' WHERE full_name = 'Blaster_Ranged.Fire_Blast.Flares'"
        )
    result, report = verify(dsn)
    assert result.returncode == 1
    assert report["chain"]["ok"] is True
    assert [t for t, c in report["tables"].items() if not c["ok"]] == ["powers"]
    assert report["fingerprint"]["ok"] is False
    message = squeezed(result.stderr)
    assert squeezed("read tables differ from their rebuild from the log at position 104: powers") in message
    assert squeezed("differs from the one recorded with import 2") in message
    human = powerlog("verify", env={"DATABASE_URL": dsn})
    assert human.returncode == 1 and "differ: powers" in human.stdout


def test_kept_head_catches_a_cut_tail_the_chain_alone_cannot(dsn: str) -> None:
    heads = import_both(dsn, cli=True)
    as_superuser(dsn, "DELETE FROM events WHERE import_id = 2")
    # What is left is a valid, shorter chain: only the head kept outside the database shows the cut.
    assert report_of(dsn).chain_error is None
    result, report = verify(dsn, "--head", heads[1])
    assert result.returncode == 1
    assert report["chain"]["ok"] is True and report["chain"]["head"] == heads[0]
    assert report["kept_head"]["ok"] is False
    assert squeezed(f"the log no longer reaches position {LOG_END}: its tail was cut") in squeezed(
        result.stderr
    )
    # The first import's head is still there.
    _, older = verify(dsn, "--head", heads[0])
    assert older["kept_head"]["ok"] is True


def test_a_head_with_another_hash_fails(dsn: str) -> None:
    import_both(dsn)
    result, report = verify(dsn, "--head", f"{IMPORT_1_LAST}:{'0' * 64}")
    assert result.returncode == 1
    assert (
        report["kept_head"]["error"]
        == f"position {IMPORT_1_LAST} has another chain hash than the head you kept"
    )


@pytest.mark.parametrize("bad", ["104", "x:00", "104:abc", "0:" + "0" * 64])
def test_a_malformed_head_is_bad_usage(bad: str) -> None:
    # Refused before any connection: the database named here does not exist.
    result = powerlog("verify", "--head", bad, env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert result.returncode == 2
    assert "POSITION:HASH" in result.stderr and "Traceback" not in result.stderr
