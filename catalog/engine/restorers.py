"""Restoring a dump into a scratch database and measuring what came back.

A scratch database is named `strongroom_verify_<backup>_<random>`, created
only if no database has that name, and always dropped on the way out. The
dump is streamed into pg_restore (custom format, or the tar format of an
imported dump) or psql (plain SQL) through stdin; for those archives a second
`pg_restore --list` reads the same stream for the dump's table of contents,
so the restored schema can be compared with what the dump says it holds.
"""

import contextlib
import errno
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Self

import psycopg
from psycopg import sql

from catalog.engine import pgdirectory, pgglobals
from catalog.engine.dumpers import (
    COUNT_TABLES,
    ConnParams,
    connect,
    connect_server,
    describe_pg_error,
    first_line,
    libpq_env,
    one,
)
from catalog.engine.errors import Cancelled, EngineError
from catalog.engine.files import create_private_file, make_private_dirs
from catalog.engine.storage.base import describe_os_error

SCRATCH_PREFIX = "strongroom_verify_"
# A temporary file that cannot be written for lack of room: a failure in
# words. Other OSErrors (a read of the stored copy, say) are not about it.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

# The schema objects a test restore compares. Both sides are counted the same
# way, from a table of contents: the dump's, and that of a schema-only dump
# of the restored database. (Counting the restored side from the catalogs
# disagreed with pg_dump on partitions' constraints, a range type's
# constructor functions and the like, and raised false alarms.)
TOC_KINDS = {
    "TABLE": "tables",
    "VIEW": "views",
    "MATERIALIZED VIEW": "views",
    "INDEX": "indexes",
    "CONSTRAINT": "constraints",
    "FK CONSTRAINT": "constraints",
    "CHECK CONSTRAINT": "constraints",
    "SEQUENCE": "sequences",
    "FUNCTION": "functions",
    "PROCEDURE": "functions",
    "AGGREGATE": "functions",
    "TRIGGER": "triggers",
    "TYPE": "types",
    "DOMAIN": "types",
    "POLICY": "policies",
    "RULE": "rules",
}
TOC_LINE = re.compile(
    r"^\d+; \d+ \d+ (?P<kind>" + "|".join(sorted(map(re.escape, TOC_KINDS), key=len, reverse=True)) + ") "
    r"(?!DATA |ATTACH |OWNED BY |SET )"
)


# What pg_restore reads from a stream: pg_dump's custom format, and its tar
# format (which only an imported dump has: catalog/engine/imports.py).
ARCHIVE_FORMATS = ("custom", "tar")


class RestoreError(EngineError):
    """The dump could not be restored."""


def scratch_name(backup_id: object) -> str:
    return f"{SCRATCH_PREFIX}{backup_id}_{secrets.token_hex(4)}"


class ScratchDatabase:
    """Creates a database that cannot be a real one, and always drops it.
    `like`: recorded database properties (pgglobals) whose encoding and
    locale it is created with, when the server has that locale; otherwise
    with the server's defaults, and `fallback` says why."""

    def __init__(self, params: Mapping[str, Any], name: str, like: pgglobals.Properties | None = None) -> None:
        if not name.startswith(SCRATCH_PREFIX):
            raise ValueError("scratch databases must carry the scratch prefix")
        self.params = params
        self.name = name
        self.like = like
        self.fallback = ""

    def __enter__(self) -> Self:
        return self.create()

    def create(self) -> Self:
        with connect_server(self.params) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [self.name]).fetchone():
                raise RestoreError(f"A database named {self.name} already exists; not touching it")
            create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name))
            try:
                if self.like and self.like.get("encoding"):
                    try:
                        conn.execute(create + pgglobals.create_database_options(self.like))
                        return self
                    except psycopg.DatabaseError as exc:  # a locale this server lacks, an encoding it refuses
                        self.fallback = (
                            f"The server cannot create a database with the backup's encoding and "
                            f"locale ({first_line(exc)}); its defaults were used"
                        )
                conn.execute(create)
            except psycopg.Error as exc:
                raise RestoreError(
                    f"Cannot create the scratch database: {describe_pg_error(exc, self.params)}"
                ) from exc
        return self

    def __exit__(self, *exc: object) -> None:
        self.drop()

    def drop(self) -> None:
        with connect_server(self.params) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))

    def recreate(self) -> Self:
        """Empty again, for a second attempt after a failed one."""
        self.drop()
        return self.create()

    def connection_params(self) -> ConnParams:
        return {**self.params, "dbname": self.name}


