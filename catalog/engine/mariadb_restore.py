"""Loading a stored mariadb-dump into a MariaDB or MySQL server.

The dump (catalog/engine/mariadb_dump.py) is one database's, without
`CREATE DATABASE` or `USE`, so it loads into a database of any name: this
module creates that database, streams the dump into the `mariadb` client on
its stdin, and drops the database again if anything fails, so a failed or
cancelled restore leaves nothing behind. MariaDB cannot rename a database,
so unlike PostgreSQL's the restore goes straight into the database it is
for; until it ends, that database is there half-filled.

On its way to the client the dump passes through `DumpEditor`, which reads
only the lines that matter (mariadb-dump's section headers and the lines that
create views, triggers, routines and events) and passes every other byte on
untouched, a chunk at a time, whatever the size of a line of rows:

- a chosen-table restore keeps the preamble and the chosen tables' sections
  (structure, rows, and the triggers that follow a table's rows) and leaves
  out views, routines and events, which may name tables not chosen;
- views' definitions name their own database where MariaDB qualified a
  column itself (`SELECT *`); that name is changed to the target's, or the
  view would fail to load into a database of another name (or, worse, read
  the source database while it still exists);
- on request, DEFINER clauses become CURRENT_USER (a user without SUPER or
  SET USER may only create objects defined by itself);
- on request, events are created DISABLED (a scratch database must not run
  the source's scheduled jobs, which may write to other databases).

It also counts what the dump creates (tables, views, triggers, routines,
events), so a test restore can compare them with what the server holds.

The dump's preamble sets FOREIGN_KEY_CHECKS=0 and UNIQUE_CHECKS=0 for its
session, and the editor keeps it: rows load in the dump's table order (by
name, not by their foreign keys) and are not checked again, as they were
consistent in the backup's snapshot.

Differences with MySQL (not tested here: only MariaDB is installed): MySQL's
`mysql` client does not know the sandbox-mode line MariaDB 10.11 writes
first (`/*M!999999\\- enable the sandbox mode */`), so a MariaDB dump loads
through MariaDB's client; MySQL 8 asks for SET_USER_ID (8.2: SET_ANY_DEFINER)
where MariaDB asks for SUPER or SET USER; MySQL 8's collations
(utf8mb4_0900_ai_ci) do not exist on MariaDB.
"""

import contextlib
import re
import subprocess
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import pymysql

from catalog.engine import mariadb
from catalog.engine.errors import Cancelled, EngineError
from catalog.engine.restorers import RestoreError

# The line starts the editor reads; every other line passes through as bytes.
WATCHED = re.compile(
    rb"^(?:-- "
    rb"|/\*!50001 VIEW "
    rb"|/\*!50013 DEFINER="
    rb"|/\*!50003 CREATE\*/"
    rb"|/\*!50106 CREATE\*/"
    rb"|CREATE (?:DEFINER=|FUNCTION |PROCEDURE |OR REPLACE |AGGREGATE ))",
    re.M,
)
# A line start shorter than this may still become a watched one.
LONGEST_PREFIX = 32
# A watched line is held whole to be edited; none is near this long (they
# are headers and definitions, never rows).
WATCHED_LINE_LIMIT = 64 << 20

QUOTED = rb"`((?:[^`]|``)*)`"
HEADER = re.compile(
    rb"-- (?:(?P<table>Table structure for table )|(?P<data>Dumping data for table )"
    rb"|(?P<standin>Temporary (?:table|view) structure for view )|(?P<view>Final view structure for view ))" + QUOTED
)
SECTION = re.compile(rb"-- Dumping (?P<what>events|routines) for database ")
HOST_LINE = re.compile(rb"-- Host: .*?\s+Database: (?P<database>.+?)\s*$")
DEFINER = re.compile(
    rb"DEFINER=(?:`(?:[^`]|``)*`|'(?:[^'\\]|\\.)*'|[\w.$]+)(?:@(?:`(?:[^`]|``)*`|'(?:[^'\\]|\\.)*'|[\w.%$-]+))?"
)
EVENT_STATUS = re.compile(rb"( ON COMPLETION (?:NOT )?PRESERVE )(?:ENABLE|DISABLE ON SLAVE)\b")
ROUTINE = re.compile(rb"^CREATE (?:OR REPLACE )?(?:DEFINER=\S+ )?(?:AGGREGATE )?(?:FUNCTION|PROCEDURE) ")

