"""History tables and the as-of functions: `<table>_as_of(N)` equals the tables `replay --as-of N` builds,
row for row and ids included, on the real releases and on derived sample releases whose references move
without an event; what the reader role may do; the imports the functions refuse; rebuild and verify."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import projections
from importer.errors import ImportInputError
from importer.run import run_import
from projections import audit
from projections.fingerprint import table_hashes
from projections.tables import HISTORY_TABLES, READ_TABLES, VIEW
from store.connection import Database
from tests.conftest import SAMPLES, SHARED_DATA, settings_for

REAL = SHARED_DATA / "mids-20.1224"
EXPECTED = json.loads((SHARED_DATA / "expected.json").read_text()) if REAL.is_dir() else {}
AS_OF = (*READ_TABLES, VIEW)
"""Every table (and the view) with an `_as_of` function."""
FIRE_BLAST = "Blaster_Ranged.Fire_Blast"
TITAN = "Brute_Melee.Titan_Weapons_beta"
FLARES = "Blaster_Ranged.Fire_Blast.Flares"


def fetch(conn: psycopg.Connection[Any], query: str, *params: Any) -> tuple[list[tuple[str, int]], list[Any]]:
    """Column names and types, and every row, of a query."""
    cur = conn.execute(query, params)
    assert cur.description is not None
    return [(d.name, d.type_code) for d in cur.description], cur.fetchall()


def assert_as_of_equals_replay(db: Database, conn: psycopg.Connection[Any], import_id: int) -> dict[str, int]:
    """Replay import `import_id` into a schema of its own and compare every table and the view with the
    as-of functions, row for row; returns the row counts."""
    schema = f"replay_{import_id}"
    projections.replay(db, import_id, schema, replace=True)
    try:
        counts = {}
        for name in AS_OF:
            columns, replayed = fetch(conn, f"SELECT * FROM {schema}.{name} ORDER BY id")
            as_of_columns, as_of = fetch(conn, f"SELECT * FROM {name}_as_of(%s) ORDER BY id", import_id)
            assert as_of_columns == columns, name
            assert as_of == replayed, f"{name} as of import {import_id}"
            counts[name] = len(as_of)
        return counts
    finally:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def versions(conn: psycopg.Connection[Any], table: str, key: str, value: str, column: str) -> list[Any]:
    """(valid_from_import, valid_to_import, column) of each version of one entity, oldest first."""
    return conn.execute(
        f"SELECT valid_from_import, valid_to_import, {column} FROM {table}_history WHERE {key} = %s"
        " ORDER BY valid_from_import",
        (value,),
    ).fetchall()


# --- the real releases -----------------------------------------------------------------------------------

real = pytest.mark.skipif(not REAL.is_dir(), reason=f"no real data at {SHARED_DATA}")


@pytest.mark.slow
@real
@pytest.mark.parametrize(("import_id", "release"), [(1, "mids-20.1224"), (2, "mids-21.0331")])
def test_as_of_each_real_import_equals_its_replay(
    real_releases_db: Database, import_id: int, release: str
) -> None:
    unique = EXPECTED["releases"][release]["unique_keys"]
    with real_releases_db.connect(autocommit=True) as conn:
        counts = assert_as_of_equals_replay(real_releases_db, conn, import_id)
        assert counts == {
            "archetypes": unique["archetype"],
            "powersets": unique["powerset"],
            "powers": unique["power"],
            "enhancement_sets": unique["enhancement_set"],
            "enhancements": unique["enhancement"],
            "power_build_summary": unique["power"],
        }
        version = release.removeprefix("mids-")
        for name in AS_OF:
            by_release = fetch(conn, f"SELECT * FROM {name}_as_of_release(%s) ORDER BY id", version)
            assert by_release == fetch(conn, f"SELECT * FROM {name}_as_of(%s) ORDER BY id", import_id), name


@real
def test_history_holds_one_row_per_entity_and_import_that_changed_it(real_releases_db: Database) -> None:
    with real_releases_db.connect(autocommit=True) as conn:
        # 3,049 powers from import 1; 2,889 changed by import 2 (new versions), 3 removed (closed only).
        assert conn.execute(
            "SELECT count(*) FILTER (WHERE valid_from_import = 1), count(*) FILTER (WHERE valid_from_import = 2),"
            " count(*) FILTER (WHERE valid_to_import = 2), count(*) FILTER (WHERE valid_to_import IS NULL)"
            " FROM powers_history"
        ).fetchone() == (3049, 2889, 2892, 3046)
        assert versions(conn, "powersets", "full_name", TITAN, "id") == [
            (
                1,
                2,
                conn.execute(
                    "SELECT min(global_position) FROM events WHERE stream_id = %s", (f"powerset:{TITAN}",)
                ).fetchone()[0],
            )  # type: ignore[index]
        ]
        # Flares did not change: one version, current, with the live row's id.
        assert versions(conn, "powers", "full_name", FLARES, "id") == [
            (1, None, conn.execute("SELECT id FROM powers WHERE full_name = %s", (FLARES,)).fetchone()[0])  # type: ignore[index]
        ]
        # The current versions are the live tables, row for row.
        for table in READ_TABLES:
            _, live = fetch(conn, f"SELECT * FROM {table} ORDER BY id")
            _, current = fetch(conn, f"SELECT {table}.* FROM {table}_as_of(2) {table} ORDER BY id")
            assert current == live, table


@real
def test_the_reader_role_may_query_as_of_and_never_write_history(real_releases_db: Database) -> None:
    with real_releases_db.connect() as conn, conn.transaction(force_rollback=True):
        conn.execute("SET ROLE powerlog_reader")
        assert conn.execute("SELECT count(*) FROM powers_as_of(1)").fetchone() == (3049,)
        assert conn.execute(
            "SELECT count(*) FROM power_build_summary_as_of_release('21.0331')"
        ).fetchone() == (3046,)
        for statement in (
            "INSERT INTO powers_history SELECT * FROM powers_history LIMIT 1",
            "UPDATE powers_history SET display_name = 'x'",
            "DELETE FROM archetypes_history",
            "TRUNCATE enhancements_history",
            "SELECT * FROM imports",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(statement)
    with real_releases_db.connect() as conn:
        # Functions are executable by PUBLIC unless revoked: here only the two roles may.
        rows = conn.execute(
            "SELECT p.proname, p.proacl IS NOT NULL, coalesce(bool_or(a.grantee = 0), false),"
            " has_function_privilege('powerlog_reader', p.oid, 'EXECUTE')"
            " FROM pg_proc p LEFT JOIN LATERAL aclexplode(p.proacl) a ON true"
            " WHERE p.proname LIKE '%\\_as\\_of%' OR p.proname IN ('powerlog_check_as_of', 'powerlog_import_of_release')"
            " GROUP BY p.proname, p.proacl, p.oid ORDER BY 1"
        ).fetchall()
        assert len(rows) == 2 * len(AS_OF) + 2
        assert all(r[1:] == (True, False, True) for r in rows), rows


@real
def test_a_point_lookup_as_of_an_import_uses_the_history_index(real_releases_db: Database) -> None:
    with real_releases_db.connect(autocommit=True) as conn:
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT * FROM powers_as_of(1) WHERE full_name = %s", (FLARES,)
            ).fetchall()
        )
        # Inlined: the filter reaches the index, and the import is checked once, not per row.
        assert "Index Cond: ((full_name = 'Blaster_Ranged.Fire_Blast.Flares'::text)" in plan, plan
        assert "powers_history_full_name_idx" in plan, plan
        assert "One-Time Filter: powerlog_check_as_of" in plan, plan


# --- derived sample releases: references that move, removals and returns, errors --------------------------


def derive(base: Path, out: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of an export with its JSON files edited: `edit` gets {relative path: parsed JSON}."""
    shutil.copytree(base, out)
    files = {str(p.relative_to(out)): p for p in out.rglob("*.json")}
    docs = {name: json.loads(p.read_bytes().decode("utf-8-sig")) for name, p in files.items()}
    edit(docs)
    for name, doc in docs.items():
        files[name].write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
    return out