def database_exists(params: Mapping[str, Any], name: str) -> bool:
    with connect_server(params) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


class _Process:
    """A restore tool fed through stdin, its stderr kept in a temporary file."""

    def __init__(self, argv: list[str], env: Mapping[str, str]) -> None:
        # Both outlive __init__: the process writes them, finish() reads them.
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.stdout = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=self.stdout, stderr=self.stderr, env=env, start_new_session=True
        )
        self.open = True

    def feed(self, data: bytes) -> None:
        if not self.open:
            return
        assert self.proc.stdin is not None, "started with stdin=PIPE"
        try:
            self.proc.stdin.write(data)
        except (BrokenPipeError, ValueError):
            self.open = False  # it stopped reading: its exit code and stderr say why

    def finish(self) -> tuple[int, str, str]:
        if self.open:
            assert self.proc.stdin is not None, "started with stdin=PIPE"
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
            self.open = False
        code = self.proc.wait()
        self.stdout.seek(0)
        self.stderr.seek(0)
        return code, self.stdout.read().decode(errors="replace"), self.stderr.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def ownership_options(keep_owners: bool) -> list[str]:
    """pg_restore's options for owners and grants: kept (the roles must
    exist on the target), or left out, everything then belonging to the
    role that restores. A plain SQL dump says its owners itself."""
    return [] if keep_owners else ["--no-owner", "--no-privileges"]


def restore_postgres(
    plain_chunks: Iterable[bytes],
    params: Mapping[str, Any],
    fmt: str,
    cancel_event: threading.Event | None = None,
    pg_restore: str = "pg_restore",
    psql: str = "psql",
    warnings: list[str] | None = None,
    keep_owners: bool = False,
) -> dict[str, int] | None:
    """Streams a dump into the database `params` names. Returns the TOC counts
    (custom or tar format, read by pg_restore) or None (plain SQL has no table
    of contents). What the tool printed without failing is appended, line by
    line, to `warnings`."""
    env = libpq_env(params)
    if fmt in ARCHIVE_FORMATS:
        main = _Process(
            [
                pg_restore,
                *ownership_options(keep_owners),
                "--exit-on-error",
                "--no-password",
                "--dbname",
                params["dbname"],
            ],
            env,
        )
        lister = _Process([pg_restore, "--list"], env)
        tools = [main, lister]
    else:
        main = _Process(
            [psql, "--no-psqlrc", "--quiet", "--no-password", "-v", "ON_ERROR_STOP=1", "--dbname", params["dbname"]],
            env,
        )
        lister = None
        tools = [main]
    try:
        for chunk in plain_chunks:
            if cancel_event is not None and cancel_event.is_set():
                raise Cancelled("Cancelled by request")
            for tool in tools:
                tool.feed(chunk)
            if not main.open:
                break
        code, _, errors = main.finish()
        if code != 0:
            raise RestoreError(f"{'pg_restore' if lister else 'psql'} failed: {first_line(errors) or code}")
        if warnings is not None:
            warnings.extend(line for line in errors.splitlines() if line.strip())
        if lister is None:
            return None
        code, listing, errors = lister.finish()
        if code != 0:
            raise RestoreError(f"pg_restore --list failed: {first_line(errors) or code}")
        return toc_counts(listing)
    except BaseException:
        for tool in tools:
            tool.stop()
        raise