OBJECT_KINDS = ("tables", "views", "triggers", "routines", "events")

# The server's error numbers that have a plainer answer than its own words.
NEEDS_SUPER, MISSING_DEFINER, PACKET_TOO_BIG = 1227, 1449, 1153
DATABASE_EXISTS = 1007
UNKNOWN_CHARACTER_SET, UNKNOWN_COLLATION = 1115, 1273

# --binary-mode: the bytes go to the server as they are (no \r\n or \0
# translation, no client command parsed out of the rows); the client's own
# packet limit as high as it goes (the server's limit still applies).
CLIENT_OPTIONS = ("--binary-mode", "--default-character-set=utf8mb4", "--max-allowed-packet=1G")


def unquote(name: bytes) -> str:
    return name.replace(b"``", b"`").decode("utf-8", errors="replace")


@dataclass
class Contents:
    """What the dump held (and, for a chosen-table restore, what was kept of it)."""

    source_database: str = ""
    tables: list[str] = field(default_factory=list)  # every table the dump has, in its order
    created_with: str = ""  # the new database's character set and collation ("utf8mb4, utf8mb4_unicode_ci")
    objects: Counter[str] = field(default_factory=lambda: Counter({kind: 0 for kind in OBJECT_KINDS}))

    def object_counts(self) -> dict[str, int]:
        return {kind: self.objects[kind] for kind in OBJECT_KINDS}


