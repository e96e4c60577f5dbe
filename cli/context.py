"""What every command needs: the settings and the database, built once per process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

if TYPE_CHECKING:  # imported when first used, so that `powerlog --help` starts fast
    from store.connection import Database
    from store.settings import Settings

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
application_name = "powerlog"
"""`powerlog <command>` once the command is known: pg_stat_activity names lock holders by it."""


@cache
def settings() -> Settings:
    from store.settings import Settings

    return Settings.from_env()


@cache
def database() -> Database:
    from store.connection import Database

    return Database(settings(), application_name=application_name)


def migrated_database() -> Database:
    """The database, with its schema at the code's revision.

    The embedded server is powerlog's own, so it is upgraded on the spot; a real server is only checked,
    since upgrading it is its operator's call (`powerlog db upgrade`).
    """
    from migrations.head import HEAD, stored_revision

    db = database()
    with db.connect(autocommit=True) as conn:
        if stored_revision(conn) == HEAD:
            return db  # the usual case, answered without loading alembic
    from migrations import schema

    if db.embedded:
        schema.upgrade(db)
    else:
        schema.require_current(db)
    return db


@contextmanager
def progress_bar(description: str, unit: str, **fields: Any) -> Iterator[Callable[..., None]]:
    """A transient progress bar on stderr when it is a terminal. Yields `update(**task fields)` (rich's
    `total`, `completed`, `description`, and `fields`); off a terminal it does nothing, and logs say it all."""
    if not err_console.is_terminal:
        yield lambda **_: None
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )
    task = bar.add_task(description, total=None, **fields)
    with bar:
        yield lambda **update: bar.update(task, **update)


def say_waiting(what: str, holder: object | None) -> None:
    """Tell a person at the terminal that this command queues behind another, and who that is."""
    err_console.print(
        Text(
            f"{what}: waiting for it to finish (--no-wait to fail instead)"
            + (f"; {holder}" if holder else "")
        )
    )
