"""Every table's metadata in one place, for alembic to compare migrations against the code."""

from sqlalchemy import MetaData

from projections.stalls import metadata as stalls_metadata
from projections.tables import metadata as projections_metadata
from scheduler.tables import metadata as scheduler_metadata
from store.tables import metadata as store_metadata

target_metadata: list[MetaData] = [store_metadata, projections_metadata, scheduler_metadata, stalls_metadata]
