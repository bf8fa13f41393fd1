"""Logical backups of a MariaDB or MySQL database with mariadb-dump (or mysqldump).

The stored artifact, which restores rely on, is the output of

    mariadb-dump --defaults-file=F --single-transaction --routines --triggers --events
                 --hex-blob --default-character-set=utf8mb4 --no-tablespaces --skip-dump-date
                 --max-allowed-packet=1G -- DBNAME [TABLE ...]

(DUMP_OPTIONS below; MySQL's mysqldump 8 also gets MYSQL_DUMP_OPTIONS) for
one database and without CREATE DATABASE or USE, so that it loads into a
database of any name with `mariadb --defaults-file=F NEWNAME < dump`, but
for one case: a view whose definer is missing on the source server is
written with its columns qualified by the source database's name, which a
restore under another name rewrites (catalog/engine/mariadb_restore.py). With
the defaults those flags keep (--opt), each table is DROP TABLE IF EXISTS,
CREATE TABLE, then LOCK TABLES ... WRITE and extended INSERTs with every
binary value in hex, then its triggers; views come as placeholders first
and their real definitions at the end, after the routines and events. The
DEFINER clauses of views, triggers, routines and events are kept as the
server has them. A plan's chosen tables give the same dump limited to them
(routines and events are the database's and always come along).

Row counts come from the same snapshot: MariaDB cannot share a transaction's
snapshot with another session, so instead of counting with SQL the counter
here reads the dump's own INSERT statements as they pass (RowCounter).
"""

import contextlib
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pymysql

from catalog.engine import mariadb
from catalog.engine.dumpers import CHUNK_SIZE, Dump
from catalog.engine.errors import SourceError

DUMP_OPTIONS = (
    "--single-transaction",  # one consistent InnoDB snapshot, and no table locks
    "--routines",
    "--triggers",
    "--events",
    "--hex-blob",  # binary values as 0x..., whatever the bytes
    "--default-character-set=utf8mb4",
    "--no-tablespaces",  # else recent versions need the PROCESS privilege
    "--skip-dump-date",  # the same data dumps to the same bytes
    "--max-allowed-packet=1G",  # the largest row a server can hold; the default refuses rows over 16-24 MB
)

# MySQL's own mysqldump 8 asks the server for column statistics MariaDB does
# not have, and writes GTID statements a restore into another server refuses.
MYSQL_DUMP_OPTIONS = ("--column-statistics=0", "--set-gtid-purged=OFF")


def tool_version(path: str) -> str:
    """`mariadb-dump --version` without the platform, e.g. "mariadb-dump Ver
    10.19 Distrib 10.11.19-MariaDB" or "mysqldump Ver 8.0.36"."""
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SourceError(f"{path} could not run: {exc}") from None
    line = " ".join(done.stdout.split())
    words = re.match(r"(\S+ Ver \S+(?: Distrib [^,\s]+)?)", line)
    return words.group(1) if words else line


def server_in_words(version: str) -> str:
    """ "MariaDB 10.11.19" for "10.11.19-MariaDB-0+deb12u1", "MySQL 8.0.36" for "8.0.36"."""
    release = re.match(r"\d+(?:\.\d+)*", version)
    flavour = "MariaDB" if "mariadb" in version.lower() else "MySQL"
    return f"{flavour} {release.group() if release else version}"


def is_mysql_tool(version: str) -> bool:
    """MySQL's own mysqldump (8.x) rather than MariaDB's under either name."""
    return "mariadb" not in version.lower()


def dump_argv(tool: str, option_file: str, version: str, database: str, tables: Sequence[str] = ()) -> list[str]:
    argv = [tool, f"--defaults-file={option_file}", *DUMP_OPTIONS]
    if is_mysql_tool(version):
        argv += MYSQL_DUMP_OPTIONS
    # "--" ends the options: a table named like an option stays a table.
    return [*argv, "--", database, *tables]


