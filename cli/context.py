"""What every command needs: the settings and the database, built once per process."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from rich.console import Console

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
    from migrations import schema

    db = database()
    if db.embedded:
        schema.upgrade(db)
    else:
        schema.require_current(db)
    return db
