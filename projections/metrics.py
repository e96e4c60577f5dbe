"""Prometheus metrics and a health check for the daemons (`project --follow`, `scheduler run`), served on
`--metrics-port`: `/metrics` in Prometheus' text format, `/healthz` as 200 or 503 with a JSON body.

Each daemon has a registry of its own (no process-wide default), so tests can run several in one process.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import structlog
from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

log = structlog.get_logger(__name__)

FOLLOWER_STATES = ("starting", "caught_up", "catching_up", "paused", "stalled", "reconnecting")
"""paused: another process (a rebuild) holds the projector lock; stalled: an error that is not a lost
connection (an event the projector refuses); reconnecting: the server is unreachable."""
SCHEDULER_STATES = ("starting", "ok", "failing", "reconnecting")


class Health:
    """Unhealthy once the daemon has been in a bad state (stalled, reconnecting, paused while behind,
    failing) for longer than `threshold_s`; a state change back to good clears it."""

    def __init__(self, threshold_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold_s = threshold_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = "starting"
        self._bad_since: float | None = None
        self._reason: str | None = None
        self._details: dict[str, Any] = {}

    def good(self, state: str, **details: Any) -> None:
        with self._lock:
            self._state, self._bad_since, self._reason = state, None, None
            self._details = details

    def bad(self, state: str, reason: str, **details: Any) -> None:
        with self._lock:
            if self._bad_since is None:
                self._bad_since = self._clock()
            self._state, self._reason = state, reason
            self._details = details

    def report(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, a JSON-ready body saying why)."""
        with self._lock:
            bad_for = None if self._bad_since is None else self._clock() - self._bad_since
            healthy = bad_for is None or bad_for <= self.threshold_s
            body: dict[str, Any] = {
                "status": "ok" if healthy else "unhealthy",
                "state": self._state,
                "threshold_s": self.threshold_s,
            }
            if bad_for is not None:
                body["bad_for_s"] = round(bad_for, 3)
                body["reason"] = self._reason
            body.update(self._details)
        return healthy, body


def _reconnects(registry: CollectorRegistry) -> Counter:
    return Counter(
        "powerlog_reconnects", "Times this daemon got its database connection back", registry=registry
    )


class FollowerMetrics:
    """What `project --follow` reports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.lag_events = Gauge(
            "powerlog_projection_lag_events", "Log events not yet in the read tables", registry=r
        )
        self.lag_seconds = Gauge(
            "powerlog_projection_lag_seconds",
            "Age of the oldest log event not yet in the read tables (0 when caught up)",
            registry=r,
        )
        self.checkpoint_age_seconds = Gauge(
            "powerlog_projection_checkpoint_age_seconds",
            "Seconds since this follower last moved the checkpoint, or started",
            registry=r,
        )
        self.position = Gauge(
            "powerlog_projection_position", "Log position the read tables are projected up to", registry=r
        )
        self.head = Gauge("powerlog_log_head_position", "The log's last position", registry=r)
        self.applied = Counter(
            "powerlog_projection_events_applied",
            "Events this follower applied to the read tables",
            registry=r,
        )
        self.reconnects = _reconnects(r)
        self.state = Enum(
            "powerlog_follower_state", "What the follower is doing", states=list(FOLLOWER_STATES), registry=r
        )
        self._moved_at = time.monotonic()
        self.checkpoint_age_seconds.set_function(lambda: time.monotonic() - self._moved_at)

    def checkpoint_moved(self) -> None:
        self._moved_at = time.monotonic()


class SchedulerMetrics:
    """What `scheduler run` reports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.refresh_seconds = Histogram(
            "powerlog_view_refresh_duration_seconds",
            "Duration of the refreshes of power_build_summary this scheduler ran",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.refreshes = Counter(
            "powerlog_view_refreshes",
            "Scheduler ticks by outcome: ok, failed, skipped (another process refreshes), fresh",
            ["outcome"],
            registry=r,
        )
        self.failures = Counter(
            "powerlog_view_refresh_failures",
            "Ticks that failed: a refresh that failed, or no connection to the server",
            registry=r,
        )
        self.source_position = Gauge(
            "powerlog_view_source_position",
            "Log position the view's source tables are projected up to",
            registry=r,
        )
        self.refreshed_position = Gauge(
            "powerlog_view_refreshed_position",
            "Source position of the view's last successful refresh",
            registry=r,
        )
        self.lag_events = Gauge(
            "powerlog_view_lag_events",
            "Log positions the source tables are ahead of the view (0 when fresh)",
            registry=r,
        )
        self.reconnects = _reconnects(r)
        self.state = Enum(
            "powerlog_scheduler_state",
            "What the scheduler is doing",
            states=list(SCHEDULER_STATES),
            registry=r,
        )


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics_request", request=format % args)


def _app(registry: CollectorRegistry, health: Health) -> Callable[..., Iterable[bytes]]:
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            healthy, body = health.report()
            status = "200 OK" if healthy else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [json.dumps(body).encode()]
        return metrics_app(environ, start_response)  # type: ignore[no-any-return]

    return app


class MetricsServer:
    """The HTTP endpoint in a daemon thread; `close()` stops it."""

    def __init__(self, registry: CollectorRegistry, health: Health, port: int, host: str = "0.0.0.0") -> None:
        self._server = make_server(
            host, port, _app(registry, health), ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
        self._thread.start()
        log.info("metrics_serving", host=host, port=self.port, paths=["/metrics", "/healthz"])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
