"""SQL functions the set-based projections use (JSON Patch, safe casts, NUL unmarking), and a flag on
events whose jsonb payload had U+0000 escaped, so projections unmark only those.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTIONS = [
    # Casts that give NULL instead of failing: a projection must not stop on one odd source value.
    """
    CREATE FUNCTION powerlog_num(v jsonb) RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
    $$ SELECT CASE WHEN jsonb_typeof(v) = 'number' THEN v::double precision END $$
    """,
    """
    CREATE FUNCTION powerlog_int(v jsonb) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
    $$ SELECT CASE WHEN jsonb_typeof(v) = 'number' AND abs(v::numeric) < 2147483648
                   THEN trunc(v::numeric)::integer END $$
    """,
    """
    CREATE FUNCTION powerlog_bool(v jsonb) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
    $$ SELECT CASE WHEN jsonb_typeof(v) = 'boolean' THEN v::boolean END $$
    """,
    """
    CREATE FUNCTION powerlog_text(v jsonb) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
    $$ SELECT CASE WHEN jsonb_typeof(v) = 'string' THEN v #>> '{}' END $$
    """,
    # The log writes U+0000 as U+E000 '0' and U+E000 as U+E000 U+E000 (store/nul.py); read tables
    # cannot hold U+0000 at all, so they drop it and give U+E000 back.
    """
    CREATE FUNCTION powerlog_unmark(v jsonb) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
    DECLARE
        t text := v::text;
        out text := '';
        i int;
    BEGIN
        IF strpos(t, U&'\\E000') = 0 THEN
            RETURN v;
        END IF;
        LOOP
            i := strpos(t, U&'\\E000');
            EXIT WHEN i = 0;
            out := out || substr(t, 1, i - 1);
            IF substr(t, i + 1, 1) = U&'\\E000' THEN
                out := out || U&'\\E000';
            END IF;
            t := substr(t, i + 2);
        END LOOP;
        RETURN (out || t)::jsonb;
    END $$
    """,
    """
    CREATE FUNCTION powerlog_pointer(p text) RETURNS text[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT CASE WHEN p = '' THEN ARRAY[]::text[] ELSE
            ARRAY(SELECT replace(replace(part, '~1', '/'), '~0', '~')
                  FROM unnest(string_to_array(substr(p, 2), '/')) WITH ORDINALITY AS t(part, n) ORDER BY n)
        END
    $$
    """,
    # RFC 6902 add/remove/replace, objects by key and arrays by index, as events.patch writes them.
    """
    CREATE FUNCTION powerlog_jsonb_patch(doc jsonb, patch jsonb) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE
    PARALLEL SAFE AS $$
    DECLARE
        o jsonb;
        path text[];
        parent_path text[];
        parent jsonb;
        last text;
        n int;
    BEGIN
        FOR o IN SELECT value FROM jsonb_array_elements(patch) LOOP
            path := powerlog_pointer(o->>'path');
            n := cardinality(path);
            IF n = 0 THEN
                IF o->>'op' = 'remove' THEN
                    doc := NULL;
                ELSE
                    doc := o->'value';
                END IF;
                CONTINUE;
            END IF;
            parent_path := path[1:n - 1];
            last := path[n];
            parent := CASE WHEN n = 1 THEN doc ELSE doc #> parent_path END;
            IF parent IS NULL THEN
                RAISE EXCEPTION 'JSON Patch %: no parent for path %', o->>'op', o->>'path';
            END IF;
            IF o->>'op' = 'replace' THEN
                doc := jsonb_set(doc, path, o->'value', false);
            ELSIF o->>'op' = 'remove' THEN
                doc := doc #- path;
            ELSIF o->>'op' = 'add' THEN
                IF jsonb_typeof(parent) = 'array' THEN
                    IF last = '-' OR last::int >= jsonb_array_length(parent) THEN
                        IF n = 1 THEN
                            doc := doc || jsonb_build_array(o->'value');
                        ELSE
                            doc := jsonb_set(doc, parent_path, parent || jsonb_build_array(o->'value'), false);
                        END IF;
                    ELSE
                        doc := jsonb_insert(doc, path, o->'value', false);
                    END IF;
                ELSE
                    doc := jsonb_set(doc, path, o->'value', true);
                END IF;
            ELSE
                RAISE EXCEPTION 'JSON Patch: unsupported op %', o->>'op';
            END IF;
        END LOOP;
        RETURN doc;
    END $$
    """,
]

NAMES = [
    "powerlog_jsonb_patch(jsonb, jsonb)",
    "powerlog_pointer(text)",
    "powerlog_unmark(jsonb)",
    "powerlog_text(jsonb)",
    "powerlog_bool(jsonb)",
    "powerlog_int(jsonb)",
    "powerlog_num(jsonb)",
]


def upgrade() -> None:
    for ddl in FUNCTIONS:
        op.execute(ddl)
    # No rewrite (constant default), and right for existing rows: before this revision no payload
    # with U+0000 could be stored at all.
    op.add_column("events", sa.Column("data_escaped", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    op.drop_column("events", "data_escaped")
    for name in NAMES:
        op.execute(f"DROP FUNCTION IF EXISTS {name}")
