"""`powerlog demo`: the whole pipeline on the embedded server, for a first look."""

from __future__ import annotations

from cli.context import console, database
from cli.db import status as db_status
from store import schema


def demo() -> None:
    """Migrate the database and show its status (the importer and projections join as they land)."""
    db = database()
    console.print(f"[bold]powerlog demo[/] on {db.describe()}" + (" (embedded)" if db.embedded else ""))
    schema.upgrade(db)
    db_status(as_json=False)
