"""Dumpers: stream a database out as chunks of bytes.

PostgresDump exports a snapshot from a REPEATABLE READ transaction, runs
pg_dump --snapshot on it and, while pg_dump runs, counts every table's rows in
that same snapshot, so the recorded counts describe exactly the data in the
dump. The password reaches pg_dump through PGPASSWORD in its environment,
never its arguments.
"""

import contextlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any, NoReturn, Self

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from catalog.engine import pgglobals
from catalog.engine.errors import Cancelled, SourceError

CHUNK_SIZE = 1 << 20
CONNECT_TIMEOUT = 10

# libpq keywords and their values (host, port, dbname, user, password, ...).
ConnParams = dict[str, Any]

COUNT_TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
ORDER BY 1, 2
"""


# The same tables by OID, and whether a count of their rows needs SQL rather
# than the dump's own data (pgdirectory counts each table's file): a table
# with inheritance children, whose count(*) counts theirs too, and a table an
# extension owns, which pg_dump dumps in part (a configuration table's rows
# added since) or not at all.
TABLES_BY_OID = """
SELECT c.oid, n.nspname, c.relname,
       c.relhassubclass OR EXISTS (
         SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
ORDER BY 2, 3
"""


# Top-level partitioned tables and their leaf partitions (a sub-partitioned
# level is a partition, not a leaf). Walked through pg_inherits rather than
# pg_partition_tree(), which PostgreSQL 10 and 11 sources lack.
PARTITIONED_TABLES = """
WITH RECURSIVE tree(top, relid) AS (
  SELECT c.oid, c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind = 'p' AND NOT c.relispartition AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  UNION ALL
  SELECT tree.top, i.inhrelid FROM tree JOIN pg_inherits i ON i.inhparent = tree.relid
)
SELECT tn.nspname || '.' || t.relname, array_agg(ln.nspname || '.' || l.relname ORDER BY ln.nspname, l.relname)
FROM tree JOIN pg_class t ON t.oid = tree.top JOIN pg_namespace tn ON tn.oid = t.relnamespace
JOIN pg_class l ON l.oid = tree.relid AND l.relkind = 'r' JOIN pg_namespace ln ON ln.oid = l.relnamespace
GROUP BY 1 ORDER BY 1
"""


def normalize_conninfo(conninfo: Mapping[str, Any]) -> ConnParams:
    """Conninfo as libpq keywords, whether given as fields or as a DSN."""
    if conninfo.get("dsn"):
        try:
            return conninfo_to_dict(conninfo["dsn"])
        except psycopg.ProgrammingError:
            raise SourceError("The connection string (DSN) is not valid") from None
    return {k: v for k, v in conninfo.items() if v not in (None, "")}


def libpq_env(params: Mapping[str, Any]) -> dict[str, str]:
    """Environment variables that make pg_dump connect where psycopg did."""
    names = {
        "host": "PGHOST",
        "port": "PGPORT",
        "dbname": "PGDATABASE",
        "user": "PGUSER",
        "password": "PGPASSWORD",
        "sslmode": "PGSSLMODE",
        "sslrootcert": "PGSSLROOTCERT",
        "sslcert": "PGSSLCERT",
        "sslkey": "PGSSLKEY",
        "application_name": "PGAPPNAME",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    for key, value in params.items():
        if key in names:
            env[names[key]] = str(value)
    return env


def redact(text: str, params: Mapping[str, Any]) -> str:
    """Removes the password from any text that might quote it."""
    password = params.get("password")
    if password:
        text = text.replace(str(password), "***")
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", text, flags=re.IGNORECASE)


def describe_pg_error(text: object, params: Mapping[str, Any]) -> str:
    """One line, in words, for the usual ways a connection or dump fails."""
    text = redact(str(text), params)
    host = params.get("host", "localhost")
    port = params.get("port", 5432)
    user, dbname = params.get("user", ""), params.get("dbname", "")
    lowered = text.lower()
    if "password authentication failed" in lowered:
        return f"Password authentication failed for user {user}"
    if "no password supplied" in lowered or "fe_sendauth" in lowered:
        return f"The server wants a password for user {user}, and none is set"
    if "does not exist" in lowered and "database" in lowered:
        return f"Database {dbname} does not exist on {host}:{port}"
    if "role" in lowered and "does not exist" in lowered:
        return f"Role {user} does not exist on {host}:{port}"
    # The server ended a connection that was working: libpq and pg_dump quote
    # the server's own words, which do not say what to do about it.
    if "terminating connection due to administrator command" in lowered:
        return (
            f"The server at {host}:{port} closed the connection mid-way: an administrator terminated it, "
            "or the server was shut down or restarted"
        )
    if "server closed the connection unexpectedly" in lowered or "terminating connection because of crash" in lowered:
        return f"The server at {host}:{port} closed the connection unexpectedly: it restarted or crashed"
    if "the database system is shutting down" in lowered or "the database system is starting up" in lowered:
        return f"The server at {host}:{port} is restarting; try again once it is up"
    if "connection refused" in lowered:
        return f"Cannot reach the server at {host}:{port} (connection refused)"
    if "timeout expired" in lowered or "timed out" in lowered:
        return f"Cannot reach the server at {host}:{port} (timed out)"
    if "could not translate host name" in lowered or "name or service not known" in lowered:
        return f"Cannot reach the server at {host}:{port} (unknown host)"
    if "server version mismatch" in lowered or "aborting because of server version mismatch" in lowered:
        return "pg_dump is older than the server; install a newer PostgreSQL client. " + first_line(text)
    if "permission denied" in lowered:
        return f"Permission denied: {first_line(text)}"
    return first_line(text) or "The database connection failed"


def first_line(text: object) -> str:
    for line in str(text).splitlines():
        line = line.strip()
        if line:
            return re.sub(r"^(pg_dump: )?(error: )?", "", line)[:300]
    return ""


def major_version(version_text: str | None) -> int:
    match = re.search(r"(\d+)(?:\.(\d+))?", version_text or "")
    return int(match.group(1)) if match else 0


def one(
    conn: "psycopg.Connection[Any]", query: str | sql.SQL | sql.Composed, params: Sequence[Any] | None = None
) -> Any:
    """The first value of the first row a statement returns (one that always returns a row)."""
    row = conn.execute(query, params).fetchone()
    assert row is not None, "the statement returns a row"
    return row[0]


def pg_dump_version(pg_dump: str = "pg_dump") -> str:
    path = shutil.which(pg_dump)
    if path is None:
        raise SourceError(f"{pg_dump} was not found; install the PostgreSQL client tools")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return out


def connect(params: Mapping[str, Any]) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(**params, connect_timeout=CONNECT_TIMEOUT, autocommit=False)
    except psycopg.Error as exc:
        raise SourceError(describe_pg_error(exc, params)) from exc


# Where server-level work (create, rename, drop and list databases, version
# checks) connects: never the database it is about, which may have been
# dropped, or must have no session open to be renamed. The source's own
# database is the last resort for a role allowed nowhere else.
MAINTENANCE_DATABASES = ("postgres", "template1")


def connect_server(params: Mapping[str, Any]) -> psycopg.Connection[Any]:
    """An autocommit connection to the server `params` names, through its
    maintenance database."""
    tried = [*MAINTENANCE_DATABASES, *([params["dbname"]] if params.get("dbname") else [])]
    for dbname in dict.fromkeys(tried):
        attempt = {**params, "dbname": dbname}
        try:
            return psycopg.connect(**attempt, connect_timeout=CONNECT_TIMEOUT, autocommit=True)
        except psycopg.Error as exc:
            missing = f'database "{dbname}" does not exist' in str(exc)
            if not missing and "permission denied for database" not in str(exc):
                raise SourceError(describe_pg_error(exc, attempt)) from exc
    host, port = params.get("host", "localhost"), params.get("port", 5432)
    raise SourceError(f"No maintenance database (postgres or template1) can be opened on {host}:{port}")


def check_versions(server_version: str, tool_version: str) -> None:
    if major_version(tool_version.split()[-1] if tool_version else "") < major_version(server_version):
        raise SourceError(
            f"pg_dump {tool_version.split()[-1]} is older than the server ({server_version}); "
            "install a newer PostgreSQL client"
        )


def test_pg_connection(conninfo: Mapping[str, Any], pg_dump: str = "pg_dump") -> dict[str, str]:
    params = normalize_conninfo(conninfo)
    tool_version = pg_dump_version(pg_dump)
    with connect(params) as conn:
        server_version: str = one(conn, "SHOW server_version")
    check_versions(server_version, tool_version)
    return {"server_version": server_version, "pg_dump_version": tool_version}


class Dump:
    """What every dump shares: use as a context manager (close() on exit);
    cancel() may come from another thread, and the dump's own thread turns it
    into Cancelled at its next check. `_lock` guards what cancel() reaches
    into (a connection, a process) while it is being opened."""

    def __init__(self) -> None:
        self.table_counts: dict[str, int] = {}
        self.partitions: dict[str, list[str]] = {}
        self.raw_bytes = 0
        self._cancelled = threading.Event()
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[bytes]:
        raise NotImplementedError

    def close(self) -> None:
        """Releases what the dump holds (a connection, a process, a temporary file)."""

    def cancel(self) -> None:
        self._cancelled.set()

    def check_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise Cancelled("Cancelled by request")

    # A dump that streams a child process's stdout (pg_dump, pg_basebackup)
    # keeps it in _process and its stderr in _stderr.
    _process: "subprocess.Popen[bytes] | None" = None
    _stderr: IO[bytes] | None = None

    def _terminate_process(self) -> None:
        """SIGTERM to the child, SIGKILL five seconds later if it is still
        there; for cancel(), under _lock."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            threading.Timer(5, self._kill_if_alive).start()

    def _kill_if_alive(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()

    def _close_process(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            if self._process.stdout is not None:
                self._process.stdout.close()
            if self._stderr is not None:
                self._stderr.close()


class PostgresDump(Dump):
    """Iterates over pg_dump's output. Use as a context manager."""

    def __init__(
        self,
        conninfo: Mapping[str, Any],
        fmt: str = "custom",
        chunk_size: int = CHUNK_SIZE,
        pg_dump: str = "pg_dump",
        compress: int | str | None = None,
        pg_dumpall: str = "pg_dumpall",
    ) -> None:
        super().__init__()
        self.pg_dumpall = pg_dumpall
        self.globals: dict[str, Any] | None = (
            None  # see pgglobals: the roles and database properties the dump leaves out
        )
        self.params = normalize_conninfo(conninfo)
        self.fmt = fmt
        self.compress = compress  # pg_dump's own --compress; None keeps its default
        self.chunk_size = chunk_size
        self.pg_dump = pg_dump
        self.server_version = ""
        self.tool_version = ""
        self._conn: psycopg.Connection[Any] | None = None
        self._facts: threading.Thread | None = None
        self._facts_error: BaseException | None = None

    def start(self) -> None:
        """Opens the snapshot, starts pg_dump on it, and reads what the dump
        records besides its bytes (row counts, partitions, globals) from the
        same snapshot in a thread of its own while pg_dump runs: counting
        scans every table, and doing it first kept pg_dump waiting for it."""
        self.tool_version = pg_dump_version(self.pg_dump)
        with self._lock:
            self.check_cancelled()
            self._conn = conn = connect(self.params)
        try:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            snapshot: str = one(conn, "SELECT pg_export_snapshot()")
            self.server_version = one(conn, "SHOW server_version")
            check_versions(self.server_version, self.tool_version)
        except psycopg.Error as exc:
            self._raise_source_error(exc)
        self._spawn(snapshot)
        self._facts = threading.Thread(target=self._read_facts, args=(conn,), name="snapshot-facts", daemon=True)
        self._facts.start()

    def _read_facts(self, conn: psycopg.Connection[Any]) -> None:
        """Runs in its own thread; a failure is kept for _finish() to raise."""
        try:
            self.table_counts = self._count_rows(conn)
            self.partitions = dict(conn.execute(PARTITIONED_TABLES).fetchall())
            globals_ = pgglobals.capture(conn)
            globals_["globals_sql"], globals_["globals_sql_error"] = dump_globals_sql(self.params, self.pg_dumpall)
            self.globals = globals_
        except BaseException as exc:
            self._facts_error = exc

    def _wait_for_facts(self) -> None:
        if self._facts is None:
            return
        self._facts.join()
        self._facts = None
        self.check_cancelled()
        if isinstance(self._facts_error, psycopg.Error):
            self._raise_source_error(self._facts_error)
        if self._facts_error is not None:
            raise self._facts_error

    def _count_rows(self, conn: psycopg.Connection[Any]) -> dict[str, int]:
        return {f"{schema}.{table}": count_rows(conn, schema, table) for schema, table in conn.execute(COUNT_TABLES)}

    def _spawn(self, snapshot: str) -> None:
        argv = [
            self.pg_dump,
            f"--snapshot={snapshot}",
            "--no-password",
            "--format=" + ("c" if self.fmt == "custom" else "p"),
        ]
        if self.compress is not None:
            argv.append(f"--compress={self.compress}")
        with self._lock:
            self.check_cancelled()
            self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - outlives start(): the process writes it
            self._process = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=self._stderr, env=libpq_env(self.params), start_new_session=True
            )

    def _raise_source_error(self, exc: psycopg.Error) -> NoReturn:
        self.check_cancelled()
        raise SourceError(describe_pg_error(exc, self.params))

    def __iter__(self) -> Iterator[bytes]:
        if self._process is None:
            self.start()
        assert self._process is not None and self._process.stdout is not None, "started by start()"
        stdout = self._process.stdout
        while chunk := stdout.read(self.chunk_size):
            self.raw_bytes += len(chunk)
            yield chunk
        self._finish()

    def _finish(self) -> None:
        assert self._process is not None and self._stderr is not None, "started by start()"
        code = self._process.wait()
        self.check_cancelled()
        if code != 0:
            self._stderr.seek(0)
            message = self._stderr.read().decode(errors="replace")
            raise SourceError(describe_pg_error(message, self.params) or f"pg_dump exited with code {code}")
        self._wait_for_facts()

    def cancel(self) -> None:
        """Stops pg_dump and any query in flight; safe from another thread."""
        self._cancelled.set()
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.cancel_safe(timeout=5)
            self._terminate_process()

    def close(self) -> None:
        self._close_process()
        if self._facts is not None:  # the dump stopped early: stop the counting too
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.cancel_safe(timeout=5)
            self._facts.join()
        if self._conn is not None:
            self._conn.close()


def count_rows(conn: psycopg.Connection[Any], schema: str, table: str) -> int:
    rows: int = one(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table)))
    return rows