def describe_dump_error(stderr: str, params: Mapping[str, Any], code: int) -> str:
    """One line in words from mariadb-dump's stderr, without the password."""
    text = mariadb.redact(stderr, params)
    lowered = text.lower()
    user, dbname, at = params.get("user", ""), params.get("dbname", ""), mariadb.where(params)
    if "access denied for user" in lowered and "using password" in lowered:
        return f"Access denied for user {user} on {at} (wrong password, or the user may not connect from here)"
    if "unknown database" in lowered:
        return f"Database {dbname} does not exist on {at}"
    if "can't connect" in lowered or "unknown server host" in lowered:
        return f"Cannot reach the MariaDB/MySQL server at {at}"
    if "lost connection" in lowered or "server has gone away" in lowered:
        return f"Lost the connection to the MariaDB/MySQL server at {at} during the dump"
    if "show events" in lowered and "access denied" in lowered:
        return f"User {user} may not read the events of {dbname}: grant it EVENT on {dbname}"
    if "show view" in lowered and "denied" in lowered:
        return f"User {user} may not read the views of {dbname}: grant it SHOW VIEW on {dbname}"
    if "insufficient privileges to show create" in lowered:
        return (
            f"User {user} may not read a procedure or function another user defined in {dbname}: "
            "grant it SELECT on mysql.proc (MariaDB 11.3 and later: SHOW CREATE ROUTINE)"
        )
    if "couldn't find table" in lowered:
        return "A chosen table is not in the database: " + first_line(text)
    return first_line(text) or f"mariadb-dump exited with code {code}"


def first_line(text: str) -> str:
    for line in text.splitlines():
        line = re.sub(r"^(mariadb-dump|mysqldump)(: | Got error: )", "", line.strip())
        if line and not line.lower().startswith("warning"):
            return line[:300]
    return ""


class MariaDBDump(Dump):
    """Iterates over mariadb-dump's output for one database (or some of its
    tables), counting each table's rows in it as it passes."""

    def __init__(
        self,
        conninfo: Mapping[str, Any],
        tables: Sequence[str] = (),
        chunk_size: int = CHUNK_SIZE,
        tools: tuple[str, ...] = mariadb.DUMP_TOOLS,
    ) -> None:
        super().__init__()
        self.params = dict(conninfo)
        self.tables = list(tables)
        self.chunk_size = chunk_size
        self.tools = tools
        self.server_version = ""
        self.tool_version = ""
        self.database_defaults: dict[str, str] = {}  # the database's default character set and collation
        self.counter = RowCounter()
        self.warnings: list[str] = []  # for the backup's log
        self._options: contextlib.ExitStack | None = None

    def start(self) -> None:
        """Checks the server and the database over SQL first, for errors in
        words and the server's version, then starts the dump."""
        tool = mariadb.find_tool(self.tools)
        self.tool_version = tool_version(tool)
        with self._lock:
            self.check_cancelled()
        with contextlib.closing(mariadb.connect(self.params)) as conn:
            self.server_version = server_version(conn)
            self.database_defaults = database_defaults(conn, self.params["dbname"])
            if self.tables:
                check_tables_exist(conn, self.params["dbname"], self.tables)
            self.warnings = self._warnings(conn)
        self._spawn(tool)

    def _warnings(self, conn: pymysql.Connection) -> list[str]:
        """What the dump will lack without failing: mariadb-dump leaves out
        the triggers (and the tables) a user may not see without a word, and
        tables not in InnoDB are read outside the snapshot."""
        database = self.params["dbname"]
        try:
            problems = privilege_problems(conn, database)
            outside = non_transactional_tables(conn, database)
        except pymysql.MySQLError:
            return []  # only a warning: the dump itself says what fails
        warnings = [f"User {self.params.get('user', '')} lacks {problem}" for problem in problems]
        if outside:
            warnings.append("Not InnoDB, so not in the consistent snapshot: " + ", ".join(outside))
        return warnings

    def _spawn(self, tool: str) -> None:
        options = contextlib.ExitStack()
        try:
            path = options.enter_context(mariadb.option_file(self.params))
            argv = dump_argv(tool, path, self.tool_version, self.params["dbname"], self.tables)
            with self._lock:
                self.check_cancelled()
                self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - outlives start(): the process writes it
                self._process = subprocess.Popen(
                    argv, stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL, start_new_session=True
                )
        except BaseException:
            options.close()
            raise
        self._options = options

    def _forget_option_file(self) -> None:
        """The tool reads its option file before it writes a byte or exits;
        from then on the password need not stay on disk."""
        if self._options is not None:
            self._options.close()
            self._options = None

    def __iter__(self) -> Iterator[bytes]:
        if self._process is None:
            self.start()
        assert self._process is not None and self._process.stdout is not None, "started by start()"
        stdout = self._process.stdout
        while chunk := stdout.read(self.chunk_size):
            self._forget_option_file()
            self.check_cancelled()
            self.counter.feed(chunk)
            self.raw_bytes += len(chunk)
            yield chunk
        self._finish()

    def _finish(self) -> None:
        assert self._process is not None and self._stderr is not None, "started by start()"
        code = self._process.wait()
        self._forget_option_file()
        self.check_cancelled()
        if code != 0:
            self._stderr.seek(0)
            message = self._stderr.read().decode(errors="replace")
            raise SourceError(describe_dump_error(message, self.params, code))
        try:
            self.table_counts = self.counter.finish()
        except DumpNotUnderstood as exc:
            raise SourceError(f"The rows in the dump could not be counted: {exc}") from None

    def cancel(self) -> None:
        """Stops mariadb-dump; safe from another thread."""
        self._cancelled.set()
        with self._lock:
            self._terminate_process()

    def close(self) -> None:
        self._close_process()
        self._forget_option_file()


