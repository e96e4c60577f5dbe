"""The read tables downstream apps query, and the projectors' checkpoints."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
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
