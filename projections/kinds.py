"""Per read table: which events feed it, and how a record becomes a row (SQL over jsonb `r`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TableSpec:
    table: str
    kind: str
    key_column: str
    # column -> SQL expression over the record `r` (jsonb); `data` is what is kept of the record.
    columns: dict[str, str]
    # How the full record is rebuilt from a row (t), to apply a patch to it.
    record_from_row: str
    # Foreign keys resolved by natural key: column -> (table, its key column, the key as SQL over the
    # record `r`, and the same over a stored row `t`).
    references: dict[str, tuple[str, str, str, str]]


def _text(field: str) -> str:
    return f"powerlog_text(r->'{field}')"


def _int(field: str) -> str:
    return f"powerlog_int(r->'{field}')"


def _num(field: str) -> str:
    return f"powerlog_num(r->'{field}')"


def _bool(field: str) -> str:
    return f"powerlog_bool(r->'{field}')"


_EFFECTS = "(CASE WHEN jsonb_typeof(r->'Effects') = 'array' THEN r->'Effects' ELSE '[]'::jsonb END)"

ARCHETYPES = TableSpec(
    table="archetypes",
    kind="archetype",
    key_column="class_name",
    columns={
        "class_name": _text("ClassName"),
        "display_name": _text("DisplayName"),
        "class_type": _int("ClassType"),
        "hitpoints": _num("Hitpoints"),
        "hp_cap": _num("HPCap"),
        "is_hero": _bool("Hero"),
        "playable": _bool("Playable"),
        "primary_group": _text("PrimaryGroup"),
        "secondary_group": _text("SecondaryGroup"),
        "data": "r",
    },
    record_from_row="t.data",
    references={},
)

ENHANCEMENT_SETS = TableSpec(
    table="enhancement_sets",
    kind="enhancement_set",
    key_column="uid",
    columns={
        "uid": _text("Uid"),
        "display_name": _text("DisplayName"),
        "short_name": _text("ShortName"),
        "set_type": _int("SetType"),
        "level_min": _int("LevelMin"),
        "level_max": _int("LevelMax"),
        "data": "r",
    },
    record_from_row="t.data",
    references={},
)

POWERSETS = TableSpec(
    table="powersets",
    kind="powerset",
    key_column="full_name",
    columns={
        "full_name": _text("FullName"),
        "display_name": _text("DisplayName"),
        "set_type": _int("SetType"),
        "group_name": _text("GroupName"),
        "description": _text("Description"),
        "data": "r",
    },
    record_from_row="t.data",
    references={"archetype_id": ("archetypes", "class_name", "r->>'ATClass'", "t.data->>'ATClass'")},
)

ENHANCEMENTS = TableSpec(
    table="enhancements",
    kind="enhancement",
    key_column="uid",
    columns={
        "uid": _text("UID"),
        "name": _text("Name"),
        "short_name": _text("ShortName"),
        "level_min": _int("LevelMin"),
        "level_max": _int("LevelMax"),
        "data": "r",
    },
    record_from_row="t.data",
    references={"set_id": ("enhancement_sets", "uid", "r->>'UIDSet'", "t.data->>'UIDSet'")},
)

POWERS = TableSpec(
    table="powers",
    kind="power",
    key_column="full_name",
    columns={
        "full_name": _text("FullName"),
        "display_name": _text("DisplayName"),
        "level_available": _int("Level"),
        "accuracy": _num("Accuracy"),
        "damage_scale": (
            f"(SELECT sum(powerlog_num(e->'Scale')) FROM jsonb_array_elements({_EFFECTS}) e"
            " WHERE e->'EffectType' = '3'::jsonb)"
        ),
        "endurance_cost": _num("EndCost"),
        "recharge_time": _num("RechargeTime"),
        "cast_time": _num("CastTime"),
        "range": _num("Range"),
        "effects": _EFFECTS,
        "effect_groups": (
            "coalesce((SELECT jsonb_object_agg(g.id, g.n) FROM (SELECT e->>'EffectId' AS id, count(*) AS n"
            f" FROM jsonb_array_elements({_EFFECTS}) e WHERE jsonb_typeof(e->'EffectId') = 'string'"
            " GROUP BY 1) g), '{}'::jsonb)"
        ),
        # Effects live in their own column; `data` keeps every other field.
        "data": "r - 'Effects'",
    },
    record_from_row="(t.data || jsonb_build_object('Effects', t.effects))",
    # A power's set is its FullName without the last part (the importer checked that prefix).
    references={
        "powerset_id": (
            "powersets",
            "full_name",
            "substring(r->>'FullName' from '^(.*)[.][^.]*$')",
            "substring(t.full_name from '^(.*)[.][^.]*$')",
        )
    },
)

# Referenced tables first, so references resolve within the same batch.
SPECS: tuple[TableSpec, ...] = (ARCHETYPES, ENHANCEMENT_SETS, POWERSETS, ENHANCEMENTS, POWERS)
