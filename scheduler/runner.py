"""The APScheduler job that keeps `power_build_summary` fresh, and the foreground loop of `scheduler run`."""

from __future__ import annotations

import signal
import threading
from datetime import UTC, datetime
from types import FrameType
from typing import Any

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
from projections.tables import VIEW
from scheduler.view import RefreshResult, is_stale, refresh
from store.connection import Database

log = structlog.get_logger(__name__)

JOB_ID = f"refresh:{VIEW}"


def refresh_job(db: Database) -> RefreshResult | None:
    """One scheduler tick: refresh the view if it is stale. Every error is logged; none escapes."""
    try:
        # The frequent "anything to do?" question goes through the pool; only a real refresh takes a
        # session of its own (it holds a session-level advisory lock).
        with db.pooled(timeout=10) as conn:
            if not is_stale(conn):
                log.debug("refresh_not_needed", view=VIEW)
                return RefreshResult("fresh", reason="the view is up to date")
        return refresh(db, if_stale=True)
    except PowerlogError as exc:  # e.g. the server is unreachable: the next tick tries again
        log.error("refresh_tick_failed", view=VIEW, error=str(exc))
    except Exception:
        log.exception("refresh_tick_failed", view=VIEW)
    return None


def _on_job_event(event: JobEvent) -> None:
    # APScheduler reports these through stdlib logging; repeat them as structured lines.
    if event.code == EVENT_JOB_MISSED:
        log.warning("refresh_tick_missed", job=event.job_id, scheduled=str(event.scheduled_run_time))
    elif event.code == EVENT_JOB_MAX_INSTANCES:
        log.info("refresh_tick_skipped", job=event.job_id, reason="the previous refresh is still running")
    elif event.code == EVENT_JOB_ERROR:
        log.error("refresh_tick_failed", job=event.job_id, error=repr(event.exception))


def build_scheduler(db: Database, interval_s: float, misfire_grace_s: int, blocking: bool) -> Any:
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
        refresh_job,
        IntervalTrigger(seconds=interval_s, timezone=UTC),
        args=[db],
        id=JOB_ID,
        name=f"refresh {VIEW} when stale",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=misfire_grace_s,
        next_run_time=datetime.now(UTC),
    )
    sched.add_listener(_on_job_event, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_ERROR)
    return sched


def run_forever(db: Database, interval_s: float, misfire_grace_s: int) -> None:
    """Run the scheduler in the foreground; SIGTERM or SIGINT stop it once the running refresh is done."""
    sched = build_scheduler(db, interval_s, misfire_grace_s, blocking=True)
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
