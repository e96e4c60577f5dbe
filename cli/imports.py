"""`powerlog imports`: every import and its id, the id that `replay`, `export`, `diff` and `<table>_as_of` take."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from cli.context import console, migrated_database
from events.mids import KINDS

if TYPE_CHECKING:
    from store.imports import ImportRow

CHANGES = (("added", "+"), ("changed", "~"), ("removed", "-"))


def as_dict(row: ImportRow) -> dict[str, Any]:
    events = {k: {c: row.counts.get(k, {}).get(c, 0) for c, _ in CHANGES} for k in KINDS}
    return {
        "id": row.id,
        "label": row.label,
        "release": {"version": row.source_version, "date": row.source_date, "issue": row.source_issue},
        "source": row.source_path,
        "status": row.outcome,
        "errors": row.errors,
        "events": events,
        "total_events": sum(sum(c.values()) for c in events.values()),
        "unchanged": {k: row.counts.get(k, {}).get("unchanged", 0) for k in KINDS},
        "first_position": row.first_position,
        "last_position": row.last_position,
        "head": row.head_chain_hash,
        "started_at": row.started_at.isoformat(),
        "completed_at": row.completed_at.isoformat() if row.completed_at else None,
    }


def _changes(counts: dict[str, int]) -> str:
    return " ".join(f"{sign}{counts[c]:,}" for c, sign in CHANGES if counts[c]) or "—"


def imports_command(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """Every import, oldest first: id, release, label, source, status (completed, no changes, failed and
    why), events per kind (+added ~changed -removed), log positions and head.

    The ids are what `replay --as-of`, `export --as-of`, `diff` and the SQL functions `<table>_as_of` take."""
    from store import imports

    with migrated_database().connect(autocommit=True) as conn:
        rows = [as_dict(r) for r in imports.all_imports(conn)]
    if as_json:
        typer.echo(json.dumps({"imports": rows}, ensure_ascii=False))
        return
    if not rows:
        console.print("no imports yet: `powerlog import PATH`")
        return
    table = Table()
    for column in ("id", "status", "release", "date", "label", *KINDS, "positions"):
        table.add_column(
            column, justify="right" if column in ("id", *KINDS) else "left", no_wrap=column not in KINDS
        )
    for r in rows:
        release = r["release"]
        first, last = r["first_position"], r["last_position"]
        table.add_row(
            str(r["id"]),
            r["status"],
            # Text, not markup: these come from the source or the user and may hold [brackets].
            Text(release["version"] or "?"),
            Text((release["date"] or "")[:10]),
            Text(r["label"] or ""),
            *(_changes(r["events"][k]) for k in KINDS),
            f"{first}..{last}" if first is not None else "—",
        )
    console.print(table)
    for r in rows:
        head = f", log head {r['head']}" if r["head"] else ""
        console.print(Text(f"import {r['id']}: {r['source']}{head}"), highlight=False)
        if r["status"] == "failed":
            console.print(Text(f"  failed: {'; '.join(map(str, r['errors'])) or 'no error recorded'}"))
