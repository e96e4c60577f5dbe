"""`powerlog project`, `rebuild` and `status`: the read tables and where everything stands."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from cli.context import console, err_console, migrated_database, progress_bar, say_waiting, settings
from cli.daemons import MetricsHost, MetricsPort, StallThreshold, make_health, metrics_endpoint
from cli.safe import printable

if TYPE_CHECKING:
    from projections.projector import BatchCounts
    from store.connection import Database
    from store.locks import Holder


def _say_waiting(holder: Holder | None) -> None:
    say_waiting("another process is projecting", holder)


def _bar_updater(update: Callable[..., None]) -> Callable[[BatchCounts, int], None]:
    return lambda counts, target: update(total=target, completed=counts.position)


def _refresh_view(db: Database) -> None:
    """Keep the view fresh ourselves unless a scheduler has that job (POWERLOG_VIEW_REFRESH=scheduler)."""
    import scheduler

    if settings().view_refresh == "scheduler":
        with db.connect(autocommit=True) as conn:
            if scheduler.is_stale(conn):
                console.print("view power_build_summary is stale; the scheduler will refresh it")
        return
    result = scheduler.refresh(db, if_stale=True)
    if result.outcome == "ok":
        console.print(
            f"refreshed power_build_summary: {result.rows:,} rows in {result.duration_ms or 0:.0f} ms"
        )
    elif result.outcome == "failed":
        err_console.print(Text(printable(f"warning: refreshing power_build_summary failed: {result.error}")))


def project_command(
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep running: project each import as it commits.")
    ] = False,
    no_wait: Annotated[
        bool,
        typer.Option("--no-wait", help="Fail at once if another process is projecting, instead of waiting."),
    ] = False,
    poll: Annotated[
        float, typer.Option(help="With --follow: seconds between checks if no notification comes.")
    ] = 5.0,
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = "0.0.0.0",
    stall_threshold: StallThreshold = None,
) -> None:
    """Bring the read tables up to the log's head (each batch and its checkpoint commit together), then
    refresh power_build_summary if it is stale (even with nothing to apply). --follow wakes on each import;
    Ctrl-C or SIGTERM stops it. At an event it cannot apply it stops before it and names it (position,
    stream, type, reason); `status` shows it stalled.

    With --follow it outlives server restarts (reconnecting with backoff), pauses while a rebuild runs,
    and keeps running, saying so, at an event it cannot apply."""
    import projections
    from projections.metrics import FollowerMetrics

    db = migrated_database()
    if follow:
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())

        first = [True]

        def on_round(counts: BatchCounts, lag: int) -> None:
            # The first round looks even with nothing to apply: a process killed before its refresh may
            # have left the view behind the tables.
            if counts.changed_tables or first[0]:
                _refresh_view(db)
            first[0] = False

        metrics, health = FollowerMetrics(), make_health(stall_threshold)
        with metrics_endpoint(metrics.registry, health, metrics_port, metrics_host):
            console.print("following the log (Ctrl-C to stop)")
            projections.follow(db, stop, poll_s=poll, on_round=on_round, metrics=metrics, health=health)
        console.print("stopped")
        return
    if metrics_port:
        raise typer.BadParameter("only with --follow", param_hint="--metrics-port")
    try:
        with progress_bar("projecting", "positions") as update:
            counts = projections.project(
                db, wait=not no_wait, on_batch=_bar_updater(update), on_wait=_say_waiting
            )
    except projections.ProjectionStalled:
        # The batches before the event it stopped at are committed: the view follows them.
        _refresh_view(db)
        raise
    _print_counts(counts)
    # Even with nothing to apply: a `project` killed between its last batch and its refresh left the view
    # behind the tables (the refresh only runs if the view is stale).
    _refresh_view(db)


def _print_counts(counts: BatchCounts) -> None:
    if not counts.events:
        console.print(f"read tables already at position {counts.position}: nothing to apply")
        return
    table = Table(title=f"applied {counts.events:,} events, now at position {counts.position}")
    table.add_column("table")
    for col in ("added", "changed", "removed"):
        table.add_column(col, justify="right")
    for name, c in counts.applied.items():
        table.add_row(name, *(f"{c[k]:,}" for k in ("added", "changed", "removed")))
    console.print(table)


def rebuild_command(
    no_wait: Annotated[
        bool,
        typer.Option("--no-wait", help="Fail at once if another process is projecting, instead of waiting."),
    ] = False,
) -> None:
    """Rebuild every read table and the view from position 0 in a shadow schema, then swap them in with
    one short transaction: readers see the old tables or the new ones, never a half-built one.

    Holds the projector lock throughout: a running `project` or `--follow` is waited for (at most
    POWERLOG_LOCK_TIMEOUT seconds), and waits for the rebuild in turn."""
    import projections
    import scheduler

    db = migrated_database()
    with progress_bar("rebuilding", "positions") as update:
        result = projections.rebuild(
            db, wait=not no_wait, on_batch=_bar_updater(update), on_wait=_say_waiting
        )
    console.print(
        f"rebuilt the read tables from {result.counts.events:,} events (position {result.counts.position}) in "
        f"{result.seconds:.2f} s; swapped in {result.swap_ms:.0f} ms"
    )
    with db.connect(autocommit=True) as conn:
        scheduler.record_built(conn, result.counts.position)
    _refresh_view(db)


def gather_status(db: Database) -> dict[str, Any]:
    import projections
    import scheduler
    from projections import stalls
    from projections.audit import schema_rows
    from projections.tables import LIVE_SCHEMA
    from store import imports, log

    with db.connect(autocommit=True) as conn:
        head = log.head(conn)
        cps = projections.checkpoints(conn)
        last = imports.last_completed(conn)
        counts = schema_rows(conn, LIVE_SCHEMA)
        failed = imports.failed_count(conn)
        view = scheduler.status(conn)
        stall = stalls.current(conn, min(cps.values()))
        # Lag in seconds: how long the oldest event a projector has not applied has been in the log.
        waiting = {
            pos: log.seconds_waiting_after(conn, pos) for pos in set(cps.values()) if pos < head.position
        }
    return {
        "database": db.describe(),
        "log": {"head_position": head.position, "head_chain_hash": head.chain_hash.hex(), "head": str(head)},
        "projectors": {
            name: {
                "position": pos,
                "lag": head.position - pos,
                "lag_seconds": round(waiting.get(pos, 0.0), 3),
            }
            for name, pos in cps.items()
        },
        "rows": counts,
        "last_import": None
        if last is None
        else {
            "id": last.id,
            "label": last.label,
            "source_version": last.source_version,
            "completed_at": last.completed_at.isoformat() if last.completed_at else None,
            "first_position": last.first_position,
            "last_position": last.last_position,
            "head": last.head_chain_hash,
        },
        "failed_imports": failed,
        "view": view,
        "stalled": stall.as_dict() if stall else None,
    }


def status_command(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """Log head, each projector's checkpoint and lag, the last import, and the view's freshness."""
    st = gather_status(migrated_database())
    if as_json:
        typer.echo(json.dumps(st))
        return
    from cli.scheduler import status_rows

    # Text, not markup, for what users wrote (a label may hold [brackets]).
    console.print(Text.assemble(("log", "bold"), f" head {st['log']['head']}"))
    last = st["last_import"]
    if last:
        console.print(
            Text.assemble(
                ("last import", "bold"),
                printable(f" {last['id']} ({last['label'] or 'no label'}, release {last['source_version']}),")
                + f" positions {last['first_position']}..{last['last_position']}",
            )
        )
    else:
        console.print(Text.assemble(("last import", "bold"), " none yet: `powerlog import PATH`"))
    stalled = st["stalled"]
    if stalled:
        console.print(
            Text.assemble(
                ("stalled", "bold red"),
                printable(
                    f" at position {stalled['position']} ({stalled['stream_id']}, {stalled['event_type']}):"
                    f" {stalled['reason']} (since {stalled['first_seen_at']}, {stalled['attempts']} attempts)"
                ),
            )
        )
    table = Table(title="projectors")
    for col in ("table", "position", "lag (events)", "lag (seconds)", "rows"):
        table.add_column(col, justify="left" if col == "table" else "right")
    for name, p in st["projectors"].items():
        table.add_row(
            name, str(p["position"]), f"{p['lag']:,}", f"{p['lag_seconds']:,.0f}", f"{st['rows'][name]:,}"
        )
    console.print(table)
    view = Table(title=f"power_build_summary: {st['rows']['power_build_summary']:,} rows", show_header=False)
    for label, value in status_rows(st["view"]):
        view.add_row(label, Text(value))
    console.print(view)
