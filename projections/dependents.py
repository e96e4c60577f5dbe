"""What users built on the live read tables (views, foreign keys, grants, comments, indexes...), captured
from the catalogs before a rebuild's swap and re-created on the swapped-in tables in the same transaction.

The swap moves the old tables away and drops them. Everything that points at them would go with them, so
it is captured first as SQL (with `search_path` emptied, every name the catalogs print is qualified and
so lands on the new tables of the same name), dropped, and run again after the move. Anything of a kind
not handled here is refused by name (`DependentsRefused`), never dropped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from events.errors import PowerlogError
from projections.tables import CHECKPOINTS, HISTORY_TABLES, READ_TABLES, VIEW

Conn = psycopg.Connection[Any]
Statement = sql.SQL | sql.Composed

RELATIONS = (*READ_TABLES, *HISTORY_TABLES, CHECKPOINTS, VIEW)
"""Every relation a rebuild replaces; what depends on any of them is kept."""

_KIND = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW"}


class DependentsRefused(PowerlogError):
    """Something depends on the read tables that a rebuild cannot re-create; it names them."""


@dataclass
class Plan:
    """SQL to run before the move (drops) and after it (re-creation), and what it keeps, for the log."""

    drop: list[Statement] = field(default_factory=list)
    recreate: list[Statement] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)
    lock: list[str] = field(default_factory=list)
    """Qualified names of user views the swap must lock before the read tables (readers lock them first)."""
    fk_tables: list[str] = field(default_factory=list)
    """Qualified names of user tables whose foreign keys point at the read tables."""

    def count(self, what: str, n: int = 1) -> None:
        if n:
            self.kept[what] = self.kept.get(what, 0) + n


def _oids(conn: Conn, schema: str) -> dict[str, int]:
    rows = conn.execute(
        "SELECT c.relname, c.oid::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = ANY(%s)",
        (schema, list(RELATIONS)),
    ).fetchall()
    return {str(name): int(oid) for name, oid in rows}


_VIEWS = """
WITH RECURSIVE deps(oid, depth) AS (
    SELECT r.ev_class, 1 FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
    WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
      AND d.refobjid = ANY(%(targets)s) AND r.ev_class <> ALL(%(targets)s)
    UNION
    SELECT r.ev_class, deps.depth + 1 FROM deps
    JOIN pg_depend d ON d.refobjid = deps.oid AND d.refclassid = 'pg_class'::regclass
        AND d.classid = 'pg_rewrite'::regclass
    JOIN pg_rewrite r ON r.oid = d.objid AND r.ev_class <> deps.oid
)
SELECT c.oid::bigint, n.nspname, c.relname, c.relkind::text, pg_get_viewdef(c.oid),
       coalesce(array_to_string(c.reloptions, ', '), ''), pg_get_userbyid(c.relowner), c.relispopulated
FROM (SELECT oid, max(depth) AS depth FROM deps GROUP BY oid) v
JOIN pg_class c ON c.oid = v.oid JOIN pg_namespace n ON n.oid = c.relnamespace
ORDER BY v.depth, c.oid
"""

# Whatever depends on one of `targets` and is not one of the kinds handled here. Handled: the relations'
# own indexes, sequences, toast, row and array types, defaults, constraints, triggers, the rules of views
# (ours and the captured ones), foreign keys from other tables (captured), internal triggers of those.
_UNHANDLED = """
SELECT DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid)
FROM pg_depend d
LEFT JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
LEFT JOIN pg_type t ON d.classid = 'pg_type'::regclass AND t.oid = d.objid
LEFT JOIN pg_attrdef ad ON d.classid = 'pg_attrdef'::regclass AND ad.oid = d.objid
LEFT JOIN pg_constraint con ON d.classid = 'pg_constraint'::regclass AND con.oid = d.objid
LEFT JOIN pg_trigger tg ON d.classid = 'pg_trigger'::regclass AND tg.oid = d.objid
LEFT JOIN pg_rewrite rw ON d.classid = 'pg_rewrite'::regclass AND rw.oid = d.objid
WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = ANY(%(all)s) AND d.deptype <> 'p'
  AND NOT (
       (c.oid IS NOT NULL AND (c.relkind IN ('i', 'I', 'S', 't') OR c.oid = ANY(%(all)s)))
    OR t.oid IS NOT NULL
    OR ad.adrelid = ANY(%(all)s)
    OR con.conrelid = ANY(%(all)s)
    OR (con.contype = 'f' AND con.confrelid = ANY(%(targets)s))
    OR (tg.oid IS NOT NULL AND (tg.tgisinternal OR tg.tgrelid = ANY(%(targets)s)))
    OR (rw.rulename = '_RETURN' AND rw.ev_class = ANY(%(all)s))
  )
