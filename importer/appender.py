"""An import's batches appended in order on a thread of their own, so that the server stores one batch
while the next is read and diffed: two cores, one reading, one storing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg

from store import log


class Appender:
    """`submit` hands a batch over and returns once the previous one is stored (at most one batch is in
    the server's hands while the next is built); `finish` waits for the last. What an append raised is
    raised by the next call. The connection is the import's: nothing else may use it meanwhile but through
    its lock (psycopg's connections are thread-safe; an append holds the lock for its whole COPY)."""

    def __init__(
        self, conn: psycopg.Connection[Any], on_appended: Callable[[log.Appended | None], None]
    ) -> None:
        self._conn = conn
        self._on_appended = on_appended
        self._free = threading.Semaphore(1)
        self._ready = threading.Condition()
        self._item: tuple[int, list[log.Pending]] | None = None
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="powerlog-append", daemon=True)
        self._thread.start()

    def submit(self, import_id: int, batch: list[log.Pending]) -> None:
        self._free.acquire()
        if self._error is not None:
            self._free.release()
            self._raise()
        with self._ready:
            self._item = (import_id, batch)
            self._ready.notify()

    def finish(self) -> None:
        """Wait until every batch handed over is stored."""
        self._free.acquire()
        self._free.release()
        self._raise()

    def close(self) -> None:
        """Stop the thread once the batch in hand (if any) is stored; what it raised is dropped."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _work(self) -> None:
        while True:
            with self._ready:
                while self._item is None and not self._closing:
                    self._ready.wait()
                item, self._item = self._item, None
            if item is None:
                return
            try:
                self._on_appended(log.append(self._conn, *item))
            except BaseException as exc:  # handed to the importer's thread by its next call
                self._error = exc
            finally:
                self._free.release()
