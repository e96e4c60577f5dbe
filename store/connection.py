"""Connections: one `Database` per process, built from the settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from store.backend import restore_priority
from store.errors import ServerUnavailable
from store.server import describe, redact, start_embedded
from store.settings import Settings


def reset_session(conn: psycopg.Connection[Any]) -> None:
    """Undo what a borrower may have set on a pooled session before it is lent again: session advisory
    locks, settings (lock_timeout, application_name), the backend's niceness."""
    conn.execute("SELECT pg_advisory_unlock_all()")
    conn.execute("RESET ALL")
    try:
        restore_priority(conn)
    except PermissionError:
        conn.close()  # a reniced backend this user cannot restore: the pool discards the session


class Database:
    """Knows how to reach the server; starts the embedded one on first use when no URL is set."""

    def __init__(
        self, settings: Settings, dsn: str | None = None, application_name: str = "powerlog"
    ) -> None:
        self.settings = settings
        self._dsn = dsn or settings.database_url
        self._pool: ConnectionPool | None = None
        self.application_name = application_name
        """Shown in pg_stat_activity, so a lock's holder can be named."""

    @property
    def dsn(self) -> str:
        """The connection string, starting the embedded server if that is where the data lives."""
        if self._dsn is None:
            self._dsn = start_embedded(self.settings.home)
        return self._dsn

    @property
    def embedded(self) -> bool:
        return self.settings.database_url is None

    def describe(self) -> str:
        """Where we connect, safe to print."""
        return describe(self.dsn)

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A new connection; an unreachable server becomes one clear `ServerUnavailable`."""
        dsn = self.dsn
        try:
            return psycopg.connect(
                dsn, connect_timeout=10, **{"application_name": self.application_name, **kwargs}
            )
        except psycopg.OperationalError as exc:
            # psycopg spreads one reason over several indented lines; keep them on one.
            reason = redact(" ".join(str(exc).split()) or type(exc).__name__, dsn)
            raise ServerUnavailable(f"cannot connect to PostgreSQL at {describe(dsn)}: {reason}") from None

    def pool(self) -> ConnectionPool:
        """A shared pool (opened lazily), for long-running commands."""
        if self._pool is None:
            self.connect().close()  # fail fast, with our message, before the pool retries quietly
            self._pool = ConnectionPool(
                self.dsn,
                min_size=1,
                max_size=self.settings.pool_size,
                open=True,
                name="powerlog",
                kwargs={"autocommit": True, "application_name": self.application_name},
                # A server restart leaves dead connections in the pool: check each one as it is lent.
                check=ConnectionPool.check_connection,
                reset=reset_session,
            )
        return self._pool

    @contextmanager
    def pooled(self, timeout: float = 30.0) -> Iterator[psycopg.Connection[Any]]:
        """A connection lent by the pool (autocommit); none within `timeout` is `ServerUnavailable`."""
        pool = self.pool()
        try:
            conn = pool.getconn(timeout=timeout)
        except PoolTimeout:
            raise ServerUnavailable(
                f"no connection to PostgreSQL at {self.describe()} within {timeout:g} s"
            ) from None
        try:
            yield conn
        finally:
            pool.putconn(conn)  # a broken one is thrown away, not lent again

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
