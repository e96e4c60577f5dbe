"""`import_files` and `file_keys`: what each import read, file by file, so that the next import need not
parse a file whose bytes it finds unchanged.

`import_files` holds, for every completed import that read its export, each record file's path and the
SHA-256 of its raw bytes, with the rules it was read under (`importer.source.READING`). `file_keys` holds the
natural keys a file of those bytes holds, in file order, once per digest and rules: an unchanged file costs
later imports only its `import_files` row. Imports made before this revision have no rows; the first import
after it reads every file, as before, and records them.

Both are written by imports (the application role) and never changed after: SELECT and INSERT only.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE file_keys (
            digest bytea NOT NULL,
            reading text NOT NULL,
            keys bytea NOT NULL,
            PRIMARY KEY (digest, reading)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE import_files (
            import_id bigint NOT NULL REFERENCES imports (id),
            path text NOT NULL,
            digest bytea NOT NULL,
            reading text NOT NULL,
            PRIMARY KEY (import_id, path)
        )
        """
    )
    op.execute("GRANT SELECT, INSERT ON file_keys, import_files TO powerlog_app")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS import_files")
    op.execute("DROP TABLE IF EXISTS file_keys")