UNION
SELECT DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid)
FROM pg_class r JOIN pg_depend d ON d.refclassid = 'pg_type'::regclass AND d.refobjid = r.reltype
LEFT JOIN pg_type t ON d.classid = 'pg_type'::regclass AND t.oid = d.objid
LEFT JOIN pg_rewrite rw ON d.classid = 'pg_rewrite'::regclass AND rw.oid = d.objid
WHERE r.oid = ANY(%(all)s) AND d.deptype <> 'p' AND t.typelem IS DISTINCT FROM r.reltype
  AND NOT (d.classid = 'pg_class'::regclass AND d.objid = r.oid)
  AND NOT (rw.rulename = '_RETURN' AND rw.ev_class = ANY(%(all)s))
UNION
SELECT DISTINCT pg_describe_object('pg_trigger'::regclass, tg.oid, 0)
FROM pg_trigger tg WHERE tg.tgrelid = ANY(%(views)s) AND NOT tg.tgisinternal
UNION
SELECT DISTINCT pg_describe_object('pg_rewrite'::regclass, rw.oid, 0)
FROM pg_rewrite rw WHERE rw.ev_class = ANY(%(all)s) AND rw.rulename <> '_RETURN'
ORDER BY 1
"""


class _Facts:
    """Indexes, constraints, triggers, grants and comments of many relations, read in one query each:
    the second capture runs under the swap's locks, so its round trips are time readers wait."""

    def __init__(self, conn: Conn, oids: list[int]) -> None:
        self.indexes = self._named(conn, _INDEXES, oids)
        self.constraints = self._named(conn, _CONSTRAINTS, oids)
        self.triggers = self._named(conn, _TRIGGERS, oids)
        self.grants: dict[int, set[tuple[str, str, bool]]] = {oid: set() for oid in oids}
        for oid, grantee, privilege, grantable in conn.execute(_GRANTS, (oids,)).fetchall():
            self.grants[int(oid)].add((str(grantee), str(privilege), bool(grantable)))
        self.column_grants: dict[int, set[tuple[str, str, str, bool]]] = {oid: set() for oid in oids}
        for oid, column, grantee, privilege, grantable in conn.execute(_COLUMN_GRANTS, (oids,)).fetchall():
            self.column_grants[int(oid)].add((str(column), str(grantee), str(privilege), bool(grantable)))
        self.settings = {
            int(oid): (list(options or []), bool(rls), bool(force))
            for oid, options, rls, force in conn.execute(_SETTINGS, (oids,)).fetchall()
        }
        self.comments: dict[int, list[tuple[str | None, str]]] = {oid: [] for oid in oids}
        for oid, column, text in conn.execute(_COMMENTS, (oids,)).fetchall():
            self.comments[int(oid)].append((column, str(text)))

    @staticmethod
    def _named(conn: Conn, query: str, oids: list[int]) -> dict[int, dict[str, str]]:
        out: dict[int, dict[str, str]] = {oid: {} for oid in oids}
        for oid, name, definition in conn.execute(query, (oids,)).fetchall():
            out[int(oid)][str(name)] = str(definition)
        return out


