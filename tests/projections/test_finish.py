"""Finishing a built schema on two connections: the largest search index is built beside the rest, and
a failure on either side fails the whole without leaving the other running."""

from __future__ import annotations

import time

import psycopg
import pytest
from psycopg import sql

import projections
from importer.run import run_import
from projections import ddl
from projections.beside import beside
from projections.runner import SHADOW_SCHEMA
from store.connection import Database
from tests.conftest import SAMPLES
from tests.scheduler.data import wait_until


def test_a_rebuild_leaves_every_search_index_as_it_was_the_largest_built_beside(
    db: Database, dsn: str
) -> None:
    run_import(db, SAMPLES / "mids-20.1224")
    projections.project(db)
    with psycopg.connect(dsn, autocommit=True) as conn:
        before = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
        ).fetchall()
        projections.rebuild(db)
        after = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
        ).fetchall()
        # The index built beside is valid (an index whose build failed half-way is left invalid).
        assert conn.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'public.powers_effects_gin'::regclass"
        ).fetchone() == (True,)
    assert after == before
    assert {name for name, _, _ in ddl.SEARCH_INDEXES} <= {name for name, _ in after}


def test_the_statement_beside_fails_the_finish_with_its_own_error(db: Database) -> None:
    with pytest.raises(psycopg.errors.DivisionByZero), beside(db, sql.SQL("SELECT 1/0").format()) as work:
        work.join()


def test_when_the_caller_fails_the_statement_beside_is_cancelled_not_waited_for(
    db: Database, dsn: str
) -> None:
    sleeping = (
        "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'"
    )
    started = time.monotonic()
    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        pytest.raises(RuntimeError, match="the other side failed"),
        beside(db, sql.SQL("SELECT pg_sleep(60)").format()),
    ):
        wait_until(lambda: conn.execute(sleeping).fetchone() == (1,), "the statement beside to start", 10)
        raise RuntimeError("the other side failed")
    assert time.monotonic() - started < 10
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute(sleeping).fetchone() == (0,)
        assert not ddl.schema_exists(conn, SHADOW_SCHEMA)
