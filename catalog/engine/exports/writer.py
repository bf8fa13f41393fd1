"""The archive writer: ExportDump streams an export archive of chosen
tables from one snapshot (see archive.py for the format)."""

import contextlib
import hashlib
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, NoReturn

import psycopg
from psycopg import sql

from catalog.engine.dumpers import CHUNK_SIZE, ConnParams, Dump, connect, describe_pg_error, normalize_conninfo
from catalog.engine.errors import Cancelled, EngineError, SourceError, StorageError
from catalog.engine.exports.archive import (
    ARCHIVE_MINOR_VERSION,
    ARCHIVE_VERSION,
    EXPORT_FORMATS,
    EXPORT_MEMBER_MODE,
    MANIFEST_MEMBER,
    SESSION,
    SNAPSHOT_NOTE,
    SQLITE_SNAPSHOT_NOTE,
    TOOL_VERSION,
    Conninfo,
    Description,
    ExportManifest,
    TableSpec,
    identifier,
    is_sqlite_source,
    member_stem,
)
from catalog.engine.exports.schema import AS_TEXT, JSON_TYPES, check_where, describe_table
from catalog.engine.exports.sqlite_source import check_sqlite_where, describe_sqlite_table, sqlite_connect, sqlite_rows
from catalog.engine.storage.base import describe_os_error
from catalog.engine.tarstream import end_of_archive, member_header, padding


def export_query(table: TableSpec, description: Description, fmt: str) -> sql.Composed:
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
            sql.SQL("{0}::text AS {0}").format(sql.Identifier(column["name"]))
            if column.get("as_text")
            else sql.Identifier(column["name"])
            for column in description["columns"]
        )
        select = sql.SQL("SELECT {} FROM {}{}").format(picks, source, where)
        # t.* rather than t: a column named t would otherwise be taken for the row.
        return sql.SQL("COPY (SELECT row_to_json(t.*)::text FROM ({}) AS t) TO STDOUT").format(select)
    select = sql.SQL("SELECT {} FROM {}{}").format(sql.SQL(", ").join(map(sql.Identifier, names)), source, where)
    if fmt == "csv":
        return sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER true)").format(select)
    prefix = sql.SQL("INSERT INTO {} ({}) VALUES (").format(
        identifier(table), sql.SQL(", ").join(map(sql.Identifier, names))
    )
    values = sql.SQL(" || ', ' || ").join(
        sql.SQL("quote_nullable(t.{})").format(sql.Identifier(name)) for name in names
    )
    return sql.SQL("COPY (SELECT {} || {} || ');' FROM ({}) AS t) TO STDOUT").format(
        sql.Literal(prefix.as_string(None)), values, select
    )