class DumpEditor:
    """Edits a mariadb-dump stream on its way to the client (see the module's
    docstring). `tables`: the tables to keep (None: everything). `rename`:
    (source database, target database) for views' qualified names; the
    source's is read from the dump's header when it has one."""

    def __init__(
        self,
        *,
        tables: Collection[str] | None = None,
        source_database: str = "",
        target_database: str = "",
        definers_to_current_user: bool = False,
        disable_events: bool = False,
    ) -> None:
        self.tables = set(tables) if tables is not None else None
        self.target_database = target_database
        self.definers_to_current_user = definers_to_current_user
        self.disable_events = disable_events
        self.contents = Contents(source_database=source_database)
        self.keep = True
        self.section = ""
        self.head: bytes | None = None  # the start of a line that is (or may be) watched
        self.plain = False  # inside a line that is not watched
        self.out: list[bytes] = []

    # --- the stream

    def edit(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.feed(chunk)
            if self.out:
                yield b"".join(self.out)
                self.out = []
        if self.head is not None:  # a last line without its line break
            self.line(self.head)
            self.head = None
        if self.out:
            yield b"".join(self.out)
            self.out = []

    def emit(self, data: bytes) -> None:
        if self.keep and data:
            self.out.append(data)

    def feed(self, chunk: bytes) -> None:
        pos = self.finish_line(chunk)
        if pos < 0:
            return
        last = chunk.rfind(b"\n", pos)
        body_end = last + 1 if last >= pos else pos
        for match in WATCHED.finditer(chunk, pos, body_end):
            start = match.start()
            self.emit(chunk[pos:start])
            end = chunk.index(b"\n", start) + 1
            self.line(chunk[start:end])
            pos = end
        self.emit(chunk[pos:body_end])
        tail = chunk[body_end:]
        if not tail:
            return
        if WATCHED.match(tail) or len(tail) < LONGEST_PREFIX:
            self.head = tail
        else:
            self.emit(tail)
            self.plain = True

    def finish_line(self, chunk: bytes) -> int:
        """Carries on the line the last chunk ended inside; returns where the
        next line starts in `chunk`, or -1 when the line goes on past it."""
        if not self.plain and self.head is None:
            return 0
        end = chunk.find(b"\n")
        if self.plain:
            self.emit(chunk if end < 0 else chunk[: end + 1])
            self.plain = end < 0
            return -1 if end < 0 else end + 1
        assert self.head is not None  # not plain: a head is being held
        if end < 0:
            self.head += chunk
            if len(self.head) >= LONGEST_PREFIX and not WATCHED.match(self.head):
                self.emit(self.head)  # no watched line after all
                self.head, self.plain = None, True
            elif len(self.head) > WATCHED_LINE_LIMIT:
                raise RestoreError("The dump has a definition line longer than 64 MiB; it cannot be edited")
            return -1
        line, self.head = self.head + chunk[: end + 1], None
        self.line(line)
        return end + 1

    # --- one watched line

    def line(self, line: bytes) -> None:
        if not WATCHED.match(line):
            self.emit(line)
        elif line.startswith(b"-- "):
            self.comment(line)
        elif line.startswith(b"/*!50001 VIEW "):
            self.emit(self.renamed(line))
        elif line.startswith(b"/*!50013 DEFINER="):
            self.emit(self.definer(line))
        elif line.startswith(b"/*!50003 CREATE*/"):
            if b"TRIGGER " in line:
                self.counted("triggers")
            self.emit(self.definer(line))
        elif line.startswith(b"/*!50106 CREATE*/"):
            self.counted("events")
            if self.disable_events:
                line = EVENT_STATUS.sub(rb"\1DISABLE", line, count=1)
            self.emit(self.definer(line))
        else:  # CREATE …: a routine
            if self.section == "routines" and ROUTINE.match(line):
                self.counted("routines")
            self.emit(self.definer(line))

    def counted(self, kind: str) -> None:
        if self.keep:
            self.contents.objects[kind] += 1

    def comment(self, line: bytes) -> None:
        text = line.rstrip(b"\r\n")
        header = HEADER.match(text)
        if header:
            name = unquote(header.group(5))
            if header["table"]:
                self.section = "table"
                self.contents.tables.append(name)
                self.keep = self.tables is None or name in self.tables
                self.counted("tables")
            elif header["data"]:
                self.keep = self.tables is None or name in self.tables
            else:
                self.section = "view"
                self.keep = self.tables is None
                if header["view"]:
                    self.counted("views")
        elif section := SECTION.match(text):
            self.section = section["what"].decode()
            self.keep = self.tables is None
        elif host := HOST_LINE.match(text):
            self.contents.source_database = host["database"].decode("utf-8", errors="replace")
        self.emit(line)

    def renamed(self, line: bytes) -> bytes:
        """A view's definition naming the target database where it named its own."""
        source, target = self.contents.source_database, self.target_database
        if not source or not target or source == target:
            return line
        return line.replace(mariadb.quote_name(source).encode() + b".", mariadb.quote_name(target).encode() + b".")

    def definer(self, line: bytes) -> bytes:
        if not self.definers_to_current_user:
            return line
        return DEFINER.sub(b"DEFINER=CURRENT_USER", line, count=1)


def list_tables(chunks: Iterable[bytes]) -> list[str]:
    """The tables of a dump, in its order, read from the dump itself."""
    editor = DumpEditor(tables=())
    for _ in editor.edit(chunks):
        pass
    return editor.contents.tables


# --- the target server ----------------------------------------------------------


def server_params(params: Mapping[str, Any]) -> mariadb.ConnParams:
    """`params` for work on the server itself, in no database: the database
    they name may be gone (a restore after the source was dropped)."""
    return {**params, "dbname": ""}


def database_exists(params: Mapping[str, Any], name: str) -> bool:
    with contextlib.closing(mariadb.connect(server_params(params))) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", [name])
        return cursor.fetchone() is not None


def create_database(params: Mapping[str, Any], name: str, charset: str = "", collation: str = "") -> str:
    """Creates `name` (never over an existing one) with the source's default
    character set and collation when known; else utf8mb4, with the server's
    default collation when that is one of utf8mb4's (as on the source's own
    server, most often). A routine's parameters and variables without a
    character set of their own take the database's. Returns what it was
    created with ("utf8mb4, utf8mb4_unicode_ci")."""
    if not re.fullmatch(r"\w*", charset) or not re.fullmatch(r"\w*", collation):
        raise RestoreError(f"The recorded character set {charset!r} or collation {collation!r} is not one")
    params = server_params(params)
    with contextlib.closing(mariadb.connect(params)) as conn, conn.cursor() as cursor:
        if not charset:
            cursor.execute("SELECT @@character_set_server, @@collation_server")
            server_charset, server_collation = cursor.fetchone() or ("", "")
            charset, collation = "utf8mb4", server_collation if server_charset == "utf8mb4" else ""
        clause = f"CHARACTER SET {charset}" + (f" COLLATE {collation}" if collation else "")
        unknown = ""
        try:
            try:
                cursor.execute(f"CREATE DATABASE {mariadb.quote_name(name)} {clause}")
            except pymysql.MySQLError as exc:
                if not exc.args or exc.args[0] not in (UNKNOWN_CHARACTER_SET, UNKNOWN_COLLATION):
                    raise
                # Another server than the source's, without its collation (MySQL 8's
                # utf8mb4_0900_ai_ci on MariaDB): the server's utf8mb4 default, said.
                unknown = f" (the source's {charset}, {collation} is unknown to this server)"
                cursor.execute(f"CREATE DATABASE {mariadb.quote_name(name)} CHARACTER SET utf8mb4")
        except pymysql.MySQLError as exc:
            if exc.args and exc.args[0] == DATABASE_EXISTS:
                raise RestoreError(f"A database named {name} already exists; not touching it") from None
            raise RestoreError(f"Cannot create the database {name}: {mariadb.describe_error(exc, params)}") from None
        cursor.execute(
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA "
            "WHERE SCHEMA_NAME = %s",
            [name],
        )
        made = cursor.fetchone()
    return (f"{made[0]}, {made[1]}" if made else clause) + unknown


def drop_database(params: Mapping[str, Any], name: str) -> None:
    params = server_params(params)
    with contextlib.closing(mariadb.connect(params)) as conn, conn.cursor() as cursor:
        try:
            cursor.execute(f"DROP DATABASE IF EXISTS {mariadb.quote_name(name)}")
        except pymysql.MySQLError as exc:
            raise RestoreError(f"Cannot drop the database {name}: {mariadb.describe_error(exc, params)}") from None


def server_version(params: Mapping[str, Any]) -> str:
    with contextlib.closing(mariadb.connect(server_params(params))) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT VERSION()")
        row = cursor.fetchone()
    return str(row[0]) if row else ""


def release(version: str | None) -> str:
    """The server as people name it: "MariaDB 10.11" of "10.11.19-MariaDB-0+deb12u1",
    "MySQL 8.0" of "8.0.36"; "" when the version is not known."""
    found = re.search(r"(\d+)\.(\d+)", version or "")
    if not found:
        return ""
    flavour = "MariaDB" if "mariadb" in (version or "").lower() else "MySQL"
    return f"{flavour} {found[1]}.{found[2]}"


def release_numbers(version: str | None) -> tuple[int, int]:
    found = re.search(r"(\d+)\.(\d+)", version or "")
    return (int(found[1]), int(found[2])) if found else (0, 0)


def refusal_for(backup_version: str, server_version: str) -> str:
    """Why a dump taken on `backup_version` cannot go to a server at
    `server_version`, in words; "" when it can or either is unknown. A newer
    server of the same kind is fine; an older one or the other kind (MySQL
    for MariaDB) may lack the collations and syntax the dump uses."""
    backup, server = release(backup_version), release(server_version)
    if not backup or not server:
        return ""
    if backup.split()[0] != server.split()[0]:
        return (
            f"{server} is not {backup.split()[0]}: a dump of {backup} may use collations and syntax it lacks; "
            "download the dump and convert it by hand."
        )
    if release_numbers(server_version) < release_numbers(backup_version):
        return (
            f"{server} is older than the backup's {backup}: a dump from a newer server may use collations and "
            "syntax an older one lacks."
        )
    return ""


# The current user as information_schema.USER_PRIVILEGES names a grantee: 'user'@'host'.
CURRENT_GRANTEE = (
    "CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''')"
)


def global_privileges(params: Mapping[str, Any]) -> tuple[str, set[str]]:
    """(server version, the user's privileges granted on *.*), over one connection."""
    with contextlib.closing(mariadb.connect(server_params(params))) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT VERSION()")
        version = cursor.fetchone()
        cursor.execute(
            f"SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = {CURRENT_GRANTEE}"
        )
        return (str(version[0]) if version else ""), {row[0] for row in cursor.fetchall()}


def can_set_definers(params: Mapping[str, Any]) -> bool:
    """Whether the user may create objects defined by another user, which
    MariaDB allows with SUPER or SET USER (granted on *.*)."""
    _, privileges = global_privileges(params)
    return bool(privileges & {"SUPER", "SET USER"})


# --- loading --------------------------------------------------------------------


class Client:
    """The `mariadb` client reading a dump on its stdin, its output and errors
    kept in temporary files; its option file (with the password) lives as long
    as it does. A cancel stops it even while a write to it blocks."""

    def __init__(self, params: Mapping[str, Any], database: str, cancel_event: threading.Event | None) -> None:
        self.params = params
        self._files = contextlib.ExitStack()
        defaults = self._files.enter_context(mariadb.option_file(server_params(params)))
        self.stderr: IO[bytes] = self._files.enter_context(tempfile.TemporaryFile())  # noqa: SIM115 - closed by close()
        argv = [
            mariadb.find_tool(mariadb.CLIENT_TOOLS),
            f"--defaults-file={defaults}",  # first, as the tools require
            *CLIENT_OPTIONS,
            f"--database={database}",
        ]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.stderr, start_new_session=True
        )
        self.cancel_event = cancel_event
        self._done = threading.Event()
        self._watch = threading.Thread(target=self._stop_on_cancel, daemon=True)
        self._watch.start()

    def _stop_on_cancel(self) -> None:
        if self.cancel_event is None:
            return
        while not self._done.wait(0.2):
            if self.cancel_event.is_set():
                self.kill()
                return

    def check_cancel(self) -> None:
        if self.cancel_event is not None and self.cancel_event.is_set():
            raise Cancelled("Cancelled by request")

    def feed(self, chunks: Iterable[bytes]) -> None:
        stdin = self.proc.stdin
        assert stdin is not None  # started with stdin=PIPE
        try:
            for chunk in chunks:
                self.check_cancel()
                stdin.write(chunk)
            stdin.close()
        except (BrokenPipeError, ValueError):
            pass  # it stopped reading: its exit code and stderr say why (or the cancel did)
        code = self.proc.wait()
        self.check_cancel()
        if code != 0:
            raise RestoreError(self.error_in_words(code))

    def error_in_words(self, code: int) -> str:
        # The client echoes the failing statement (which may be megabytes of
        # rows) before its ERROR line: read the end, where the error is.
        size = self.stderr.seek(0, 2)
        self.stderr.seek(max(0, size - STDERR_TAIL))
        text = self.stderr.read().decode("utf-8", errors="replace")
        return client_error_in_words(text, code, self.params)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def close(self) -> None:
        self._done.set()
        self.kill()
        self.proc.wait()
        if self.proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError, ValueError):
                self.proc.stdin.close()
        self._watch.join()
        self._files.close()


