"""Selective exports: chosen tables of a PostgreSQL database (or of a SQLite
file, given as a path; its schema is "main") as JSON Lines, CSV or SQL INSERT
statements, in one tar archive, and loading them back into PostgreSQL (or,
for a SQLite source's export, into a new SQLite file).

The archive (readable without Strongroom)
-----------------------------------------
A plain tar stream (POSIX pax headers, UTF-8 names). For each exported table,
in order:

  tables/<schema>.<name>.columns.json   the table's description:
        {"schema", "name", "where", "columns": [{"name", "type", ...}],
         "primary_key": [column names]}
        `type` is PostgreSQL's format_type() (e.g. "numeric(12,4)",
        "timestamp with time zone", "integer[]"). A column whose type is not
        built in (an enum, an extension's type) also has "create_as": the
        built-in type it is created as in a new database (the base type of a
        domain, otherwise "text" or "text[]"). In the JSON Lines format a
        json or json[] column, and one created as "text" or "text[]", has
        "as_text": true (see below).
        Since archive 1.1 a column may also have (each key only when it
        applies; a reader must not require any of them):
          "not_null": true
          "default": "'-1'::integer"   the default, only when it is a constant:
              a literal (NULL, true, false, a number, a quoted string),
              possibly cast, as pg_get_expr() writes it. nextval(), now()
              and other expressions are not recorded.
          "identity": "always" | "by default", with "sequence": {"start",
              "increment", "minimum", "maximum", "cache", "cycle",
              "last_value"} (last_value null when the sequence was never
              used or could not be read)
          "generated": "stored", with "expression": the generation
              expression as pg_get_expr() writes it. The data member still
              holds the column's values; a loader skips them.
        and the table "partitioned": true when it is a partitioned table's
        parent, exported as one table through the parent (all partitions).
  tables/<schema>.<name>.<jsonl|csv|sql>  the rows (the data member).

and LAST `export-manifest.json`: {"archive_version" (1), "archive_minor_version"
(1 since the column keys above; absent before), "format", "created_at", "snapshot_taken_at",
"server_version", "tool_version", "snapshot", "session", "tables":
{"<schema>.<name>": {"schema", "name", "member", "columns_member", "columns",
"primary_key", "where", "rows", "size", "sha256"}}}, where size and sha256
describe the data member. The manifest comes last because row counts and
hashes are known only once a table has been read; the columns member comes
before its rows so that a reader working through the stream can create the
table before the rows arrive. In member names a "/" or "%" of a schema or
table name is written as %2F or %25; the exact names are in the JSON.

All tables come from one snapshot: one REPEATABLE READ, READ ONLY transaction.
Values are written with the session settings in the manifest's "session"
(DateStyle ISO, TimeZone UTC, bytea as hex, floats with every digit), so
timestamps carry their offset (+00) and bytea reads "\\x0aff…".

Formats:
- csv: PostgreSQL's COPY … TO STDOUT WITH (FORMAT csv, HEADER true): a
  header line of column names, NULL as an unquoted empty field, an empty
  string as "", arrays in PostgreSQL's text form ({1,2,NULL}). Loads back
  with COPY … FROM STDIN WITH (FORMAT csv, HEADER true).
- jsonl: one JSON object per line, made by row_to_json(): numbers exact as
  JSON numbers, arrays as JSON arrays, bytea as "\\x…" strings, timestamps in
  ISO 8601. json and json[] columns are written as strings holding the exact
  text of the value ("as_text"), because json keeps its whitespace, line
  breaks included, which would split a line; so are columns of a type that
  is not built in (created as text or text[]), because row_to_json() turns a
  composite value into a JSON object, which no text form of it can be read
  back from. Loads back through json_populate_record(), so PostgreSQL does
  both conversions.
- sql: one `INSERT INTO "schema"."table" ("col", …) VALUES (…);` per row, each
  value a literal from quote_nullable() (so the escaping is the server's):
  NULL, '…' or E'…'. A statement ends with ");" at the end of a line, and a
  line break occurs only inside a literal; so a statement is complete at the
  first line ending in ");" after which its quotes are balanced. With
  standard_conforming_strings on, the file runs as it is in psql.

By hand, without Strongroom (after decrypting and decompressing the stored
object, see catalog/engine/decrypt.py): `tar xf export.tar`, create the table
from its columns.json, then in psql
  csv:   \\copy "schema"."table" FROM 'tables/schema.table.csv' WITH (FORMAT csv, HEADER true)
  sql:   SET standard_conforming_strings = on; \\i tables/schema.table.sql
  jsonl: load each line as json and INSERT … SELECT * FROM
         json_populate_record(NULL::"schema"."table", line) (as_text columns:
         (line ->> 'column')::json), or read it with any JSON Lines reader.
Set the manifest's "session" values first (SET DateStyle = 'ISO, YMD'; …).
A generated column's values are in the member but cannot be written: create
the table without its generation expressions, or load into a copy of it and
INSERT … SELECT the other columns. Add identity after the rows (ALTER TABLE …
ADD GENERATED … AS IDENTITY, then setval()).

A SQLite source is read in one read transaction and written in the same
formats by Python (see the SQLite section below for its types). Its CSV
quotes every value, so NULL (an unquoted empty field) and "" stay apart.

Loading refuses a table that exists already, and commits nothing unless
every data member matches the manifest's SHA-256 and row count. It creates
each table with its columns' NOT NULL, constant defaults and generated
expressions, loads the rows (generated columns left to the database), then
adds the primary key and the identity columns, whose sequences continue
after the recorded value or the largest loaded one, whichever is further. An
archive without those keys (1.0) loads as it always did: types and primary
key only. Should the new database refuse a generation expression or a
default (one naming an enum that is made here as text), the table is made
as a 1.0 archive's would be, every value loaded as exported, and the log
says so.

Partitioned tables: a partitioned parent is exported as one table read
through the parent, so it holds the rows of every partition, and loads into
a new database as one plain table. An export is application data meant to
load anywhere (and to be merged back through the parent's name); partition
bounds are physical layout, which a dump-based restore keeps. Partitions are
not offered on their own (their parent holds their rows), and a plain table
is read with ONLY, so an inheritance parent's export does not repeat its
children's rows.
"""

import fnmatch
import hashlib
import json
import logging
import math
import os
import re
import sqlite3
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import psycopg
from psycopg import sql

from catalog.engine.dumpers import (
    CHUNK_SIZE,
    Dump,
    connect,
    describe_pg_error,
    first_line,
    normalize_conninfo,
    redact,
)
from catalog.engine.errors import Cancelled, CorruptionError, EngineError, SourceError, StorageError
from catalog.engine.storage import describe_os_error

logger = logging.getLogger(__name__)

EXPORT_FORMATS = {"jsonl": "JSON Lines", "csv": "CSV with header", "sql": "SQL INSERT statements"}
ARCHIVE_VERSION = 1
# 1.1: columns may carry not_null, default, identity and generated (optional
# keys; a 1.0 archive has none and loads as before).
ARCHIVE_MINOR_VERSION = 1
TOOL_VERSION = f"strongroom-export {ARCHIVE_VERSION}.{ARCHIVE_MINOR_VERSION} (psycopg {psycopg.__version__})"
MANIFEST_MEMBER = "export-manifest.json"
BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE

# How values are written, and read back: the same on both sides, whatever
# the servers' own defaults are.
SESSION = {
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "bytea_output": "hex",
    "extra_float_digits": "3",
    "client_encoding": "UTF8",
    "standard_conforming_strings": "on",
}
SNAPSHOT_NOTE = "All tables were read in one REPEATABLE READ, READ ONLY transaction: one consistent snapshot."
SQLITE_SNAPSHOT_NOTE = "All tables were read in one SQLite read transaction: one consistent state of the file."

