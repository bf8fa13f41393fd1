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
formats by Python (see sqlite_source.py for its types). Its CSV
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

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

import psycopg
from psycopg import sql
from typing_extensions import TypeIs

EXPORT_FORMATS = {"jsonl": "JSON Lines", "csv": "CSV with header", "sql": "SQL INSERT statements"}
ARCHIVE_VERSION = 1
# 1.1: columns may carry not_null, default, identity and generated (optional
# keys; a 1.0 archive has none and loads as before).
ARCHIVE_MINOR_VERSION = 1
TOOL_VERSION = f"strongroom-export {ARCHIVE_VERSION}.{ARCHIVE_MINOR_VERSION} (psycopg {psycopg.__version__})"
MANIFEST_MEMBER = "export-manifest.json"
# The mode an export's members carry in its archive (tar gives it to the files it extracts).
EXPORT_MEMBER_MODE = 0o644

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

# The JSON objects of the archive described above: a table's description
# (its columns member), one column of it, and the export's manifest. A
# loader reads them from an archive it does not trust and checks them first.
Description = dict[str, Any]
Column = dict[str, Any]
ExportManifest = dict[str, Any]


class LiveColumn(TypedDict):
    name: str
    type: str


class LiveTable(TypedDict):
    """A table a source offers for export, as the table picker lists it."""

    schema: str
    name: str
    columns: list[LiveColumn]
    rows_estimate: int | None
    partitions: NotRequired[int]  # a partitioned parent: how many leaf partitions it reads through


# What an export reads: a PostgreSQL source's conninfo, or a SQLite file's path.
Conninfo = Mapping[str, Any] | str | os.PathLike[str]


@dataclass(frozen=True)
class TableSpec:
    schema: str  # "public"… ; for SQLite sources always "main"
    name: str
    where: str = ""  # optional SQL condition, without the word WHERE

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


def is_sqlite_source(conninfo: Conninfo) -> TypeIs[str | os.PathLike[str]]:
    return isinstance(conninfo, (str, os.PathLike))


def identifier(table: TableSpec) -> sql.Identifier:
    return sql.Identifier(table.schema, table.name)


def member_stem(schema: str, name: str) -> str:
    def safe(part: str) -> str:
        return part.replace("%", "%25").replace("/", "%2F")

    return f"tables/{safe(schema)}.{safe(name)}"
