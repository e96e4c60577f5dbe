"""Tables the store owns: the log (`events`), stream heads (`streams`), `imports` and what they read
(`import_files`, `file_keys`)."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

imports = Table(
    "imports",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("source_path", Text, nullable=False),
    Column("source_version", Text),
    Column("source_date", Text),
    Column("source_issue", Integer),
    Column("content_hash", Text),
    Column("label", Text),
    Column("status", Text, nullable=False),
    Column("counts", JSONB, nullable=False, server_default="{}"),
    Column("warnings", JSONB, nullable=False, server_default="[]"),
    Column("errors", JSONB, nullable=False, server_default="[]"),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("completed_at", DateTime(timezone=True)),
    Column("first_position", BigInteger),
    Column("last_position", BigInteger),
    Column("head_chain_hash", Text),
    Column("fingerprint", Text),
    CheckConstraint("status IN ('completed', 'failed')", name="imports_status_check"),
)

events = Table(
    "events",
    metadata,
    Column("global_position", BigInteger, primary_key=True, autoincrement=False),
    Column("stream_id", Text, nullable=False),
    Column("stream_version", Integer, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("data", JSONB, nullable=False),
    # No foreign key to imports: its per-row check cost a quarter of append time (migration 0003).
    Column("import_id", BigInteger, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("chain_hash", LargeBinary, nullable=False),
    # Whether `data` had U+0000 escaped (store/nul.py): outside the chain, it describes the encoding only.
    Column("data_escaped", Boolean, nullable=False, server_default=false()),
    UniqueConstraint("stream_id", "stream_version", name="events_stream_version_key"),
    CheckConstraint("global_position > 0", name="events_position_positive"),
    CheckConstraint("stream_version > 0", name="events_stream_version_positive"),
)
Index("events_import_id_idx", events.c.import_id)

streams = Table(
    "streams",
    metadata,
    Column("stream_id", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("hash", Text),
    Column("record", LargeBinary),
    Column("removed", Boolean, nullable=False, server_default="false"),
    Column("last_position", BigInteger, nullable=False),
)

# What each import read, file by file (store/files.py, migration 0010).
file_keys = Table(
    "file_keys",
    metadata,
    Column("digest", LargeBinary, primary_key=True),
    Column("reading", Text, primary_key=True),
    Column("keys", LargeBinary, nullable=False),
)

import_files = Table(
    "import_files",
    metadata,
    Column("import_id", BigInteger, ForeignKey("imports.id"), primary_key=True),
    Column("path", Text, primary_key=True),
    Column("digest", LargeBinary, nullable=False),
    Column("reading", Text, nullable=False),
)
