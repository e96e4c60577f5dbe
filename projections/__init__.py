"""Projections: the read tables and `power_build_summary`, from the log, exactly once."""

from projections.projector import PROJECTORS, BatchCounts, catch_up, checkpoint, checkpoints
from projections.runner import ReplayError, follow, project, rebuild, replay

__all__ = [
    "PROJECTORS",
    "BatchCounts",
    "ReplayError",
    "catch_up",
    "checkpoint",
    "checkpoints",
    "follow",
    "project",
    "rebuild",
    "replay",
]
