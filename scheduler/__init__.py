"""Keeps the materialized view `power_build_summary` fresh: concurrent refreshes, one at a time everywhere."""

from projections.tables import VIEW
from scheduler.runner import JOB_ID, Ticker, build_scheduler, refresh_job, run_forever
from scheduler.view import (
    SOURCE_PROJECTORS,
    RefreshFailed,
    RefreshRecord,
    RefreshResult,
    history,
    is_populated,
    is_stale,
    last_refresh,
    mark_abandoned,
    record_built,
    refresh,
    source_position,
    status,
)

__all__ = [
    "JOB_ID",
    "SOURCE_PROJECTORS",
    "VIEW",
    "RefreshFailed",
    "RefreshRecord",
    "RefreshResult",
    "Ticker",
    "build_scheduler",
    "history",
    "is_populated",
    "is_stale",
    "last_refresh",
    "mark_abandoned",
    "record_built",
    "refresh",
    "refresh_job",
    "run_forever",
    "source_position",
    "status",
]
