"""Bounds on what reading an export may cost: sizes, file count, JSON nesting, when to stream."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

MiB = 1024 * 1024
GiB = 1024 * MiB


@dataclass(frozen=True, slots=True)
class ReadLimits:
    """Limits applied while reading an export; the settings object may build one from the environment."""

    # Counted on the bytes actually read or extracted, not on sizes an archive declares.
    max_total_bytes: int = 2 * GiB
    max_file_bytes: int = 512 * MiB
    max_files: int = 100_000
    max_depth: int = 64
    # Files up to this size are parsed whole (fast); bigger ones are streamed item by item.
    whole_parse_max_bytes: int = 16 * MiB

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if type(value) is not int or value < 1:
                raise ValueError(f"ReadLimits.{field.name} must be a positive integer, got {value!r}")


DEFAULT_LIMITS: Final = ReadLimits()
