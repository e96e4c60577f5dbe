"""Work on a connection of its own, in a thread, while the caller goes on: the server has a second core.

Used only on schemas nobody reads yet (a rebuild's shadow, a replay), so the two sides need not share a
transaction: a failure on either side fails the whole, and the next build starts from a new schema.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg import sql

from store.connection import Database

Work = Callable[[psycopg.Connection[Any]], object]


class Beside:
    """`work` run on a new autocommit connection in a thread; `join` waits for it and raises what it raised."""

    def __init__(self, db: Database, work: Work) -> None:
        self.error: BaseException | None = None
        self.conn: psycopg.Connection[Any] | None = None
        self._work = work
        self._db = db
        self._thread = threading.Thread(target=self._run, name="build-beside", daemon=True)
        self._connected = threading.Event()
        self._thread.start()
        self._connected.wait()

    def _run(self) -> None:
        try:
            self.conn = self._db.connect(autocommit=True)
        except BaseException as exc:
            self.error = exc
            return
        finally:
            self._connected.set()
        try:
            self._work(self.conn)
        except BaseException as exc:
            self.error = exc
        finally:
            self.conn.close()

    def join(self) -> None:
        """Wait for the work; raise what it raised."""
        self._thread.join()
        if self.error is not None:
            raise self.error

    def abandon(self) -> None:
        """Cancel the work's statement if it still runs (the caller failed), and wait for the thread."""
        if self._thread.is_alive() and self.conn is not None:
            with suppress(psycopg.Error):
                self.conn.cancel_safe(timeout=5)
        self._thread.join()


@contextmanager
def beside(db: Database, work: Work | sql.Composed) -> Iterator[Beside]:
    """Run `work` (a function of the connection, or one statement) beside the block; if the block fails,
    the work is cancelled, not waited for. The block must `join` it to see its outcome."""
    if isinstance(work, sql.Composed):
        statement = work
        b = Beside(db, lambda conn: conn.execute(statement))
    else:
        b = Beside(db, work)
    try:
        yield b
    except BaseException:
        b.abandon()
        raise
