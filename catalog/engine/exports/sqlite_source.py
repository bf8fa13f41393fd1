"""SQLite sources, read in the export's formats."""

import json
import os
import sqlite3
from collections.abc import Iterator

from psycopg import sql

from catalog.engine.errors import SourceError
from catalog.engine.exports.archive import Column, Description, LiveColumn, LiveTable, TableSpec, identifier
from catalog.engine.exports.sqltext import filter_problem, parse_constant
from catalog.engine.exports.values import csv_field, json_value, sql_literal

# SQLite has no COPY and no row_to_json: its rows are written here, in the
# same three formats and with the same conventions, so that load_export reads
# them like a PostgreSQL export. The schema is always "main". Declared types
# are SQLite's own words; each column's "create_as" is the PostgreSQL type it
# is loaded as, from SQLite's affinity rules: INT → bigint, REAL/FLOA/DOUB →
# double precision, BLOB → bytea, BOOL → boolean, DECIMAL/NUMERIC → numeric,
# anything else (TEXT, DATE, DATETIME, JSON, no type at all) → text, which
# keeps the value exactly as SQLite holds it.


def sqlite_connect(path: str) -> sqlite3.Connection:
    if not os.path.isfile(path):
        raise SourceError(f"SQLite database not found: {path}")
    try:
        # Read only at the file level: a row filter cannot write whatever it says.
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise SourceError(f"Cannot open SQLite database {path}: {exc}") from exc
    return conn


def sqlite_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def postgres_type_for(declared: str) -> str:
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


def list_sqlite_tables(path: str) -> list[LiveTable]:
    conn = sqlite_connect(path)
    try:
        names = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        tables: list[LiveTable] = []
        for name in names:
            columns: list[LiveColumn] = [
                {"name": column[1], "type": column[2]}
                for column in conn.execute(f"PRAGMA table_info({sqlite_name(name)})")
            ]
            rows = conn.execute(f"SELECT count(*) FROM {sqlite_name(name)}").fetchone()[0]
            tables.append({"schema": "main", "name": name, "columns": columns, "rows_estimate": rows})
        return tables
    except sqlite3.Error as exc:
        raise SourceError(f"Cannot read SQLite database {path}: {exc}") from exc
    finally:
        conn.close()


def describe_sqlite_table(conn: sqlite3.Connection, table: TableSpec) -> Description:
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
    columns: list[Column] = []
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
    return {
        "schema": table.schema,
        "name": table.name,
        "where": table.where,
        "columns": columns,
        "primary_key": primary_key,
    }


def check_sqlite_where(conn: sqlite3.Connection, table: TableSpec) -> None:
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
        raise SourceError(f"The row filter for {table.qualified} is not valid: {exc}") from exc


def sqlite_rows(conn: sqlite3.Connection, table: TableSpec, description: Description, fmt: str) -> Iterator[bytes]:
    """The table's rows as encoded lines (for csv, the header line first)."""
    names = [column["name"] for column in description["columns"]]
    where = f" WHERE ({table.where})" if table.where.strip() else ""
    cursor = conn.execute(f"SELECT {', '.join(map(sqlite_name, names))} FROM {sqlite_name(table.name)}{where}")
    if fmt == "csv":
        yield (",".join(csv_field(name) for name in names) + "\n").encode()
    elif fmt == "sql":
        prefix = (
            sql.SQL("INSERT INTO {} ({}) VALUES (")
            .format(identifier(table), sql.SQL(", ").join(map(sql.Identifier, names)))
            .as_string(None)
        )
    while batch := cursor.fetchmany(1000):
        for row in batch:
            if fmt == "csv":
                line = ",".join(map(csv_field, row))
            elif fmt == "jsonl":
                line = json.dumps(
                    dict(zip(names, map(json_value, row), strict=True)), ensure_ascii=False, separators=(",", ":")
                )
            else:
                line = prefix + ", ".join(map(sql_literal, row)) + ");"
            yield (line + "\n").encode()
