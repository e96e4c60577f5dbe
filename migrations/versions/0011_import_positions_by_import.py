"""`powerlog_complete_import` finds an import's first and last positions through `events_import_id_idx`.

Its `min(global_position), max(global_position) ... WHERE import_id = $1` runs as a cached (generic) plan
after a session's first few imports, and for an unknown import id the planner takes the min/max shortcut
over `events_pkey`: from the log's start forwards, row by row, until an event of that import, which is the
newest. So every import's completion read the whole log: a 100-event import took 56 ms with 102,000 events
in the log and 257 ms with 1,102,000 (bench/results/growth-append-s25-pg15.md). `global_position + 0` is no
longer an indexed column, so the shortcut is off and the plan reads the import's own rows by `import_id`.

Only the function's body changes (CREATE OR REPLACE keeps its owner and grants); downgrade puts the old body
back.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _complete_import(search_path: str, position: str) -> str:
    """Migration 0006's function, with `position` as what min and max are taken over."""
    return f"""
        CREATE OR REPLACE FUNCTION powerlog_complete_import(
            p_import_id bigint, p_content_hash text, p_counts jsonb, p_warnings jsonb,
            p_first_position bigint, p_last_position bigint, p_head_chain_hash text
        ) RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = {search_path}, pg_temp AS $$
        DECLARE
            log_first bigint;
            log_last bigint;
            log_head text;
        BEGIN
            -- What is recorded must be what the log holds: verify and the next import rely on it.
            SELECT min({position}), max({position}) INTO log_first, log_last
                FROM events WHERE import_id = p_import_id;
            IF log_first IS DISTINCT FROM p_first_position OR log_last IS DISTINCT FROM p_last_position THEN
                RAISE EXCEPTION 'import % holds positions %..% in the log, not %..%',
                    p_import_id, log_first, log_last, p_first_position, p_last_position
                    USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            SELECT coalesce(
                (SELECT global_position || ':' || encode(chain_hash, 'hex') FROM events
                    ORDER BY global_position DESC LIMIT 1),
                '0:' || repeat('0', 64)) INTO log_head;
            IF log_head <> p_head_chain_hash THEN
                RAISE EXCEPTION 'import % would record head %, the log''s head is %',
                    p_import_id, p_head_chain_hash, log_head
                    USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            -- Only a row begun and not yet completed: a completed import's record never changes.
            UPDATE imports SET content_hash = p_content_hash, counts = p_counts, warnings = p_warnings,
                completed_at = clock_timestamp(), first_position = p_first_position,
                last_position = p_last_position, head_chain_hash = p_head_chain_hash
            WHERE id = p_import_id AND status = 'completed' AND completed_at IS NULL;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'import % is not an import in progress', p_import_id
                    USING ERRCODE = 'integrity_constraint_violation';
            END IF;
        END $$
        """


def _schema() -> str:
    return str(op.get_bind().execute(sa.text("SELECT quote_ident(current_schema())")).scalar_one())


def upgrade() -> None:
    # `+ 0`: not an indexed column, so no min/max scan of events_pkey (the docstring above).
    op.execute(_complete_import(_schema(), "global_position + 0"))


def downgrade() -> None:
    op.execute(_complete_import(_schema(), "global_position"))