# The owner's own privileges left out (they come with ownership); PUBLIC as ''.
_GRANTS = (
    "SELECT c.oid::bigint, coalesce(r.rolname, ''), a.privilege_type, a.is_grantable"
    " FROM pg_class c, aclexplode(c.relacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee"
    " WHERE c.oid = ANY(%s) AND a.grantee <> c.relowner"
)
_COLUMN_GRANTS = (
    "SELECT a.attrelid::bigint, a.attname, coalesce(r.rolname, ''), x.privilege_type, x.is_grantable"
    " FROM pg_attribute a, aclexplode(a.attacl) x LEFT JOIN pg_roles r ON r.oid = x.grantee"
    " WHERE a.attrelid = ANY(%s) AND a.attacl IS NOT NULL AND NOT a.attisdropped"
)
_SETTINGS = (
    "SELECT oid::bigint, reloptions, relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = ANY(%s)"
)
_COMMENTS = (
    "SELECT d.objoid::bigint, a.attname, d.description FROM pg_description d"
    " LEFT JOIN pg_attribute a ON a.attrelid = d.objoid AND a.attnum = d.objsubid AND d.objsubid > 0"
    " WHERE d.classoid = 'pg_class'::regclass AND d.objoid = ANY(%s) ORDER BY d.objoid, d.objsubid"
)


def _grantee(name: str) -> sql.Composable:
    return sql.SQL("PUBLIC") if name == "" else sql.Identifier(name)


def _privilege(name: str) -> sql.Composable:
    if not name.replace(" ", "").isalpha():
        raise DependentsRefused(f"unexpected privilege {name!r} in a read table's grants")
    return sql.SQL(name)


def _column_grant_sql(
    target: sql.Composable, grant: tuple[str, str, str, bool], revoke: bool = False
) -> Statement:
    column, grantee, privilege, grantable = grant
    if revoke:
        return sql.SQL("REVOKE {} ({}) ON TABLE {} FROM {}").format(
            _privilege(privilege), sql.Identifier(column), target, _grantee(grantee)
        )
    return sql.SQL("GRANT {} ({}) ON TABLE {} TO {}{}").format(
        _privilege(privilege),
        sql.Identifier(column),
        target,
        _grantee(grantee),
        sql.SQL(" WITH GRANT OPTION" if grantable else ""),
    )


def _settings_sql(facts: _Facts, old: int, new: int, kind: str, target: sql.Composable) -> list[Statement]:
    """Storage parameters and row security of one of our relations as they were."""
    options, rls, force = facts.settings[old]
    ours, our_rls, our_force = facts.settings[new]
    out: list[Statement] = []
    if options and options != ours:
        out.append(sql.SQL("ALTER {} {} SET ({})").format(sql.SQL(kind), target, sql.SQL(", ".join(options))))
    if rls != our_rls:
        out.append(
            sql.SQL("ALTER TABLE {} {} ROW LEVEL SECURITY").format(
                target, sql.SQL("ENABLE" if rls else "DISABLE")
            )
        )
    if force != our_force:
        out.append(
            sql.SQL("ALTER TABLE {} {}FORCE ROW LEVEL SECURITY").format(
                target, sql.SQL("" if force else "NO ")
            )
        )
    return out


def _grant_sql(target: sql.Composable, grant: tuple[str, str, bool]) -> Statement:
    grantee, privilege, grantable = grant
    return sql.SQL("GRANT {} ON TABLE {} TO {}{}").format(
        _privilege(privilege),
        target,
        _grantee(grantee),
        sql.SQL(" WITH GRANT OPTION" if grantable else ""),
    )


