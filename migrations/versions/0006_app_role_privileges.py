"""The application role may no longer rewrite `streams` or `imports`: the importer diffs against `streams`
and `verify` trusts what `imports` records, so a session that could UPDATE them could make an import skip a
change for good. What must change them goes through SECURITY DEFINER functions that check the change against
the log first.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "powerlog_app"

# Each function's signature, for GRANT / REVOKE / DROP.
COMPLETE_IMPORT = "powerlog_complete_import(bigint, text, jsonb, jsonb, bigint, bigint, text)"
SET_FINGERPRINT = "powerlog_set_fingerprint(bigint, text)"
ADVANCE_STREAMS = (
    "powerlog_advance_streams(text[], integer[], integer[], text[], bytea[], boolean[], bigint[])"
)
FUNCTIONS = (COMPLETE_IMPORT, SET_FINGERPRINT, ADVANCE_STREAMS)


def _functions(search_path: str) -> list[str]:
    # search_path is pinned (the schema the log lives in, then pg_temp last), so a caller's own objects
    # cannot stand in for the tables these functions write as their owner.
    pinned = f"SET search_path = {search_path}, pg_temp"
    return [
        f"""
        CREATE FUNCTION powerlog_complete_import(
            p_import_id bigint, p_content_hash text, p_counts jsonb, p_warnings jsonb,
            p_first_position bigint, p_last_position bigint, p_head_chain_hash text
        ) RETURNS void LANGUAGE plpgsql SECURITY DEFINER {pinned} AS $$
        DECLARE
            log_first bigint;
            log_last bigint;
            log_head text;
        BEGIN
            -- What is recorded must be what the log holds: verify and the next import rely on it.
            SELECT min(global_position), max(global_position) INTO log_first, log_last
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
        """,
        f"""
        CREATE FUNCTION powerlog_set_fingerprint(p_import_id bigint, p_fingerprint text)
        RETURNS void LANGUAGE sql SECURITY DEFINER {pinned} AS $$
            UPDATE imports SET fingerprint = p_fingerprint WHERE id = p_import_id AND status = 'completed'
        $$
        """,
        f"""
        CREATE FUNCTION powerlog_advance_streams(
            p_stream_ids text[], p_expected integer[], p_versions integer[], p_hashes text[],
            p_records bytea[], p_removed boolean[], p_last_positions bigint[]
        ) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER {pinned} AS $$
        DECLARE
            bad text;
            moved bigint;
        BEGIN
            -- A stream's head must be the event at its last position: same stream, version, hash and
            -- removal. Whoever calls this can then only move a stream to where the log already is.
            SELECT p.stream_id INTO bad
            FROM unnest(p_stream_ids, p_versions, p_hashes, p_removed, p_last_positions)
                AS p(stream_id, version, hash, removed, last_position)
            LEFT JOIN events e ON e.global_position = p.last_position
            WHERE e.global_position IS NULL OR e.stream_id <> p.stream_id OR e.stream_version <> p.version
               OR (e.event_type = 'EntityRemoved') <> p.removed
               OR p.hash IS DISTINCT FROM
                  CASE WHEN e.event_type = 'EntityRemoved' THEN NULL ELSE e.data->>'hash' END
            LIMIT 1;
            IF bad IS NOT NULL THEN
                RAISE EXCEPTION 'stream % cannot move to a head that is not its last event in the log', bad
                    USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            UPDATE streams s SET version = p.version, hash = p.hash, record = p.record, removed = p.removed,
                last_position = p.last_position
            FROM unnest(p_stream_ids, p_expected, p_versions, p_hashes, p_records, p_removed,
                        p_last_positions) AS p(stream_id, expected, version, hash, record, removed, last_position)
            WHERE s.stream_id = p.stream_id AND s.version = p.expected;
            GET DIAGNOSTICS moved = ROW_COUNT;
            RETURN moved;
        END $$
        """,
    ]


def upgrade() -> None:
    schema = op.get_bind().execute(sa.text("SELECT quote_ident(current_schema())")).scalar_one()
    for statement in _functions(schema):
        op.execute(statement)
    for signature in FUNCTIONS:
        # A new function is executable by PUBLIC: only the application role may call these.
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO {APP_ROLE}")
    op.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON imports, streams FROM {APP_ROLE}")
    # Every command checks the schema's revision before it starts, the application role's included.
    op.execute(f"GRANT SELECT ON alembic_version TO {APP_ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE SELECT ON alembic_version FROM {APP_ROLE}")
    op.execute(f"GRANT UPDATE, DELETE ON imports, streams TO {APP_ROLE}")
    for signature in FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