STDERR_TAIL = 64 << 10
CLIENT_ERROR = re.compile(r"^ERROR (?P<code>\d+)(?: \((?P<state>\w+)\))?(?: at line \d+)?: (?P<message>.*)$", re.M)


def client_error_in_words(stderr: str, code: int, params: Mapping[str, Any]) -> str:
    """The client's error as one line in words, without the password (and
    without the statement it echoes, which may hold rows)."""
    found = next(reversed(list(CLIENT_ERROR.finditer(stderr))), None)
    if found is None:  # the client's own complaint (an option, a signal), never an echoed statement
        own = [line.strip() for line in stderr.splitlines() if re.match(r"(mariadb|mysql)(: | Ver )", line)]
        return mariadb.redact(f"mariadb failed (exit code {code}): {own[-1][:300] if own else 'no message'}", params)
    number, message = int(found["code"]), found["message"].strip()[:300]
    if number == NEEDS_SUPER and "SET USER" in message:
        words = (
            "The backup's views, triggers, routines or events are defined by another user, and creating them so "
            f"needs the SUPER or SET USER privilege, which {params.get('user') or 'this user'} lacks: grant it, "
            "or restore with the definers changed to the restoring user"
        )
    elif number == PACKET_TOO_BIG:
        words = (
            "A statement of the dump is larger than the target server's max_allowed_packet; raise it there "
            f"(SET GLOBAL max_allowed_packet=1073741824) and restore again ({message})"
        )
    elif number in (mariadb.CANNOT_CONNECT, mariadb.UNKNOWN_HOST, mariadb.ACCESS_DENIED, mariadb.LOST_CONNECTION):
        words = mariadb.describe_error(pymysql.MySQLError(number, message), params)
    else:
        words = f"The server refused the dump: {message} (error {number})"
    return mariadb.redact(words, params)