def _comments(facts: _Facts, oid: int, kind: str, target: sql.Composable) -> list[Statement]:
    out: list[Statement] = []
    for column, text in facts.comments[oid]:
        if column is None:
            out.append(sql.SQL("COMMENT ON {} {} IS {}").format(sql.SQL(kind), target, sql.Literal(text)))
        else:
            out.append(
                sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
                    target, sql.Identifier(column), sql.Literal(text)
                )
            )
    return out


# Indexes that back a constraint come back with the constraint.
_INDEXES = (
    "SELECT x.indrelid::bigint, i.relname, pg_get_indexdef(i.oid) FROM pg_index x"
    " JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = ANY(%s) AND NOT EXISTS"
    " (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.oid AND k.conrelid = x.indrelid)"
)
_CONSTRAINTS = (
    "SELECT conrelid::bigint, conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = ANY(%s)"
)
_TRIGGERS = (
    "SELECT tgrelid::bigint, tgname, pg_get_triggerdef(oid) FROM pg_trigger"
    " WHERE tgrelid = ANY(%s) AND NOT tgisinternal"
)


def _table_extras(facts: _Facts, plan: Plan, live: str, name: str, old: int, new: int, kind: str) -> None:
    """What users added to one of our relations: indexes, constraints, triggers, grants, comments."""
    target = sql.Identifier(live, name)
    ours = facts.indexes[new]
    for index, definition in facts.indexes[old].items():
        if index not in ours:
            plan.recreate.append(sql.SQL(definition))
            plan.count("indexes")
    ours = facts.constraints[new]
    for constraint, definition in facts.constraints[old].items():
        if constraint not in ours:
            plan.recreate.append(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    target,
                    sql.Identifier(constraint),
                    sql.SQL(definition),
                )
            )
            plan.count("constraints")
    ours = facts.triggers[new]
    for trigger, definition in facts.triggers[old].items():
        if trigger not in ours:
            plan.recreate.append(sql.SQL(definition))
            plan.count("triggers")
    # The grants exactly as they were: extra ones given again, ours that were revoked revoked again.
    had, has = facts.grants[old], facts.grants[new]
    plan.recreate.extend(_grant_sql(target, g) for g in sorted(had - has))
    for grantee, privilege, _ in sorted(has - had):
        plan.recreate.append(
            sql.SQL("REVOKE {} ON TABLE {} FROM {}").format(_privilege(privilege), target, _grantee(grantee))
        )
    plan.count("grants", len(had - has) + len(has - had))
    had_columns, has_columns = facts.column_grants[old], facts.column_grants[new]
    plan.recreate.extend(_column_grant_sql(target, g) for g in sorted(had_columns - has_columns))
    plan.recreate.extend(_column_grant_sql(target, g, revoke=True) for g in sorted(has_columns - had_columns))
    plan.count("grants", len(had_columns ^ has_columns))
    settings = _settings_sql(facts, old, new, kind, target)
    plan.recreate.extend(settings)
    plan.count("settings", len(settings))
    comments = _comments(facts, old, kind, target)
    plan.recreate.extend(comments)
    plan.count("comments", len(comments))


