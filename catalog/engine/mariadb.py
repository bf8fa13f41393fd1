"""Reaching a MariaDB or MySQL server: from Python (PyMySQL) and from the
client tools (mariadb-dump, mariadb), with the same parameters.

The password reaches the tools through an option file readable only by the
service user, in a private temporary directory removed as soon as the tool
has started and read it; never through their arguments (`ps` shows those to
every user) nor the environment (MYSQL_PWD is visible in /proc to the same
user and is deprecated by both servers).

Connection parameters are a dict with host, port, dbname, user, password and
sslmode (as a Source gives them: Source.conninfo()). sslmode takes the
PostgreSQL words the forms already use: "" or "prefer" (the tools' default),
"disable", "require" (encrypted, certificate not checked), "verify-full"
(encrypted, certificate and host name checked against the system's CAs).
"""

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

import pymysql

from catalog.engine.errors import SourceError
from catalog.engine.exports.archive import LiveColumn, LiveTable

CONNECT_TIMEOUT = 10
DEFAULT_PORT = 3306

# The client tools by what they do, MariaDB's names first: Debian's
# mariadb-client installs both names, MySQL's client only the second.
DUMP_TOOLS = ("mariadb-dump", "mysqldump")
CLIENT_TOOLS = ("mariadb", "mysql")

# PyMySQL's error numbers (the server's and the client's) that have a plain answer.
ACCESS_DENIED, UNKNOWN_DATABASE, CANNOT_CONNECT, UNKNOWN_HOST, LOST_CONNECTION = 1045, 1049, 2003, 2005, 2013

ConnParams = dict[str, Any]


def find_tool(names: tuple[str, ...]) -> str:
    """The path of the first of `names` on PATH, or SourceError in words."""
    for name in names:
        if path := shutil.which(name):
            return path
    raise SourceError(
        f"{names[0]} is not installed on this host; install the MariaDB client tools "
        "(Debian: apt-get install mariadb-client)"
    )


def where(params: Mapping[str, Any]) -> str:
    return f"{params.get('host') or 'localhost'}:{params.get('port') or DEFAULT_PORT}"


def option_lines(params: Mapping[str, Any]) -> list[str]:
    """The option file's lines for the client tools: [client] for all of them."""
    lines = ["[client]"]
    for key in ("host", "port", "user", "password"):
        if value := params.get(key):
            lines.append(f"{key}={escape_option(str(value))}")
    sslmode = params.get("sslmode", "")
    if sslmode == "disable":
        lines.append("skip-ssl")
    elif sslmode == "require":
        lines += ["ssl", "skip-ssl-verify-server-cert"]
    elif sslmode == "verify-full":
        lines += ["ssl", "ssl-verify-server-cert"]
    # Only the mariadb/mysql client knows connect-timeout: in [client],
    # mariadb-dump would stop at it ("unknown variable"); it reads [mysql] not at all.
    lines += ["[mysql]", f"connect-timeout={CONNECT_TIMEOUT}"]
    return lines