def load(
    chunks: Iterable[bytes],
    params: Mapping[str, Any],
    database: str,
    cancel_event: threading.Event | None = None,
) -> None:
    """Streams a dump into `database` through the `mariadb` client."""
    client = Client(params, database, cancel_event)
    try:
        client.feed(chunks)
    finally:
        client.close()


def restore(
    chunks: Iterable[bytes],
    params: Mapping[str, Any],
    database: str,
    *,
    tables: Collection[str] | None = None,
    source_database: str = "",
    charset: str = "",
    collation: str = "",
    definers_to_current_user: bool = False,
    disable_events: bool = False,
    cancel_event: threading.Event | None = None,
    created: Callable[[], object] = lambda: None,
) -> Contents:
    """Creates `database` (then calls `created`), loads the dump (edited as
    DumpEditor says) into it, and returns what the dump held; drops it again
    on any failure, a cancel included."""
    editor = DumpEditor(
        tables=tables,
        source_database=source_database,
        target_database=database,
        definers_to_current_user=definers_to_current_user,
        disable_events=disable_events,
    )
    created_with = create_database(params, database, charset, collation)
    editor.contents.created_with = created_with
    try:
        created()
        load(editor.edit(chunks), params, database, cancel_event)
        unknown = sorted(set(tables or ()) - set(editor.contents.tables))
        if unknown:
            raise RestoreError(f"The dump has no table {', '.join(unknown)}")
    except BaseException:
        with contextlib.suppress(EngineError):
            drop_database(params, database)
        raise
    return editor.contents


