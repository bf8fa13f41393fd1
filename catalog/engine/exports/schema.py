"""A PostgreSQL source's schema as an export sees it: its tables (with row
estimates), each table's columns and what a new database needs to make them
again, and row filters proved by the server. A SQLite source is handed to
sqlite_source."""

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql

from catalog.engine.dumpers import connect, describe_pg_error, first_line, normalize_conninfo, redact
from catalog.engine.errors import SourceError
from catalog.engine.exports.archive import (
    Column,
    Conninfo,
    Description,
    LiveColumn,
    LiveTable,
    TableSpec,
    identifier,
    is_sqlite_source,
)
from catalog.engine.exports.sqlite_source import (
    check_sqlite_where,
    describe_sqlite_table,
    list_sqlite_tables,
    sqlite_connect,
)
from catalog.engine.exports.sqltext import filter_problem, parse_constant

# Tables an export offers: plain tables and partitioned parents, not their
# partitions (the parent is read through, holding every partition's rows;
# see "Partitioned tables" in archive.py). dumpers.COUNT_TABLES is the dump side's
# list and stays as it is. A parent has no rows of its own: until it is
# analyzed (reltuples -1) its estimate is the sum of its leaf partitions'.
USER_TABLES = """
SELECT n.nspname, c.relname, c.oid,
  CASE WHEN c.relkind = 'p' AND c.reltuples < 0 THEN (
    SELECT CASE WHEN bool_and(l.reltuples >= 0) IS NOT FALSE THEN coalesce(sum(l.reltuples), 0) ELSE -1 END
    FROM pg_partition_tree(c.oid) t JOIN pg_class l ON l.oid = t.relid WHERE t.isleaf)
  ELSE c.reltuples END,
  CASE WHEN c.relkind = 'p' THEN (SELECT count(*) FROM pg_partition_tree(c.oid) t WHERE t.isleaf) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
ORDER BY 1, 2
"""

FIND_TABLE = """
SELECT c.oid, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
"""

# create_as: what a new database can create the column as when its type is
# not built in (an enum or an extension's type would not exist there).
COLUMNS = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod),
  CASE WHEN tn.nspname = 'pg_catalog' THEN NULL
       WHEN t.typtype = 'd' AND bn.nspname = 'pg_catalog' THEN format_type(t.typbasetype, t.typtypmod)
       WHEN t.typcategory = 'A' AND en.nspname = 'pg_catalog' THEN format_type(a.atttypid, a.atttypmod)
       WHEN t.typcategory = 'A' THEN 'text[]'
       ELSE 'text' END
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace tn ON tn.oid = t.typnamespace
LEFT JOIN pg_type b ON b.oid = t.typbasetype LEFT JOIN pg_namespace bn ON bn.oid = b.typnamespace
LEFT JOIN pg_type e ON e.oid = t.typelem LEFT JOIN pg_namespace en ON en.oid = e.typnamespace
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