# Rows per batch when loading JSON Lines (staged in a temporary table) or
# SQL statements (sent together), and a cap on the bytes held for SQL.
LOAD_BATCH_ROWS = 50_000
LOAD_BATCH_BYTES = 4 << 20

# Tables an export offers: plain tables and partitioned parents, not their
# partitions (the parent is read through, holding every partition's rows;
# see "Partitioned tables" above). dumpers.COUNT_TABLES is the dump side's
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


@dataclass(frozen=True)
class TableSpec:
    schema: str  # "public"… ; for SQLite sources always "main"
    name: str
    where: str = ""  # optional SQL condition, without the word WHERE

    @property
    def qualified(self):
        return f"{self.schema}.{self.name}"


def query_error(exc, params):
    """The database's own first line about a failed statement, password
    redacted. (describe_pg_error is for connections: it would read
    'column "database" does not exist' as a missing database.)"""
    return first_line(redact(str(exc), params)) or "The statement failed"


def is_sqlite_source(conninfo):
    return isinstance(conninfo, (str, os.PathLike))


def identifier(table):
    return sql.Identifier(table.schema, table.name)


def member_stem(schema, name):
    def safe(part):
        return part.replace("%", "%25").replace("/", "%2F")

    return f"tables/{safe(schema)}.{safe(name)}"


def list_tables(conninfo):
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
                query = query.replace("pg_partition_tree(c.oid)", "(SELECT NULL::regclass AS relid, true AS isleaf WHERE false)")
            found = conn.execute(query).fetchall()
            columns = {}
            for oid, column, type_name, _create_as in conn.execute(COLUMNS, [[row[2] for row in found]]).fetchall():
                columns.setdefault(oid, []).append({"name": column, "type": type_name})
    except psycopg.Error as exc:
        raise SourceError(describe_pg_error(exc, params))
    tables = []
    for schema, name, oid, reltuples, partitions in found:
        table = {"schema": schema, "name": name, "columns": columns.get(oid, []),
                 "rows_estimate": int(reltuples) if reltuples >= 0 else None}
        if partitions is not None:
            table["partitions"] = partitions  # a partitioned parent: how many leaf partitions it reads through
        tables.append(table)
    return tables


def match_tables(tables, pattern):
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


def filter_problem(text, sqlite=False):
    """Why a row filter cannot stand as one condition between the WHERE ( and
    ) the export puts around it, or "" when it can.

    The filter is SQL text pasted between those parentheses, so a ")" of its
    own could close them: "id < 10) OR (true" is valid SQL, and selects every
    row. Read as the server reads it, outside quoted text and identifiers
    every ")" must close a "(" of the filter's own and every "(" must be
    closed; and nothing may change where quoted text or the statement ends as
    this reading would not see it: no ";", no comment, no dollar quote, no
    E'…' string (its backslashes escape quotes). The exports set
    standard_conforming_strings, so plain '…' strings follow the same rules
    here and on the server."""
    quotes = "'\"`[" if sqlite else "'\""
    depth, opened_at, position = 0, [], 0
    while position < len(text):
        char = text[position]
        if char in quotes:
            if char == "'" and not sqlite and escape_string_prefix(text, position):
                return (f"the E'…' string at character {position} is not accepted here; "
                        "write it in standard quotes ('it''s')")
            close = text.find("]", position + 1) + 1 if char == "[" else quoted_end(text, position)
            if not close:
                return f"the quote at character {position + 1} is never closed"
            position = close
            continue
        if char == "(":
            depth += 1
            opened_at.append(position)
        elif char == ")":
            if depth == 0:
                return (f"the ')' at character {position + 1} closes a parenthesis the filter did not open, "
                        "which would take the condition out of the export's own")
            depth -= 1
            opened_at.pop()
        elif char == ";":
            return "it holds a ';': a filter is one condition, not statements"
        elif text.startswith(("--", "/*"), position):
            return "it holds a comment (-- or /*), which could hide the rest of the query"
        elif char == "$" and not sqlite:
            return "it holds a '$': dollar quoting is not accepted in a filter"
        position += 1
    if depth:
        return f"the '(' at character {opened_at[-1] + 1} is never closed"
    return ""


def escape_string_prefix(text, quote_at):
    """Whether the quote at `quote_at` opens an E'…' string: the word right
    before it is E (not the end of a longer word such as date'2026-01-01')."""
    start = quote_at
    while start and (text[start - 1].isalnum() or text[start - 1] in "_$"):
        start -= 1
    return text[start:quote_at].lower() == "e"


def check_where(conn, table, params):
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
        raise SourceError(f"The row filter for {table.qualified} is not valid: {query_error(exc, params)}")


def validate_where(conninfo, table):
    """Runs SELECT … FROM table WHERE <where> LIMIT 0 in a read-only
    transaction; raises SourceError with the database's own message
    (password redacted) when it is wrong."""
    if is_sqlite_source(conninfo):
        conn = sqlite_connect(str(conninfo))
        try:
            describe_sqlite_table(conn, table)
            check_sqlite_where(conn, table)
        finally:
            conn.close()
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
            raise SourceError(describe_pg_error(exc, params))
        finally:
            if not conn.closed:
                conn.execute("ROLLBACK")


def describe_table(conn, table):
    """Columns (with what a new database needs to make them again) and
    primary key of one table, as recorded in the archive."""
    found = conn.execute(FIND_TABLE, [table.schema, table.name]).fetchone()
    if found is None:
        raise SourceError(f"The source has no table {table.qualified}")
    oid, relkind = found
    columns = []
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
    for column, rule in zip(columns, rules):
        column.update(column_rules(rule))
    primary_key = [name for (name,) in conn.execute(PRIMARY_KEY, [oid]).fetchall()]
    description = {"schema": table.schema, "name": table.name, "where": table.where, "columns": columns, "primary_key": primary_key}
    if relkind == "p":
        description["partitioned"] = True
    return description


def column_rules(rule):
    """The archive's optional keys for one column (see the module's docstring)."""
    (_name, not_null, identity, generated, expression, tree,
     start, increment, minimum, maximum, cache, cycle, last_value) = rule
    found = {}
    if not_null:
        found["not_null"] = True
    if generated == "s":
        found["generated"] = "stored"
        found["expression"] = expression
    elif identity in ("a", "d") and increment is not None:
        found["identity"] = "always" if identity == "a" else "by default"
        found["sequence"] = {"start": start, "increment": increment, "minimum": minimum, "maximum": maximum,
                             "cache": cache, "cycle": cycle, "last_value": last_value}
    elif expression is not None and is_constant_tree(tree) and parse_constant(expression) is not None:
        found["default"] = expression
    return found


def is_constant_tree(tree):
    """Whether a default's node tree (pg_attrdef.adbin as text) is a literal
    under casts only. The tree prints constants as bytes, never as text, so
    a brace inside a value cannot pass for a node."""
    nodes = set(re.findall(r"\{([A-Z_]+)", tree or ""))
    formats = set(re.findall(r":funcformat (\d+)", tree or ""))
    return bool(nodes) and nodes <= CONSTANT_NODES and formats <= CAST_FORMATS


# A constant default as pg_get_expr() writes it: a literal, possibly in
# parentheses and cast ('-1'::integer, ('5'::text)::integer). The loader
# accepts nothing else, so an archive cannot put an expression into CREATE
# TABLE; each cast's type is also checked with to_regtype() there.
CONSTANT_LITERAL = re.compile(r"NULL|TRUE|FALSE|[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|'(?:[^']|'')*'", re.IGNORECASE)


