"""The `powerlog` command: a thin layer that wires the packages and turns errors into exit codes."""

from __future__ import annotations

import sys
from typing import Annotated

import psycopg
import typer
from rich.text import Text

from cli import audit, db, demo, projecting
from cli import scheduler as scheduler_cli
from cli.context import err_console
from cli.importing import import_command
from cli.logs import configure
from events.errors import PowerlogError
from store.server import redact

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
app.command(name="history")(audit.history_command)
app.command(name="diff")(audit.diff_command)
app.command(name="replay")(audit.replay_command)
app.command(name="export")(audit.export_command)
app.command(name="verify")(audit.verify_command)


@app.callback()
def main(
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info, warning or error.", envvar="POWERLOG_LOG_LEVEL")
    ] = "info",
    log_json: Annotated[
        bool | None,
        typer.Option("--log-json/--log-console", help="Log format (default: JSON off a terminal)."),
    ] = None,
) -> None:
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise typer.BadParameter(f"unknown log level {log_level!r}", param_hint="--log-level")
    configure(log_level, log_json)


def run() -> None:
    """Console-script entry point: exit 0 done, 1 failed with a message, 2 bad usage."""
    try:
        app()  # standalone: typer prints usage errors itself and exits 2
    except PowerlogError as exc:
        # Text, not markup: a file name or JSON path may hold brackets.
        err_console.print(Text.assemble(("error: ", "bold red"), redact(str(exc))), highlight=False)
        sys.exit(1)
    except psycopg.Error as exc:
        # Unexpected at this level (expected failures are PowerlogErrors), but still one line, no traceback.
        detail = " ".join(str(exc).split())
        err_console.print(Text.assemble(("database error: ", "bold red"), redact(detail)), highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
