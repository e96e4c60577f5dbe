"""Running the schema migrations (alembic) and the database's state as `powerlog db status` reports it.

Lives with the revisions, above the packages whose tables they create: `store/` never imports alembic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection, Engine

from migrations.head import HEAD, stored_revision
from store.connection import Database
from store.errors import SchemaError

log = structlog.get_logger(__name__)


def alembic_config() -> Config:
    """Alembic's config, pointing at the migrations package wherever it is installed."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    return config


def _engine(db: Database) -> Engine:
    return create_engine("postgresql+psycopg://", creator=db.connect, poolclass=pool.NullPool)


def _run(db: Database, action: str, revision: str) -> None:
    config = alembic_config()
    engine = _engine(db)
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            getattr(command, action)(config, revision)
    except RuntimeError as exc:  # raised by a migration with a message meant for the user
        raise SchemaError(str(exc)) from None
    finally:
        engine.dispose()


def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to `revision` (idempotent: at head it does nothing)."""
    _run(db, "upgrade", revision)
    log.info("schema_upgraded", revision=revision, database=db.describe())


def downgrade(db: Database, revision: str) -> None:
    """Take the schema back to `revision` ("base" drops everything powerlog made)."""
    _run(db, "downgrade", revision)
    log.info("schema_downgraded", revision=revision, database=db.describe())


@dataclass(frozen=True)
class DbStatus:
    database: str
    server_version: str
    current_revision: str | None
    head_revision: str | None
    up_to_date: bool
    pg_trgm_available: bool
    pg_trgm_installed: bool
    embedded: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def status(db: Database) -> DbStatus:
    """Where the schema stands against the code's migrations, and what the server offers."""
    engine = _engine(db)
    try:
        with engine.connect() as conn:
            current = current_revision(conn)
            version = conn.exec_driver_sql("SHOW server_version").scalar_one()
            available = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_trgm'"
            ).scalar_one()
            installed = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'"
            ).scalar_one()
    finally:
        engine.dispose()
    head = head_revision()
    return DbStatus(
        database=db.describe(),
        server_version=str(version),
        current_revision=current,
        head_revision=head,
        up_to_date=current == head,
        pg_trgm_available=bool(available),
        pg_trgm_installed=bool(installed),
        embedded=db.embedded,
    )


def require_current(db: Database) -> None:
    """Fail with a clear message when the schema is behind (or ahead of) the code."""
    with db.connect(autocommit=True) as conn:
        current = stored_revision(conn)
    if current != HEAD:
        raise SchemaError(
            f"the database at {db.describe()} is at schema revision {current or 'none'}, "
            f"the code needs {HEAD}: run `powerlog db upgrade`"
        )