def database_defaults(conn: pymysql.Connection, database: str) -> dict[str, str]:
    """The database's default character set and collation, which a dump of
    one database does not carry and a restore creates its database with."""
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA "
            "WHERE SCHEMA_NAME = %s",
            [database],
        )
        row = cursor.fetchone()
    return {"charset": row[0], "collation": row[1]} if row else {}


def server_version(conn: pymysql.Connection) -> str:
    with conn.cursor() as cursor:
        cursor.execute("SELECT VERSION()")
        row = cursor.fetchone()
    return str(row[0]) if row else ""


def check_tables_exist(conn: pymysql.Connection, database: str, tables: Sequence[str]) -> None:
    present = set(mariadb.list_tables(conn, database, views=True))
    missing = [name for name in tables if name not in present]
    if missing:
        raise SourceError(f"Not in database {database} (renamed or dropped?): {', '.join(missing)}")


# --- row counts from the dump's own bytes ---------------------------------

# A string literal as mariadb-dump writes values: single quotes, backslash
# escapes ('\\', '\'', '\0', '\n', ...). The dump's session runs with an
# empty SQL_MODE, so never NO_BACKSLASH_ESCAPES; a doubled '' reads as two
# adjacent literals, which counts the same.
STRING = re.compile(rb"'[^'\\]*(?:\\.[^'\\]*)*'", re.DOTALL)
STRING_REST = re.compile(rb"[^'\\]*(?:\\.[^'\\]*)*", re.DOTALL)
IDENTIFIER = rb"`((?:[^`]|``)+)`"
INSERT_HEADER = re.compile(
    rb"INSERT INTO " + IDENTIFIER + rb"(?:\s*\((?:`(?:[^`]|``)*`|[\s,])*\))?\s*VALUES\s*", re.DOTALL
)
CREATE_TABLE = re.compile(rb"CREATE TABLE " + IDENTIFIER)
DELIMITER_COMMAND = re.compile(rb"DELIMITER[ \t]+(\S+)[^\n]*\n", re.IGNORECASE)
# What a statement start may be preceded by: blanks and -- or # comments.
LEADING = re.compile(rb"(?:\s+|--(?:[ \t][^\n]*)?\n|#[^\n]*\n)*")
# Where an INSERT statement must be seen whole before it is recognised, and
# past which its body is scanned literal by literal rather than line by line.
HEADER_LIMIT = 1 << 16
LINE_LIMIT = 1 << 22


