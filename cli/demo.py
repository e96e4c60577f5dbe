"""`powerlog demo`: the whole pipeline on the embedded server, on the sample cut from two real releases."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from cli.context import console, settings
from cli.importing import summary_table

if TYPE_CHECKING:
    import psycopg

    from store.connection import Database

# Package data (samples/ of the checkout, through the symlink cli/demo-samples): there in a wheel too.
SAMPLES = Path(str(importlib.resources.files("cli").joinpath("demo-samples")))
RELEASES = ("mids-20.1224", "mids-21.0331")
DEMO_DATABASE = "powerlog_demo"


def _fresh_demo_database() -> Database:
    """A database of its own on the embedded server, made anew each run so the demo always tells the same story."""
    import psycopg
    from psycopg import conninfo, sql

    from store.connection import Database
    from store.server import start_embedded

    admin = start_embedded(settings().home)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DEMO_DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DEMO_DATABASE)))
    return Database(settings(), dsn=conninfo.make_conninfo(admin, dbname=DEMO_DATABASE))


def demo() -> None:
    """Run the whole pipeline on the embedded PostgreSQL: migrate, import two sample releases, project,
    refresh the view, and show what changed. Uses its own database, `powerlog_demo`, made anew each run."""
    import projections
    import scheduler
    from events.errors import PowerlogError
    from importer.run import run_import
    from migrations import schema

    missing = [r for r in RELEASES if not (SAMPLES / r / "I12.json").exists()]
    if missing:
        raise PowerlogError(
            f"the demo's sample releases are not at {SAMPLES}: reinstall powerlog (they ship inside it)"
        )
    console.print("[bold]powerlog demo[/]: embedded PostgreSQL under " + str(settings().home / "pgdata"))
    db = _fresh_demo_database()
    schema.upgrade(db)
    console.print(f"1. schema at revision {schema.head_revision()} in database {DEMO_DATABASE}")
    for n, release in enumerate(RELEASES, start=2):
        result = run_import(db, SAMPLES / release, label=f"sample {release}")
        console.print(f"{n}. imported {release}: {result.events} events, log head {result.head}")
        console.print(summary_table(result))
    counts = projections.project(db)
    console.print(f"4. projected {counts.events} events into the read tables")
    refreshed = scheduler.refresh(db, if_stale=True)
    console.print(f"5. refreshed power_build_summary ({refreshed.outcome}, {refreshed.rows} rows)")
    assert result.import_id is not None
    with db.connect() as conn:
        _summary(conn, last_import=result.import_id)


def _summary(conn: psycopg.Connection[Any], last_import: int) -> None:
    from projections.audit import schema_rows
    from projections.tables import LIVE_SCHEMA
    from store import log

    table = Table(title="read tables")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, rows in schema_rows(conn, LIVE_SCHEMA).items():
        table.add_row(name, str(rows))
    console.print(table)

    changed = Table(title="most-changed powers between the two releases (JSON Patch operations)")
    for col in ("power", "operations", "fields"):
        changed.add_column(col)
    for key, ops, fields in log.largest_changes(conn, import_id=last_import, kind="power", limit=3):
        changed.add_row(key, str(ops), ", ".join(fields))
    console.print(changed)

    query = (
        "SELECT display_name, level_available, round(damage_scale::numeric, 3), endurance_cost, recharge_time,"
        " archetype_name FROM power_build_summary WHERE powerset_name = 'Fire Blast' AND archetype_name = 'Blaster'"
        " AND level_available <= 20 ORDER BY level_available, display_name"
    )
    sample = Table(title="power_build_summary: Blaster Fire Blast powers up to level 20")
    for col in ("power", "level", "damage scale", "endurance", "recharge s", "archetype"):
        sample.add_column(col)
    for row in conn.execute(query).fetchall():
        sample.add_row(*("" if v is None else str(v) for v in row))
    console.print(sample)
    console.print(f"[dim]{query}[/]")

    # The same question as of the first import, in one query on the same server (README "As of an import").
    titan = "full_name LIKE 'Brute_Melee.Titan_Weapons_beta.%'"
    as_of = f"SELECT count(*) FROM powers_as_of(1) WHERE {titan}"
    then = conn.execute(as_of).fetchone()
    now = conn.execute(f"SELECT count(*) FROM powers WHERE {titan}").fetchone()
    console.print(
        f"Titan Weapons (beta) powers as of import 1: {then[0] if then else 0}, now: {now[0] if now else 0}"
    )
    console.print(f"[dim]{as_of}[/]")
