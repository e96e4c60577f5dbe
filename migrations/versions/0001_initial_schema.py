"""The whole schema of DESIGN.md: log, streams, imports, read tables, view, roles.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

READ_TABLES = ("archetypes", "powersets", "powers", "enhancement_sets", "enhancements")


def _require_pg_trgm() -> None:
    bind = op.get_bind()
    available = bind.execute(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")).first()
    if available is None:
        raise RuntimeError(
            "the PostgreSQL extension pg_trgm is not available on this server; install the server's "
            "contrib package (e.g. postgresql-contrib) and run `powerlog db upgrade` again"
        )
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")


def _store() -> None:
    op.create_table(
        "imports",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("source_path", sa.Text, nullable=False),
        sa.Column("source_version", sa.Text),
        sa.Column("source_date", sa.Text),
        sa.Column("source_issue", sa.Integer),
        sa.Column("content_hash", sa.Text),
        sa.Column("label", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("counts", JSONB, nullable=False, server_default="{}"),
        sa.Column("warnings", JSONB, nullable=False, server_default="[]"),
        sa.Column("errors", JSONB, nullable=False, server_default="[]"),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
        sa.Column("first_position", sa.BigInteger),
        sa.Column("last_position", sa.BigInteger),
        sa.Column("head_chain_hash", sa.Text),
        sa.Column("fingerprint", sa.Text),
        sa.CheckConstraint("status IN ('completed', 'failed')", name="imports_status_check"),
    )
    op.create_table(
        "events",
        sa.Column("global_position", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("stream_id", sa.Text, nullable=False),
        sa.Column("stream_version", sa.Integer, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("schema_version", sa.Integer, nullable=False),
        sa.Column("data", JSONB, nullable=False),
        sa.Column("import_id", sa.BigInteger, sa.ForeignKey("imports.id"), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("chain_hash", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("stream_id", "stream_version", name="events_stream_version_key"),
        sa.CheckConstraint("global_position > 0", name="events_position_positive"),
        sa.CheckConstraint("stream_version > 0", name="events_stream_version_positive"),
    )
    op.create_index("events_import_id_idx", "events", ["import_id"])
    op.create_table(
        "streams",
        sa.Column("stream_id", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("hash", sa.Text),
        sa.Column("record", sa.LargeBinary),
        sa.Column("removed", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("last_position", sa.BigInteger, nullable=False),
    )
    op.create_index("streams_kind_idx", "streams", ["kind"])
    # The log is append-only for everyone, superusers included, unless they disable the trigger
    # on purpose (which the chain hash then reveals).
    op.execute(
        """
        CREATE FUNCTION powerlog_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'events is append-only: % is not allowed', TG_OP
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'the change log is never rewritten; import a new release instead';
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events "
        "FOR EACH ROW EXECUTE FUNCTION powerlog_events_append_only()"
    )
    op.execute(
        "CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events "
        "FOR EACH STATEMENT EXECUTE FUNCTION powerlog_events_append_only()"
    )