def table_pattern(table: str) -> str:
    """A pg_dump --table pattern that matches exactly the table "schema.name"
    (quoted, so that no character in a name is read as a wildcard)."""
    schema, _, name = table.partition(".")
    return ".".join('"' + part.replace('"', '""') + '"' for part in (schema, name))


def table_definitions(
    params: Mapping[str, Any], tables: Iterable[str], keep_owners: bool, pg_dump: str = "pg_dump"
) -> str:
    """The SQL that makes `tables` ("schema.name", unquoted) again as they are
    in the database `params` names, without their rows: columns, defaults,
    identity and owned sequences, constraints, indexes, triggers, comments,
    and (keep_owners) owners and grants. pg_dump writes every name in full, so
    its session settings and psql meta-commands are left out: the text runs as
    it is inside the caller's transaction and leaves its session as it was
    (a table in a tablespace of its own is made in the default one)."""
    argv = [pg_dump, "--schema-only", "--no-password", *ownership_options(keep_owners)]
    for table in tables:
        argv += ["--table", table_pattern(table)]
    done = subprocess.run([*argv, "--dbname", params["dbname"]], env=libpq_env(params), capture_output=True, text=True)
    if done.returncode != 0:
        raise RestoreError(f"Cannot read the tables' definitions from the backup: {first_line(done.stderr)}")
    return "\n".join(line for line in done.stdout.splitlines() if not SESSION_LINE.match(line))


# What pg_dump --schema-only writes around the definitions for a session of its own.
SESSION_LINE = re.compile(r"^(\\|SET |SELECT pg_catalog\.set_config\()")


def check_free_disk(directory: str | os.PathLike[str], needed_bytes: int) -> None:
    free = shutil.disk_usage(directory).free
    if needed_bytes > free:
        raise RestoreError(
            f"Not enough free disk in {directory} for the temporary copy of the dump: it needs {needed_bytes} bytes, "
            f"{free} are free"
        )


def restore_postgres_parallel(
    plain_chunks: Iterable[bytes],
    params: Mapping[str, Any],
    directory: str,
    jobs: int,
    needed_bytes: int,
    pg_restore: str = "pg_restore",
    warnings: list[str] | None = None,
    keep_owners: bool = False,
    like: pgglobals.Properties | None = None,
    fmt: str = "custom",
) -> dict[str, int] | None:
    """`pg_restore -j` from a temporary copy of the dump in `directory`: a
    file for the custom format (pg_restore seeks in it for parallel jobs),
    the dump's own files for the directory format (stored as a tar archive).
    Nothing is restored before the whole stream has passed its checksum.
    Returns the dump's TOC counts, or None with a warning when pg_restore
    cannot list them (the restore itself has succeeded then)."""
    make_private_dirs(directory)  # the dump is a whole database's data: the service user's alone
    check_free_disk(directory, needed_bytes)
    spool = tempfile.mkdtemp(dir=directory, prefix="strongroom-restore-")
    path = os.path.join(spool, "dump")
    try:
        # The disk may fill after the check above (another job, a log).
        with disk_full_in_words(
            directory, " while writing the temporary copy of the dump; it was removed and nothing was restored"
        ):
            if fmt == "directory":
                pgdirectory.unpack(plain_chunks, path)
            else:
                with create_private_file(path) as handle:
                    for chunk in plain_chunks:
                        handle.write(chunk)
        argv = [
            pg_restore,
            *ownership_options(keep_owners),
            "--exit-on-error",
            "--no-password",
            "--dbname",
            params["dbname"],
            path,
        ]
        done = subprocess.run([*argv, f"--jobs={jobs}"], env=libpq_env(params), capture_output=True, text=True)
        if done.returncode != 0 and jobs > 1 and "deadlock detected" in done.stderr:
            # Parallel jobs building a partitioned table's indexes and foreign
            # keys at once can deadlock one another in PostgreSQL; the same
            # archive restores in one job. Start again in a new scratch database.
            ScratchDatabase(params, params["dbname"], like).recreate()
            if warnings is not None:
                warnings.append(
                    f"pg_restore with {jobs} jobs deadlocked ({first_line(done.stderr)}); restored again with one job"
                )
            done = subprocess.run(argv, env=libpq_env(params), capture_output=True, text=True)
        if done.returncode != 0:
            raise RestoreError(f"pg_restore failed: {first_line(done.stderr) or done.returncode}")
        if warnings is not None:
            warnings.extend(line for line in done.stderr.splitlines() if line.strip())
        listing = subprocess.run([pg_restore, "--list", path], capture_output=True, text=True)
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    if listing.returncode != 0:
        if warnings is not None:
            warnings.append(
                "pg_restore --list failed, so the dump's table of contents is not known: "
                f"{first_line(listing.stderr) or listing.returncode}"
            )
        return None
    return toc_counts(listing.stdout)


