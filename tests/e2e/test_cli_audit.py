"""`powerlog history | diff | replay | export | verify` through the console script: exit codes, --json, messages.

One database for the module: the two sample releases imported and projected, then a failed import (id 3).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import projections
from events import canonical_bytes
from importer.errors import ImportInputError
from importer.run import run_import
from importer.source import read_export
from store.connection import Database
from tests.conftest import SAMPLES, create_database, drop_database, settings_for
from tests.e2e.cli import powerlog

SAMPLE_EXPECTED = json.loads((SAMPLES / "expected.json").read_text())
RELEASES = ("mids-20.1224", "mids-21.0331")
CHANGED_POWER = "Epic.Sentinel_Elec_Mastery.Lightning_Field"


@pytest.fixture(scope="module")
def dsn(server_dsn: str, template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = f"powerlog_t_{uuid.uuid4().hex[:12]}"
    url = create_database(server_dsn, name, template=template_db)
    db = Database(settings_for(url))
    try:
        for release in RELEASES:
            run_import(db, SAMPLES / release)
        projections.project(db)
        with pytest.raises(ImportInputError):
            run_import(db, tmp_path_factory.mktemp("not-an-export"))
        yield url
    finally:
        db.close()
        drop_database(server_dsn, name)


def run(dsn: str, *args: str) -> Any:
    result = powerlog(*args, env={"DATABASE_URL": dsn})
    assert "Traceback" not in result.stderr, result.stderr
    return result


def error_line(stderr: str) -> str:
    """The one error line the CLI printed (log lines are JSON off a terminal)."""
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def unchanged_diff(release: str) -> dict[str, dict[str, int]]:
    return {
        k: {"added": 0, "changed": 0, "removed": 0, "unchanged": n}
        for k, n in SAMPLE_EXPECTED["releases"][release]["unique_keys"].items()
    }


# --- history ---------------------------------------------------------------------------------------------


def test_history_json_and_table(dsn: str) -> None:
    result = run(dsn, "history", "power", CHANGED_POWER, "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["kind"], out["key"]) == ("power", CHANGED_POWER)
    added, changed = out["events"]
    assert (added["event_type"], added["import"]["id"], added["import"]["source_version"]) == (
        "EntityAdded",
        1,
        "20.1224",
    )
    assert (changed["event_type"], changed["import"]["id"], changed["stream_version"]) == (
        "EntityChanged",
        2,
        2,
    )
    assert [c["path"] for c in changed["changes"]] == [
        "/PowerIndex",
        "/PowerSetID",
        "/Requires/NPowerID/0/0",
        "/Requires/NPowerID/1/0",
    ]
    assert all(c["op"] == "replace" and c["old"] != c["new"] for c in changed["changes"])
    assert changed["previous_hash"] == added["hash"]
    table = run(dsn, "history", "power", CHANGED_POWER)
    assert table.returncode == 0
    assert "EntityChanged (v2)" in table.stdout and "/Requires/NPowerID/1/0" in table.stdout


def test_history_of_an_unknown_entity_is_exit_1_and_a_bad_kind_exit_2(dsn: str) -> None:
    missing = run(dsn, "history", "power", "No.Such.Power")
    assert missing.returncode == 1
    assert (
        error_line(missing.stderr) == "error: the log has no power 'No.Such.Power' (keys are case-sensitive)"
    )
    bad_kind = run(dsn, "history", "pow", "x")
    assert bad_kind.returncode == 2


# --- diff ------------------------------------------------------------------------------------------------


def test_diff_json_gives_the_sample_table_and_filters(dsn: str) -> None:
    result = run(dsn, "diff", "1", "2", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    counts = {
        k: {o: d[o] for o in ("added", "changed", "removed", "unchanged")} for k, d in out["kinds"].items()
    }
    assert counts == SAMPLE_EXPECTED["diff"]
    assert out["from"]["id"] == 1 and out["to"]["source_version"] == "21.0331"
    assert out["kinds"]["power"]["fields"] == {"PowerIndex": 8, "PowerSetID": 8, "Requires": 3, "Effects": 2}
    assert out["kinds"]["powerset"]["removed_keys"] == ["Brute_Melee.Titan_Weapons_beta"]
    filtered = json.loads(
        run(dsn, "diff", "1", "2", "--json", "--kind", "power", "--key-like", "Epic.%").stdout
    )
    assert list(filtered["kinds"]) == ["power"]
    assert filtered["kinds"]["power"]["changed"] == 5
    assert filtered["kinds"]["power"]["removed"] == filtered["kinds"]["power"]["added"] == 0
    table = run(dsn, "diff", "1", "2", "--kind", "powerset")
    assert table.returncode == 0 and "powerset removed: Brute_Melee.Titan_Weapons_beta" in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("9", "1"), "error: there is no import 9 (see `powerlog imports`)"),
        (("1", "3"), "error: import 3 failed; the log holds nothing from it"),
    ],
)
def test_diff_with_bad_import_ids_is_exit_1(dsn: str, args: tuple[str, ...], message: str) -> None:
    result = run(dsn, "diff", *args)
    assert result.returncode == 1
    assert error_line(result.stderr) == message


def test_diff_bad_kind_is_exit_2(dsn: str) -> None:
    assert run(dsn, "diff", "1", "2", "--kind", "nope").returncode == 2


# --- replay ----------------------------------------------------------------------------------------------


def test_replay_builds_a_schema_and_refuses_to_overwrite_it(dsn: str) -> None:
    try:
        result = run(dsn, "replay", "--as-of", "1", "--schema", "audit_e2e", "--json")
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        unique = SAMPLE_EXPECTED["releases"][RELEASES[0]]["unique_keys"]
        assert out["rows"]["powers"] == unique["power"] == out["rows"]["power_build_summary"]
        assert out["rows"]["powersets"] == unique["powerset"]
        assert (out["schema"], out["as_of"]) == ("audit_e2e", 1)
        again = run(dsn, "replay", "--as-of", "1", "--schema", "audit_e2e")
        assert again.returncode == 1
        assert (
            error_line(again.stderr)
            == "error: schema 'audit_e2e' already exists; use --replace to overwrite it"
        )
        replaced = run(dsn, "replay", "--as-of", "2", "--schema", "audit_e2e", "--replace")
        assert replaced.returncode == 0, replaced.stderr
        assert "as after import 2" in replaced.stdout
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM audit_e2e.powers").fetchone() == (
                SAMPLE_EXPECTED["releases"][RELEASES[1]]["unique_keys"]["power"],
            )
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS audit_e2e CASCADE")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--as-of", "9", "--schema", "x9"), "error: there is no import 9 (see `powerlog imports`)"),
        (("--as-of", "3", "--schema", "x3"), "error: import 3 failed; the log holds nothing from it"),
        (("--as-of", "1", "--schema", "public"), "error: schema 'public' is reserved; choose another name"),
    ],
)
def test_replay_refusals_are_exit_1(dsn: str, args: tuple[str, ...], message: str) -> None:
    result = run(dsn, "replay", *args)
    assert result.returncode == 1
    assert error_line(result.stderr) == message


# --- export ----------------------------------------------------------------------------------------------


def records(path: Path) -> dict[tuple[str, str], bytes]:
    with read_export(path) as reader:
        return {(r.kind, r.key): canonical_bytes(r.record) for r in reader}


def test_export_writes_the_release_and_refuses_a_non_empty_directory(dsn: str, tmp_path: Path) -> None:
    out = tmp_path / "export"
    result = run(dsn, "export", "--as-of", "1", str(out), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["records"] == SAMPLE_EXPECTED["releases"][RELEASES[0]]["unique_keys"]
    assert summary["out"] == str(out.resolve())
    assert records(out) == records(SAMPLES / RELEASES[0])

    refused = run(dsn, "export", "--as-of", "2", str(out))
    assert refused.returncode == 1
    assert "is not empty; choose an empty or new directory, or use --force" in error_line(refused.stderr)
    # --force replaces the export's own files (a stale powerset file goes), and nothing else.
    (out / "db" / "Stale.Powerset.json").write_text("{}")
    (out / "NOTES.txt").write_text("mine")
    forced = run(dsn, "export", "--as-of", "2", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert records(out) == records(SAMPLES / RELEASES[1])
    assert not (out / "db" / "Stale.Powerset.json").exists() and (out / "NOTES.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no staging directory left behind


def test_export_of_a_bad_import_is_exit_1_and_writes_nothing(dsn: str, tmp_path: Path) -> None:
    for as_of, message in (("9", "there is no import 9"), ("3", "import 3 failed")):
        result = run(dsn, "export", "--as-of", as_of, str(tmp_path / "out"))
        assert result.returncode == 1
        assert message in error_line(result.stderr)
    assert list(tmp_path.iterdir()) == []


# --- verify ----------------------------------------------------------------------------------------------


def test_verify_json_on_an_honest_log(dsn: str) -> None:
    result = run(dsn, "verify", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["chain"]["head"].startswith("104:")
    assert report["kept_head"] is None and report["checkpoint"] == 104
    read = {"archetypes", "powersets", "powers", "enhancement_sets", "enhancements"}
    assert set(report["tables"]) == read | {f"{t}_history" for t in read}
    with psycopg.connect(dsn) as conn:
        # The scratch schema is gone.
        assert conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'powerlog_verify_%'"
        ).fetchone() == (0,)