def parse_constant(text):
    """(literal, [cast type names, innermost first]) of a constant default,
    or None when the text is anything else."""

    def operand(position):
        if text.startswith("(", position):
            inner = operand(position + 1)
            if inner is None or not text.startswith(")", inner[2]):
                return None
            literal, casts, position = inner[0], inner[1], inner[2] + 1
        else:
            match = CONSTANT_LITERAL.match(text, position)
            if match is None:
                return None
            literal, casts, position = match.group(), [], match.end()
        while text.startswith("::", position):
            end = type_name_end(text, position + 2)
            if end is None:
                return None
            casts.append(text[position + 2:end].strip())
            position = end
        return literal, casts, position

    if not isinstance(text, str) or len(text) > 10_000:
        return None
    parsed = operand(0)
    if parsed is None or parsed[2] != len(text):
        return None
    return parsed[0], parsed[1]


def type_name_end(text, start):
    """Where a type name after "::" ends: at the next "::", at a ")" it did
    not open, or at the end; None if it holds anything no type name has."""
    depth, position = 0, start
    while position < len(text):
        char = text[position]
        if char == '"':
            close = quoted_end(text, position)
            if close is None:
                return None
            position = close
            continue
        if text.startswith("::", position) and depth == 0:
            break
        if char == "(":
            depth += 1
        elif char == ")":
            if depth == 0:
                break
            depth -= 1
        elif not (char.isalnum() or char in "_$ .,[]"):
            return None
        position += 1
    if depth or not text[start:position].strip():
        return None
    return position


def quoted_end(text, start):
    """The position after a '…' or "…" that starts at `start` (the quote
    doubled inside it), or None if it does not end."""
    quote, position = text[start], start + 1
    while True:
        close = text.find(quote, position)
        if close == -1:
            return None
        if text.startswith(quote * 2, close):
            position = close + 2
            continue
        return close + 1


def is_balanced_expression(text):
    """Whether a generation expression can go between the loader's own
    parentheses in GENERATED ALWAYS AS (…) and stay inside them: its
    parentheses balance outside quotes, and it has no statement separator,
    comment, dollar quote or escaped string (E'…', whose quotes follow other
    rules). pg_get_expr() writes none of those with standard_conforming_strings
    on. The statement is also sent on its own (prepared), never with another."""
    if not isinstance(text, str) or not text.strip() or len(text) > 100_000:
        return False
    depth, position = 0, 0
    while position < len(text):
        char = text[position]
        if char in "'\"":
            if char == "'" and position and (text[position - 1].isalnum() or text[position - 1] in "_&$"):
                return False  # E'…', U&'…', B'…' and the like
            close = quoted_end(text, position)
            if close is None:
                return False
            position = close
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                return False
        elif char in ";\\$" or text.startswith("--", position) or text.startswith("/*", position):
            return False
        position += 1
    return depth == 0


def export_query(table, description, fmt):
    """The COPY statement that writes one table's rows in `fmt`.

    The filter goes in as WHERE (<where>) after check_where has made sure it
    cannot close those parentheses and run it as one prepared statement; the
    whole export runs in a READ ONLY transaction, so a filter that calls a
    function that writes fails instead of writing."""
    names = [column["name"] for column in description["columns"]]
    where = sql.SQL(" WHERE ({})").format(sql.SQL(table.where)) if table.where.strip() else sql.SQL("")
    # A partitioned parent is read through (its partitions hold the rows);
    # any other table with ONLY, so an inheritance parent's export does not
    # repeat its children's rows, which are tables of their own.
    source = identifier(table) if description.get("partitioned") else sql.SQL("ONLY {}").format(identifier(table))
    if fmt == "jsonl":
        picks = sql.SQL(", ").join(
            sql.SQL("{0}::text AS {0}").format(sql.Identifier(column["name"])) if column.get("as_text") else sql.Identifier(column["name"])
            for column in description["columns"]
        )
        select = sql.SQL("SELECT {} FROM {}{}").format(picks, source, where)
        # t.* rather than t: a column named t would otherwise be taken for the row.
        return sql.SQL("COPY (SELECT row_to_json(t.*)::text FROM ({}) AS t) TO STDOUT").format(select)
    select = sql.SQL("SELECT {} FROM {}{}").format(sql.SQL(", ").join(map(sql.Identifier, names)), source, where)
    if fmt == "csv":
        return sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER true)").format(select)
    prefix = sql.SQL("INSERT INTO {} ({}) VALUES (").format(identifier(table), sql.SQL(", ").join(map(sql.Identifier, names)))
    values = sql.SQL(" || ', ' || ").join(sql.SQL("quote_nullable(t.{})").format(sql.Identifier(name)) for name in names)
    return sql.SQL("COPY (SELECT {} || {} || ');' FROM ({}) AS t) TO STDOUT").format(
        sql.Literal(prefix.as_string(None)), values, select
    )


def tar_header(name, size, mtime):
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o644
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def padding(size):
    return b"\0" * (-size % BLOCK)