def escape_option(value: str) -> str:
    """A value as an option file reads it back: quoted, with \\ and " escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextlib.contextmanager
def option_file(params: Mapping[str, Any]) -> Iterator[str]:
    """The path of an option file for the client tools, given first on their
    command line as --defaults-file=PATH (so that no other option file, such
    as the service user's ~/.my.cnf, changes where they connect)."""
    directory = tempfile.mkdtemp(prefix="strongroom-mariadb-")  # 0700
    path = os.path.join(directory, "client.cnf")
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write("\n".join(option_lines(params)) + "\n")
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def connect(params: Mapping[str, Any], database: str | None = None, **options: Any) -> pymysql.Connection:
    """A PyMySQL connection, or SourceError in words (no secret in it).
    `database`: another database than params' dbname (a scratch one)."""
    ssl: dict[str, Any] | None = None
    sslmode = params.get("sslmode", "")
    if sslmode == "require":
        ssl = {"check_hostname": False, "verify_mode": False}
    elif sslmode == "verify-full":
        ssl = {"check_hostname": True, "verify_mode": True}
    try:
        return pymysql.connect(
            host=params.get("host") or "localhost",
            port=int(params.get("port") or DEFAULT_PORT),
            user=params.get("user") or None,
            password=params.get("password") or "",
            database=database if database is not None else (params.get("dbname") or None),
            connect_timeout=CONNECT_TIMEOUT,
            charset="utf8mb4",
            ssl=ssl,
            ssl_disabled=sslmode == "disable",
            autocommit=True,
            **options,
        )
    except pymysql.MySQLError as exc:
        raise SourceError(describe_error(exc, params)) from None


def describe_error(exc: BaseException, params: Mapping[str, Any]) -> str:
    """One line, in words, for the usual ways a connection or a query fails."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    user, dbname, at = params.get("user", ""), params.get("dbname", ""), where(params)
    if code == ACCESS_DENIED:
        return f"Access denied for user {user} on {at} (wrong password, or the user may not connect from here)"
    if code == UNKNOWN_DATABASE:
        return f"Database {dbname} does not exist on {at}"
    if code in (CANNOT_CONNECT, UNKNOWN_HOST):
        return f"Cannot reach the MariaDB/MySQL server at {at}"
    if code == LOST_CONNECTION:
        return f"Lost the connection to the MariaDB/MySQL server at {at}"
    message = exc.args[1] if len(exc.args) > 1 else str(exc)
    return redact(f"MariaDB/MySQL error on {at}: {message}", params)


def redact(text: str, params: Mapping[str, Any]) -> str:
    """Removes the password from any text that might quote it."""
    if password := params.get("password"):
        text = text.replace(str(password), "***")
    return text


def quote_name(name: str) -> str:
    """An identifier quoted for MariaDB/MySQL SQL (backticks doubled)."""
    return "`" + name.replace("`", "``") + "`"


def list_tables(conn: pymysql.Connection, database: str, views: bool = False) -> list[str]:
    """The database's base tables (and its views, if asked), by name."""
    kinds = ("BASE TABLE", "VIEW") if views else ("BASE TABLE",)
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type IN %s"
            " ORDER BY table_name",
            (database, kinds),
        )
        return [str(name) for (name,) in cursor.fetchall()]


def live_tables(params: Mapping[str, Any]) -> list[LiveTable]:
    """The base tables of params' database for the plan form's table picker:
    [{"schema": the database, "name", "columns", "rows_estimate"}] (InnoDB's
    estimate; a partitioned table is one table, with its partition count)."""
    database = params["dbname"]
    try:
        with contextlib.closing(connect(params)) as conn, conn.cursor() as cursor:
            cursor.execute(
                "SELECT t.table_name, t.table_rows, COUNT(p.partition_name) FROM information_schema.tables t"
                " LEFT JOIN information_schema.partitions p ON p.table_schema = t.table_schema"
                " AND p.table_name = t.table_name AND p.partition_name IS NOT NULL"
                " WHERE t.table_schema = %s AND t.table_type = 'BASE TABLE' GROUP BY t.table_name, t.table_rows",
                (database,),
            )
            found = cursor.fetchall()
            cursor.execute(
                "SELECT table_name, column_name, column_type FROM information_schema.columns"
                " WHERE table_schema = %s ORDER BY table_name, ordinal_position",
                (database,),
            )
            columns: dict[str, list[LiveColumn]] = {}
            for table_name, column, column_type in cursor.fetchall():
                columns.setdefault(table_name, []).append({"name": column, "type": column_type})
    except pymysql.MySQLError as exc:
        raise SourceError(describe_error(exc, params)) from None
    tables = []
    for name, rows, partitions in sorted(found):
        table: LiveTable = {
            "schema": database,
            "name": name,
            "columns": columns.get(name, []),
            "rows_estimate": None if rows is None else int(rows),
        }
        if partitions:
            table["partitions"] = int(partitions)
        tables.append(table)
    return tables
