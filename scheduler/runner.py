"""The APScheduler job that keeps `power_build_summary` fresh, and the foreground loop of `scheduler run`."""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import psycopg
import structlog
from apscheduler.events import (  # type: ignore[import-untyped]
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor  # type: ignore[import-untyped]
from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
from apscheduler.schedulers.blocking import BlockingScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from events.errors import PowerlogError
from projections.metrics import Health, SchedulerMetrics
from projections.tables import VIEW
from scheduler.view import RefreshResult, is_stale, last_refresh, refresh, source_position
from store.connection import Database
from store.reconnect import Backoff, lost_connection, reason

log = structlog.get_logger(__name__)

JOB_ID = f"refresh:{VIEW}"


class Ticker:
    """The scheduler's job: one call is one tick. Ticks share what a daemon needs to outlive a server
    restart (a capped backoff between attempts to reach it again) and what it reports (metrics, health)."""

    def __init__(
        self,
        db: Database,
        metrics: SchedulerMetrics | None = None,
        health: Health | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.db = db
        self.metrics = metrics or SchedulerMetrics()
        self.health = health or Health(db.settings.stall_threshold_s)
        self.backoff = backoff or Backoff()
        self._retry_at: float | None = None
        self._down_since: float | None = None

    def __call__(self) -> RefreshResult | None:
        """Refresh the view if it is stale. Every error is logged and counted; none escapes."""
        if self._retry_at is not None and time.monotonic() < self._retry_at:
            log.debug("refresh_tick_deferred", reason="waiting to reach the server again")
            return None
        conn: psycopg.Connection[Any] | None = None
        try:
            # The frequent "anything to do?" question goes through the pool; only a real refresh takes a
            # session of its own (it holds a session-level advisory lock).
            with self.db.pooled(timeout=10) as conn:
                source, refreshed = source_position(conn), last_refresh(conn)
                stale = is_stale(conn)
            if stale:
                result = refresh(self.db, if_stale=True)
            else:
                log.debug("refresh_not_needed", view=VIEW)
                result = RefreshResult("fresh", reason="the view is up to date")
        except Exception as exc:
            if lost_connection(exc, conn) or isinstance(exc, psycopg.OperationalError):
                self._reconnecting(exc)
            elif isinstance(exc, PowerlogError):
                log.error("refresh_tick_failed", view=VIEW, error=str(exc))
                self._failed(str(exc))
            else:
                log.exception("refresh_tick_failed", view=VIEW)
                self._failed(repr(exc))
            return None
        self._connected()
        self._observe(result, source, (refreshed.source_position or 0) if refreshed else 0)
        return result

    def _observe(self, result: RefreshResult, source: int, refreshed: int) -> None:
        m = self.metrics
        m.refreshes.labels(result.outcome).inc()
        if result.duration_ms is not None and result.outcome in ("ok", "failed"):
            m.refresh_seconds.observe(result.duration_ms / 1000)
        if result.outcome == "ok" and result.source_position is not None:
            refreshed = result.source_position
        source = max(source, result.source_position or 0)
        m.source_position.set(source)
        m.refreshed_position.set(refreshed)
        m.lag_events.set(max(0, source - refreshed))
        if result.outcome == "failed":
            self._failed(result.error or "the refresh failed")
        else:
            m.state.state("ok")
            self.health.good(
                "ok", outcome=result.outcome, source_position=source, refreshed_position=refreshed
            )

    def _failed(self, error: str) -> None:
        self.metrics.failures.inc()
        self.metrics.state.state("failing")
        self.health.bad("failing", error)

    def _reconnecting(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
        delay = self.backoff.next_delay()
        self._retry_at = time.monotonic() + delay
        why = reason(exc, self.db.dsn)
        log.warning(
            "scheduler_reconnecting",
            view=VIEW,
            attempt=self.backoff.attempts,
            reason=why,
            retry_in_s=round(delay, 2),
        )
        self.metrics.failures.inc()
        self.metrics.state.state("reconnecting")
        self.health.bad("reconnecting", why)

    def _connected(self) -> None:
        if self._down_since is not None:
            log.info(
                "scheduler_reconnected",
                view=VIEW,
                attempts=self.backoff.attempts,
                down_s=round(time.monotonic() - self._down_since, 2),
            )
            self.metrics.reconnects.inc()
            self._down_since = None
        self._retry_at = None
        self.backoff.reset()


def refresh_job(db: Database) -> RefreshResult | None:
    """One tick on its own: refresh the view if it is stale. Every error is logged; none escapes."""
    return Ticker(db)()


def _on_job_event(event: JobEvent) -> None:
    # APScheduler reports these through stdlib logging; repeat them as structured lines.
    if event.code == EVENT_JOB_MISSED:
        log.warning("refresh_tick_missed", job=event.job_id, scheduled=str(event.scheduled_run_time))
    elif event.code == EVENT_JOB_MAX_INSTANCES:
        log.info("refresh_tick_skipped", job=event.job_id, reason="the previous refresh is still running")
    elif event.code == EVENT_JOB_ERROR:
        log.error("refresh_tick_failed", job=event.job_id, error=repr(event.exception))


def build_scheduler(
    db: Database, interval_s: float, misfire_grace_s: int, blocking: bool, ticker: Ticker | None = None
) -> Any:
    """A `BlockingScheduler` (foreground) or `BackgroundScheduler` with one job: refresh the view when stale.

    The first tick runs at once; `max_instances=1` and `coalesce` keep one refresh at a time in this
    process, and the advisory lock in `refresh` keeps one at a time across processes.
    """
    if interval_s <= 0:
        raise ValueError(f"interval_s must be positive, got {interval_s}")
    if misfire_grace_s < 1:
        raise ValueError(f"misfire_grace_s must be a whole number of seconds >= 1, got {misfire_grace_s}")
    cls = BlockingScheduler if blocking else BackgroundScheduler
    sched = cls(timezone=UTC, executors={"default": ThreadPoolExecutor(max_workers=1)})
    sched.add_job(
        ticker or Ticker(db),
        IntervalTrigger(seconds=interval_s, timezone=UTC),
        id=JOB_ID,
        name=f"refresh {VIEW} when stale",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=misfire_grace_s,
        next_run_time=datetime.now(UTC),
    )
    sched.add_listener(_on_job_event, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_ERROR)
    return sched


def run_forever(db: Database, interval_s: float, misfire_grace_s: int, ticker: Ticker | None = None) -> None:
    """Run the scheduler in the foreground; SIGTERM or SIGINT stop it once the running refresh is done."""
    sched = build_scheduler(db, interval_s, misfire_grace_s, blocking=True, ticker=ticker)
    stopper: list[threading.Thread] = []

    def stop() -> None:
        # No new tick may start while we wait for the running one; removing the job leaves that one be.
        sched.pause()
        sched.remove_all_jobs()
        sched.shutdown(wait=True)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stopper:
            log.warning("scheduler_stop_pending", signal=name, reason="waiting for the running refresh")
            return
        log.info("scheduler_stopping", signal=name)
        # Not in the handler itself: shutdown(wait=True) takes locks the interrupted main thread may hold.
        thread = threading.Thread(target=stop, name="scheduler-stop")
        stopper.append(thread)
        thread.start()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        log.info(
            "scheduler_started",
            view=VIEW,
            interval_s=interval_s,
            misfire_grace_s=misfire_grace_s,
            database=db.describe(),
        )
        sched.start()
        for thread in stopper:
            thread.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        db.close()  # the pool of the staleness checks
    log.info("scheduler_stopped", view=VIEW)
