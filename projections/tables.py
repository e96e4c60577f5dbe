"""The read tables downstream apps query, and the projectors' checkpoints."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

LIVE_SCHEMA = "public"
"""Where the read tables downstream apps query live; rebuilds and replays build in schemas of their own."""
READ_TABLES = ("archetypes", "powersets", "powers", "enhancement_sets", "enhancements")
CHECKPOINTS = "projection_checkpoints"
VIEW = "power_build_summary"
"""The materialized view over powers, powersets and archetypes (projections/ddl.py), kept fresh by scheduler/."""

archetypes = Table(
    "archetypes",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("class_name", Text, nullable=False, unique=True),
    Column("display_name", Text),
    Column("class_type", Integer),
    Column("hitpoints", Double),
    Column("hp_cap", Double),
    Column("is_hero", Boolean),
    Column("playable", Boolean),
    Column("primary_group", Text),
    Column("secondary_group", Text),
    Column("data", JSONB, nullable=False),
)

powersets = Table(
    "powersets",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("full_name", Text, nullable=False, unique=True),
    Column("display_name", Text),
    Column("set_type", Integer),
    Column("group_name", Text),
    Column("archetype_id", BigInteger, ForeignKey("archetypes.id", ondelete="SET NULL")),
    Column("description", Text),
    Column("data", JSONB, nullable=False),
)

powers = Table(
    "powers",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("full_name", Text, nullable=False, unique=True),
    Column("display_name", Text),
    Column("powerset_id", BigInteger, ForeignKey("powersets.id", ondelete="SET NULL")),
    Column("level_available", Integer),
    Column("accuracy", Double),
    Column("damage_scale", Double),
    Column("endurance_cost", Double),
    Column("recharge_time", Double),
    Column("cast_time", Double),
    Column("range", Double),
    Column("effects", JSONB, nullable=False, server_default="[]"),
    Column("effect_groups", JSONB, nullable=False, server_default="{}"),
    Column("data", JSONB, nullable=False),
)
Index("powers_powerset_level_idx", powers.c.powerset_id, powers.c.level_available)

enhancement_sets = Table(
    "enhancement_sets",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("uid", Text, nullable=False, unique=True),
    Column("display_name", Text),
    Column("short_name", Text),
    Column("set_type", Integer),
    Column("level_min", Integer),
    Column("level_max", Integer),
    Column("data", JSONB, nullable=False),
)

enhancements = Table(
    "enhancements",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("uid", Text, nullable=False, unique=True),
    Column("name", Text),
    Column("short_name", Text),
    Column("set_id", BigInteger, ForeignKey("enhancement_sets.id", ondelete="SET NULL")),
    Column("level_min", Integer),
    Column("level_max", Integer),
    Column("data", JSONB, nullable=False),
)

projection_checkpoints = Table(
    CHECKPOINTS,
    metadata,
    Column("projector", Text, primary_key=True),
    Column("position", BigInteger, nullable=False, server_default="0"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


VALID_FROM = "valid_from_import"
VALID_TO = "valid_to_import"


def history_table(table: str) -> str:
    """The history table beside a read table: one row per entity version (projections/temporal.py)."""
    return f"{table}_history"


HISTORY_TABLES = tuple(history_table(t) for t in READ_TABLES)


def _history(live: Table) -> Table:
    """The read table's columns (no keys, no references) plus the imports that bound each version.

    Indexed for a point lookup by natural key as of an import, and for the projector's search for rows
    whose reference dangles (projections/temporal.py)."""
    name = history_table(live.name)
    key = next(c.name for c in live.columns if c.unique)
    history = Table(
        name,
        metadata,
        *(Column(c.name, c.type, nullable=c.nullable) for c in live.columns),
        Column(VALID_FROM, BigInteger, nullable=False),
        Column(VALID_TO, BigInteger),
        PrimaryKeyConstraint("id", VALID_FROM),
        CheckConstraint(f"{VALID_TO} > {VALID_FROM}", name=f"{name}_valid_range"),
    )
    Index(f"{name}_{key}_idx", history.c[key], history.c[VALID_FROM])
    for column in live.columns:
        if column.foreign_keys:
            Index(
                f"{name}_{column.name}_dangling_idx",
                history.c.id,
                postgresql_where=history.c[VALID_TO].is_(None) & history.c[column.name].is_(None),
            )
    return history


for _live in (archetypes, powersets, powers, enhancement_sets, enhancements):
    _history(_live)
