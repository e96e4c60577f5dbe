"""Alembic environment: the URL comes from powerlog's settings, never from an ini file."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import create_engine, pool

from migrations.metadata import target_metadata

config = context.config


def _run(connection: Any) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, transaction_per_migration=False)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    # Reached only through `alembic` run by hand; powerlog passes its own connection.
    from store.connection import Database
    from store.settings import Settings

    database = Database(Settings.from_env())
    engine = create_engine(
        "postgresql+psycopg://", creator=lambda: database.connect(), poolclass=pool.NullPool
    )
    with engine.connect() as conn:
        _run(conn)


if context.is_offline_mode():
    raise SystemExit("powerlog migrations run online only: use `powerlog db upgrade`")
run_migrations_online()
