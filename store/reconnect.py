"""What the daemons (`project --follow`, `scheduler run`) need to outlive a server restart: telling a lost
connection from a failed statement, and waiting a capped, jittered, growing time between attempts."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import psycopg

from store.errors import ServerUnavailable
from store.server import redact

# Sent by the server as it goes away or is not yet back: the session is gone whatever its state says.
_SERVER_GOING_AWAY = (
    psycopg.errors.AdminShutdown,  # terminating connection due to administrator command
    psycopg.errors.CrashShutdown,
    psycopg.errors.CannotConnectNow,  # the database system is starting up / shutting down
)


def lost_connection(exc: BaseException, *conns: psycopg.Connection[Any] | None) -> bool:
    """Whether `exc` means the server or our session went away (a restart, the network), so that trying
    again on a new connection may work; False for a statement that failed on a session still alive."""
    if isinstance(exc, (ServerUnavailable, *_SERVER_GOING_AWAY)):
        return True
    if isinstance(exc, psycopg.OperationalError):
        # "server closed the connection unexpectedly" and the like leave the connection broken; a lock
        # timeout (also an OperationalError) leaves it usable.
        return any(c is not None and (c.closed or c.broken) for c in conns)
    return False


def reason(exc: BaseException, dsn: str | None = None) -> str:
    """One line for a log: the error's class and message, without a password."""
    text = " ".join(str(exc).split()) or "no message"
    return redact(f"{type(exc).__name__}: {text}", dsn)


@dataclass
class Backoff:
    """Capped exponential backoff with jitter: about `first_s`, then twice as long each attempt, never more
    than `cap_s`; the jitter (each delay drawn between half and all of it) keeps several daemons that lost
    the same server from coming back at the same instant."""

    first_s: float = 0.5
    cap_s: float = 30.0
    attempts: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; counts the attempt."""
        ceiling = min(self.cap_s, self.first_s * 2.0 ** min(self.attempts, 30))
        self.attempts += 1
        return ceiling * self._rng.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.attempts = 0