def toc_counts(listing: str) -> dict[str, int]:
    counts = Counter({kind: 0 for kind in set(TOC_KINDS.values())})
    for line in listing.splitlines():
        match = TOC_LINE.match(line)
        if match:
            counts[TOC_KINDS[match["kind"]]] += 1
    return dict(counts)


def restored_counts(
    params: Mapping[str, Any], pg_dump: str = "pg_dump", pg_restore: str = "pg_restore"
) -> tuple[dict[str, int], dict[str, int]]:
    """(rows per table, schema object counts) of a restored database."""
    with connect(params) as conn:
        rows = {}
        for schema, table in conn.execute(COUNT_TABLES).fetchall():
            query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
            rows[f"{schema}.{table}"] = one(conn, query)
    return rows, toc_counts(schema_listing(params, pg_dump, pg_restore))


def schema_listing(params: Mapping[str, Any], pg_dump: str = "pg_dump", pg_restore: str = "pg_restore") -> str:
    """`pg_restore --list` of a schema-only dump of the database."""
    env = libpq_env(params)
    dump = subprocess.Popen(
        [pg_dump, "--schema-only", "--format=custom", "--no-password", "--dbname", params["dbname"]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert dump.stdout is not None and dump.stderr is not None, "started with stdout and stderr=PIPE"
    listing = subprocess.run([pg_restore, "--list"], stdin=dump.stdout, capture_output=True, text=True, env=env)
    dump.stdout.close()
    errors = dump.stderr.read().decode(errors="replace")
    if dump.wait() != 0 or listing.returncode != 0:
        raise RestoreError(f"Cannot list the restored schema: {first_line(errors or listing.stderr)}")
    return listing.stdout


def restore_sqlite(plain_chunks: Iterable[bytes], path: str, cancel_event: threading.Event | None = None) -> None:
    with disk_full_in_words(os.path.dirname(path)), open(path, "wb") as handle:
        for chunk in plain_chunks:
            if cancel_event is not None and cancel_event.is_set():
                raise Cancelled("Cancelled by request")
            handle.write(chunk)


@contextlib.contextmanager
def disk_full_in_words(directory: str | os.PathLike[str], then: str = "") -> Iterator[None]:
    """A temporary file in `directory` that cannot be written for lack of room
    becomes a RestoreError in words (the closing flush included, so the file
    must be opened inside). Other OSErrors, a read of the stored copy say,
    are not about it and pass through."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        raise RestoreError(describe_os_error(exc, directory) + then) from exc


def sqlite_report(path: str, qualified: bool = False) -> tuple[str, dict[str, int]]:
    """(integrity_check answer, rows per table) of a restored SQLite file;
    qualified: tables named "main.<name>", as an export names them."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        integrity = "; ".join(row[0] for row in conn.execute("PRAGMA integrity_check").fetchall())
        tables = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        ]
        prefix = "main." if qualified else ""
        rows = {
            prefix + name: conn.execute(f'SELECT count(*) FROM "{name.replace(chr(34), chr(34) * 2)}"').fetchone()[0]
            for name in tables
        }
    except sqlite3.DatabaseError as exc:
        return f"not a database: {exc}", {}
    finally:
        conn.close()
    return integrity, rows