class ExportDump(Dump):
    """Streams an export archive of `tables` as chunks of bytes. Same
    interface as dumpers.PostgresDump, plus export_manifest (complete once
    iteration ends), and current_table / spooled_bytes for progress while a
    table is being read. Use as a context manager.

    Each table's rows are spooled to a temporary file first (a tar header
    needs the size before the data), hashed and counted as they are written,
    then streamed out and the file deleted: memory stays at a few chunks and
    the disk holds at most one table's export."""

    def __init__(
        self,
        conninfo: Conninfo,
        tables: Iterable[TableSpec],
        fmt: str,
        chunk_size: int = CHUNK_SIZE,
        tmp_dir: str | None = None,
    ) -> None:
        if fmt not in EXPORT_FORMATS:
            raise EngineError(f"Unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
        super().__init__()
        self.sqlite_path = str(conninfo) if is_sqlite_source(conninfo) else None
        self.params: ConnParams = {} if is_sqlite_source(conninfo) else normalize_conninfo(conninfo)
        self.tables = list(tables)
        self.fmt = fmt
        self.chunk_size = chunk_size
        self.tmp_dir = tmp_dir
        self.server_version = ""
        self.tool_version = TOOL_VERSION
        self.export_manifest: ExportManifest = {}
        # Live while a table is read into its spool file, when no chunk
        # moves raw_bytes yet: which table, and how many bytes so far.
        self.current_table = ""
        self.spooled_bytes = 0
        self._descriptions: list[Description] | None = None
        self._snapshot_taken_at = ""
        self._conn: psycopg.Connection[Any] | sqlite3.Connection | None = None
        self._spool_path: str | None = None

    def start(self) -> None:
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
            self._start_sqlite(self.sqlite_path)
            return
        with self._lock:
            self.check_cancelled()
            self._conn = conn = connect(self.params)
        try:
            # autocommit first, so that our BEGIN opens the transaction with
            # its isolation level rather than an implicit one.
            conn.autocommit = True
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            for name, value in SESSION.items():
                conn.execute(sql.SQL("SET LOCAL {} = {}").format(sql.SQL(name), sql.Literal(value)))
            row = conn.execute("SELECT current_setting('server_version'), now()").fetchone()
            assert row is not None, "the statement returns a row"
            self.server_version, snapshot_at = row
            self._snapshot_taken_at = snapshot_at.isoformat()
            descriptions = []
            for table in self.tables:
                description = describe_table(conn, table)
                check_where(conn, table, self.params)
                if self.fmt == "jsonl":
                    for column in description["columns"]:
                        if column["type"] in JSON_TYPES or column.get("create_as") in (*JSON_TYPES, *AS_TEXT):
                            column["as_text"] = True
                descriptions.append(description)
            self._descriptions = descriptions
        except psycopg.Error as exc:
            self._raise_source_error(exc)

    def _start_sqlite(self, path: str) -> None:
        with self._lock:
            self.check_cancelled()
            self._conn = conn = sqlite_connect(path)
        try:
            # A read transaction: every table is read from the same state of
            # the file (WAL keeps writers going; a rollback journal makes
            # them wait until the export ends).
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            self.server_version = f"SQLite {sqlite3.sqlite_version}"
            self._snapshot_taken_at = datetime.now(UTC).isoformat()
            descriptions = []
            for table in self.tables:
                descriptions.append(describe_sqlite_table(conn, table))
                check_sqlite_where(conn, table)
            self._descriptions = descriptions
        except sqlite3.Error as exc:
            self._raise_source_error(exc)

    def _raise_source_error(self, exc: psycopg.Error | sqlite3.Error) -> NoReturn:
        self.check_cancelled()
        if isinstance(exc, sqlite3.Error):
            raise SourceError(f"Cannot read SQLite database {self.sqlite_path}: {exc}")
        raise SourceError(describe_pg_error(exc, self.params))

    def __iter__(self) -> Iterator[bytes]:
        if self._descriptions is None:
            self.start()
        assert self._descriptions is not None, "described by start()"
        started = time.time()
        entries = {}
        for table, description in zip(self.tables, self._descriptions, strict=True):
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
        manifest: ExportManifest = {
            "archive_version": ARCHIVE_VERSION,
            "archive_minor_version": ARCHIVE_MINOR_VERSION,
            "format": self.fmt,
            "format_name": EXPORT_FORMATS[self.fmt],
            "created_at": datetime.now(UTC).isoformat(),
            "snapshot_taken_at": self._snapshot_taken_at,
            "server_version": self.server_version,
            "tool_version": self.tool_version,
            "snapshot": SQLITE_SNAPSHOT_NOTE if self.sqlite_path else SNAPSHOT_NOTE,
            "session": {} if self.sqlite_path else SESSION,
            "tables": entries,
        }
        yield from self._member(MANIFEST_MEMBER, json.dumps(manifest, ensure_ascii=False, indent=2).encode())
        yield self._count(end_of_archive(self.raw_bytes))
        self.export_manifest = manifest
        self._finish()

    def _count(self, data: bytes) -> bytes:
        self.raw_bytes += len(data)
        return data

    def _member(self, name: str, content: bytes) -> Iterator[bytes]:
        yield self._count(
            member_header(name, len(content), time.time(), EXPORT_MEMBER_MODE) + content + padding(len(content))
        )

    def _spooled_member(self, name: str, size: int, mtime: float) -> Iterator[bytes]:
        assert self._spool_path is not None, "written by _spool()"
        yield self._count(member_header(name, size, mtime, EXPORT_MEMBER_MODE))
        with open(self._spool_path, "rb") as spooled:
            while chunk := spooled.read(self.chunk_size):
                self.check_cancelled()
                yield self._count(chunk)
        if padding(size):
            yield self._count(padding(size))

    def _spool(self, table: TableSpec, description: Description) -> tuple[int, int, str]:
        """Writes the table's rows to a temporary file; returns (rows, size,
        sha256 of the bytes)."""
        conn = self._conn
        fd, self._spool_path = tempfile.mkstemp(prefix="strongroom-export-", suffix=f".{self.fmt}", dir=self.tmp_dir)
        digest = hashlib.sha256()
        size = rows = 0
        try:
            with os.fdopen(fd, "wb", buffering=CHUNK_SIZE) as out:

                def write(data: bytes | bytearray | memoryview) -> None:
                    nonlocal size
                    self.check_cancelled()
                    digest.update(data)
                    size += len(data)
                    self.spooled_bytes += len(data)
                    out.write(data)

                if isinstance(conn, sqlite3.Connection):  # a SQLite source's
                    for data in sqlite_rows(conn, table, description, self.fmt):
                        write(data)
                        rows += 1
                    if self.fmt == "csv":
                        rows -= 1  # the header line
                    return rows, size, digest.hexdigest()
                assert conn is not None, "opened by start()"
                cursor = conn.cursor()
                with cursor.copy(export_query(table, description, self.fmt)) as copy:
                    if self.fmt == "csv":
                        for block in copy:
                            write(block)
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

    def _drop_spool(self) -> None:
        path, self._spool_path = self._spool_path, None
        if path and os.path.exists(path):
            os.unlink(path)

    def _finish(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(psycopg.Error, sqlite3.Error):
                    self._conn.execute("ROLLBACK")  # read only: nothing to keep

    def cancel(self) -> None:
        """Stops the export and any query in flight; safe from another thread."""
        self._cancelled.set()
        with self._lock:
            if self._conn is not None:
                try:
                    if isinstance(self._conn, sqlite3.Connection):  # a SQLite source's
                        self._conn.interrupt()
                    else:
                        self._conn.cancel_safe(timeout=5)
                except Exception:
                    pass

    def close(self) -> None:
        self._drop_spool()
        if self._conn is not None:
            self._conn.close()
