"""Loading a SQLite source's export back into a new SQLite file."""

import os
import re
import sqlite3
from collections.abc import Iterable, Iterator
from typing import IO

from psycopg import sql

from catalog.engine.dumpers import first_line
from catalog.engine.errors import CorruptionError, EngineError
from catalog.engine.exports.archive import Description
from catalog.engine.exports.loader import ArchiveLoader, HashingReader, Loaded
from catalog.engine.exports.sqlite_source import sqlite_name
from catalog.engine.exports.sqltext import parse_constant
from catalog.engine.exports.values import (
    JsonValue,
    csv_records,
    insert_statements,
    jsonl_documents,
    sql_values,
    sqlite_value,
)

# An export of a SQLite source loads back into a new SQLite file: each table
# created with its declared column types and primary key, the rows parsed
# here (SQLite cannot read PostgreSQL's COPY or E'' literals). A value comes
# back as text and SQLite's type affinity turns it into the integer, real or
# numeric its column holds; a BLOB column's "\\x…" text and a REAL column's
# NaN/Infinity are turned back here. A column declared without a type keeps
# the text form of what it held (in JSON Lines, numbers stay numbers).

DECLARED_TYPE = re.compile(r"^[A-Za-z_][A-Za-z0-9_ ]{0,60}(\(\s*[+-]?\d+\s*(,\s*[+-]?\d+\s*)?\))?$")


class SqliteExportLoader(ArchiveLoader[sqlite3.Connection]):
    """Loads a SQLite source's export archive into a SQLite file (one
    transaction, committed by the caller) and checks it against its manifest."""

    # the rows are parsed here
    load_errors: tuple[type[Exception], ...] = (sqlite3.Error, ValueError, CorruptionError)

    def _table_exists(self, description: Description) -> bool:
        return (
            self.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = ? COLLATE NOCASE", [description["name"]]
            ).fetchone()
            is not None
        )

    def _create_table(self, qualified: str, description: Description) -> None:
        if description["schema"] != "main":
            raise EngineError(
                f"Table {qualified} is not a SQLite table; it loads into PostgreSQL, not into a SQLite file"
            )
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

    def _abandon(self, reason: str) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        self.loaded = {}
        self.load_error = reason

    def _error_text(self, exc: Exception) -> str:
        return first_line(str(exc)) or "The statement failed"

    def _load(self, description: Description, fmt: str, reader: HashingReader) -> int:
        qualified = self._qualified(description)
        columns = description["columns"]
        names = [column["name"] for column in columns]
        records: Iterator[list[JsonValue]] | Iterator[list[str | None]]
        if fmt == "csv":
            records = csv_records(reader.lines(), len(names), qualified)
        elif fmt == "jsonl":
            records = (
                [document.get(name) for name in names] for document in jsonl_documents(reader.lines(), qualified)
            )
        elif fmt == "sql":
            prefix = (
                sql.SQL("INSERT INTO {} ({}) VALUES (")
                .format(
                    sql.Identifier(description["schema"], description["name"]),
                    sql.SQL(", ").join(map(sql.Identifier, names)),
                )
                .as_string(None)
            )
            records = (
                sql_values(statement[len(prefix) :]) for statement in insert_statements(reader, prefix, qualified)
            )
        else:
            raise CorruptionError(f"The export's member for {qualified} has an unknown format: {fmt}")
        insert = (
            f"INSERT INTO {sqlite_name(description['name'])} ({', '.join(map(sqlite_name, names))}) "
            f"VALUES ({', '.join('?' * len(names))})"
        )
        rows = 0
        for record in records:
            if len(record) != len(names):
                raise CorruptionError(f"A row of {qualified} has {len(record)} values for {len(names)} columns")
            self.conn.execute(
                insert, [sqlite_value(value, column) for value, column in zip(record, columns, strict=True)]
            )
            rows += 1
        self.loaded[qualified] = rows
        return rows


def load_export_sqlite(fileobj: IO[bytes], path: str | os.PathLike[str], tables: Iterable[str] | None = None) -> Loaded:
    """load_export for a SQLite source's export: into the SQLite file at
    `path` (new or empty), in one transaction. Returns {"main.table": rows}."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        loaded = SqliteExportLoader(conn, {}, None if tables is None else list(tables)).run(fileobj)
        conn.execute("COMMIT")
        return loaded
    except sqlite3.Error as exc:
        raise EngineError(f"Could not load the export: {exc}") from exc
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