# What a new database needs to make the column again: NOT NULL, the default
# (its node tree too, to tell a constant from an expression), identity with
# its sequence, and the generation expression. last_value is read only when
# this role may (pg_sequence_last_value() would refuse otherwise); it is the
# sequence's current value, possibly past the snapshot, which is what keeps
# new rows from colliding.
COLUMN_RULES = """
SELECT a.attname, a.attnotnull, a.attidentity, {generated},
  pg_get_expr(d.adbin, d.adrelid), d.adbin::text,
  s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
  CASE WHEN has_sequence_privilege(s.seqrelid, 'SELECT,USAGE') THEN pg_sequence_last_value(s.seqrelid) END
FROM pg_attribute a
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN LATERAL (
  SELECT q.* FROM pg_depend dep JOIN pg_sequence q ON q.seqrelid = dep.objid
  WHERE a.attidentity <> '' AND dep.classid = 'pg_class'::regclass AND dep.refclassid = 'pg_class'::regclass
    AND dep.refobjid = a.attrelid AND dep.refobjsubid = a.attnum AND dep.deptype = 'i'
  LIMIT 1
) s ON true
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

# Nodes of a default that is a constant: the literal itself, and the casts
# and coercions PostgreSQL wraps around it ('abc' for a varchar(10) is a
# length coercion of a constant). A function call (funcformat 0, or 3 for
# SQL syntax such as EXTRACT) is not a cast; nextval() is one.
CONSTANT_NODES = {"CONST", "FUNCEXPR", "RELABELTYPE", "COERCEVIAIO", "COERCETODOMAIN"}
CAST_FORMATS = {"1", "2"}  # COERCE_EXPLICIT_CAST, COERCE_IMPLICIT_CAST

PRIMARY_KEY = """
SELECT a.attname FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.position
"""

# json keeps its text as written, line breaks included: in JSON Lines such a
# column travels as a string holding that exact text.
JSON_TYPES = ("json", "json[]")
# Types that are not built in (composites, enums, ranges, an extension's)
# travel in JSON Lines as their own text too: row_to_json() would write a
# composite as a JSON object, and no text[] of one reads back.
AS_TEXT = ("text", "text[]")


def query_error(exc: BaseException, params: Mapping[str, Any]) -> str:
    """The database's own first line about a failed statement, password
    redacted. (describe_pg_error is for connections: it would read
    'column "database" does not exist' as a missing database.)"""
    return first_line(redact(str(exc), params)) or "The statement failed"


def list_tables(conninfo: Conninfo) -> list[LiveTable]:
    """Live schema of a PostgreSQL source: [{"schema", "name", "columns":
    [{"name", "type"}], "rows_estimate"}], user tables only, sorted by schema
    then name. Partitions are left out: their parent holds their rows.
    rows_estimate is the planner's estimate, None for a table never
    analyzed or vacuumed (PostgreSQL 14+ can tell)."""
    if is_sqlite_source(conninfo):
        return list_sqlite_tables(str(conninfo))
    params = normalize_conninfo(conninfo)
    try:
        with connect(params) as conn:
            query = USER_TABLES
            if conn.info.server_version < 120000:  # no pg_partition_tree(): no partition counts
                query = query.replace(
                    "pg_partition_tree(c.oid)", "(SELECT NULL::regclass AS relid, true AS isleaf WHERE false)"
                )
            found = conn.execute(query).fetchall()
            columns: dict[int, list[LiveColumn]] = {}
            for oid, column, type_name, _create_as in conn.execute(COLUMNS, [[row[2] for row in found]]).fetchall():
                columns.setdefault(oid, []).append({"name": column, "type": type_name})
    except psycopg.Error as exc:
        raise SourceError(describe_pg_error(exc, params)) from exc
    tables = []
    for schema, name, oid, reltuples, partitions in found:
        table: LiveTable = {
            "schema": schema,
            "name": name,
            "columns": columns.get(oid, []),
            "rows_estimate": int(reltuples) if reltuples >= 0 else None,
        }
        if partitions is not None:
            table["partitions"] = partitions  # a partitioned parent: how many leaf partitions it reads through
        tables.append(table)
    return tables


def match_tables(tables: Iterable[Mapping[str, Any]], pattern: str) -> list[str]:
    """Qualified names matching a shell-style pattern ("public.audit_*",
    "*.log*"); a pattern without a dot is matched against the bare name."""
    pattern = pattern.strip()
    matched = []
    for table in tables:
        qualified = f"{table['schema']}.{table['name']}"
        subject = qualified if "." in pattern else table["name"]
        if fnmatch.fnmatchcase(subject, pattern):
            matched.append(qualified)
    return matched


def check_where(conn: psycopg.Connection[Any], table: TableSpec, params: Mapping[str, Any]) -> None:
    """Refuses a filter that is not one condition (filter_problem), then runs
    it with LIMIT 0 on `conn`: the server says whether it is valid SQL for
    this table. Prepared (extended protocol), so a second statement could not
    run either way. The caller's transaction is READ ONLY, so a filter that
    calls a function that writes fails instead of writing."""
    if not table.where.strip():
        return
    if problem := filter_problem(table.where):
        raise SourceError(f"The row filter for {table.qualified} must be one condition: {problem}.")
    query = sql.SQL("SELECT 1 FROM {} WHERE ({}) LIMIT 0").format(identifier(table), sql.SQL(table.where))
    try:
        conn.execute(query, prepare=True)
    except psycopg.Error as exc:
        raise SourceError(f"The row filter for {table.qualified} is not valid: {query_error(exc, params)}") from exc


def validate_where(conninfo: Conninfo, table: TableSpec) -> None:
    """Runs SELECT … FROM table WHERE <where> LIMIT 0 in a read-only
    transaction; raises SourceError with the database's own message
    (password redacted) when it is wrong."""
    if is_sqlite_source(conninfo):
        lite = sqlite_connect(str(conninfo))
        try:
            describe_sqlite_table(lite, table)
            check_sqlite_where(lite, table)
        finally:
            lite.close()
        return
    params = normalize_conninfo(conninfo)
    with connect(params) as conn:
        try:
            conn.autocommit = True
            conn.execute("BEGIN READ ONLY")
            # As the export reads it: filter_problem's reading of quotes assumes this.
            conn.execute("SET LOCAL standard_conforming_strings = on")
            if conn.execute(FIND_TABLE, [table.schema, table.name]).fetchone() is None:
                raise SourceError(f"The source has no table {table.qualified}")
            check_where(conn, table, params)
        except psycopg.Error as exc:
            raise SourceError(describe_pg_error(exc, params)) from exc
        finally:
            if not conn.closed:
                conn.execute("ROLLBACK")


def describe_table(conn: psycopg.Connection[Any], table: TableSpec) -> Description:
    """Columns (with what a new database needs to make them again) and
    primary key of one table, as recorded in the archive."""
    found = conn.execute(FIND_TABLE, [table.schema, table.name]).fetchone()
    if found is None:
        raise SourceError(f"The source has no table {table.qualified}")
    oid, relkind = found
    columns: list[Column] = []
    for _oid, name, type_name, create_as in conn.execute(COLUMNS, [[oid]]).fetchall():
        column = {"name": name, "type": type_name}
        if create_as and create_as != type_name:
            column["create_as"] = create_as
        columns.append(column)
    if not columns:
        raise SourceError(f"Table {table.qualified} has no columns: there is nothing to export")
    # attgenerated is PostgreSQL 12's; before it no column is generated.
    generated = "a.attgenerated" if conn.info.server_version >= 120000 else "''::\"char\""
    rules = conn.execute(COLUMN_RULES.format(generated=generated), [oid]).fetchall()
    # Two catalog queries: pair them as before, without failing on a difference.
    for column, rule in zip(columns, rules, strict=False):
        column.update(column_rules(rule))
    primary_key = [name for (name,) in conn.execute(PRIMARY_KEY, [oid]).fetchall()]
    description: Description = {
        "schema": table.schema,
        "name": table.name,
        "where": table.where,
        "columns": columns,
        "primary_key": primary_key,
    }
    if relkind == "p":
        description["partitioned"] = True
    return description


def column_rules(rule: Sequence[Any]) -> Column:
    """The archive's optional keys for one column (see archive.py)."""
    (
        _name,
        not_null,
        identity,
        generated,
        expression,
        tree,
        start,
        increment,
        minimum,
        maximum,
        cache,
        cycle,
        last_value,
    ) = rule
    found: Column = {}
    if not_null:
        found["not_null"] = True
    if generated == "s":
        found["generated"] = "stored"
        found["expression"] = expression
    elif identity in ("a", "d") and increment is not None:
        found["identity"] = "always" if identity == "a" else "by default"
        found["sequence"] = {
            "start": start,
            "increment": increment,
            "minimum": minimum,
            "maximum": maximum,
            "cache": cache,
            "cycle": cycle,
            "last_value": last_value,
        }
    elif expression is not None and is_constant_tree(tree) and parse_constant(expression) is not None:
        found["default"] = expression
    return found


def is_constant_tree(tree: str | None) -> bool:
    """Whether a default's node tree (pg_attrdef.adbin as text) is a literal
    under casts only. The tree prints constants as bytes, never as text, so
    a brace inside a value cannot pass for a node."""
    nodes = set(re.findall(r"\{([A-Z_]+)", tree or ""))
    formats = set(re.findall(r":funcformat (\d+)", tree or ""))
    return bool(nodes) and nodes <= CONSTANT_NODES and formats <= CAST_FORMATS