def _without_blaster_and_decimation(docs: dict[str, Any]) -> None:
    """No Class_Blaster archetype (Fire Blast still names it) and no Decimation set (its enhancements stay),
    and Flares renamed: the references to both go NULL without an event of the rows that hold them."""
    i12 = docs["I12.json"]
    i12["Archetypes"] = [a for a in i12["Archetypes"] if a["ClassName"] != "Class_Blaster"]
    enh = docs["EnhDB.json"]
    enh["EnhancementSets"] = [s for s in enh["EnhancementSets"] if s["Uid"] != "Decimation"]
    blaster = docs["db/Player/Class_Blaster_Blaster_Ranged.Fire_Blast.json"]
    next(p for p in blaster["Powers"] if p["FullName"] == FLARES)["DisplayName"] = "Flares (renamed)"


@pytest.fixture
def derived(dsn: str, tmp_path: Path) -> Iterator[Database]:
    """Imports 1 sample 20.1224, 2 a failed one, 3 without Class_Blaster and Decimation, 4 sample 20.1224
    again (they return), 5 sample 21.0331 (Titan_Weapons_beta removed), 6 sample 21.0331 again (no changes),
    projected in ranges of 7 positions (imports span several ranges). Import 3 is left unprojected until
    the test projects it."""
    db = Database(settings_for(dsn, POWERLOG_PROJECT_BATCH="7"))
    old = SAMPLES / "mids-20.1224"
    bad = derive(old, tmp_path / "bad", lambda docs: None)
    (bad / "EnhDB.json").write_text('{"Enhancements": [', encoding="utf-8")
    try:
        run_import(db, old)
        projections.project(db)
        with pytest.raises(ImportInputError):
            run_import(db, bad)
        run_import(db, derive(old, tmp_path / "v3", _without_blaster_and_decimation))
        yield db
    finally:
        db.close()