class ExportDump(Dump):
    """Streams an export archive of `tables` as chunks of bytes. Same
    interface as dumpers.PostgresDump, plus export_manifest (complete once
    iteration ends), and current_table / spooled_bytes for progress while a
    table is being read. Use as a context manager.

    Each table's rows are spooled to a temporary file first (a tar header
    needs the size before the data), hashed and counted as they are written,
    then streamed out and the file deleted: memory stays at a few chunks and
    the disk holds at most one table's export."""

    def __init__(self, conninfo, tables, fmt, chunk_size=CHUNK_SIZE, tmp_dir=None):
        if fmt not in EXPORT_FORMATS:
            raise EngineError(f"Unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
        super().__init__()
        self.sqlite_path = str(conninfo) if is_sqlite_source(conninfo) else None
        self.params = {} if self.sqlite_path else normalize_conninfo(conninfo)
        self.tables = list(tables)
        self.fmt = fmt
        self.chunk_size = chunk_size
        self.tmp_dir = tmp_dir
        self.server_version = ""
        self.tool_version = TOOL_VERSION
        self.export_manifest = {}
        # Live while a table is read into its spool file, when no chunk
        # moves raw_bytes yet: which table, and how many bytes so far.
        self.current_table = ""
        self.spooled_bytes = 0
        self._descriptions = None
        self._snapshot_taken_at = ""
        self._conn = None
        self._spool_path = None

    def start(self):
        """Opens the snapshot and records each table's columns and primary
        key in it; checks every row filter. Rows committed by others after
        this are not in the export."""
        if not self.tables:
            raise EngineError("An export needs at least one table")
        seen = set()
        for table in self.tables:
            if table.qualified in seen:
                raise EngineError(f"Table {table.qualified} is listed twice")
            seen.add(table.qualified)
        if self.sqlite_path:
            self._start_sqlite()
            return
        with self._lock:
            self.check_cancelled()
            self._conn = connect(self.params)
        try:
            # autocommit first, so that our BEGIN opens the transaction with
            # its isolation level rather than an implicit one.
            self._conn.autocommit = True
            self._conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            for name, value in SESSION.items():
                self._conn.execute(sql.SQL("SET LOCAL {} = {}").format(sql.SQL(name), sql.Literal(value)))
            self.server_version, snapshot_at = self._conn.execute("SELECT current_setting('server_version'), now()").fetchone()
            self._snapshot_taken_at = snapshot_at.isoformat()
            descriptions = []
            for table in self.tables:
                description = describe_table(self._conn, table)
                check_where(self._conn, table, self.params)
                if self.fmt == "jsonl":
                    for column in description["columns"]:
                        if column["type"] in JSON_TYPES or column.get("create_as") in (*JSON_TYPES, *AS_TEXT):
                            column["as_text"] = True
                descriptions.append(description)
            self._descriptions = descriptions
        except psycopg.Error as exc:
            self._raise_source_error(exc)

    def _start_sqlite(self):
        with self._lock:
            self.check_cancelled()
            self._conn = sqlite_connect(self.sqlite_path)
        try:
            # A read transaction: every table is read from the same state of
            # the file (WAL keeps writers going; a rollback journal makes
            # them wait until the export ends).
            self._conn.execute("BEGIN")
            self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            self.server_version = f"SQLite {sqlite3.sqlite_version}"
            self._snapshot_taken_at = datetime.now(timezone.utc).isoformat()
            descriptions = []
            for table in self.tables:
                descriptions.append(describe_sqlite_table(self._conn, table))
                check_sqlite_where(self._conn, table)
            self._descriptions = descriptions
        except sqlite3.Error as exc:
            self._raise_source_error(exc)

    def _raise_source_error(self, exc):
        self.check_cancelled()
        if isinstance(exc, sqlite3.Error):
            raise SourceError(f"Cannot read SQLite database {self.sqlite_path}: {exc}")
        raise SourceError(describe_pg_error(exc, self.params))

    def __iter__(self):
        if self._descriptions is None:
            self.start()
        started = time.time()
        entries = {}
        for table, description in zip(self.tables, self._descriptions):
            stem = member_stem(table.schema, table.name)
            columns_member = f"{stem}.columns.json"
            member = f"{stem}.{self.fmt}"
            yield from self._member(columns_member, json.dumps(description, ensure_ascii=False, indent=2).encode())
            self.current_table = table.qualified
            rows, size, digest = self._spool(table, description)
            try:
                yield from self._spooled_member(member, size, started)
            finally:
                self._drop_spool()
            self.table_counts[table.qualified] = rows
            entries[table.qualified] = {
                "schema": table.schema,
                "name": table.name,
                "member": member,
                "columns_member": columns_member,
                "columns": description["columns"],
                "primary_key": description["primary_key"],
                "where": table.where,
                "rows": rows,
                "size": size,
                "sha256": digest,
            }
        manifest = {
            "archive_version": ARCHIVE_VERSION,
            "archive_minor_version": ARCHIVE_MINOR_VERSION,
            "format": self.fmt,
            "format_name": EXPORT_FORMATS[self.fmt],
            "created_at": datetime.now(timezone.utc).isoformat(),
            "snapshot_taken_at": self._snapshot_taken_at,
            "server_version": self.server_version,
            "tool_version": self.tool_version,
            "snapshot": SQLITE_SNAPSHOT_NOTE if self.sqlite_path else SNAPSHOT_NOTE,
            "session": {} if self.sqlite_path else SESSION,
            "tables": entries,
        }
        yield from self._member(MANIFEST_MEMBER, json.dumps(manifest, ensure_ascii=False, indent=2).encode())
        # Two zero blocks end a tar archive; tar pads it to whole records.
        end = b"\0" * (2 * BLOCK)
        end += b"\0" * (-(self.raw_bytes + len(end)) % RECORD)
        yield self._count(end)
        self.export_manifest = manifest
        self._finish()

    def _count(self, data):
        self.raw_bytes += len(data)
        return data

    def _member(self, name, content):
        yield self._count(tar_header(name, len(content), time.time()) + content + padding(len(content)))

    def _spooled_member(self, name, size, mtime):
        yield self._count(tar_header(name, size, mtime))
        with open(self._spool_path, "rb") as spooled:
            while chunk := spooled.read(self.chunk_size):
                self.check_cancelled()
                yield self._count(chunk)
        if padding(size):
            yield self._count(padding(size))

    def _spool(self, table, description):
        """Writes the table's rows to a temporary file; returns (rows, size,
        sha256 of the bytes)."""
        fd, self._spool_path = tempfile.mkstemp(prefix="strongroom-export-", suffix=f".{self.fmt}", dir=self.tmp_dir)
        digest = hashlib.sha256()
        size = rows = 0
        try:
            with os.fdopen(fd, "wb", buffering=CHUNK_SIZE) as out:

                def write(data):
                    nonlocal size
                    self.check_cancelled()
                    digest.update(data)
                    size += len(data)
                    self.spooled_bytes += len(data)
                    out.write(data)

                if self.sqlite_path:
                    for data in sqlite_rows(self._conn, table, description, self.fmt):
                        write(data)
                        rows += 1
                    if self.fmt == "csv":
                        rows -= 1  # the header line
                    return rows, size, digest.hexdigest()
                cursor = self._conn.cursor()
                with cursor.copy(export_query(table, description, self.fmt)) as copy:
                    if self.fmt == "csv":
                        for data in copy:
                            write(data)
                    else:
                        # One text value per row: psycopg undoes COPY's
                        # escaping, and the row ends with a line break.
                        copy.set_types(["text"])
                        for (line,) in copy.rows():
                            write(line.encode() + b"\n")
                            rows += 1
                if self.fmt == "csv":
                    rows = cursor.rowcount
        except (psycopg.Error, sqlite3.Error) as exc:
            self._drop_spool()
            self._raise_source_error(exc)
        except OSError as exc:  # the spool's disk is full (or gone)
            self._drop_spool()
            where = f"{self.tmp_dir or tempfile.gettempdir()}, where the export spools each table"
            raise StorageError(describe_os_error(exc, where)) from exc
        except BaseException:
            self._drop_spool()
            raise
        if self._cancelled.is_set():
            self._drop_spool()
            raise Cancelled("Cancelled by request")
        return rows, size, digest.hexdigest()

    def _drop_spool(self):
        path, self._spool_path = self._spool_path, None
        if path and os.path.exists(path):
            os.unlink(path)

    def _finish(self):
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.execute("ROLLBACK")  # read only: nothing to keep
                except (psycopg.Error, sqlite3.Error):
                    pass

    def cancel(self):
        """Stops the export and any query in flight; safe from another thread."""
        self._cancelled.set()
        with self._lock:
            if self._conn is not None:
                try:
                    if self.sqlite_path:
                        self._conn.interrupt()
                    else:
                        self._conn.cancel_safe(timeout=5)
                except Exception:
                    pass

    def close(self):
        self._drop_spool()
        if self._conn is not None:
            self._conn.close()


# --- SQLite sources ------------------------------------------------------------------
#
# SQLite has no COPY and no row_to_json: its rows are written here, in the
# same three formats and with the same conventions, so that load_export reads
# them like a PostgreSQL export. The schema is always "main". Declared types
# are SQLite's own words; each column's "create_as" is the PostgreSQL type it
# is loaded as, from SQLite's affinity rules: INT → bigint, REAL/FLOA/DOUB →
# double precision, BLOB → bytea, BOOL → boolean, DECIMAL/NUMERIC → numeric,
# anything else (TEXT, DATE, DATETIME, JSON, no type at all) → text, which
# keeps the value exactly as SQLite holds it.


def sqlite_connect(path):
    if not os.path.isfile(path):
        raise SourceError(f"SQLite database not found: {path}")
    try:
        # Read only at the file level: a row filter cannot write whatever it says.
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise SourceError(f"Cannot open SQLite database {path}: {exc}")
    return conn


def sqlite_name(name):
    return '"' + name.replace('"', '""') + '"'


def postgres_type_for(declared):
    words = declared.upper()
    if "INT" in words:
        return "bigint"
    if any(word in words for word in ("REAL", "FLOA", "DOUB")):
        return "double precision"
    if "BLOB" in words:
        return "bytea"
    if "BOOL" in words:
        return "boolean"
    if "DECIMAL" in words or "NUMERIC" in words:
        return "numeric"
    return "text"


def list_sqlite_tables(path):
    conn = sqlite_connect(path)
    try:
        names = [name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )]
        tables = []
        for name in names:
            columns = [{"name": column[1], "type": column[2]} for column in conn.execute(f"PRAGMA table_info({sqlite_name(name)})")]
            rows = conn.execute(f"SELECT count(*) FROM {sqlite_name(name)}").fetchone()[0]
            tables.append({"schema": "main", "name": name, "columns": columns, "rows_estimate": rows})
        return tables
    except sqlite3.Error as exc:
        raise SourceError(f"Cannot read SQLite database {path}: {exc}")
    finally:
        conn.close()


