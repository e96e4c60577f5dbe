"""What `project --follow` and `scheduler run` share: the metrics endpoint's options and its start."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from cli.context import settings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from projections.metrics import Health


def _port(value: int | None) -> int | None:
    if value is not None and not 0 <= value <= 65535:
        raise typer.BadParameter("must be a TCP port, 0..65535 (0: no endpoint)")
    return value


def _threshold(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise typer.BadParameter("must be greater than 0")
    return value


MetricsPort = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        help="Serve Prometheus metrics on this port (/metrics) and a health check (/healthz: 200, or 503 "
        "once stalled or disconnected longer than the stall threshold). 0 or unset: none.",
        callback=_port,
        show_default=False,
    ),
]
MetricsHost = Annotated[str, typer.Option("--metrics-host", help="Address the metrics endpoint listens on.")]
StallThreshold = Annotated[
    float | None,
    typer.Option(
        "--stall-threshold",
        help="Seconds stalled or disconnected before /healthz fails. Default: POWERLOG_STALL_THRESHOLD (300).",
        callback=_threshold,
        show_default=False,
    ),
]


def make_health(threshold: float | None) -> Health:
    from projections.metrics import Health

    return Health(threshold if threshold is not None else settings().stall_threshold_s)


@contextmanager
def metrics_endpoint(
    registry: CollectorRegistry, health: Health, port: int | None, host: str
) -> Iterator[None]:
    """Serve the endpoint while the block runs, if a port was given."""
    if not port:
        yield
        return
    from projections.metrics import MetricsServer

    try:
        server = MetricsServer(registry, health, port, host)
    except OSError as exc:
        from events.errors import PowerlogError

        raise PowerlogError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        server.close()
