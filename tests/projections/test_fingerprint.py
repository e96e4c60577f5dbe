"""The read tables' fingerprint: order independent, sensitive to one changed value, carried forward per import
exactly as a full pass over the tables would give it, and comparable with values recorded in the first form."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

import projections
from importer.run import run_import
from projections import ddl
from projections.audit import verify
from projections.fingerprint import after_import, comparable, fingerprint, parse, table_hashes
from projections.projector import catch_up
from projections.tables import LIVE_SCHEMA, READ_TABLES
from store import imports
from store.connection import Database
from tests.conftest import SAMPLES

OLD = SAMPLES / "mids-20.1224"
NEW = SAMPLES / "mids-21.0331"
# The fingerprint as it was computed before v2 (SHA-256 over string_agg of the rows in id order).
FIRST_FORM = (
    "SELECT encode(sha256(convert_to(coalesce(string_agg(t::text, E'\\n' ORDER BY t.id), ''), 'UTF8')), 'hex')"
    " FROM {} t"
)


def _recorded(conn: psycopg.Connection[Any]) -> dict[int, tuple[int, str | None]]:
    return {r.id: (r.last_position or 0, r.fingerprint) for r in imports.all_imports(conn)}


def _replayed(conn: psycopg.Connection[Any], schema: str, until: int) -> str:
    with conn.transaction():
        ddl.create_tables(conn, schema)
    catch_up(conn, schema, range_size=7, until=until)
    return fingerprint(conn, schema)


@pytest.mark.parametrize("batch", ["10000", "5"])
def test_each_recorded_fingerprint_equals_a_full_pass_over_a_replay(
    make_db: Callable[..., Database], batch: str
) -> None:
    # Removals (a powerset with its powers), their return with the old ids, references set NULL and
    # resolved again: every kind of row version the carry-forward adds or subtracts; with ranges of 5
    # events, each import spans many transactions before its fingerprint is recorded.
    db = make_db(POWERLOG_PROJECT_BATCH=batch)
    for release in (OLD, NEW, OLD):
        run_import(db, release)
        projections.project(db)
    with psycopg.connect(db.settings.database_url, autocommit=True) as conn:
        recorded = _recorded(conn)
        assert set(recorded) == {1, 2, 3}
        for import_id, (last, value) in recorded.items():
            assert value is not None and value.startswith("v2:")
            assert value == _replayed(conn, f"replay{import_id}", last), import_id
        assert recorded[3][1] == fingerprint(conn) == after_import(conn, LIVE_SCHEMA, 3)
        assert recorded[1][1] != recorded[2][1] and recorded[1][1] == recorded[3][1]


def _copy(conn: psycopg.Connection[Any], schema: str, order: str) -> None:
    with conn.transaction():
        ddl.create_tables(conn, schema)
        for table in READ_TABLES:
            conn.execute(
                sql.SQL("INSERT INTO {} SELECT * FROM {} ORDER BY id " + order).format(
                    sql.Identifier(schema, table), sql.Identifier(LIVE_SCHEMA, table)
                )
            )


def test_order_independent_and_sensitive_to_one_value(db: Database) -> None:
    run_import(db, NEW)
    projections.project(db)
    with psycopg.connect(db.settings.database_url, autocommit=True) as conn:
        _copy(conn, "up", "ASC")
        _copy(conn, "down", "DESC")
        up = table_hashes(conn, "up", READ_TABLES)
        assert up == table_hashes(conn, "down", READ_TABLES) == table_hashes(conn, LIVE_SCHEMA, READ_TABLES)
        assert fingerprint(conn, "up") == fingerprint(conn, "down") == fingerprint(conn)
        # The physical order differs (the copies were written in opposite orders).
        first = "SELECT id FROM {}.powers LIMIT 1"
        assert conn.execute(first.format("up")).fetchone() != conn.execute(first.format("down")).fetchone()

        # One number deep in one power's effects: only powers' digest moves.
        conn.execute(
            "UPDATE down.powers SET effects = jsonb_set(effects, '{0,Scale}', to_jsonb((effects#>>'{0,Scale}')::float8 + 0.001))"
            " WHERE id = (SELECT min(id) FROM down.powers WHERE jsonb_array_length(effects) > 0)"
        )
        changed = table_hashes(conn, "down", READ_TABLES)
        assert [t for t in READ_TABLES if changed[t] != up[t]] == ["powers"]
        assert fingerprint(conn, "down") != fingerprint(conn, "up")
        # Two rows swapping one value: the same values, in other rows.
        (a, name_a), (b, name_b) = conn.execute(
            "SELECT id, display_name FROM up.powers ORDER BY id LIMIT 2"
        ).fetchall()
        assert name_a != name_b
        conn.execute(
            "UPDATE up.powers SET display_name = CASE id WHEN %s THEN %s ELSE %s END WHERE id IN (%s, %s)",
            (a, name_b, name_a, a, b),
        )
        assert table_hashes(conn, "up", ["powers"])["powers"] != up["powers"]


def test_a_live_row_altered_before_the_next_import_is_still_caught(db: Database) -> None:
    # The next import's fingerprint is carried forward from what the projector wrote, not read from the
    # live tables, so an edit to a row that import leaves alone is not absorbed into it.
    run_import(db, OLD)
    projections.project(db)
    with psycopg.connect(db.settings.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE powers SET display_name = 'edited' WHERE full_name LIKE 'Boosts.Amp_Up_Defender.%'"
        )
    run_import(db, NEW)
    projections.project(db)
    with psycopg.connect(db.settings.database_url, autocommit=True) as conn:
        assert _recorded(conn)[2][1] != fingerprint(conn)
    report = verify(db)
    assert report.fingerprint is not None and report.fingerprint.import_id == 2
    assert not report.fingerprint.ok


def _first_form(conn: psycopg.Connection[Any]) -> str:
    h = hashlib.sha256()
    for table in sorted(READ_TABLES):
        row = conn.execute(sql.SQL(FIRST_FORM).format(sql.Identifier(LIVE_SCHEMA, table))).fetchone()
        assert row is not None
        h.update(f"{table}:{row[0]}\n".encode())
    return h.hexdigest()


def test_a_first_form_value_is_compared_in_its_form_and_not_carried_forward(db: Database) -> None:
    run_import(db, OLD)
    projections.project(db)
    with psycopg.connect(db.settings.database_url, autocommit=True) as conn:
        old_form = _first_form(conn)
        assert comparable(conn, old_form) == old_form
        assert comparable(conn, None) == comparable(conn, "v2:x") == fingerprint(conn)
        assert comparable(conn, "v2:x", hashes=table_hashes(conn)) == fingerprint(conn)
        # As a database projected before v2 holds it.
        conn.execute("UPDATE imports SET fingerprint = %s WHERE id = 1", (old_form,))
    assert verify(db).ok
    run_import(db, NEW)
    projections.project(db)
    with psycopg.connect(db.settings.database_url, autocommit=True) as conn:
        assert _recorded(conn)[2][1] == fingerprint(conn)


def test_parse() -> None:
    value = "v2:" + ",".join(f"{t}={i:032x}" for i, t in enumerate(sorted(READ_TABLES)))
    assert parse(value) == {t: (0, i) for i, t in enumerate(sorted(READ_TABLES))}
    assert parse(None) is None
    assert parse("ab" * 32) is None
    assert parse(value.rsplit(",", 1)[0]) is None
    assert parse(value.replace("powers=", "spells=")) is None
