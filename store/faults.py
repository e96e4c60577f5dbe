"""Fault injection for the crash and server-fault tests: `POWERLOG_TEST_FAULT=point` or `point:N` SIGKILLs
this process when it reaches that point (the Nth time). Unset (always, outside tests) it does nothing.

Points: the importer's `record`, `after_batch`, `before_commit`; the projector's `project_batch` (project,
follow, rebuild and replay after the first import); the bulk load of the first import's `bulk_load` (1: the
tables but the powers written, 2: half the powers, the other half in flight, 3: all, not yet checkpointed); the
rebuild's `rebuild_built` (shadow tables complete) and `rebuild_swap` (inside
the swap's transaction); the follower's `follow_reconnect` (its Nth attempt, over its life, to reach the server again); the
refresh's `refresh_running` (its row recorded as running, REFRESH not yet sent); verify's `verify_rebuilt` (its
scratch schema built, not yet hashed or dropped).

`POWERLOG_TEST_FAULT_SIGNAL=INT` (or TERM...) sends that signal instead of KILL. With
`POWERLOG_TEST_FAULT_PAUSE=FILE` the process instead writes its pid to FILE there and waits until the file
is removed, so a test can act (restart the server) at exactly that point and then let it go on.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import structlog

ENV = "POWERLOG_TEST_FAULT"
SIGNAL_ENV = "POWERLOG_TEST_FAULT_SIGNAL"
PAUSE_ENV = "POWERLOG_TEST_FAULT_PAUSE"

log = structlog.get_logger(__name__)

_reached: dict[str, int] = {}


def point(name: str, count: int | None = None) -> None:
    """Die (or pause) here, now, without cleanup, if the environment asks for it. Without `count`, N is
    the number of times this process has reached the point."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    if count is None:
        count = _reached[name] = _reached.get(name, 0) + 1
    wanted, _, arg = spec.partition(":")
    if wanted != name or (arg and int(arg) != count):
        return
    pause = os.environ.get(PAUSE_ENV)
    if pause:
        log.warning("fault_paused", point=spec)
        marker = Path(pause)
        marker.write_text(str(os.getpid()))
        while marker.exists():  # the test removes it once it has done what it waited for
            time.sleep(0.01)
        return
    sig = signal.Signals[f"SIG{os.environ.get(SIGNAL_ENV, 'KILL')}"]
    log.warning("fault_injected", point=spec, signal=sig.name)
    os.kill(os.getpid(), sig)