def describe_sqlite_table(conn, table):
    if table.schema != "main":
        raise SourceError(f"A SQLite database has only the schema main, not {table.schema}")
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?", [table.name]
    ).fetchone()
    if found is None:
        raise SourceError(f"The source has no table {table.qualified}")
    info = conn.execute(f"PRAGMA table_info({sqlite_name(table.name)})").fetchall()
    if not info:
        raise SourceError(f"Table {table.qualified} has no columns: there is nothing to export")
    columns = []
    for _, name, declared, not_null, default, _pk in info:
        column = {"name": name, "type": declared, "create_as": postgres_type_for(declared)}
        if not_null:
            column["not_null"] = True
        # SQLite keeps a default's text as declared: recorded when it is a
        # plain literal (no casts in SQLite), like a PostgreSQL constant.
        parsed = parse_constant(default) if default is not None else None
        if parsed is not None and not parsed[1]:
            column["default"] = default
        columns.append(column)
    primary_key = [row[1] for row in sorted((row for row in info if row[5]), key=lambda row: row[5])]
    return {"schema": table.schema, "name": table.name, "where": table.where, "columns": columns, "primary_key": primary_key}


def check_sqlite_where(conn, table):
    """The filter checked as one condition (filter_problem) and run with
    LIMIT 0; Python's sqlite3 runs one statement at a time, so a second
    statement could not run either way."""
    if not table.where.strip():
        return
    if problem := filter_problem(table.where, sqlite=True):
        raise SourceError(f"The row filter for {table.qualified} must be one condition: {problem}.")
    try:
        conn.execute(f"SELECT 1 FROM {sqlite_name(table.name)} WHERE ({table.where}) LIMIT 0").fetchall()
    except (sqlite3.Error, sqlite3.Warning) as exc:
        raise SourceError(f"The row filter for {table.qualified} is not valid: {exc}")


def sqlite_text(value):
    """A SQLite value as the text PostgreSQL reads back into its column."""
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    return str(value)


def csv_field(value):
    # NULL is the unquoted empty field; every value is quoted, so "" is an empty string.
    if value is None:
        return ""
    return '"' + sqlite_text(value).replace('"', '""') + '"'


def json_value(value):
    if value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return sqlite_text(value)


def sql_literal(value):
    """What quote_nullable() would write for the value's text."""
    if value is None:
        return "NULL"
    text = sqlite_text(value).replace("'", "''")
    if "\\" in text:
        return "E'" + text.replace("\\", "\\\\") + "'"
    return "'" + text + "'"


def sqlite_rows(conn, table, description, fmt):
    """The table's rows as encoded lines (for csv, the header line first)."""
    names = [column["name"] for column in description["columns"]]
    where = f" WHERE ({table.where})" if table.where.strip() else ""
    cursor = conn.execute(f"SELECT {', '.join(map(sqlite_name, names))} FROM {sqlite_name(table.name)}{where}")
    if fmt == "csv":
        yield (",".join(csv_field(name) for name in names) + "\n").encode()
    elif fmt == "sql":
        prefix = sql.SQL("INSERT INTO {} ({}) VALUES (").format(
            identifier(table), sql.SQL(", ").join(map(sql.Identifier, names))
        ).as_string(None)
    while batch := cursor.fetchmany(1000):
        for row in batch:
            if fmt == "csv":
                line = ",".join(map(csv_field, row))
            elif fmt == "jsonl":
                line = json.dumps(dict(zip(names, map(json_value, row))), ensure_ascii=False, separators=(",", ":"))
            else:
                line = prefix + ", ".join(map(sql_literal, row)) + ");"
            yield (line + "\n").encode()


class HashingReader:
    """Reads a member sequentially, hashing and counting every byte."""

    def __init__(self, fileobj):
        self.fileobj = fileobj
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size=CHUNK_SIZE):
        data = self.fileobj.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data

    def lines(self):
        """The member's lines without their line breaks. Pieces of a line
        longer than a chunk are joined once, not re-copied chunk by chunk."""
        parts = []
        while data := self.read():
            pieces = data.split(b"\n")
            if len(pieces) == 1:
                parts.append(data)
                continue
            parts.append(pieces[0])
            yield b"".join(parts)
            yield from pieces[1:-1]
            parts = [pieces[-1]]
        tail = b"".join(parts)
        if tail:
            yield tail

    def drain(self):
        while self.read():
            pass


# A statement's VALUES list as written by quote_nullable(): NULL, '…' (a
# quote doubled) or E'…' (a quote doubled, a backslash doubled). Anything
# else in an SQL member is refused before it reaches the server.
LITERAL = r"(?:NULL|'[^']*(?:''[^']*)*'|E'[^'\\]*(?:(?:\\\\|'')[^'\\]*)*')"
VALUES_LIST = re.compile(rf"{LITERAL}(?:, {LITERAL})*\);", re.DOTALL)


def insert_statements(reader, prefix, qualified):
    """The SQL member's statements, each checked to be `prefix` followed by a
    VALUES list of literals (CorruptionError otherwise)."""
    statement = ""
    for line in reader.lines():
        statement += line.decode() if not statement else "\n" + line.decode()
        if not statement.endswith(");") or statement.count("'", len(prefix)) % 2:
            continue  # a line break inside a literal
        if not statement.startswith(prefix) or not VALUES_LIST.fullmatch(statement, len(prefix)):
            raise CorruptionError(f"The SQL member for {qualified} has a statement that is not one of its INSERTs")
        yield statement
        statement = ""
    if statement.strip():
        raise CorruptionError(f"The SQL member for {qualified} ends in the middle of a statement")


