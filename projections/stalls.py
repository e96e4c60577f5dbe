"""Where the live projection stopped at an event it cannot apply: `projection_stalls`, kept until the read
tables' checkpoint passes that event (after a rebuild with code that can apply it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, Table, Text, func

from events.errors import PowerlogError

metadata = MetaData()

STALLS = "projection_stalls"

projection_stalls = Table(
    STALLS,
    metadata,
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("stream_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("first_seen_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_seen_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("attempts", Integer, nullable=False, server_default="1"),
)


class ProjectionStalled(PowerlogError):
    """The projector met an event it cannot apply: it stopped before it, its checkpoint one position short."""

    def __init__(self, position: int, stream_id: str, event_type: str, reason: str) -> None:
        self.position = position
        self.stream_id = stream_id
        self.event_type = event_type
        self.reason = reason
        super().__init__(
            f"projection stalled at position {position} ({stream_id}, {event_type}): {reason}; "
            f"the read tables stay at position {position - 1}. The log cannot be changed: a powerlog "
            "that can apply this event must rebuild the read tables (`powerlog rebuild`)"
        )


@dataclass(frozen=True)
class Stall:
    position: int
    stream_id: str
    event_type: str
    reason: str
    first_seen_at: datetime
    last_seen_at: datetime
    attempts: int

    def __str__(self) -> str:
        return f"stalled at position {self.position} ({self.stream_id}, {self.event_type}): {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "stream_id": self.stream_id,
            "event_type": self.event_type,
            "reason": self.reason,
            "first_seen_at": self.first_seen_at.isoformat(),
            "last_seen_at": self.last_seen_at.isoformat(),
            "attempts": self.attempts,
        }


def record(conn: psycopg.Connection[Any], stalled: ProjectionStalled) -> None:
    """Keep the stall (one row per position; a retry counts an attempt), in the caller's transaction."""
    conn.execute(
        "INSERT INTO projection_stalls (position, stream_id, event_type, reason) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (position) DO UPDATE SET stream_id = EXCLUDED.stream_id,"
        " event_type = EXCLUDED.event_type, reason = EXCLUDED.reason, last_seen_at = now(),"
        " attempts = projection_stalls.attempts + 1",
        (stalled.position, stalled.stream_id, stalled.event_type, stalled.reason),
    )


def clear_through(conn: psycopg.Connection[Any], position: int) -> None:
    """Forget the stalls at or before `position`: the read tables have applied them."""
    conn.execute("DELETE FROM projection_stalls WHERE position <= %s", (position,))


def current(conn: psycopg.Connection[Any], checkpoint: int) -> Stall | None:
    """The stall that holds the read tables at `checkpoint`, if any (one already passed, by a rebuild, is not)."""
    row = conn.execute(
        "SELECT position, stream_id, event_type, reason, first_seen_at, last_seen_at, attempts"
        " FROM projection_stalls WHERE position > %s ORDER BY position LIMIT 1",
        (checkpoint,),
    ).fetchone()
    return Stall(*row) if row else None
