"""`powerlog history`, `diff`, `replay`, `export` and `verify`: audits of the log and the read tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from cli.context import console, migrated_database
from cli.safe import shown, utf8_text
from events.mids import Kind

if TYPE_CHECKING:
    from projections.audit import VerifyReport
    from projections.history import ImportRef
    from store.log import Head

MAX_KEYS_SHOWN = 20
MAX_FIELDS_SHOWN = 15
MAX_VALUE_CHARS = 70


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, default=str))


def _short(value: Any) -> str:
    from events import canonical_bytes

    text = canonical_bytes(value).decode()
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def _release(ref: ImportRef) -> str:
    label = f", {ref.label}" if ref.label else ""
    return f"import {ref.id} (release {ref.source_version or '?'} of {ref.source_date or '?'}{label})"


def history_command(
    kind: Annotated[Kind, typer.Argument(help="The entity's kind.")],
    key: Annotated[
        str,
        typer.Argument(help="Its natural key, e.g. Blaster_Ranged.Fire_Blast.Flares.", callback=utf8_text),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """Every event of one entity, with its import; for changes, each path's old and new value."""
    from projections.history import history

    db = migrated_database()
    with db.connect(autocommit=True) as conn:
        entries = history(conn, kind, key)
    if as_json:
        _echo_json({"kind": kind, "key": key, "events": [e.as_dict() for e in entries]})
        return
    console.print(f"[bold]{kind} {shown(key)}[/]: {len(entries)} event(s)")
    for e in entries:
        what = f"{e.event_type} (v{e.stream_version}) at position {e.position}, {_release(e.import_ref)}"
        if e.changes:
            what += f": {len(e.changes)} path(s) changed"
        console.print(shown(what), highlight=False)
        if not e.changes:
            continue
        table = Table(box=None, padding=(0, 2, 0, 4), show_edge=False)
        for col in ("path", "old", "new"):
            table.add_column(col, overflow="fold")
        for c in e.changes:
            table.add_row(
                shown(c.path),
                shown(_short(c.old)) if c.had_old else "—",
                shown(_short(c.new)) if c.has_new else "—",
            )
        console.print(table)


