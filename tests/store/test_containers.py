"""The schema's contract on a PostgreSQL image of your choice, through testcontainers (needs Docker).

The whole suite runs there with POWERLOG_TEST_IMAGE=postgres:16 make test; this test checks the basics
against `postgres:16-alpine` (or POWERLOG_TEST_IMAGE) whenever a Docker engine answers.
"""

from __future__ import annotations

import os

import psycopg
import pytest

from migrations import schema
from store.connection import Database
from tests.conftest import docker_available, settings_for


def test_migrations_and_append_only_log_on_a_container() -> None:
    ok, why = docker_available()
    if not ok:
        pytest.skip(f"testcontainers needs Docker: {why}")
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer(os.environ.get("POWERLOG_TEST_IMAGE", "postgres:16-alpine"), driver=None) as pg:
        dsn = pg.get_connection_url()
        db = Database(settings_for(dsn))
        schema.upgrade(db)
        assert schema.status(db).up_to_date
        with (
            psycopg.connect(dsn, autocommit=True) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"),
        ):
            conn.execute("TRUNCATE events")
