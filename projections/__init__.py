"""Projections: the read tables and `power_build_summary`, from the log, exactly once."""

from projections.projector import BatchCounts, catch_up, checkpoint, checkpoints, log_head
from projections.runner import ProjectorBusy, ReplayError, follow, project, rebuild, replay

__all__ = [
    "BatchCounts",
    "ProjectorBusy",
    "ReplayError",
    "catch_up",
    "checkpoint",
    "checkpoints",
    "follow",
    "log_head",
    "project",
    "rebuild",
    "replay",
]
