"""The refresh history of `power_build_summary`, owned by the scheduler."""

from sqlalchemy import BigInteger, Column, DateTime, Double, MetaData, Table, Text

metadata = MetaData()

view_refreshes = Table(
    "view_refreshes",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("view_name", Text, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("duration_ms", Double),
    Column("rows", BigInteger),
    Column("source_position", BigInteger),
    Column("outcome", Text, nullable=False),
    Column("error", Text),
    Column("mode", Text, nullable=False),
)
