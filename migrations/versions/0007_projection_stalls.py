"""`projection_stalls`: the event the live projection stopped at because it cannot apply it (position,
stream, type, reason), shown by `powerlog status` until the read tables' checkpoint passes it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE projection_stalls (
            position bigint PRIMARY KEY,
            stream_id text NOT NULL,
            event_type text NOT NULL,
            reason text NOT NULL,
            first_seen_at timestamptz NOT NULL DEFAULT now(),
            last_seen_at timestamptz NOT NULL DEFAULT now(),
            attempts integer NOT NULL DEFAULT 1
        )
        """
    )
    # Written by the projector, which runs as the application role.
    op.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON projection_stalls TO powerlog_app")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS projection_stalls")
