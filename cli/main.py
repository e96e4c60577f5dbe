"""The `powerlog` command: a thin layer that wires the packages and turns errors into exit codes.

Modules behind the commands (psycopg, SQLAlchemy, alembic, APScheduler, structlog) are imported by the
command that needs them, so `powerlog --help` answers at once.
"""

from __future__ import annotations

import gc
import sys
from typing import Annotated

import typer
from rich.text import Text

from cli import audit, context, db, demo, imports, projecting
from cli import scheduler as scheduler_cli
from cli.context import err_console
from cli.importing import import_command

app = typer.Typer(
    help="powerlog: City of Heroes game data as an append-only change log in PostgreSQL.\n\n"
    "With DATABASE_URL unset, powerlog starts an embedded PostgreSQL under POWERLOG_HOME.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(db.app, name="db")
app.add_typer(scheduler_cli.app, name="scheduler")
app.command(name="refresh")(scheduler_cli.refresh_command)
app.command(name="demo")(demo.demo)
app.command(name="import")(import_command)
app.command(name="project")(projecting.project_command)
app.command(name="rebuild")(projecting.rebuild_command)
app.command(name="status")(projecting.status_command)
app.command(name="imports")(imports.imports_command)
app.command(name="history")(audit.history_command)
app.command(name="diff")(audit.diff_command)
app.command(name="replay")(audit.replay_command)
app.command(name="export")(audit.export_command)
app.command(name="verify")(audit.verify_command)

LEVELS = ("debug", "info", "warning", "error")


@app.callback()
def main(
    ctx: typer.Context,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Log info lines on a terminal too (same as --log-level info)."),
    ] = False,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            help="debug, info, warning or error (default: info off a terminal, warning on one).",
            envvar="POWERLOG_LOG_LEVEL",
            show_default=False,
        ),
    ] = None,
    log_json: Annotated[
        bool | None,
        typer.Option("--log-json/--log-console", help="Log format (default: JSON off a terminal)."),
    ] = None,
) -> None:
    if log_level is not None and log_level.lower() not in LEVELS:
        raise typer.BadParameter(f"unknown log level {log_level!r}", param_hint="--log-level")
    from cli.logs import configure

    configure(log_level.lower() if log_level else ("info" if verbose else None), log_json)
    if ctx.invoked_subcommand:
        context.application_name = f"powerlog {ctx.invoked_subcommand}"


def run() -> None:
    """Console-script entry point: exit 0 done, 1 failed with a message, 2 bad usage."""
    try:
        _run()
    finally:
        # The process ends here: the collections the interpreter runs as it exits would walk every object
        # of the libraries loaded (SQLAlchemy, psycopg, rich) to free memory the OS takes back anyway, 0.2 to
        # 0.35 s of a rebuild or a no-change import on a slow machine (0.03 s frozen). What the command
        # opened it has closed by now, and atexit handlers still run.
        gc.freeze()


def _run() -> None:
    try:
        app()  # standalone: typer prints usage errors itself and exits 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        from cli.safe import printable
        from events.errors import PowerlogError
        from store.server import redact

        if isinstance(exc, PowerlogError):
            # Text, not markup: a file name or JSON path may hold brackets.
            err_console.print(
                Text.assemble(("error: ", "bold red"), printable(redact(str(exc)))), highlight=False
            )
            sys.exit(1)
        # A driver error is unexpected at this level (expected failures are PowerlogErrors), but still one
        # line, no traceback. psycopg is loaded by then if the command reached the database.
        psycopg = sys.modules.get("psycopg")
        if psycopg is None or not isinstance(exc, psycopg.Error):
            raise
        detail = " ".join(str(exc).split())
        err_console.print(
            Text.assemble(("database error: ", "bold red"), printable(redact(detail))), highlight=False
        )
        sys.exit(1)