class ExportLoader:
    """Loads an export archive into a PostgreSQL connection (one transaction,
    committed by the caller) and checks it against its manifest. With
    wanted=[] it loads nothing and needs no connection: it only checks."""

    # What a member that fails to load raises: the reading goes on, so that
    # the manifest can tell damage from a real failure.
    load_errors = (psycopg.Error,)

    def __init__(self, conn, params, wanted):
        self.conn = conn
        self.params = params
        self.wanted = wanted
        self.seen = {}  # qualified name → what this reading found
        self.loaded = {}
        self.load_error = None
        self.manifest = None
        self.pending = None  # the description waiting for its data member

    def run(self, fileobj):
        try:
            with tarfile.open(fileobj=fileobj, mode="r|", encoding="utf-8") as archive:
                for member in archive:
                    self._member(archive, member)
        except tarfile.TarError as exc:
            raise CorruptionError(f"The export is not a readable tar archive: {exc}")
        except EOFError:
            raise CorruptionError("The export ends in the middle of a member: it is truncated")
        self._check_manifest()
        if self.load_error:
            raise EngineError(self.load_error)
        if self.wanted is not None:
            missing = sorted(set(self.wanted) - set(self.seen))
            if missing:
                raise EngineError(f"The export has no table {', '.join(missing)}")
        return self.loaded

    def _member(self, archive, member):
        if self.manifest is not None:
            raise CorruptionError(f"The export has a member {member.name} after its manifest")
        content = archive.extractfile(member) if member.isfile() else None
        if content is None:
            raise CorruptionError(f"The export has an unexpected member {member.name}")
        if member.name == MANIFEST_MEMBER:
            self.manifest = self._json(member.name, content.read())
        elif member.name.startswith("tables/") and member.name.endswith(".columns.json"):
            if self.pending is not None:
                raise CorruptionError(f"The export has no rows for table {self._qualified(self.pending)}")
            self.pending = self._json(member.name, content.read())
            self.pending["_member"] = member.name
            self._prepare(self.pending)
        elif self.pending is not None and member.name.startswith(self.pending["_member"][: -len("columns.json")]):
            self._data(member.name, HashingReader(content))
        else:
            raise CorruptionError(f"The export has an unexpected member {member.name}")

    def _json(self, name, data):
        try:
            document = json.loads(data)
        except ValueError:
            raise CorruptionError(f"Member {name} of the export is not valid JSON")
        if not isinstance(document, dict):
            raise CorruptionError(f"Member {name} of the export is not a JSON object")
        return document

    def _qualified(self, description):
        return f"{description.get('schema')}.{description.get('name')}"

    def _selected(self, description):
        return self.load_error is None and (self.wanted is None or self._qualified(description) in self.wanted)

    def _prepare(self, description):
        """Creates the table, unless it is skipped; refuses one that exists."""
        qualified = self._qualified(description)
        self._check_description(qualified, description)
        if not self._selected(description):
            return
        if self._table_exists(description):
            raise EngineError(f"Table {qualified} already exists in the target database; an export is loaded only into new tables")
        self._create_table(qualified, description)

    def _table_exists(self, description):
        return self.conn.execute(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
            [description["schema"], description["name"]],
        ).fetchone() is not None

    def _create_table(self, qualified, description):
        """CREATE TABLE with each column's type, NOT NULL, constant default
        and generation expression. Identity and the primary key come after
        the rows (_finish_table): the rows then go in as they are, without
        OVERRIDING SYSTEM VALUE, and the key is built once."""
        table = sql.Identifier(description["schema"], description["name"])
        full, without_generated, bare = [], [], []
        has_defaults = False
        for column in description["columns"]:
            type_name = column.get("create_as") or column["type"]
            if not self._known_type(type_name):
                # Read on: the manifest tells damage from a type this
                # database lacks (an extension's, say).
                self._abandon(f"Column {column['name']} of {qualified} has a type this database does not know: {type_name[:100]}")
                return
            definition = sql.SQL("{} {}").format(sql.Identifier(column["name"]), sql.SQL(type_name))
            not_null = sql.SQL(" NOT NULL" if column.get("not_null") else "")
            default = self._default(qualified, column)
            has_defaults = has_defaults or default is not None
            default = sql.SQL(" DEFAULT {}").format(sql.SQL(default)) if default is not None else sql.SQL("")
            generated = sql.SQL("")
            if column.get("generated"):
                # Checked by _check_description to stay inside these parentheses.
                generated = sql.SQL(" GENERATED ALWAYS AS ({}) STORED").format(sql.SQL(column["expression"]))
            full.append(sql.Composed([definition, generated, default, not_null]))
            without_generated.append(sql.Composed([definition, default, not_null]))
            bare.append(sql.Composed([definition, not_null]))
        self.conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(description["schema"])))
        # Should this database refuse a generation expression (one naming an
        # enum made here as text, say) or a default (a SQLite default that
        # PostgreSQL reads otherwise), the table is made without them, at
        # worst as a 1.0 archive made it, and every value is loaded as
        # exported, rather than losing the whole load.
        generated = [column["name"] for column in description["columns"] if column.get("generated")]
        # Each attempt: the columns, which of them are computed, and what it leaves out.
        attempts = [(full, generated, "")]
        if generated:
            attempts.append((without_generated, [], "generation expressions"))
        if has_defaults:
            attempts.append((bare, [], "defaults"))
        for number, (columns, computed, _) in enumerate(attempts):
            try:
                with self.conn.transaction():
                    # Prepared: one statement, whatever the expressions say.
                    self.conn.execute(sql.SQL("CREATE TABLE {} ({})").format(table, sql.SQL(", ").join(columns)), prepare=True)
            except psycopg.Error as exc:
                if number == len(attempts) - 1:
                    raise
                logger.warning("Table %s of the export is created without its %s, which this database refused: %s",
                               qualified, attempts[number + 1][2], self._error_text(exc))
                continue
            description["_generated"] = computed
            return

    def _default(self, qualified, column):
        """The column's constant default as this database should read it, or None."""
        if column.get("default") is None:
            return None
        literal, casts = parse_constant(column["default"])  # checked by _check_description
        if column.get("create_as"):
            # The column's own type (an enum, a domain, a SQLite declaration)
            # is not made here: the bare literal goes into the created type.
            casts = []
        for cast in casts:
            if not self._known_type(cast):
                logger.warning("Column %s of %s keeps no default: this database has no type %s",
                               column["name"], qualified, cast[:100])
                return None
        return literal + "".join(f"::{cast}" for cast in casts)

    def _known_type(self, type_name):
        """to_regtype() parses the text as exactly one type name, so a type
        written into CREATE TABLE cannot carry anything else."""
        try:
            with self.conn.transaction():
                return self.conn.execute("SELECT to_regtype(%s)", [type_name]).fetchone()[0] is not None
        except psycopg.Error:
            return False

    def _check_description(self, qualified, description):
        def text(value):
            return isinstance(value, str) and value != ""

        columns = description.get("columns")
        well_formed = (
            text(description.get("schema"))
            and text(description.get("name"))
            and isinstance(description.get("where", ""), str)
            and isinstance(columns, list)
            and columns
            # A SQLite column may be declared without a type (""); it then has create_as.
            and all(isinstance(c, dict) and text(c.get("name")) and isinstance(c.get("type"), str) for c in columns)
            and all(isinstance(c.get("create_as", ""), str) and (c["type"] or c.get("create_as")) for c in columns)
            and isinstance(description.get("primary_key", []), list)
            and all(text(name) for name in description.get("primary_key", []))
            and all(well_formed_rules(c) for c in columns)
        )
        if not well_formed:
            raise CorruptionError(f"The export's description of table {qualified} is damaged")

    def _data(self, name, reader):
        description, self.pending = self.pending, None
        qualified = self._qualified(description)
        fmt = name.rsplit(".", 1)[-1]
        rows = None
        if self._selected(description):
            try:
                rows = self._load(description, fmt, reader)
            except self.load_errors as exc:
                # Damage shows as a parse error long before the hash can be
                # compared: read on, and let the manifest tell which it was.
                self._abandon(f"Could not load table {qualified}: {self._error_text(exc)}")
        reader.drain()
        self.seen[qualified] = {"description": description, "member": name, "format": fmt, "rows": rows,
                                "size": reader.size, "sha256": reader.digest.hexdigest()}

    def _abandon(self, reason):
        """Nothing of this load will be committed; the reading goes on to the manifest."""
        self.conn.rollback()
        self.loaded = {}
        self.load_error = reason

    def _error_text(self, exc):
        return query_error(exc, self.params)

    def _load(self, description, fmt, reader):
        qualified = self._qualified(description)
        table = sql.Identifier(description["schema"], description["name"])
        # A generated column is computed by this database: its exported
        # values are read past, never written (PostgreSQL refuses them).
        generated = set(description.get("_generated") or ())
        columns = [column for column in description["columns"] if column["name"] not in generated]
        names = sql.SQL(", ").join(sql.Identifier(column["name"]) for column in columns)
        if fmt == "csv":
            rows = self._load_csv(description, table, names, reader, staged=bool(generated))
        elif fmt == "jsonl":
            rows = self._load_jsonl(columns, table, names, reader)
        elif fmt == "sql":
            rows = self._load_sql(description, table, reader, generated)
        else:
            raise CorruptionError(f"The export's member for {qualified} has an unknown format: {fmt}")
        self._finish_table(table, description)
        self.loaded[qualified] = rows
        return rows

    def _finish_table(self, table, description):
        """The primary key, then each identity column with its sequence
        continuing past the recorded value and past every loaded one."""
        primary_key = description.get("primary_key") or []
        if primary_key:
            self.conn.execute(
                sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(table, sql.SQL(", ").join(map(sql.Identifier, primary_key)))
            )
        for column in description["columns"]:
            if column.get("identity") and column["name"] not in (description.get("_generated") or ()):
                self._add_identity(table, column)

    def _add_identity(self, table, column):
        name = sql.Identifier(column["name"])
        sequence = column.get("sequence") or {}
        options = [
            sql.SQL(f"{clause} {{}}").format(sql.Literal(sequence[key]))
            for key, clause in (("start", "START WITH"), ("increment", "INCREMENT BY"), ("minimum", "MINVALUE"),
                                ("maximum", "MAXVALUE"), ("cache", "CACHE"))
            if sequence.get(key) is not None
        ]
        if sequence.get("cycle") is not None:
            options.append(sql.SQL("CYCLE" if sequence["cycle"] else "NO CYCLE"))
        self.conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} ADD GENERATED {} AS IDENTITY{}").format(
            table, name, sql.SQL("ALWAYS" if column["identity"] == "always" else "BY DEFAULT"),
            sql.SQL(" ({})").format(sql.SQL(" ").join(options)) if options else sql.SQL(""),
        ))
        rising = (sequence.get("increment") or 1) > 0
        seq, low, high, furthest = self.conn.execute(
            sql.SQL("SELECT s.seqrelid::regclass::text, s.seqmin, s.seqmax, (SELECT {}({}) FROM {}) "
                    "FROM pg_sequence s WHERE s.seqrelid = pg_get_serial_sequence(%s, %s)::regclass").format(
                sql.SQL("max" if rising else "min"), name, table),
            [table.as_string(self.conn), column["name"]],
        ).fetchone()
        reached = [value for value in (sequence.get("last_value"), furthest) if value is not None]
        if reached:
            value = max(reached) if rising else min(reached)
            self.conn.execute("SELECT setval(%s::regclass, %s, true)", [seq, min(max(value, low), high)])

    def _load_csv(self, description, table, names, reader, staged):
        if staged:
            # COPY cannot skip a field of its input: the rows go into a
            # temporary copy of the table (LIKE makes generated columns
            # plain), then across without the generated columns.
            every = sql.SQL(", ").join(sql.Identifier(column["name"]) for column in description["columns"])
            self.conn.execute(sql.SQL("CREATE TEMPORARY TABLE strongroom_export_rows (LIKE {}) ON COMMIT DROP").format(table))
            target = sql.SQL("strongroom_export_rows ({})").format(every)
        else:
            target = sql.SQL("{} ({})").format(table, names)
        cursor = self.conn.cursor()
        with cursor.copy(sql.SQL("COPY {} FROM STDIN WITH (FORMAT csv, HEADER true)").format(target)) as copy:
            while data := reader.read():
                copy.write(data)
        if not staged:
            return cursor.rowcount
        rows = self.conn.execute(
            sql.SQL("INSERT INTO {0} ({1}) SELECT {1} FROM strongroom_export_rows").format(table, names)
        ).rowcount
        self.conn.execute("DROP TABLE strongroom_export_rows")
        return rows

    def _load_jsonl(self, columns, table, names, reader):
        """COPY the lines into a temporary table (fast, in C), then let
        PostgreSQL turn them into rows with json_populate_record(); a batch
        at a time, so the temporary table stays small."""
        picks = sql.SQL(", ").join(
            sql.SQL("(l.line::json ->> {})::{}").format(sql.Literal(column["name"]), sql.SQL(column.get("create_as") or column["type"]))
            if column.get("as_text")
            else sql.SQL("r.{}").format(sql.Identifier(column["name"]))
            for column in columns
        )
        self.conn.execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS strongroom_export_lines (n bigserial, line text) ON COMMIT DROP"
        )
        insert = sql.SQL(
            "INSERT INTO {0} ({1}) SELECT {2} FROM strongroom_export_lines AS l "
            "CROSS JOIN LATERAL json_populate_record(NULL::{0}, l.line::json) AS r ORDER BY l.n"
        ).format(table, names, picks)
        rows = 0
        lines = iter(reader.lines())
        while True:
            staged = 0
            with self.conn.cursor().copy("COPY strongroom_export_lines (line) FROM STDIN") as copy:
                for line in lines:
                    copy.write_row((line.decode(),))
                    staged += 1
                    if staged >= LOAD_BATCH_ROWS:
                        break
            if staged:
                rows += self.conn.execute(insert).rowcount
                self.conn.execute("TRUNCATE strongroom_export_lines")
            if staged < LOAD_BATCH_ROWS:
                return rows

    def _load_sql(self, description, table, reader, generated):
        qualified = self._qualified(description)
        every = [column["name"] for column in description["columns"]]
        prefix = sql.SQL("INSERT INTO {} ({}) VALUES (").format(table, sql.SQL(", ").join(map(sql.Identifier, every))).as_string(self.conn)
        if generated:
            kept = [name not in generated for name in every]
            kept_prefix = sql.SQL("INSERT INTO {} ({}) VALUES (").format(
                table, sql.SQL(", ").join(sql.Identifier(name) for name in every if name not in generated)
            ).as_string(self.conn)
        rows = 0
        batch, held = [], 0
        for statement in insert_statements(reader, prefix, qualified):
            if generated:
                # The statement is checked to be literals only; the same
                # INSERT without the generated columns' values.
                values = re.findall(LITERAL, statement[len(prefix):])
                if len(values) != len(every):
                    raise CorruptionError(f"A row of {qualified} has {len(values)} values for {len(every)} columns")
                statement = kept_prefix + ", ".join(value for value, keep in zip(values, kept) if keep) + ");"
            batch.append(statement)
            held += len(statement)
            if len(batch) >= LOAD_BATCH_ROWS or held >= LOAD_BATCH_BYTES:
                rows += self._execute_statements(batch)
                batch, held = [], 0
        if batch:
            rows += self._execute_statements(batch)
        return rows

    def _execute_statements(self, statements):
        # Each one checked above to be a single INSERT of literals: sent
        # together as one simple query to save round trips.
        self.conn.execute("\n".join(statements))
        return len(statements)

    def _check_manifest(self):
        if self.manifest is None:
            raise CorruptionError("The export ends before its manifest: it is truncated or damaged")
        if self.pending is not None:
            raise CorruptionError(f"The export has no rows for table {self._qualified(self.pending)}")
        entries = self.manifest.get("tables")
        if not isinstance(entries, dict) or list(entries) != list(self.seen):
            raise CorruptionError("The export's tables are not the ones its manifest lists")
        for qualified, found in self.seen.items():
            entry = entries[qualified]
            description = found["description"]
            if found["sha256"] != entry.get("sha256") or found["size"] != entry.get("size"):
                raise CorruptionError(f"The rows of table {qualified} do not match the export's manifest (SHA-256 differs)")
            if found["member"] != entry.get("member") or found["format"] != self.manifest.get("format"):
                raise CorruptionError(f"The member for table {qualified} is not the one the manifest names")
            for key in ("columns", "primary_key", "where"):
                if description.get(key) != entry.get(key):
                    raise CorruptionError(f"The description of table {qualified} does not match the export's manifest ({key})")
            if found["rows"] is not None and found["rows"] != entry.get("rows"):
                raise CorruptionError(
                    f"Table {qualified} loaded {found['rows']} rows where the export's manifest says {entry.get('rows')}"
                )