def dump_globals_sql(params: Mapping[str, Any], pg_dumpall: str = "pg_dumpall") -> tuple[str, str]:
    """`pg_dumpall --globals-only --no-role-passwords`: the cluster's roles
    and tablespaces as PostgreSQL writes them, kept for a DBA to read or
    replay by hand; a role that may not read them all gets the reason."""
    argv = [pg_dumpall, "--globals-only", "--no-role-passwords", "--no-password"]
    if params.get("dbname"):
        argv += ["--database", params["dbname"]]
    try:
        done = subprocess.run(argv, env=libpq_env(params), capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "", f"pg_dumpall could not run: {exc}"
    if done.returncode != 0:
        return "", f"pg_dumpall failed: {redact(first_line(done.stderr), params)}"
    return done.stdout, ""


class SqliteDump(Dump):
    """Streams a consistent copy of a SQLite database.

    SQLite's online backup API writes to another database, so a temporary
    copy is unavoidable here; it is deleted as soon as it has been streamed.
    """

    def __init__(self, path: str | os.PathLike[str], chunk_size: int = CHUNK_SIZE) -> None:
        super().__init__()
        self.path = str(path)
        self.chunk_size = chunk_size
        self.server_version = sqlite3.sqlite_version
        self.tool_version = f"python-sqlite3 {sqlite3.sqlite_version}"
        self._temp: str | None = None

    def start(self) -> None:
        if not os.path.isfile(self.path):
            raise SourceError(f"SQLite database not found: {self.path}")
        fd, temp = tempfile.mkstemp(prefix="strongroom-sqlite-", suffix=".sqlite3")
        self._temp = temp
        os.close(fd)
        try:
            source = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            target = sqlite3.connect(temp)
            with source, target:
                source.backup(target)
            source.close()
            target.execute("PRAGMA journal_mode=DELETE")
            self.table_counts = self._count_rows(target)
            target.close()
        except sqlite3.Error as exc:
            raise SourceError(f"Cannot back up SQLite database {self.path}: {exc}") from exc

    def _count_rows(self, conn: sqlite3.Connection) -> dict[str, int]:
        names = conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()
        return {
            name: conn.execute(f'SELECT count(*) FROM "{name.replace(chr(34), chr(34) * 2)}"').fetchone()[0]
            for (name,) in names
        }

    def __iter__(self) -> Iterator[bytes]:
        if self._temp is None:
            self.start()
        assert self._temp is not None, "made by start()"
        with open(self._temp, "rb") as handle:
            while chunk := handle.read(self.chunk_size):
                self.check_cancelled()
                self.raw_bytes += len(chunk)
                yield chunk

    def close(self) -> None:
        if self._temp and os.path.exists(self._temp):
            os.unlink(self._temp)