def _read_tables() -> None:
    op.create_table(
        "archetypes",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("class_name", sa.Text, nullable=False, unique=True),
        sa.Column("display_name", sa.Text),
        sa.Column("class_type", sa.Integer),
        sa.Column("hitpoints", sa.Double),
        sa.Column("hp_cap", sa.Double),
        sa.Column("is_hero", sa.Boolean),
        sa.Column("playable", sa.Boolean),
        sa.Column("primary_group", sa.Text),
        sa.Column("secondary_group", sa.Text),
        sa.Column("data", JSONB, nullable=False),
    )
    op.create_table(
        "powersets",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("full_name", sa.Text, nullable=False, unique=True),
        sa.Column("display_name", sa.Text),
        sa.Column("set_type", sa.Integer),
        sa.Column("group_name", sa.Text),
        sa.Column("archetype_id", sa.BigInteger, sa.ForeignKey("archetypes.id", ondelete="SET NULL")),
        sa.Column("description", sa.Text),
        sa.Column("data", JSONB, nullable=False),
    )
    op.create_table(
        "powers",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("full_name", sa.Text, nullable=False, unique=True),
        sa.Column("display_name", sa.Text),
        sa.Column("powerset_id", sa.BigInteger, sa.ForeignKey("powersets.id", ondelete="SET NULL")),
        sa.Column("level_available", sa.Integer),
        sa.Column("accuracy", sa.Double),
        sa.Column("damage_scale", sa.Double),
        sa.Column("endurance_cost", sa.Double),
        sa.Column("recharge_time", sa.Double),
        sa.Column("cast_time", sa.Double),
        sa.Column("range", sa.Double),
        sa.Column("effects", JSONB, nullable=False, server_default="[]"),
        sa.Column("effect_groups", JSONB, nullable=False, server_default="{}"),
        sa.Column("data", JSONB, nullable=False),
    )
    op.create_index("powers_powerset_level_idx", "powers", ["powerset_id", "level_available"])
    op.create_table(
        "enhancement_sets",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("uid", sa.Text, nullable=False, unique=True),
        sa.Column("display_name", sa.Text),
        sa.Column("short_name", sa.Text),
        sa.Column("set_type", sa.Integer),
        sa.Column("level_min", sa.Integer),
        sa.Column("level_max", sa.Integer),
        sa.Column("data", JSONB, nullable=False),
    )
    op.create_table(
        "enhancements",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("uid", sa.Text, nullable=False, unique=True),
        sa.Column("name", sa.Text),
        sa.Column("short_name", sa.Text),
        sa.Column("set_id", sa.BigInteger, sa.ForeignKey("enhancement_sets.id", ondelete="SET NULL")),
        sa.Column("level_min", sa.Integer),
        sa.Column("level_max", sa.Integer),
        sa.Column("data", JSONB, nullable=False),
    )
    # The seed's search indexes: containment queries on effects, fuzzy search on names.
    op.execute("CREATE INDEX powers_effects_gin ON powers USING gin (effects jsonb_path_ops)")
    op.execute("CREATE INDEX powers_effect_groups_gin ON powers USING gin (effect_groups jsonb_path_ops)")
    for table, column in (
        ("archetypes", "display_name"),
        ("powersets", "display_name"),
        ("powers", "display_name"),
        ("enhancement_sets", "display_name"),
        ("enhancements", "name"),
    ):
        op.execute(f"CREATE INDEX {table}_{column}_trgm ON {table} USING gin ({column} gin_trgm_ops)")
    op.create_table(
        "projection_checkpoints",
        sa.Column("projector", sa.Text, primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


def _view() -> None:
    # Outer joins: pool powersets have no archetype, and a dangling powerset_id must not hide a power.
    op.execute(
        """
        CREATE MATERIALIZED VIEW power_build_summary AS
        SELECT p.id, p.full_name, p.display_name, p.powerset_id, p.level_available, p.accuracy,
               p.damage_scale, p.endurance_cost, p.recharge_time, p.cast_time, p.range,
               p.effects, p.effect_groups, p.data,
               ps.display_name AS powerset_name,
               a.display_name AS archetype_name
        FROM powers p
        LEFT JOIN powersets ps ON ps.id = p.powerset_id
        LEFT JOIN archetypes a ON a.id = ps.archetype_id
        WITH DATA
        """
    )
    # REFRESH ... CONCURRENTLY needs a unique index covering every row.
    op.execute("CREATE UNIQUE INDEX power_build_summary_id_key ON power_build_summary (id)")
    op.execute(
        "CREATE INDEX power_build_summary_set_level_idx ON power_build_summary (powerset_id, level_available)"
    )
    op.create_table(
        "view_refreshes",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("view_name", sa.Text, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("duration_ms", sa.Double),
        sa.Column("rows", sa.BigInteger),
        sa.Column("source_position", sa.BigInteger),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("mode", sa.Text, nullable=False),
    )


def _roles() -> None:
    # Roles are cluster-wide: other databases on the same server may have made them already.
    op.execute(
        """
        DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'powerlog_reader') THEN
                CREATE ROLE powerlog_reader NOLOGIN;
            END IF;
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'powerlog_app') THEN
                CREATE ROLE powerlog_app NOLOGIN;
            END IF;
        END $$
        """
    )
    op.execute("GRANT USAGE ON SCHEMA public TO powerlog_reader, powerlog_app")
    readable = ", ".join((*READ_TABLES, "power_build_summary"))
    op.execute(f"GRANT SELECT ON {readable} TO powerlog_reader")
    # The application role appends to the log but can never rewrite it.
    op.execute("GRANT SELECT, INSERT ON events TO powerlog_app")
    op.execute(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON imports, streams, projection_checkpoints, view_refreshes, "
        + ", ".join(READ_TABLES)
        + " TO powerlog_app"
    )
    op.execute("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO powerlog_app")


def upgrade() -> None:
    _require_pg_trgm()
    _store()
    _read_tables()
    _view()
    _roles()


def _drop_role_here(role: str) -> None:
    # DROP OWNED revokes this database's grants; the role itself may still be used by another database.
    op.execute(
        f"""
        DO $$ BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                EXECUTE 'DROP OWNED BY {role}';
                BEGIN
                    EXECUTE 'DROP ROLE {role}';
                EXCEPTION WHEN dependent_objects_still_exist THEN
                    NULL;
                END;
            END IF;
        END $$
        """
    )


def downgrade() -> None:
    _drop_role_here("powerlog_reader")
    _drop_role_here("powerlog_app")
    op.execute("DROP MATERIALIZED VIEW IF EXISTS power_build_summary")
    for table in ("view_refreshes", "projection_checkpoints", *reversed(READ_TABLES)):
        op.drop_table(table)
    op.execute("DROP TRIGGER IF EXISTS events_no_truncate ON events")
    op.execute("DROP TRIGGER IF EXISTS events_no_update_delete ON events")
    op.drop_table("streams")
    op.drop_table("events")
    op.drop_table("imports")
    op.execute("DROP FUNCTION IF EXISTS powerlog_events_append_only()")