class DumpNotUnderstood(ValueError):
    """The dump is not laid out as mariadb-dump and mysqldump lay it out."""


class RowCounter:
    """Counts the rows of each table in a mariadb-dump/mysqldump stream.

    A row is a parenthesised tuple of an `INSERT INTO `t` VALUES (...),(...);`
    statement: outside string literals the values of a dump never hold a
    parenthesis (numbers, NULL, 0x hex), so the tuples are the opening
    parentheses outside quotes. Other statements (CREATE TABLE, routines in a
    DELIMITER ;; block, views in versioned comments) are skipped with their
    quotes, comments and delimiter respected, so an "INSERT INTO" inside a
    procedure's body or a string is not counted. A table's CREATE TABLE
    registers it with 0 rows, so that empty tables are listed too.

    Fast because the dump never has a raw newline inside a value (the tool
    escapes it as \\n): within an INSERT every newline is outside quotes, so
    the statement ends at the first ";\\n" and mariadb-dump's rows, one a
    line, are its "),\\n(" plus one, counted in C over whole lines (see
    _rows; bench/mariadb_rowcount.py measures it). Only a line longer than
    LINE_LIMIT (a single huge row) is walked literal by literal.
    """

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._pending = b""  # bytes not consumed yet: a partial statement start, line or token
        self._delimiter = b";"
        self._table: str | None = None  # inside an INSERT into this table
        self._one_row_a_line = False  # that INSERT's layout: "VALUES\n(...),\n(...)" (MariaDB's)
        self._layout_seen = False  # its first line was checked to hold one row
        self._in_string = False  # inside a quoted value of a long INSERT line (walked literal by literal)
        self._in_statement = False  # inside another statement, at a token boundary

    def feed(self, data: bytes) -> None:
        start = 0
        if self._pending:
            # What was left over is usually the start of a line: finish it with
            # the first line of `data` rather than copy the whole chunk after it.
            head = data.find(b"\n") + 1 or len(data)
            buffer = self._pending + data[:head]
            left = buffer[self._consume(buffer, 0, final=False) :]
            data, start = (left + data[head:], 0) if left else (data, head)
        self._pending = data[self._consume(data, start, final=False) :]

    def finish(self) -> dict[str, int]:
        buffer, self._pending = self._pending, b""
        rest = buffer[self._consume(buffer, 0, final=True) :]
        if self._table is not None or rest.strip():
            raise DumpNotUnderstood("the dump ends in the middle of a statement")
        return dict(sorted(self.counts.items()))

    def _consume(self, data: bytes, pos: int, final: bool) -> int:
        """Consumes what it can of data from `pos`; returns where it stopped."""
        while pos < len(data):
            if self._table is not None:
                end = self._insert(data, pos, final)
            elif self._in_statement:
                end = self._statement(data, pos, final)
            else:
                end = self._statement_start(data, pos, final)
            if end is None:
                return pos
            pos = end
        return pos

    # Each step returns where it stopped, or None when it needs more bytes.

    def _statement_start(self, data: bytes, pos: int, final: bool) -> int | None:
        leading = LEADING.match(data, pos)
        start = leading.end() if leading else pos
        waiting = not final and start + HEADER_LIMIT > len(data) and data.find(b"\n", start) == -1
        if start == len(data) or waiting:  # a statement's first line is needed whole
            return start if start > pos else None
        head = data[start : start + 16]
        if head[:10].upper() == b"DELIMITER ":
            command = DELIMITER_COMMAND.match(data, start)
            if command is None:
                return self._need_more(data, pos, start, final, "an unfinished DELIMITER command")
            self._delimiter = command.group(1)
            return command.end()
        if head.startswith(b"INSERT INTO `"):
            header = INSERT_HEADER.match(data, start)
            if header is None:
                return self._need_more(data, pos, start, final, "an INSERT statement it cannot read")
            self._table = unquote(header.group(1))
            self._one_row_a_line = header.group().endswith(b"\n")
            self._layout_seen = False
            self.counts.setdefault(self._table, 0)
            return header.end()
        if created := CREATE_TABLE.match(data, start):
            self.counts.setdefault(unquote(created.group(1)), 0)
        self._in_statement = True
        return start

    def _need_more(self, data: bytes, pos: int, start: int, final: bool, what: str) -> int | None:
        if final or len(data) - start > HEADER_LIMIT:
            raise DumpNotUnderstood(f"{what} at {data[start : start + 60]!r}")
        return start if start > pos else None

    def _insert(self, data: bytes, pos: int, final: bool) -> int | None:
        """Counts tuples up to the statement's end, or as far as whole lines go."""
        assert self._table is not None
        if not self._in_string:
            line_end = data.rfind(b"\n", pos)
            if line_end != -1:
                end = statement_end(data, pos, line_end + 1)
                self.counts[self._table] += self._rows(data, pos, line_end if end == -1 else end)
                if end == -1:
                    return line_end + 1
                self._table = None
                return end + 2
            if len(data) - pos <= LINE_LIMIT and not final:
                return None
        return self._walk_insert(data, pos, final)

    def _rows(self, data: bytes, start: int, end: int) -> int:
        """The tuples in whole lines data[start:end] of an INSERT's values.

        mariadb-dump writes one row a line, "VALUES\n(...),\n(...),\n(...);",
        and never a raw newline inside a value (it escapes it as \\n), so there
        each "),\n(" is a row boundary: counted in one pass at memory speed
        (once the statement's first line has shown one row, its string
        literals aside, so that a header in MariaDB's layout over rows in
        another cannot be miscounted). Any other layout (mysqldump's rows all on one line) has its string
        literals removed and the opening parentheses left counted."""
        if self._one_row_a_line and data.startswith(b"(", start):
            if not self._layout_seen:  # the statement's first line shows its layout
                self._layout_seen = True
                first = data.find(b"\n", start, end)
                self._one_row_a_line = tuples_in(data, start, end if first == -1 else first) == 1
            if self._one_row_a_line:
                return data.count(b"),\n(", start, end) + 1
        return tuples_in(data, start, end)

    def _walk_insert(self, data: bytes, pos: int, final: bool) -> int | None:
        """A long line, literal by literal, keeping only a trailing backslash."""
        assert self._table is not None
        start = pos
        while pos < len(data):
            if self._in_string:
                rest = STRING_REST.match(data, pos)
                pos = rest.end() if rest else pos
                if pos == len(data):
                    return pos
                if data[pos] == 0x5C:  # a backslash as the last byte: what it escapes comes next
                    return len(data) if final else (pos if pos > start else None)
                self._in_string, pos = False, pos + 1
                continue
            quote = data.find(b"'", pos)
            stop = len(data) if quote == -1 else quote
            end = data.find(b";", pos, stop)
            if end != -1:
                self.counts[self._table] += data.count(b"(", pos, end)
                self._table = None
                return end + 1
            self.counts[self._table] += data.count(b"(", pos, stop)
            if quote == -1:
                return len(data)
            self._in_string, pos = True, quote + 1
        return pos

    def _statement(self, data: bytes, pos: int, final: bool) -> int | None:
        """Skips to the end of a statement that is not an INSERT, token by token."""
        tokens = statement_tokens(self._delimiter)
        start = pos
        while True:
            token = tokens.search(data, pos)
            if token is None:
                # Keep a few bytes: they may start a token ("-" of "-- ", ";" of ";;").
                keep = 0 if final else len(self._delimiter) + 2
                return max(pos, len(data) - keep) if len(data) - keep > pos else None
            kind = token.group()
            if kind == self._delimiter:
                self._in_statement = False
                return token.end()
            if kind.startswith((b"/*!", b"/*M!")) or kind == b"*/":
                pos = token.end()  # a versioned comment's content is code
                continue
            end = skip_quoted(kind, data, token.end())
            if end is None:
                return len(data) if final else (token.start() if token.start() > start else None)
            pos = end


