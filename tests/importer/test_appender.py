"""importer.appender: an import's batches appended in order on a thread of their own, one at a time."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from importer import appender as appender_module
from importer.appender import Appender
from store import log
from store.errors import ConcurrencyError


class FakeLog:
    """Stands in for store.log.append: notes each batch, lets the test hold it, fails one if asked."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.batches: list[tuple[int, int]] = []
        self.running = 0
        self.most_running = 0
        self.release = threading.Event()
        self.release.set()
        self.fail_at = fail_at
        self.lock = threading.Lock()

    def append(self, conn: Any, import_id: int, batch: list[Any]) -> log.Appended:
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            self.release.wait(10)
            if len(self.batches) + 1 == self.fail_at:
                raise ConcurrencyError("stale append: another writer got there first: run again")
            self.batches.append((import_id, len(batch)))
            n = sum(size for _, size in self.batches)
            return log.Appended(n - len(batch) + 1, n, log.Head(n, "0" * 64))
        finally:
            with self.lock:
                self.running -= 1


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeLog:
    fake = FakeLog()
    monkeypatch.setattr(appender_module.log, "append", fake.append)
    return fake


def test_batches_are_appended_in_order_one_at_a_time_while_the_caller_goes_on(fake: FakeLog) -> None:
    done: list[int] = []
    appender = Appender(object(), lambda a: done.append(a.last_position if a else 0))  # type: ignore[arg-type]
    try:
        fake.release.clear()
        appender.submit(7, [object()] * 3)  # returns while that batch is still being appended
        assert fake.batches == [] and done == []
        fake.release.set()
        for size in (2, 4, 1):
            appender.submit(7, [object()] * size)
        appender.finish()
    finally:
        appender.close()
    assert fake.batches == [(7, 3), (7, 2), (7, 4), (7, 1)]
    assert done == [3, 5, 9, 10]
    assert fake.most_running == 1


def test_what_an_append_raised_is_raised_by_the_next_call_and_nothing_after_is_appended(
    fake: FakeLog,
) -> None:
    fake.fail_at = 2
    appender = Appender(object(), lambda a: None)  # type: ignore[arg-type]
    try:
        appender.submit(1, [object()])
        appender.submit(1, [object()])  # fails on the appender's thread
        with pytest.raises(ConcurrencyError, match="another writer got there first"):
            appender.submit(1, [object()])
        appender.finish()  # raised once: nothing left to raise
    finally:
        appender.close()
    assert fake.batches == [(1, 1)]


def test_close_waits_for_the_batch_in_hand(fake: FakeLog) -> None:
    appender = Appender(object(), lambda a: None)  # type: ignore[arg-type]
    fake.release.clear()
    appender.submit(1, [object()] * 2)
    threading.Timer(0.2, fake.release.set).start()
    appender.close()
    assert fake.batches == [(1, 2)]
