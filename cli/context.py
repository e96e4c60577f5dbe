"""What every command needs: the settings and the database, built once per process."""

from __future__ import annotations

from functools import cache

from rich.console import Console

from store.connection import Database
from store.settings import Settings

console = Console()
err_console = Console(stderr=True)


@cache
def settings() -> Settings:
    return Settings.from_env()


@cache
def database() -> Database:
    return Database(settings())
