"""Projections: the read tables and `power_build_summary`, from the log, exactly once."""

from projections.follow import Follower, Lag, follow, lag
from projections.projector import PROJECTORS, BatchCounts, catch_up, checkpoint, checkpoints
from projections.runner import ReplayError, project, rebuild, replay
from projections.stalls import ProjectionStalled

__all__ = [
    "PROJECTORS",
    "BatchCounts",
    "Follower",
    "Lag",
    "ProjectionStalled",
    "ReplayError",
    "catch_up",
    "checkpoint",
    "checkpoints",
    "follow",
    "lag",
    "project",
    "rebuild",
    "replay",
]
