"""`powerlog scheduler run`, `powerlog refresh` and the view's refresh figures."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from cli.context import console, database, settings
from cli.daemons import MetricsHost, MetricsPort, StallThreshold, make_health, metrics_endpoint
from cli.safe import printable

app = typer.Typer(
    help="Keep the materialized view power_build_summary fresh: refresh it (CONCURRENTLY, so readers are "
    "never blocked) whenever the read tables have moved past the position it was last refreshed at.",
    no_args_is_help=True,
)


def _positive(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise typer.BadParameter("must be greater than 0")
    return value


@app.command()
def run(
    interval: Annotated[
        float | None,
        typer.Option(
            "--interval",
            help="Seconds between ticks; each tick refreshes only if the view is stale. "
            "Default: POWERLOG_REFRESH_INTERVAL (30).",
            callback=_positive,
            show_default=False,
        ),
    ] = None,
    misfire_grace: Annotated[
        float | None,
        typer.Option(
            "--misfire-grace",
            help="Seconds a tick may run late (busy process, suspended host) and still run; later ticks "
            "are dropped and merged into the next one. Default: the interval.",
            callback=_positive,
            show_default=False,
        ),
    ] = None,
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = "0.0.0.0",
    stall_threshold: StallThreshold = None,
) -> None:
    """Run the refresh scheduler in the foreground; SIGTERM or Ctrl-C stop it after the running refresh.

    Schedulers on several hosts may share a database: only the lock holder refreshes, the others skip.

    Every refresh is recorded in view_refreshes (see `powerlog scheduler status`). A server restart is
    outlived: ticks wait a growing time (at most 30 s) between attempts to reach it again.
    """
    import scheduler
    from projections.metrics import SchedulerMetrics

    interval_s = interval if interval is not None else settings().refresh_interval_s
    grace_s = misfire_grace if misfire_grace is not None else interval_s
    db = database()
    metrics, health = SchedulerMetrics(), make_health(stall_threshold)
    with metrics_endpoint(metrics.registry, health, metrics_port, metrics_host):
        ticker = scheduler.Ticker(db, metrics, health)
        scheduler.run_forever(db, interval_s, max(1, math.ceil(grace_s)), ticker)


def refresh_command(
    if_stale: Annotated[
        bool,
        typer.Option(
            "--if-stale", help="Refresh only if the read tables moved past the last refresh (else say so)."
        ),
    ] = False,
    plain: Annotated[
        bool,
        typer.Option(
            "--plain",
            help="Plain REFRESH instead of CONCURRENTLY: faster, but readers wait for its whole duration.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as one JSON object.")] = False,
) -> None:
    """Refresh power_build_summary now, CONCURRENTLY (readers keep reading the old contents meanwhile).

    Exits 1 if the refresh failed (it is recorded) or another process is refreshing right now.
    """
    import scheduler
    from store.errors import LockBusy

    result = scheduler.refresh(database(), if_stale=if_stale, concurrently=not plain)
    if result.outcome == "skipped":
        raise LockBusy(f"another process is refreshing {scheduler.VIEW}; try again when it has finished")
    if result.outcome == "failed":
        raise scheduler.RefreshFailed(
            f"refresh #{result.refresh_id} of {scheduler.VIEW} failed (recorded): {result.error}"
        )
    if as_json:
        typer.echo(json.dumps(asdict(result)))
    elif result.outcome == "fresh":
        console.print(f"{scheduler.VIEW} is up to date; nothing to refresh")
    else:
        console.print(
            f"refreshed {scheduler.VIEW} ({result.mode}): {result.rows:,} rows at source position "
            f"{result.source_position:,} in {(result.duration_ms or 0) / 1000:.2f} s",
            highlight=False,
        )


def status_rows(figures: dict[str, Any]) -> list[tuple[str, str]]:
    """`scheduler.status` figures as label/value rows, for `powerlog status` and `scheduler status`."""
    if figures["last_refresh_at"] is None:
        last = "never"
    else:
        seconds = figures["last_refresh_duration_ms"]  # none for a view a rebuild created
        details = [
            figures["last_refresh_mode"],
            *([f"{seconds / 1000:.2f} s"] if seconds is not None else []),
            f"{figures['last_refresh_rows']:,} rows",
            f"position {figures['refreshed_position']:,}",
        ]
        last = f"{figures['last_refresh_at']} ({', '.join(details)})"
    if not figures["populated"]:
        fresh = "no: the view holds no data"
    elif figures["stale"]:
        fresh = f"no: stale, source at position {figures['source_position']:,}"
    else:
        fresh = "yes"
    abandoned = figures.get("abandoned", 0)
    died = f" ({abandoned} abandoned: their process or connection died)" if abandoned else ""
    failures = (
        f"{figures['failures']} in all{died}, {figures['failures_since_last_ok']} since the last success"
    )
    rows = [
        ("view", figures["view"]),
        ("last refresh", last),
        ("up to date", fresh),
        ("refreshing now", "yes" if figures["refreshing_now"] else "no"),
        ("failed refreshes", failures),
    ]
    if figures["failures_since_last_ok"] and figures["last_error"]:
        rows.append(("last error", figures["last_error"]))
    return [(label, printable(value)) for label, value in rows]


@app.command(name="status")
def status_command(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """Show when the view was last refreshed, whether it is stale, and how many refreshes failed."""
    import scheduler

    with database().connect(autocommit=True) as conn:
        figures = scheduler.status(conn)
    if as_json:
        typer.echo(json.dumps(figures))
        return
    table = Table(show_header=False, box=None)
    for label, value in status_rows(figures):
        table.add_row(label, Text(value))  # Text: an error message may hold [brackets]
    console.print(table)
