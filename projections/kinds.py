"""Per read table: which events feed it, how a record becomes a row (SQL over jsonb `r`), and which records
it refuses (SQL over `r` and the stream's key `k`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FieldType = Literal["text", "int", "num", "bool", "array"]

# What each column type takes: JSON null or an absent field is NULL (the records leave many fields out).
_JSON_TYPE: dict[FieldType, str] = {
    "text": "string",
    "int": "number",
    "num": "number",
    "bool": "boolean",
    "array": "array",
}
_COLUMN_TYPE: dict[FieldType, str] = {
    "text": "a string",
    "int": "an integer",
    "num": "a number",
    "bool": "a boolean",
    "array": "an array",
}
# The numbers an integer and a double precision column hold; powerlog_int and powerlog_num would
# otherwise turn a value beyond them into NULL or fail without naming the field.
_FITS: dict[FieldType, str] = {
    "int": "{v}::numeric BETWEEN -2147483648 AND 2147483647 AND {v}::numeric = trunc({v}::numeric)",
    "num": "abs({v}::numeric) <= 1.7976931348623157e308",
}


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def refusal(key_field: str, fields: dict[str, FieldType]) -> str:
    """SQL over the record `r` and its stream's key `k`: why the record cannot become a row, or NULL
    (no '%': it goes into statements with parameters).

    A row is keyed by its stream's key, so a record naming another key is refused rather than written
    over the row of the entity it names."""
    cases = [
        "WHEN jsonb_typeof(r) IS DISTINCT FROM 'object'"
        " THEN 'the record is ' || coalesce('a JSON ' || jsonb_typeof(r), 'missing') || ', not a JSON object'",
        f"WHEN powerlog_text(r->{_sql_text(key_field)}) IS DISTINCT FROM k"
        f" THEN 'its {key_field} ' || coalesce((r->{_sql_text(key_field)})::text, '(missing)')"
        " || ' is not its stream''s key ' || to_jsonb(k)::text",
    ]
    for name, ftype in fields.items():
        v = f"(r->{_sql_text(name)})"
        json_type = _JSON_TYPE[ftype]
        cases.append(
            f"WHEN jsonb_typeof({v}) NOT IN ({_sql_text(json_type)}, 'null')"
            f" THEN '{name} is a JSON ' || jsonb_typeof({v}) || '; its column takes {_COLUMN_TYPE[ftype]}'"
        )
        if ftype in _FITS:
            cases.append(
                f"WHEN jsonb_typeof({v}) = 'number' AND NOT ({_FITS[ftype].format(v=v)})"
                f" THEN '{name} ' || {v}::text || ' does not fit its column ({_COLUMN_TYPE[ftype]})'"
            )
    return "CASE " + " ".join(cases) + " END"


@dataclass(frozen=True)
class TableSpec:
    table: str
    kind: str
    key_column: str
    # column -> SQL expression over the record `r` (jsonb); `data` is what is kept of the record.
    columns: dict[str, str]
    # The record's field holding its natural key (which must be its stream's key), and the type of every
    # field a column reads: what `refusal` checks.
    key_field: str
    # How the full record is rebuilt from a row (t), to apply a patch to it.
    record_from_row: str
    fields: dict[str, FieldType] = field(default_factory=dict)
    # Foreign keys resolved by natural key: column -> (table, its key column, the key as SQL over the
    # record `r`, and the same over a stored row `t`).
    references: dict[str, tuple[str, str, str, str]] = field(default_factory=dict)

    @property
    def refusal(self) -> str:
        return refusal(self.key_field, self.fields)


_READ: dict[FieldType, str] = {
    "text": "powerlog_text(r->'{}')",
    "int": "powerlog_int(r->'{}')",
    "num": "powerlog_num(r->'{}')",
    "bool": "powerlog_bool(r->'{}')",
}


def _typed(columns: dict[str, tuple[FieldType, str]]) -> tuple[dict[str, str], dict[str, FieldType]]:
    """Columns read from one field each: (column -> SQL over `r`, field -> its type)."""
    return (
        {column: _READ[ftype].format(name) for column, (ftype, name) in columns.items()},
        {name: ftype for ftype, name in columns.values()},
    )


# An absent or null Effects is no effects; any other non-array is refused (`refusal`).
_EFFECTS = "(CASE WHEN jsonb_typeof(r->'Effects') = 'array' THEN r->'Effects' ELSE '[]'::jsonb END)"

_ARCHETYPE_COLUMNS, _ARCHETYPE_FIELDS = _typed(
    {
        "class_name": ("text", "ClassName"),
        "display_name": ("text", "DisplayName"),
        "class_type": ("int", "ClassType"),
        "hitpoints": ("num", "Hitpoints"),
        "hp_cap": ("num", "HPCap"),
        "is_hero": ("bool", "Hero"),
        "playable": ("bool", "Playable"),
        "primary_group": ("text", "PrimaryGroup"),
        "secondary_group": ("text", "SecondaryGroup"),
    }
)
ARCHETYPES = TableSpec(
    table="archetypes",
    kind="archetype",
    key_column="class_name",
    columns={**_ARCHETYPE_COLUMNS, "data": "r"},
    key_field="ClassName",
    fields=_ARCHETYPE_FIELDS,
    record_from_row="t.data",
)

_SET_COLUMNS, _SET_FIELDS = _typed(
    {
        "uid": ("text", "Uid"),
        "display_name": ("text", "DisplayName"),
        "short_name": ("text", "ShortName"),
        "set_type": ("int", "SetType"),
        "level_min": ("int", "LevelMin"),
        "level_max": ("int", "LevelMax"),
    }
)
ENHANCEMENT_SETS = TableSpec(
    table="enhancement_sets",
    kind="enhancement_set",
    key_column="uid",
    columns={**_SET_COLUMNS, "data": "r"},
    key_field="Uid",
    fields=_SET_FIELDS,
    record_from_row="t.data",
)

_POWERSET_COLUMNS, _POWERSET_FIELDS = _typed(
    {
        "full_name": ("text", "FullName"),
        "display_name": ("text", "DisplayName"),
        "set_type": ("int", "SetType"),
        "group_name": ("text", "GroupName"),
        "description": ("text", "Description"),
    }
)
POWERSETS = TableSpec(
    table="powersets",
    kind="powerset",
    key_column="full_name",
    columns={**_POWERSET_COLUMNS, "data": "r"},
    key_field="FullName",
    fields={**_POWERSET_FIELDS, "ATClass": "text"},
    record_from_row="t.data",
    references={"archetype_id": ("archetypes", "class_name", "r->>'ATClass'", "t.data->>'ATClass'")},
)

_ENHANCEMENT_COLUMNS, _ENHANCEMENT_FIELDS = _typed(
    {
        "uid": ("text", "UID"),
        "name": ("text", "Name"),
        "short_name": ("text", "ShortName"),
        "level_min": ("int", "LevelMin"),
        "level_max": ("int", "LevelMax"),
    }
)
ENHANCEMENTS = TableSpec(
    table="enhancements",
    kind="enhancement",
    key_column="uid",
    columns={**_ENHANCEMENT_COLUMNS, "data": "r"},
    key_field="UID",
    fields={**_ENHANCEMENT_FIELDS, "UIDSet": "text"},
    record_from_row="t.data",
    references={"set_id": ("enhancement_sets", "uid", "r->>'UIDSet'", "t.data->>'UIDSet'")},
)

_POWER_COLUMNS, _POWER_FIELDS = _typed(
    {
        "full_name": ("text", "FullName"),
        "display_name": ("text", "DisplayName"),
        "level_available": ("int", "Level"),
        "accuracy": ("num", "Accuracy"),
        "endurance_cost": ("num", "EndCost"),
        "recharge_time": ("num", "RechargeTime"),
        "cast_time": ("num", "CastTime"),
        "range": ("num", "Range"),
    }
)
POWERS = TableSpec(
    table="powers",
    kind="power",
    key_column="full_name",
    columns={
        **_POWER_COLUMNS,
        "damage_scale": (
            f"(SELECT sum(powerlog_num(e->'Scale')) FROM jsonb_array_elements({_EFFECTS}) e"
            " WHERE e->'EffectType' = '3'::jsonb)"
        ),
        "effects": _EFFECTS,
        "effect_groups": (
            "coalesce((SELECT jsonb_object_agg(g.id, g.n) FROM (SELECT e->>'EffectId' AS id, count(*) AS n"
            f" FROM jsonb_array_elements({_EFFECTS}) e WHERE jsonb_typeof(e->'EffectId') = 'string'"
            " GROUP BY 1) g), '{}'::jsonb)"
        ),
        # Effects live in their own column; `data` keeps every other field.
        "data": "r - 'Effects'",
    },
    key_field="FullName",
    fields={**_POWER_FIELDS, "Effects": "array"},
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
