"""What powerlog may change about a server backend's process when the server runs on this machine: its CPU
niceness. Elsewhere (another host, no permission) these do nothing."""

from __future__ import annotations

import os
from typing import Any

import psycopg
import structlog

log = structlog.get_logger(__name__)


def _local_backend(conn: psycopg.Connection[Any]) -> int | None:
    """The backend's pid, if it is a process of this machine we can see."""
    pid = conn.info.backend_pid
    try:
        with open(f"/proc/{pid}/comm") as f:
            if f.read().startswith("postgres"):
                return pid
    except OSError:
        pass
    return None  # that pid is not our backend: the server is on another machine


def lower_priority(conn: psycopg.Connection[Any], nice: int) -> None:
    """Let the backend yield the CPU to others by raising its niceness to at least `nice` (0: leave it)."""
    pid = _local_backend(conn) if nice > 0 else None
    if pid is None:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, pid, max(os.getpriority(os.PRIO_PROCESS, pid), nice))
    except OSError:
        return
    log.debug("backend_reniced", pid=pid, nice=nice)


def restore_priority(conn: psycopg.Connection[Any]) -> None:
    """Give the backend back the niceness of its server (its parent); `PermissionError` when this user may
    not lower a niceness, in which case the session must not be reused."""
    pid = _local_backend(conn)
    if pid is None:
        return
    try:
        with open(f"/proc/{pid}/stat") as f:
            parent = int(f.read().rpartition(")")[2].split()[1])
        current, server = os.getpriority(os.PRIO_PROCESS, pid), os.getpriority(os.PRIO_PROCESS, parent)
    except (OSError, ValueError, IndexError):
        return
    if current != server:
        os.setpriority(os.PRIO_PROCESS, pid, server)  # PermissionError goes to the caller
