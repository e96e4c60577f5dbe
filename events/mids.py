"""The Mids Reborn export's vocabulary, defined once: entity kinds and the files an export consists of."""

from __future__ import annotations

from typing import Final, Literal

from events.errors import PowerlogError

Kind = Literal["archetype", "powerset", "power", "enhancement", "enhancement_set"]
# Referenced kinds before the kinds that refer to them (a powerset names its archetype, a power its set).
KINDS: Final[tuple[Kind, ...]] = ("archetype", "powerset", "power", "enhancement", "enhancement_set")

# What an import does to one entity; every import reports these counts per kind.
OUTCOMES: Final = ("added", "changed", "removed", "unchanged")

ARCHETYPES_FILE: Final = "I12.json"
"""Header (Version, Date, Issue) and Archetypes[]; its presence marks the top of an export."""
ENHANCEMENTS_FILE: Final = "EnhDB.json"
POWERSETS_DIR: Final = "db"
"""Every `*.json` below it, at any depth, is one powerset with its Powers[]."""
NOTE_FILES: Final = ("PowerSets.json", "PowerPools.json")
"""Lookup notes, not entities: part of an export's content hash, not of the log's records."""


class UnknownKind(PowerlogError):
    """A kind that is not one of KINDS was asked for."""


def check_kind(kind: str) -> Kind:
    """`kind` as a Kind, or `UnknownKind` naming the kinds there are."""
    for known in KINDS:
        if kind == known:
            return known
    raise UnknownKind(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