# --- what came back ---------------------------------------------------------------

ROW_TABLES = "('BASE TABLE', 'SYSTEM VERSIONED')"


def table_names(params: Mapping[str, Any], database: str) -> list[str]:
    """The database's tables that hold rows (not views, not sequences)."""
    with contextlib.closing(mariadb.connect(server_params(params))) as conn, conn.cursor() as cursor:
        cursor.execute(
            f"SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_TYPE IN {ROW_TABLES} "
            "ORDER BY TABLE_NAME",
            [database],
        )
        return [row[0] for row in cursor.fetchall()]


def row_counts(params: Mapping[str, Any], database: str, tables: Iterable[str] | None = None) -> dict[str, int]:
    """{table: COUNT(*)} for `tables` (every table holding rows by default);
    a table that is not there is left out."""
    present = table_names(params, database)
    wanted = present if tables is None else [t for t in tables if t in set(present)]
    counts = {}
    with contextlib.closing(mariadb.connect(server_params(params))) as conn, conn.cursor() as cursor:
        for table in wanted:
            cursor.execute(f"SELECT COUNT(*) FROM {mariadb.quote_name(database)}.{mariadb.quote_name(table)}")
            row = cursor.fetchone()
            counts[table] = int(row[0]) if row else 0
    return counts


OBJECT_QUERIES = {
    "tables": "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_TYPE <> 'VIEW'",
    "views": "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'VIEW'",
    "triggers": "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s",
    "routines": "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s",
    "events": "SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s",
}


