"""`powerlog db ...`: schema migrations and their state."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from cli.context import console, database

app = typer.Typer(
    help="Create or upgrade the database schema, and show where it stands.", no_args_is_help=True
)


@app.command()
def upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply the schema migrations up to REVISION (default: the newest). Safe to run again."""
    from migrations import schema

    db = database()
    schema.upgrade(db, revision)
    st = schema.status(db)
    console.print(
        f"schema at revision {st.current_revision} on {st.database} (PostgreSQL {st.server_version})"
    )


@app.command()
def downgrade(
    revision: Annotated[str, typer.Argument(help='Target revision; "base" removes every powerlog table.')],
) -> None:
    """Take the schema back to REVISION. Destroys data of the revisions removed."""
    from migrations import schema

    schema.downgrade(database(), revision)
    console.print(f"schema at revision {schema.status(database()).current_revision or 'base'}")


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """Show the current and newest schema revision, the server version and whether pg_trgm is there."""
    from migrations import schema

    st = schema.status(database())
    if as_json:
        typer.echo(json.dumps(st.as_dict()))
        return
    table = Table(show_header=False, box=None)
    table.add_row("database", st.database + (" (embedded)" if st.embedded else ""))
    table.add_row("server", f"PostgreSQL {st.server_version}")
    table.add_row("revision", f"{st.current_revision or 'none'} (head {st.head_revision})")
    table.add_row("up to date", "yes" if st.up_to_date else "no: run `powerlog db upgrade`")
    table.add_row(
        "pg_trgm",
        "installed" if st.pg_trgm_installed else ("available" if st.pg_trgm_available else "MISSING"),
    )
    console.print(table)