def test_as_of_follows_references_removals_and_returns(derived: Database, dsn: str) -> None:
    db = derived
    with db.connect(autocommit=True) as conn:
        with pytest.raises(
            psycopg.errors.ObjectNotInPrerequisiteState, match="import 3 is not projected yet"
        ):
            conn.execute("SELECT * FROM powers_as_of(3)")
        projections.project(db)
        run_import(db, SAMPLES / "mids-20.1224")
        run_import(db, SAMPLES / "mids-21.0331")
        assert run_import(db, SAMPLES / "mids-21.0331").no_changes
        projections.project(db)
        counts = {n: assert_as_of_equals_replay(db, conn, n) for n in (1, 3, 4, 5, 6)}
        assert [counts[n]["archetypes"] for n in (1, 3, 4, 5, 6)] == [14, 13, 14, 14, 14]
        assert [counts[n]["powersets"] for n in (1, 3, 4, 5, 6)] == [6, 6, 6, 5, 5]
        assert [counts[n]["powers"] for n in (1, 3, 4, 5, 6)] == [21, 21, 21, 18, 18]

        blaster = conn.execute("SELECT id FROM archetypes WHERE class_name = 'Class_Blaster'").fetchone()
        decimation = conn.execute("SELECT id FROM enhancement_sets WHERE uid = 'Decimation'").fetchone()
        assert blaster is not None and decimation is not None
        # Fire Blast had no event in imports 3 and 4: its archetype went NULL with Class_Blaster and came
        # back with it (same id: the stream continues).
        assert versions(conn, "powersets", "full_name", FIRE_BLAST, "archetype_id") == [
            (1, 3, blaster[0]),
            (3, 4, None),
            (4, None, blaster[0]),
        ]
        # Removed by import 3, back with import 4 (a gap: none as of 3), changed by 21.0331.
        assert versions(conn, "archetypes", "class_name", "Class_Blaster", "id") == [
            (1, 3, blaster[0]),
            (4, 5, blaster[0]),
            (5, None, blaster[0]),
        ]
        enhancement = "Crafted_Decimation_A"
        assert versions(conn, "enhancements", "uid", enhancement, "set_id") == [
            (1, 3, decimation[0]),
            (3, 4, None),
            (4, None, decimation[0]),
        ]
        assert versions(conn, "powers", "full_name", FLARES, "display_name") == [
            (1, 3, "Flares"),
            (3, 4, "Flares (renamed)"),
            (4, None, "Flares"),
        ]
        # A removal closes the last version and adds none.
        assert [v[:2] for v in versions(conn, "powersets", "full_name", TITAN, "id")] == [(1, 5)]
        assert conn.execute(
            "SELECT count(*) FROM archetypes_as_of(3) WHERE class_name = 'Class_Blaster'"
        ).fetchone() == (0,)

        # A release imported several times: its latest import.
        for release, latest in (("20.1224", 4), ("21.0331", 6)):
            for name in AS_OF:
                by_release = fetch(conn, f"SELECT * FROM {name}_as_of_release(%s) ORDER BY id", release)
                assert by_release == fetch(conn, f"SELECT * FROM {name}_as_of(%s) ORDER BY id", latest)

        for query, error, message in (
            (
                "SELECT * FROM powers_as_of(2)",
                psycopg.errors.InvalidParameterValue,
                "import 2 failed; the log holds nothing from it",
            ),
            (
                "SELECT * FROM power_build_summary_as_of(99)",
                psycopg.errors.NoDataFound,
                "there is no import 99",
            ),
            (
                "SELECT * FROM powers_as_of_release('19.0101')",
                psycopg.errors.NoDataFound,
                "no completed import of release 19.0101",
            ),
        ):
            with pytest.raises(error, match=message):
                conn.execute(query)

        # Rebuilt from the log in ranges of 10,000 (one per import): the same history, row for row.
        before = table_hashes(conn, tables=HISTORY_TABLES)
    rebuilder = Database(settings_for(dsn))
    try:
        projections.rebuild(rebuilder)
    finally:
        rebuilder.close()
    with db.connect(autocommit=True) as conn:
        assert table_hashes(conn, tables=HISTORY_TABLES) == before
        assert conn.execute("SELECT count(*) FROM powers_as_of(1)").fetchone() == (21,)
    report = audit.verify(db)
    assert report.failures == [] and {t.table for t in report.tables} >= set(HISTORY_TABLES)


def test_verify_names_an_edited_history_table(dsn: str) -> None:
    db = Database(settings_for(dsn))
    try:
        for release in ("mids-20.1224", "mids-21.0331"):
            run_import(db, SAMPLES / release)
        projections.project(db)
        with db.connect(autocommit=True) as conn:
            conn.execute(
                "UPDATE powers_history SET display_name = 'x' WHERE full_name = %s AND valid_from_import = 1",
                (FLARES,),
            )
        report = audit.verify(db)
        assert [t.table for t in report.tables if not t.ok] == ["powers_history"]
        # The fingerprint recorded with each import covers the read tables only, which are intact.
        assert report.fingerprint is not None and report.fingerprint.ok
        with pytest.raises(audit.VerifyError, match=r"read tables differ .* powers_history"):
            report.raise_for_failures()
    finally:
        db.close()
