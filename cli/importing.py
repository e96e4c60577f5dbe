"""`powerlog import PATH`: one export into the log, atomically."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from cli.context import console, err_console, migrated_database, progress_bar, say_waiting
from cli.safe import printable, utf8_text

if TYPE_CHECKING:
    from importer.run import ImportResult
    from importer.run import Progress as ImportProgress


def summary_table(result: ImportResult) -> Table:
    from events.mids import KINDS, OUTCOMES

    title = "dry run: nothing written" if result.dry_run else f"import {result.import_id}"
    table = Table(title=title)
    table.add_column("kind")
    for outcome in OUTCOMES:
        table.add_column(outcome, justify="right")
    for kind in KINDS:
        c = result.counts[kind]
        table.add_row(kind, *(f"{c[o]:,}" for o in OUTCOMES))
    return table


def import_command(
    path: Annotated[
        Path,
        typer.Argument(help="The export: a directory, .zip or .tar.gz holding I12.json, EnhDB.json and db/."),
    ],
    label: Annotated[
        str | None,
        typer.Option(help="A name for this import, shown by history and status.", callback=utf8_text),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change; write nothing.")
    ] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Treat a duplicate key as an error, not a warning.")
    ] = False,
    read_all: Annotated[
        bool,
        typer.Option(
            "--read-all",
            help="Parse every file, also those whose bytes an earlier import read with the log unchanged since"
            " (by default their keys are taken from that import instead), and the export imported last.",
        ),
    ] = False,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Fail at once if another import is running, instead of waiting.")
    ] = False,
) -> None:
    """Import a Mids Reborn export: append the change events since the last import, all or nothing.

    Re-importing an unchanged export appends nothing, and a file whose bytes the last import read is not
    parsed again. Bad input stops the import with the file, the JSON path and what was expected; nothing is
    written but a record of the failed attempt.
    """
    from importer.errors import ImportInterrupted
    from importer.run import run_import

    db = migrated_database()
    started = time.perf_counter()
    with progress_bar(
        "reading",
        "files · {task.fields[records]:,} records · {task.fields[rate]:,.0f}/s",
        records=0,
        rate=0.0,
    ) as update:

        def progress(p: ImportProgress) -> None:
            update(
                total=p.files_total,
                completed=p.files_done,
                records=p.records,
                rate=p.records / max(time.perf_counter() - started, 1e-6),
                description=p.file[-40:],
            )

        try:
            result = run_import(
                db,
                path,
                label=label,
                dry_run=dry_run,
                strict=strict,
                read_all=read_all,
                wait=not no_wait,
                on_progress=progress,
                on_wait=lambda holder: say_waiting("another import is running", holder),
            )
        except ImportInterrupted as exc:
            err_console.print(Text(str(exc)))
            raise typer.Exit(130) from None
    console.print(summary_table(result))
    for w in result.warnings:
        err_console.print(
            Text(
                printable(
                    f"warning: duplicate {w['kind']} key {w['key']!r}: kept {w['first']}, skipped {w['second']}"
                )
            )
        )
    if result.files_reused:
        console.print(
            f"{result.files_reused:,} of {result.files:,} files unchanged since an earlier import: not parsed"
        )
    header = result.header
    # From the export's own header: shown as text, never as markup or terminal codes.
    release = printable(f"{header.version} ({header.date}, issue {header.issue})") if header else "?"
    if result.dry_run:
        console.print(f"dry run of release {release}: {result.events:,} events would be appended")
    elif result.no_changes:
        console.print(f"no changes: release {release} is already in the log (import {result.import_id})")
    else:
        assert result.appended is not None and result.head is not None
        console.print(
            f"import {result.import_id}: release {release}, {result.events:,} events at positions "
            f"{result.appended.first_position}..{result.appended.last_position} in {result.seconds:.1f} s"
        )
    if result.head is not None:
        console.print(f"log head {result.head} (keep it to check later with `powerlog verify --head`)")
