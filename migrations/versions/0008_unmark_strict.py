"""`powerlog_unmark` returns NULL for NULL instead of looping forever.

The projector's checks call it on the record of every staged event whose data holds a marked NUL; for an
EntityChanged or EntityRemoved event that record is NULL (only an EntityAdded carries one), and the
function's loop never ended on NULL: `project`, `rebuild` and `follow` hung at the first change whose patch
held a NUL (found at scale 120 of the benchmark). STRICT makes PostgreSQL answer NULL without calling it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER FUNCTION powerlog_unmark(jsonb) STRICT")


def downgrade() -> None:
    op.execute("ALTER FUNCTION powerlog_unmark(jsonb) CALLED ON NULL INPUT")