def capture(conn: Conn, live: str, shadow: str) -> Plan:
    """What depends on the relations in `live`, as SQL that re-creates it over those of `shadow` once they
    are moved to `live`. Run inside the swap's transaction, after its locks; raises `DependentsRefused`."""
    # Every name the catalog functions print comes out schema-qualified.
    row = conn.execute(
        "SELECT current_setting('search_path'), set_config('search_path', 'pg_catalog', true)"
    ).fetchone()
    search_path = str(row[0]) if row else "public"
    old, new = _oids(conn, live), _oids(conn, shadow)
    plan = Plan()
    views = conn.execute(_VIEWS, {"targets": list(old.values())}).fetchall()
    view_oids = [int(v[0]) for v in views]
    unhandled = [
        str(r[0])
        for r in conn.execute(
            _UNHANDLED,
            {"targets": list(old.values()), "all": [*old.values(), *view_oids], "views": view_oids},
        ).fetchall()
    ]
    if unhandled:
        raise DependentsRefused(
            "rebuild would drop what depends on the read tables and cannot re-create it: "
            f"{'; '.join(unhandled)}. Drop it (and re-create it after the rebuild) or leave the tables as "
            "they are; nothing was changed"
        )
    facts = _Facts(conn, [*old.values(), *new.values(), *view_oids])
    for oid, schema, name, relkind, definition, options, owner, populated in views:
        target = sql.Identifier(schema, name)
        kind = _KIND[relkind]
        plan.lock.append(f"{schema}.{name}")
        if relkind == "m":
            create = sql.SQL("CREATE MATERIALIZED VIEW {} {} AS {} WITH {}").format(
                target,
                sql.SQL(f"WITH ({options})" if options else ""),
                sql.SQL(definition.rstrip().rstrip(";")),
                sql.SQL("DATA" if populated else "NO DATA"),
            )
        else:
            create = sql.SQL("CREATE VIEW {} {} AS {}").format(
                target,
                sql.SQL(f"WITH ({options})" if options else ""),
                sql.SQL(definition.rstrip().rstrip(";")),
            )
        plan.recreate.append(create)
        plan.recreate.append(
            sql.SQL("ALTER {} {} OWNER TO {}").format(sql.SQL(kind), target, sql.Identifier(owner))
        )
        plan.recreate.extend(sql.SQL(d) for d in facts.indexes[oid].values())
        plan.recreate.extend(_grant_sql(target, g) for g in sorted(facts.grants[oid]))
        plan.recreate.extend(_column_grant_sql(target, g) for g in sorted(facts.column_grants[oid]))
        plan.recreate.extend(_comments(facts, oid, kind, target))
        plan.count("views")
    # Dropped dependents first: a view over a view goes before the one it reads.
    for _, schema, name, relkind, *_ in reversed(views):
        plan.drop.append(sql.SQL("DROP {} {}").format(sql.SQL(_KIND[relkind]), sql.Identifier(schema, name)))
    for table, constraint, definition in conn.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE contype = 'f' AND confrelid = ANY(%s) AND conrelid <> ALL(%s) ORDER BY oid",
        (list(old.values()), list(old.values())),
    ).fetchall():
        plan.fk_tables.append(table)
        plan.drop.append(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                sql.SQL(table),
                sql.Identifier(constraint),
            )
        )
        plan.recreate.append(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                sql.SQL(table),
                sql.Identifier(constraint),
                sql.SQL(definition),
            )
        )
        plan.count("foreign keys")
    relkinds = dict(
        conn.execute(
            "SELECT relname, relkind::text FROM pg_class WHERE oid = ANY(%s)", (list(old.values()),)
        ).fetchall()
    )
    for name, oid in old.items():
        if name in new:
            _table_extras(facts, plan, live, name, oid, new[name], _KIND[relkinds[name]])
    conn.execute("SELECT set_config('search_path', %s, true)", (search_path,))
    return plan


def run(conn: Conn, statements: Sequence[Statement]) -> None:
    for stmt in statements:
        conn.execute(stmt)


def recreate(conn: Conn, plan: Plan) -> None:
    """Re-create what was captured over the swapped-in tables; a failure refuses the swap by name."""
    for stmt in plan.recreate:
        try:
            with conn.transaction():  # a savepoint: the error is ours to word, the swap rolls back
                conn.execute(stmt)
        except (
            psycopg.errors.LockNotAvailable,
            psycopg.errors.QueryCanceled,
            psycopg.errors.DeadlockDetected,
        ):
            raise
        except psycopg.Error as exc:
            text = " ".join(stmt.as_string(conn).split())
            reason = " ".join(str(exc).split())
            raise DependentsRefused(
                f"rebuild cannot re-create what depends on the read tables ({text[:300]}): {reason}; "
                "nothing was changed"
            ) from None
