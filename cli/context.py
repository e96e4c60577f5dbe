"""What every command needs: the settings and the database, built once per process."""

from __future__ import annotations

from functools import cache

from rich.console import Console

from store.connection import Database
from store.settings import Settings

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


@cache
def settings() -> Settings:
    return Settings.from_env()


@cache
def database() -> Database:
    return Database(settings())


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