def skip_quoted(kind: bytes, data: bytes, pos: int) -> int | None:
    """Where the quoted name or value, or the comment, opened by `kind` ends;
    None if not within data."""
    closer = CLOSERS.get(kind, b"\n")  # "-- " and "#" comments end with their line
    if isinstance(closer, re.Pattern):
        closed = closer.match(data, pos)
        return closed.end() if closed else None
    end = data.find(closer, pos)
    return None if end == -1 else end + len(closer)


def tuples_in(data: bytes, start: int, end: int) -> int:
    """The opening parentheses of data[start:end] outside string literals."""
    return STRING.sub(b"", data[start:end]).count(b"(")


def statement_end(data: bytes, start: int, stop: int) -> int:
    """Where the INSERT whose values run from `start` ends (its ";\n") before
    `stop`, or -1. Within an INSERT every newline is outside quotes, so the
    first ";" followed by one is the end. A ";" is rare in values, so looking
    for it alone (memchr) is several times faster than for ";\n"."""
    while (semicolon := data.find(b";", start, stop)) != -1:
        if data[semicolon + 1 : semicolon + 2] == b"\n":
            return semicolon
        start = semicolon + 1
    return -1


# What ends each quoted or commented run inside a statement: a quote by the
# same quote not escaped (backticks are doubled, never escaped), a comment by */.
CLOSERS: dict[bytes, re.Pattern[bytes] | bytes] = {
    b"'": re.compile(rb"[^'\\]*(?:\\.[^'\\]*)*'", re.DOTALL),
    b'"': re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL),
    b"`": b"`",
    b"/*": b"*/",
}

