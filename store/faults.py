"""Fault injection for the crash tests: `POWERLOG_TEST_FAULT=point` or `point:N` SIGKILLs this process
when it reaches that point (the Nth time). Points: the importer's `record`, `after_batch`,
`before_commit`; the projector's `project_batch`. Unset (always, outside tests) it does nothing."""

from __future__ import annotations

import os
import signal

import structlog

ENV = "POWERLOG_TEST_FAULT"

log = structlog.get_logger(__name__)


def point(name: str, count: int = 0) -> None:
    """Die here, now, without cleanup, if the environment asks for it."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    wanted, _, arg = spec.partition(":")
    if wanted == name and (not arg or int(arg) == count):
        log.warning("fault_injected", point=spec)
        os.kill(os.getpid(), signal.SIGKILL)