def object_counts(params: Mapping[str, Any], database: str) -> dict[str, int]:
    """What the database holds, counted as Contents counts the dump."""
    counts = {}
    with contextlib.closing(mariadb.connect(server_params(params))) as conn, conn.cursor() as cursor:
        for kind, query in OBJECT_QUERIES.items():
            cursor.execute(query, [database])
            row = cursor.fetchone()
            counts[kind] = int(row[0]) if row else 0
    return counts


DEFINED_OBJECTS = """
SELECT 'view', TABLE_NAME, DEFINER FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %(db)s
UNION ALL SELECT 'trigger', TRIGGER_NAME, DEFINER FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %(db)s
UNION ALL SELECT LOWER(ROUTINE_TYPE), ROUTINE_NAME, DEFINER FROM information_schema.ROUTINES
    WHERE ROUTINE_SCHEMA = %(db)s
UNION ALL SELECT 'event', EVENT_NAME, DEFINER FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %(db)s
"""


def missing_definers(params: Mapping[str, Any], database: str) -> dict[str, list[str]] | None:
    """{definer: ["view v", "trigger t", ...]} for the database's objects
    whose definer is not a user (nor a role) on the server: they were created,
    but a view or routine running as its definer fails when used ("The user
    specified as a definer does not exist"), and a trigger when it fires.
    None when the user may not read the server's list of users."""
    with contextlib.closing(mariadb.connect(server_params(params))) as conn, conn.cursor() as cursor:
        cursor.execute(DEFINED_OBJECTS, {"db": database})
        objects = cursor.fetchall()
        try:
            cursor.execute("SELECT User, Host FROM mysql.user")
        except pymysql.MySQLError:
            return None
        accounts = cursor.fetchall()
    # A role (MariaDB) is a row with an empty host; an object it defines names it alone.
    known = {f"{user}@{host}" for user, host in accounts} | {user for user, host in accounts if not host}
    missing: dict[str, list[str]] = {}
    for kind, name, definer in objects:
        if definer and definer not in known:
            missing.setdefault(definer, []).append(f"{kind} {name}")
    return missing


DANGLING_FOREIGN_KEYS = """
SELECT TABLE_NAME, CONSTRAINT_NAME, REFERENCED_TABLE_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS
WHERE CONSTRAINT_SCHEMA = %(db)s AND UNIQUE_CONSTRAINT_SCHEMA = %(db)s
  AND REFERENCED_TABLE_NAME NOT IN (SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %(db)s)
ORDER BY TABLE_NAME, CONSTRAINT_NAME
"""


def drop_dangling_foreign_keys(params: Mapping[str, Any], database: str) -> list[str]:
    """Drops the foreign keys that point at tables not restored (a chosen-table
    restore), as PostgreSQL's restore drops them with the tables left out:
    kept, they would refuse every new row of their table. Returns them in
    words ("orders.orders_ibfk_1 → customers")."""
    dropped = []
    with contextlib.closing(mariadb.connect(server_params(params))) as conn, conn.cursor() as cursor:
        cursor.execute(DANGLING_FOREIGN_KEYS, {"db": database})
        for table, constraint, referenced in cursor.fetchall():
            cursor.execute(
                f"ALTER TABLE {mariadb.quote_name(database)}.{mariadb.quote_name(table)} "
                f"DROP FOREIGN KEY {mariadb.quote_name(constraint)}"
            )
            dropped.append(f"{table}.{constraint} → {referenced}")
    return dropped