_TOKENS: dict[bytes, re.Pattern[bytes]] = {}


def statement_tokens(delimiter: bytes) -> re.Pattern[bytes]:
    """What matters in a statement: quotes, comments, versioned comments' ends
    and the delimiter, longest first."""
    if delimiter not in _TOKENS:
        _TOKENS[delimiter] = re.compile(
            rb"/\*M?!\d*|\*/|/\*|--(?=[ \t\r\n])|#|['\"`]|" + re.escape(delimiter), re.DOTALL
        )
    return _TOKENS[delimiter]


def unquote(identifier: bytes) -> str:
    return identifier.replace(b"``", b"`").decode("utf-8", errors="replace")


def count_rows(dump: bytes) -> dict[str, int]:
    """A whole dump's rows per table (for tests and checks)."""
    counter = RowCounter()
    counter.feed(dump)
    return counter.finish()


# --- what a dump needs of the user (the source's Test button) ---------------

# A privilege a consistent, complete dump needs, and what is lost without it.
NEEDED_PRIVILEGES = {
    "SELECT": "tables it may not read are left out of the dump",
    "SHOW VIEW": "the dump fails at the first view",
    "TRIGGER": "triggers are left out of the dump without a word",
    "EVENT": "the dump fails at the events",
}
# Reading the body of a routine another user defined: MariaDB before 11.3
# asks for SELECT on mysql.proc, 11.3 and later for SHOW CREATE ROUTINE
# (MySQL 8: SHOW_ROUTINE, or global SELECT).
ROUTINE_PRIVILEGES = ("SHOW CREATE ROUTINE", "SHOW_ROUTINE")
# LOCK TABLES is not needed (--single-transaction takes no table locks), nor
# PROCESS (--no-tablespaces), nor RELOAD (no --master-data).

GRANT_LINE = re.compile(
    r"^GRANT (?P<privileges>.+?) ON (?:(?:PROCEDURE|FUNCTION|PACKAGE(?: BODY)?) )?"
    r"(?P<db>\*|`(?:[^`]|``)*`)\.(?P<table>\*|`(?:[^`]|``)*`) TO ",
    re.DOTALL,
)
TRANSACTIONAL_ENGINES = ("InnoDB",)