def well_formed_rules(column):
    """Whether a column's optional keys (archive 1.1) are what an export
    writes: a constant default, a generation expression that stays inside
    its parentheses, integers for a sequence. Unknown keys are ignored."""
    if not isinstance(column.get("not_null", False), bool):
        return False
    if "default" in column and parse_constant(column["default"]) is None:
        return False
    if "generated" in column and (
        column["generated"] != "stored" or not is_balanced_expression(column.get("expression"))
        or "default" in column or "identity" in column
    ):
        return False
    if "identity" in column:
        sequence = column.get("sequence", {})
        if column["identity"] not in ("always", "by default") or "default" in column or not isinstance(sequence, dict):
            return False
        for key in ("start", "increment", "minimum", "maximum", "cache", "last_value"):
            value = sequence.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                return False
        if sequence.get("increment") == 0 or not isinstance(sequence.get("cycle", False), bool):
            return False
    return True


def check_export(fileobj):
    """Reads an export archive through without any database and checks every
    member against its manifest (SHA-256, size, the tables' descriptions);
    returns the manifest, or raises CorruptionError."""
    loader = ExportLoader(None, {}, wanted=[])
    loader.run(fileobj)
    return loader.manifest


def load_export(fileobj, target_conninfo, tables=None):
    """Reads an export archive (a plain, decrypted and decompressed stream,
    read sequentially) into the target PostgreSQL database: creates each
    table from its recorded column types and primary key, loads its rows,
    all in one transaction, committed only if every member matches the
    manifest (CorruptionError otherwise). `tables`: only these qualified
    names. Returns {"schema.table": rows loaded}."""
    params = normalize_conninfo(target_conninfo)
    wanted = None if tables is None else list(tables)
    conn = connect(params)
    try:
        for name, value in SESSION.items():
            conn.execute(sql.SQL("SET {} = {}").format(sql.SQL(name), sql.Literal(value)))
        loaded = ExportLoader(conn, params, wanted).run(fileobj)
        conn.commit()
        return loaded
    except psycopg.Error as exc:
        conn.rollback()
        raise EngineError(f"Could not load the export: {query_error(exc, params)}")
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()


