"""`project --follow`: keep the live read tables at the log's head for months, beside a production server.

It outlives what a long-running process meets: a server restart (reconnect with capped backoff, LISTEN
again, catch up by polling what the lost notifications would have said), an event it cannot apply
(`ProjectionStalled`: it stops there, names it, keeps running and tries again later), a rebuild (the projector lock is taken per
round, not for the process's life, so a rebuild gets in between two rounds and the follower pauses until
the rebuild has swapped its tables in). It logs changes of state, never an idle round.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from psycopg import sql

from events.errors import PowerlogError
from projections.metrics import FollowerMetrics, Health
from projections.projector import BatchCounts, catch_up, checkpoint
from projections.tables import LIVE_SCHEMA
from store import faults, locks
from store.connection import Database
from store.log import NOTIFY_CHANNEL, head, seconds_waiting_after
from store.reconnect import Backoff, lost_connection, reason

log = structlog.get_logger(__name__)

OnRound = Callable[[BatchCounts, int], None]


@dataclass(frozen=True)
class Lag:
    """How far the read tables trail the log: in events, and in seconds (how long the oldest event not yet
    applied has been in the log; 0 when caught up)."""

    head: int
    position: int
    events: int
    seconds: float


def lag(conn: psycopg.Connection[Any], schema: str = LIVE_SCHEMA) -> Lag:
    top = head(conn).position
    position = checkpoint(conn, schema)
    waiting = seconds_waiting_after(conn, position) if top > position else 0.0
    return Lag(top, position, top - position, waiting)


class Follower:
    """One `project --follow`; `run()` returns once `stop` is set."""

    def __init__(
        self,
        db: Database,
        stop: threading.Event,
        *,
        poll_s: float = 5.0,
        on_round: OnRound | None = None,
        metrics: FollowerMetrics | None = None,
        health: Health | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.db = db
        self.stop = stop
        self.poll_s = poll_s
        self.on_round = on_round
        self.metrics = metrics or FollowerMetrics()
        self.health = health or Health(db.settings.stall_threshold_s)
        self.reconnect = backoff or Backoff()
        self.retry_stalled = Backoff(first_s=1.0, cap_s=max(30.0, poll_s))
        self.state = "starting"
        self._problem: str | None = None
        self._down_since: float | None = None
        self._reconnections = 0  # attempts over the process's life
        self._counted = 0  # events of the running catch-up already added to the metrics

    def run(self) -> None:
        log.info("follow_started", database=self.db.describe(), poll_s=self.poll_s)
        while not self.stop.is_set():
            conn: psycopg.Connection[Any] | None = None
            listener: psycopg.Connection[Any] | None = None
            try:
                with ExitStack() as stack:
                    conn = stack.enter_context(self.db.connect(autocommit=True))
                    listener = stack.enter_context(self.db.connect(autocommit=True))
                    listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL)))
                    self._connected()
                    while not self.stop.is_set():
                        self._wait(listener, self._round(conn))
            except Exception as exc:
                if not lost_connection(exc, conn, listener):
                    raise
                self._reconnecting(exc)
        log.info("follow_stopped", state=self.state)

    def _round(self, conn: psycopg.Connection[Any]) -> float:
        """Apply what the log holds past the checkpoint; the seconds to wait before the next round."""
        try:
            counts = self._apply(conn)
            now = lag(conn)
            self._report(now)
            if counts is None:
                holder = locks.holder(conn, locks.PROJECTOR)
                # Backend and application only: the holder's activity changes, and each change would log.
                who = f"backend {holder.pid}, {holder.application}" if holder else "it has just finished"
                self._set_state("paused", f"{locks.PROJECTOR.busy} ({who})", now, bad=now.events > 0)
                # No notification says that a rebuild is done: look again soon.
                return min(self.poll_s, 1.0)
            self.retry_stalled.reset()
            if counts.events:
                log.info("follow_applied", events=counts.events, position=counts.position, lag=now.events)
            self._set_state("caught_up" if now.events == 0 else "catching_up", None, now)
            if self.on_round:
                self.on_round(counts, now.events)
            return self.poll_s if now.events == 0 else 0.0
        except Exception as exc:
            if lost_connection(exc, conn) or not isinstance(exc, PowerlogError | psycopg.Error):
                raise
            # Not the connection: something in the log or the tables this process cannot get past. Stay up,
            # say so (status, metrics, /healthz), and try again later: someone may fix it meanwhile.
            now = None
            with suppress(psycopg.Error):  # a connection lost meanwhile shows at the next round
                now = lag(conn)
                self._report(now)
            self._set_state("stalled", reason(exc, self.db.dsn), now, bad=True)
            return self.retry_stalled.next_delay()

    def _apply(self, conn: psycopg.Connection[Any]) -> BatchCounts | None:
        """One catch-up under the projector lock, or None when another process holds it (a rebuild swapping
        tables, a one-shot `project`): the follower never writes while they do."""
        if not locks.try_acquire(conn, locks.PROJECTOR):
            return None
        self._counted = 0
        try:
            return catch_up(
                conn, LIVE_SCHEMA, range_size=self.db.settings.project_batch, on_batch=self._on_batch
            )
        finally:
            # Given back between rounds so that a rebuild can get in; a lost session has dropped it already.
            if not conn.closed and not conn.broken:
                with suppress(psycopg.OperationalError):
                    locks.release(conn, locks.PROJECTOR)

    def _on_batch(self, counts: BatchCounts, target: int) -> None:
        self.metrics.applied.inc(counts.events - self._counted)
        self._counted = counts.events
        self.metrics.position.set(counts.position)
        self.metrics.checkpoint_moved()
        self.health.good("catching_up", position=counts.position, head=target)

    def _report(self, now: Lag) -> None:
        m = self.metrics
        m.head.set(now.head)
        m.position.set(now.position)
        m.lag_events.set(now.events)
        m.lag_seconds.set(now.seconds)

    def _set_state(self, state: str, problem: str | None, now: Lag | None, *, bad: bool = False) -> None:
        details = {} if now is None else {"lag_events": now.events, "lag_seconds": round(now.seconds, 3)}
        if bad:
            self.health.bad(state, problem or state, **details)
        else:
            self.health.good(state, **details)
        self.metrics.state.state(state)
        if (state, problem) == (self.state, self._problem):
            return
        previous, self.state, self._problem = self.state, state, problem
        fields: dict[str, Any] = {"previous": previous, **details}
        if state == "stalled":
            log.error("follow_stalled", reason=problem, **fields)
        elif state == "paused":
            log.warning("follow_paused", reason=problem, **fields)
        elif state == "caught_up":
            log.info("follow_caught_up", position=now.position if now else None, **fields)
        elif state == "catching_up":
            log.info("follow_catching_up", **fields)

    def _reconnecting(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
        delay = self.reconnect.next_delay()
        why = reason(exc, self.db.dsn)
        log.warning(
            "follow_reconnecting", attempt=self.reconnect.attempts, reason=why, retry_in_s=round(delay, 2)
        )
        self.state, self._problem = "reconnecting", why
        self.metrics.state.state("reconnecting")
        self.health.bad("reconnecting", why)
        self._reconnections += 1
        faults.point("follow_reconnect", self._reconnections)
        self.stop.wait(delay)

    def _connected(self) -> None:
        if self._down_since is not None:
            log.info(
                "follow_reconnected",
                attempts=self.reconnect.attempts,
                down_s=round(time.monotonic() - self._down_since, 2),
            )
            self.metrics.reconnects.inc()
            self._down_since = None
        self.reconnect.reset()

    def _wait(self, listener: psycopg.Connection[Any], seconds: float) -> None:
        """Until a notification (an import committed), `seconds` at most (one may have been missed), or stop."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if any(True for _ in listener.notifies(timeout=min(0.5, left), stop_after=1)):
                return


def follow(
    db: Database,
    stop: threading.Event,
    poll_s: float = 5.0,
    on_round: OnRound | None = None,
    metrics: FollowerMetrics | None = None,
    health: Health | None = None,
) -> None:
    """Project, then wait for NOTIFY (or `poll_s` at most) and project again, until `stop` is set."""
    Follower(db, stop, poll_s=poll_s, on_round=on_round, metrics=metrics, health=health).run()