def grants(conn: pymysql.Connection) -> list[tuple[set[str], str, str]]:
    """(privileges, database pattern, table) for each GRANT of the current
    user and its enabled role (MariaDB's SHOW GRANTS lists both). A
    privilege granted on some columns only is left out: it is not the table's."""
    with conn.cursor() as cursor:
        cursor.execute("SHOW GRANTS")
        lines = [str(row[0]) for row in cursor.fetchall()]
    found = []
    for line in lines:
        match = GRANT_LINE.match(line)
        if match is None:  # a role granted, a proxy
            continue
        listed = re.sub(r"\([^)]*\)", "(columns)", match["privileges"])
        privileges = {p.strip() for p in listed.split(",") if "(columns)" not in p}
        found.append((privileges, unquote_text(match["db"]), unquote_text(match["table"])))
    return found


def unquote_text(name: str) -> str:
    return name if name == "*" else name[1:-1].replace("``", "`")


def database_matches(pattern: str, database: str) -> bool:
    """Whether a GRANT's database (`*`, a name, or a LIKE pattern with % and _) covers `database`."""
    if pattern == "*":
        return True
    regex = "".join(
        re.escape(part[1:]) if part.startswith("\\") else {"%": ".*", "_": "."}.get(part, re.escape(part))
        for part in re.findall(r"\\.|.", pattern, re.DOTALL)
    )
    return re.fullmatch(regex, database, re.DOTALL) is not None


def privilege_problems(conn: pymysql.Connection, database: str) -> list[str]:
    """What the connected user lacks for a complete dump of `database`, each
    in words; empty when nothing is missing."""
    whole: set[str] = set()
    some_tables: dict[str, set[str]] = {}
    routines = False
    for privileges, db, table in grants(conn):
        if "ALL PRIVILEGES" in privileges:
            privileges = privileges | set(NEEDED_PRIVILEGES)
        if "SELECT" in privileges and database_matches(db, "mysql") and table in ("*", "proc"):
            routines = True  # global SELECT, or mysql.proc's
        if not database_matches(db, database):
            continue
        if table != "*":
            for privilege in privileges:
                some_tables.setdefault(privilege, set()).add(table)
            continue
        whole |= privileges
        routines = routines or bool(privileges & set(ROUTINE_PRIVILEGES))
    problems = []
    for privilege, loss in NEEDED_PRIVILEGES.items():
        if privilege not in whole:
            only = sorted(some_tables.get(privilege, ()))
            on = f" (it has it on {', '.join(only)} only)" if only else ""
            problems.append(f"{privilege} on {database}{on}: {loss}")
    if not routines:
        problems.append(
            "SELECT on mysql.proc (MariaDB 11.3 and later: SHOW CREATE ROUTINE on the database; MySQL 8: "
            "SHOW_ROUTINE): the dump fails at the first procedure or function another user defined, "
            "or leaves it out if the user cannot see it at all"
        )
    return problems


def non_transactional_tables(conn: pymysql.Connection, database: str) -> list[str]:
    """Tables (as "name (Engine)") that --single-transaction's snapshot does not
    cover: MyISAM, Aria and the like are read as they are at that moment."""
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, engine FROM information_schema.tables WHERE table_schema = %s"
            " AND table_type = 'BASE TABLE' AND COALESCE(engine, '') NOT IN %s ORDER BY table_name",
            (database, TRANSACTIONAL_ENGINES),
        )
        return [f"{name} ({engine or 'unknown engine'})" for name, engine in cursor.fetchall()]


def check_source(params: Mapping[str, Any], tools: tuple[str, ...] = mariadb.DUMP_TOOLS) -> dict[str, Any]:
    """What the source's Test button reports: the server's and the dump tool's
    versions, the privileges a complete dump lacks, and the tables outside the
    snapshot. SourceError when it cannot connect at all."""
    tool = mariadb.find_tool(tools)
    with contextlib.closing(mariadb.connect(params)) as conn:
        try:
            return {
                "server_version": server_version(conn),
                "tool_version": tool_version(tool),
                "missing": privilege_problems(conn, params["dbname"]),
                "outside_snapshot": non_transactional_tables(conn, params["dbname"]),
            }
        except pymysql.MySQLError as exc:
            raise SourceError(mariadb.describe_error(exc, params)) from None