def diff_command(
    before: Annotated[int, typer.Argument(help="Import id: the state after this import…")],
    after: Annotated[int, typer.Argument(help="…compared with the state after this one.")],
    kind: Annotated[Kind | None, typer.Option("--kind", help="Only this kind.")] = None,
    key_like: Annotated[
        str | None,
        typer.Option(
            "--key-like",
            help="Only keys matching this SQL LIKE pattern, e.g. 'Blaster%'.",
            callback=utf8_text,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """What changed between the log after import BEFORE and after import AFTER, per kind and field.

    Counts added / changed / removed / unchanged entities per kind, and how many changed entities differ
    in each top-level field (e.g. PowerIndex vs Effects)."""
    from projections.diff import diff_imports
    from projections.history import ImportRef

    db = migrated_database()
    with db.connect(autocommit=True) as conn:
        result = diff_imports(conn, before, after, kind, key_like)
    if as_json:
        _echo_json(result.as_dict())
        return
    a, b = ImportRef.of(result.before), ImportRef.of(result.after)
    table = Table(title=shown(f"{_release(a)} → {_release(b)}"))
    table.add_column("kind")
    for col in ("added", "changed", "removed", "unchanged"):
        table.add_column(col, justify="right")
    for k, d in result.kinds.items():
        table.add_row(k, *(f"{n:,}" for n in d.counts().values()))
    console.print(table)
    for k, d in result.kinds.items():
        if d.fields:
            listed_fields = list(d.fields.items())[:MAX_FIELDS_SHOWN]
            more = len(d.fields) - len(listed_fields)
            text = ", ".join(f"{f or '(whole record)'} {n:,}" for f, n in listed_fields)
            console.print(
                shown(f"{k}: fields changed among {d.changed:,} changed: {text}")
                + (f" and {more} more field(s)" if more else ""),
                highlight=False,
            )
        for what, keys in (("added", d.added_keys), ("removed", d.removed_keys)):
            if keys:
                listed = ", ".join(keys[:MAX_KEYS_SHOWN]) + (" …" if len(keys) > MAX_KEYS_SHOWN else "")
                console.print(shown(f"{k} {what}: {listed}"), highlight=False)


def replay_command(
    as_of: Annotated[int, typer.Option("--as-of", help="Import id: build the tables as they were after it.")],
    schema: Annotated[str, typer.Option("--schema", help="Schema to build them in.", callback=utf8_text)],
    replace: Annotated[
        bool, typer.Option("--replace", help="Drop and rebuild SCHEMA if it already exists.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """Build the read tables and the view as they were after import AS_OF into SCHEMA, from the log.

    The live tables are not touched; an existing SCHEMA is refused unless --replace."""
    import projections
    from projections.audit import schema_rows

    db = migrated_database()
    counts = projections.replay(db, as_of, schema, replace=replace)
    with db.connect(autocommit=True) as conn:
        rows = schema_rows(conn, schema)
    if as_json:
        _echo_json(
            {
                "schema": schema,
                "as_of": as_of,
                "position": counts.position,
                "events": counts.events,
                "rows": rows,
            }
        )
        return
    table = Table(title=shown(f"schema {schema}: as after import {as_of} (position {counts.position})"))
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, n in rows.items():
        table.add_row(name, f"{n:,}")
    console.print(table)
    console.print(f"replayed {counts.events:,} events", highlight=False)


def export_command(
    out: Annotated[Path, typer.Argument(help="Directory to write the export into (new or empty).")],
    as_of: Annotated[
        int, typer.Option("--as-of", help="Import id: export the records as they were after it.")
    ],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Write into a non-empty OUT: replaces I12.json, EnhDB.json, PowerSets.json, PowerPools.json"
            " and db/ there, nothing else.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """Write a Mids export directory from the log: the records it held after import AS_OF.

    OUT gets I12.json, EnhDB.json and db/<FullName>.json per powerset; it must be new or empty unless
    --force."""
    from projections.export import export

    db = migrated_database()
    result = export(db, as_of, out, force=force)
    if as_json:
        _echo_json(result.as_dict())
        return
    table = Table(title=shown(f"export of import {as_of} (position {result.position}) to {result.out}"))
    table.add_column("kind")
    table.add_column("records", justify="right")
    for k, n in result.records.items():
        table.add_row(k, f"{n:,}")
    console.print(table)
    console.print(f"{result.files:,} files written", highlight=False)


def _parse_head(text: str | None) -> Head | None:
    from store.log import Head

    if text is None:
        return None
    try:
        head = Head.parse(text)
    except ValueError:
        head = None
    if head is None or head.position < 1 or len(head.chain_hash) != 32:
        raise typer.BadParameter("expected POSITION:HASH as `powerlog import` prints it", param_hint="--head")
    return head


def verify_command(
    head: Annotated[
        str | None,
        typer.Option(
            "--head",
            metavar="POSITION:HASH",
            help="A log head kept outside the database (printed by each import): fail if the log no longer"
            " reaches it.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """Check the hash chain, a kept head, the log's bookkeeping, and the read tables against a rebuild.

    Each completed import's recorded positions and head must be in the log, and `streams` must equal the
    fold of the log. The rebuild goes into a scratch schema (dropped afterwards; one left by a killed verify
    is dropped by the next) up to the live tables' checkpoint; the fingerprint recorded with the import at
    that position is checked too, and power_build_summary against its query when it is not stale. Exit 1
    naming what failed."""
    from projections.audit import verify

    kept = _parse_head(head)
    report = verify(migrated_database(), kept)
    if as_json:
        _echo_json(report.as_dict())
    else:
        _print_report(report)
    report.raise_for_failures()


def _print_report(report: VerifyReport) -> None:
    from projections.tables import VIEW

    ok, bad = "[green]ok[/]", "[bold red]FAILED[/]"
    if report.chain_error is None:
        assert report.chain_head is not None
        console.print(f"chain: {ok}, {report.chain_head.position:,} events, head {report.chain_head}")
    else:
        console.print(f"chain: {bad}: {shown(str(report.chain_error))}")
    if report.kept_head is not None:
        status = ok if report.head_error is None else f"{bad}: {shown(str(report.head_error))}"
        console.print(f"kept head {report.kept_head}: {status}")
    if report.imports_errors:
        for error in report.imports_errors:
            console.print(f"imports: {bad}: {shown(error)}")
    else:
        console.print(f"imports: {ok}, each completed import's positions and head are in the log")
    if report.streams_differing:
        console.print(f"streams vs the fold of the log: {bad}: {report.streams_differing:,} stream(s) differ")
        for m in report.streams_shown:
            console.print(
                shown(
                    f"  {m.stream_id}: recorded {m.recorded or 'no row'}; log gives {m.derived or 'no event'}"
                ),
                highlight=False,
            )
    else:
        console.print(f"streams vs the fold of the log: {ok}")
    if report.rebuild_error is not None:
        console.print(f"rebuild at position {report.checkpoint}: {bad}: {shown(report.rebuild_error)}")
    else:
        differ = [t.table for t in report.tables if not t.ok]
        status = ok if not differ else f"{bad}: differ: {', '.join(differ)}"
        console.print(f"read tables vs rebuild from the log at position {report.checkpoint}: {status}")
    if report.chain_head is not None and report.checkpoint < report.chain_head.position:
        lag = report.chain_head.position - report.checkpoint
        console.print(f"note: the read tables lag the log by {lag:,} events (`powerlog project`)")
    fp = report.fingerprint
    if fp is not None:
        if fp.recorded is None:
            console.print(f"fingerprint of import {fp.import_id}: not recorded")
        else:
            console.print(f"fingerprint of import {fp.import_id}: {ok if fp.ok else bad}")
    view = report.view
    if view is not None:
        if not view.checked:
            console.print(f"{VIEW} vs its query: not compared ({view.note})", highlight=False)
        elif view.ok:
            console.print(f"{VIEW} vs its query: {ok}")
        else:
            ids = ", ".join(map(str, view.differing_ids))
            console.print(f"{VIEW} vs its query: {bad}: {view.differing:,} row(s) differ (power ids {ids})")
