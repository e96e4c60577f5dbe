"""Drop the SQL JSON Patch functions (`powerlog_jsonb_patch`, `powerlog_pointer`) that revision 0002 made and
no code calls: projections apply patches in Python (events/patch.py), the one implementation there is.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DROPPED = ("powerlog_jsonb_patch(jsonb, jsonb)", "powerlog_pointer(text)")


def upgrade() -> None:
    for name in DROPPED:
        op.execute(f"DROP FUNCTION IF EXISTS {name}")


def downgrade() -> None:
    # Recreated exactly as revision 0002 wrote them, from that revision's own text.
    script = op.get_context().script
    assert script is not None
    revision_0002 = script.get_revision("0002")
    assert revision_0002 is not None
    for ddl in revision_0002.module.FUNCTIONS:
        if any(f"FUNCTION {name.partition('(')[0]}(" in ddl for name in DROPPED):
            op.execute(ddl)