# --- loading into SQLite ---------------------------------------------------------
# An export of a SQLite source loads back into a new SQLite file: each table
# created with its declared column types and primary key, the rows parsed
# here (SQLite cannot read PostgreSQL's COPY or E'' literals). A value comes
# back as text and SQLite's type affinity turns it into the integer, real or
# numeric its column holds; a BLOB column's "\\x…" text and a REAL column's
# NaN/Infinity are turned back here. A column declared without a type keeps
# the text form of what it held (in JSON Lines, numbers stay numbers).

DECLARED_TYPE = re.compile(r"^[A-Za-z_][A-Za-z0-9_ ]{0,60}(\(\s*[+-]?\d+\s*(,\s*[+-]?\d+\s*)?\))?$")
CSV_FIELD = re.compile(r'"((?:[^"]|"")*)"|([^,"\n]*)')
QUOTED = re.compile(r"''|\\\\")


class SqliteExportLoader(ExportLoader):
    load_errors = (sqlite3.Error, ValueError, CorruptionError)  # the rows are parsed here

    def _table_exists(self, description):
        return self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE name = ? COLLATE NOCASE", [description["name"]]
        ).fetchone() is not None

    def _create_table(self, qualified, description):
        if description["schema"] != "main":
            raise EngineError(f"Table {qualified} is not a SQLite table; it loads into PostgreSQL, not into a SQLite file")
        columns = []
        for column in description["columns"]:
            declared = column["type"]
            if declared and not DECLARED_TYPE.match(declared):
                raise CorruptionError(f"The export's description of table {qualified} is damaged (column type)")
            definition = f"{sqlite_name(column['name'])} {declared}".rstrip()
            if column.get("not_null"):
                definition += " NOT NULL"
            # A literal without casts reads the same in SQLite (checked by _check_description).
            parsed = parse_constant(column["default"]) if column.get("default") is not None else None
            if parsed is not None and not parsed[1]:
                definition += f" DEFAULT {parsed[0]}"
            columns.append(definition)
        primary_key = description.get("primary_key") or []
        if primary_key:
            columns.append(f"PRIMARY KEY ({', '.join(map(sqlite_name, primary_key))})")
        self.conn.execute(f"CREATE TABLE {sqlite_name(description['name'])} ({', '.join(columns)})")

    def _abandon(self, reason):
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        self.loaded = {}
        self.load_error = reason

    def _error_text(self, exc):
        return first_line(str(exc)) or "The statement failed"

    def _load(self, description, fmt, reader):
        qualified = self._qualified(description)
        columns = description["columns"]
        names = [column["name"] for column in columns]
        if fmt == "csv":
            records = csv_records(reader.lines(), len(names), qualified)
        elif fmt == "jsonl":
            records = ([document.get(name) for name in names] for document in jsonl_documents(reader.lines(), qualified))
        elif fmt == "sql":
            prefix = sql.SQL("INSERT INTO {} ({}) VALUES (").format(
                sql.Identifier(description["schema"], description["name"]), sql.SQL(", ").join(map(sql.Identifier, names))
            ).as_string(None)
            records = (sql_values(statement[len(prefix):]) for statement in insert_statements(reader, prefix, qualified))
        else:
            raise CorruptionError(f"The export's member for {qualified} has an unknown format: {fmt}")
        insert = (f"INSERT INTO {sqlite_name(description['name'])} ({', '.join(map(sqlite_name, names))}) "
                  f"VALUES ({', '.join('?' * len(names))})")
        rows = 0
        for record in records:
            if len(record) != len(names):
                raise CorruptionError(f"A row of {qualified} has {len(record)} values for {len(names)} columns")
            self.conn.execute(insert, [sqlite_value(value, column) for value, column in zip(record, columns)])
            rows += 1
        self.loaded[qualified] = rows
        return rows


def sqlite_value(value, column):
    """The export's text (or JSON value) as the value SQLite stores."""
    if isinstance(value, str):
        target = column.get("create_as")
        if target == "bytea" and value.startswith("\\x"):
            return bytes.fromhex(value[2:])
        if target == "double precision" and value in ("NaN", "Infinity", "-Infinity"):
            return float(value.replace("Infinity", "inf"))
    elif isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value


def csv_records(lines, width, qualified):
    """Rows of a CSV member as written for SQLite sources: the header line
    first, NULL an unquoted empty field, every other value quoted (so that ""
    is an empty string; Python's csv module cannot tell the two apart)."""
    record, header = None, True
    for line in lines:
        text = line.decode()
        record = text if record is None else record + "\n" + text
        if record.count('"') % 2:
            continue  # a line break inside a quoted value
        fields, position = [], 0
        while True:
            match = CSV_FIELD.match(record, position)
            quoted, bare = match.groups()
            fields.append(quoted.replace('""', '"') if quoted is not None else (bare or None))
            position = match.end()
            if position == len(record):
                break
            if record[position] != ",":
                raise CorruptionError(f"The CSV member for {qualified} has a malformed row")
            position += 1
        record = None
        if header:
            header = False
            continue
        yield fields
    if record is not None:
        raise CorruptionError(f"The CSV member for {qualified} ends inside a quoted value")


def jsonl_documents(lines, qualified):
    for line in lines:
        try:
            document = json.loads(line)
        except ValueError:
            raise CorruptionError(f"The JSON Lines member for {qualified} has a line that is not JSON")
        if not isinstance(document, dict):
            raise CorruptionError(f"The JSON Lines member for {qualified} has a line that is not an object")
        yield document


def sql_values(values_list):
    """The values of a checked VALUES list ("'a', NULL, E'b\\\\c');")."""
    values = []
    for match in re.finditer(LITERAL, values_list):
        literal = match.group()
        if literal == "NULL":
            values.append(None)
        else:
            escaped = literal.startswith("E")
            inner = literal[2:-1] if escaped else literal[1:-1]
            values.append(QUOTED.sub(lambda m: m.group()[0], inner) if escaped else inner.replace("''", "'"))
    return values


def load_export_sqlite(fileobj, path, tables=None):
    """load_export for a SQLite source's export: into the SQLite file at
    `path` (new or empty), in one transaction. Returns {"main.table": rows}."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        loaded = SqliteExportLoader(conn, {}, None if tables is None else list(tables)).run(fileobj)
        conn.execute("COMMIT")
        return loaded
    except sqlite3.Error as exc:
        raise EngineError(f"Could not load the export: {exc}")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
