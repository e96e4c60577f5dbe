"""Audits on the two real releases: diff, field counts, replay as of import 1, export round trip, history, verify.

One database per module imports 20.1224 then 21.0331, projecting after each (as tests/projections does);
expected figures come from ../shared/data/expected.json or from the raw files, read here independently.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import projections
from events import canonical_bytes, decode, same
from events.mids import KINDS
from importer.run import run_import
from importer.source import ExportHeader, read_export
from projections import audit as table_audit
from projections.diff import ImportDiff, diff_imports
from projections.export import export
from projections.fingerprint import fingerprint
from projections.history import history
from projections.runner import ReplayError
from store.connection import Database
from tests.conftest import SHARED_DATA, TABLE_OF, settings_for

EXPECTED = json.loads((SHARED_DATA / "expected.json").read_text())
RELEASES = ("mids-20.1224", "mids-21.0331")
# Measured on these releases by `diff 1 2`, and checked against the raw files below.
ARCHETYPE_FIELDS = {"Secondary": 52, "Primary": 51, "Ancillary": 13}
POWERSET_FIELDS = {
    "Power": 309,
    "nID": 309,
    "nIDLinkSecondary": 6,
    "nIDTrunkSet": 6,
    "nIDMutexSets": 4,
    "ImageName": 1,
}
POWER_FIELDS_TOP = {"PowerIndex": 2770, "PowerSetID": 2770, "Effects": 780, "Taken": 246, "Requires": 101}
POWER_FIELDS_CHANGED = 49  # distinct top-level power fields that changed in at least one power
TITAN = "Brute_Melee.Titan_Weapons_beta"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SHARED_DATA / RELEASES[0]).is_dir(), reason=f"no real data at {SHARED_DATA}"),
]

Records = dict[tuple[str, str], bytes]


def read_records(path: Path) -> tuple[Records, ExportHeader]:
    """Every record of an export as canonical bytes by (kind, key), and its header."""
    with read_export(path) as reader:
        records: Records = {(str(r.kind), r.key): canonical_bytes(r.record) for r in reader}
        return records, reader.header


@pytest.fixture(scope="module")
def raw() -> dict[str, tuple[Records, ExportHeader]]:
    return {release: read_records(SHARED_DATA / release) for release in RELEASES}


@pytest.fixture(scope="module")
def db(real_releases_db: Database) -> Database:
    """20.1224 imported and projected, then 21.0331 imported and projected (shared, read only)."""
    return real_releases_db


@pytest.fixture
def conn(db: Database) -> Iterator[psycopg.Connection[Any]]:
    with db.connect(autocommit=True) as c:
        yield c


@pytest.fixture(scope="module")
def full_diff(db: Database) -> ImportDiff:
    with db.connect(autocommit=True) as c:
        return diff_imports(c, 1, 2)


def like(pattern: str) -> re.Pattern[str]:
    """SQL LIKE as a regular expression (no escapes needed in these tests)."""
    return re.compile(
        "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern) + r"\Z"
    )


def raw_diff(old: Records, new: Records, kind: str, key_like: str = "%") -> dict[str, int]:
    keys = like(key_like)
    a = {key for k, key in old if k == kind and keys.match(key)}
    b = {key for k, key in new if k == kind and keys.match(key)}
    both = a & b
    changed = sum(old[kind, key] != new[kind, key] for key in both)
    return {"added": len(b - a), "changed": changed, "removed": len(a - b), "unchanged": len(both) - changed}


def raw_field_counts(old: Records, new: Records, kind: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for (k, key), before in old.items():
        after = new.get((k, key))
        if k != kind or after is None or after == before:
            continue
        a, b = decode(before), decode(after)
        for field in a.keys() | b.keys():
            if field not in a or field not in b or not same(a[field], b[field]):
                counts[field] = counts.get(field, 0) + 1
    return counts


# --- diff ------------------------------------------------------------------------------------------------


def test_diff_1_2_is_the_expected_table(full_diff: ImportDiff) -> None:
    assert {k: d.counts() for k, d in full_diff.kinds.items()} == EXPECTED["diff_20.1224_to_21.0331"]
    assert (full_diff.before_position, full_diff.after_position) == (4959, 8218)
    assert full_diff.kinds["powerset"].removed_keys == [TITAN]
    assert full_diff.kinds["power"].removed_keys == [
        f"{TITAN}.Build_Up",
        f"{TITAN}.Defensive_Sweep_Base",
        f"{TITAN}.Defensive_Sweep_Fast_Test",
    ]
    assert all(not d.added_keys for d in full_diff.kinds.values())


def test_field_counts_match_the_raw_files(
    full_diff: ImportDiff, raw: dict[str, tuple[Records, ExportHeader]]
) -> None:
    kinds = full_diff.kinds
    assert kinds["archetype"].fields == ARCHETYPE_FIELDS
    assert kinds["powerset"].fields == POWERSET_FIELDS
    power = kinds["power"].fields
    assert {f: power[f] for f in POWER_FIELDS_TOP} == POWER_FIELDS_TOP
    # Positional renumbering is most of it; the rest is ordered by count, then name.
    assert list(power)[:5] == list(POWER_FIELDS_TOP)
    assert len(power) == POWER_FIELDS_CHANGED
    assert kinds["enhancement"].fields == kinds["enhancement_set"].fields == {}
    old, new = raw[RELEASES[0]][0], raw[RELEASES[1]][0]
    for kind in KINDS:
        assert kinds[kind].fields == raw_field_counts(old, new, kind), kind


@pytest.mark.parametrize(
    ("kind", "key_like"),
    [
        ("power", None),
        ("power", "Blaster_Ranged.Fire_Blast.%"),
        (None, "Brute_Melee.Titan%"),
        ("archetype", "%Henchman"),
    ],
)
def test_diff_filters_by_kind_and_key(
    conn: psycopg.Connection[Any],
    raw: dict[str, tuple[Records, ExportHeader]],
    kind: str | None,
    key_like: str | None,
) -> None:
    result = diff_imports(conn, 1, 2, kind=kind, key_like=key_like)
    old, new = raw[RELEASES[0]][0], raw[RELEASES[1]][0]
    assert set(result.kinds) == ({kind} if kind else set(KINDS))
    for k, d in result.kinds.items():
        assert d.counts() == raw_diff(old, new, k, key_like or "%"), k
    if key_like == "Blaster_Ranged.Fire_Blast.%":
        # Two Fire Blast powers changed (their Effects); Flares, among others, did not.
        assert result.kinds["power"].counts() == {"added": 0, "changed": 2, "removed": 0, "unchanged": 7}
        assert result.kinds["power"].fields == {"Effects": 2}


def test_diff_backwards_and_with_itself(conn: psycopg.Connection[Any]) -> None:
    back = diff_imports(conn, 2, 1, kind="powerset")
    assert back.kinds["powerset"].counts() == {"added": 1, "changed": 313, "removed": 0, "unchanged": 27}
    assert back.kinds["powerset"].added_keys == [TITAN]
    assert back.kinds["powerset"].fields == POWERSET_FIELDS
    same_import = diff_imports(conn, 2, 2)
    unique = EXPECTED["releases"][RELEASES[1]]["unique_keys"]
    assert {k: d.counts() for k, d in same_import.kinds.items()} == {
        k: {"added": 0, "changed": 0, "removed": 0, "unchanged": n} for k, n in unique.items()
    }


# --- replay ----------------------------------------------------------------------------------------------


def test_replay_as_of_1_gives_the_first_release_and_leaves_the_live_tables(
    db: Database, conn: psycopg.Connection[Any]
) -> None:
    counts = projections.replay(db, 1, "audit1")
    assert counts.position == 4959
    try:
        first, last = (EXPECTED["releases"][r]["unique_keys"] for r in RELEASES)
        rows = table_audit.schema_rows(conn, "audit1")
        assert {k: rows[t] for k, t in TABLE_OF.items()} == first
        assert rows["power_build_summary"] == first["power"]
        live = table_audit.schema_rows(conn, "public")
        assert {k: live[t] for k, t in TABLE_OF.items()} == last
        # Exactly the tables the live projection held right after import 1: the fingerprint recorded then.
        recorded = conn.execute("SELECT fingerprint FROM imports WHERE id = 1").fetchone()
        assert recorded == (fingerprint(conn, "audit1"),)
        assert conn.execute(
            "SELECT count(*) FROM audit1.powersets WHERE full_name = %s", (TITAN,)
        ).fetchone() == (1,)
        with pytest.raises(ReplayError, match="already exists; use --replace"):
            projections.replay(db, 1, "audit1")
    finally:
        conn.execute("DROP SCHEMA IF EXISTS audit1 CASCADE")


# --- export ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(db: Database, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    base = tmp_path_factory.mktemp("exports")
    out = {}
    for as_of in (1, 2):
        result = export(db, as_of, base / f"as-of-{as_of}")
        out[as_of] = result.out
    return out


@pytest.mark.parametrize("as_of", [1, 2])
def test_export_reproduces_every_record_of_the_release(
    as_of: int, exported: dict[int, Path], raw: dict[str, tuple[Records, ExportHeader]]
) -> None:
    release = RELEASES[as_of - 1]
    records, header = read_records(exported[as_of])
    source, source_header = raw[release]
    assert header == source_header
    assert isinstance(header.version, float)
    assert records.keys() == source.keys()
    assert [key for key in source if records[key] != source[key]] == []
    assert (
        len(list((exported[as_of] / "db").glob("*.json")))
        == EXPECTED["releases"][release]["unique_keys"]["powerset"]
    )


def test_exported_release_imports_into_a_fresh_database_with_zero_differences(
    db: Database, exported: dict[int, Path], dsn: str
) -> None:
    fresh = Database(settings_for(dsn))
    try:
        result = run_import(fresh, exported[2])
        unique = EXPECTED["releases"][RELEASES[1]]["unique_keys"]
        assert {k: c["added"] for k, c in result.counts.items()} == unique
        assert result.warnings == []  # the duplicate archetype was kept once, as the first
        # Every entity with the same content hash as in the original log after import 2.
        query = "SELECT stream_id, hash FROM streams WHERE NOT removed"
        with fresh.connect() as c:
            imported = dict(c.execute(query).fetchall())
        with db.connect() as c:
            original = dict(c.execute(query).fetchall())
        assert imported == original
        # And the original release, diffed against that fresh log, changes nothing.
        again = run_import(fresh, SHARED_DATA / RELEASES[1], dry_run=True)
        assert again.events == 0
        assert {k: c["unchanged"] for k, c in again.counts.items()} == unique
    finally:
        fresh.close()


# --- history and verify ----------------------------------------------------------------------------------


def test_history_of_flares_is_its_addition_only(conn: psycopg.Connection[Any]) -> None:
    # DESIGN's example power did not change between these two releases: one event, in import 1.
    entries = history(conn, "power", "Blaster_Ranged.Fire_Blast.Flares")
    assert [(e.event_type, e.import_ref.id, e.import_ref.source_version) for e in entries] == [
        ("EntityAdded", 1, "20.1224")
    ]
    assert entries[0].changes == []


def test_history_of_a_renumbered_power_shows_old_and_new_values(
    conn: psycopg.Connection[Any], raw: dict[str, tuple[Records, ExportHeader]]
) -> None:
    key = "Brute_Defense.Dark_Armor.Dark_Embrace"
    entries = history(conn, "power", key)
    assert [(e.event_type, e.import_ref.id) for e in entries] == [("EntityAdded", 1), ("EntityChanged", 2)]
    old, new = (decode(raw[r][0]["power", key]) for r in RELEASES)
    assert [c.as_dict() for c in entries[1].changes] == [
        {"op": "replace", "path": "/PowerIndex", "old": old["PowerIndex"], "new": new["PowerIndex"]},
        {"op": "replace", "path": "/PowerSetID", "old": old["PowerSetID"], "new": new["PowerSetID"]},
    ]
    assert old["PowerIndex"] != new["PowerIndex"]
    assert entries[1].previous_hash == entries[0].hash
    # Effects changes name the nested path: the old value read from the record before the change.
    bolt = history(conn, "power", "Blaster_Ranged.Fire_Blast.Blazing_Bolt")
    assert [c.as_dict() for c in bolt[1].changes] == [
        {"op": "remove", "path": "/Effects/7/VariableModified", "old": True}
    ]


def test_verify_passes_on_the_real_log(db: Database) -> None:
    report = table_audit.verify(db)
    assert report.failures == []
    assert report.chain_head is not None and report.chain_head.position == 8218
    assert report.checkpoint == 8218 and all(t.ok for t in report.tables)
    assert report.fingerprint is not None and report.fingerprint.import_id == 2 and report.fingerprint.ok
