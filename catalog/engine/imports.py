"""Dumps made elsewhere, checked before they become backups ("bring your own
dump"), and read into the pipeline afterwards.

An import works in a staging directory of its own (private, under the data
directory), which holds the file as it was given, `input` (or a link to it):

- check_dump() says what the file is by its first bytes, never its name:
  pg_dump's custom, tar or directory format (the directory as a tar archive),
  plain SQL from pg_dump or from mariadb-dump/mysqldump, or a SQLite
  database, each of them possibly gzip- or zstd-compressed. It refuses what
  the source's engine cannot take, and reads the whole file the way a
  restore would, so that a truncated or damaged one is refused before
  anything is stored: an archive through `pg_restore --list` and `pg_restore
  --data-only --file=-` (a tar archive is first walked member by member, as
  pg_restore 15 reads a tar cut short without an error, or never returns), a
  plain dump up to pg_dump's closing line, a MariaDB dump up to its own, and
  a SQLite file by `PRAGMA integrity_check` on a copy. On the way it counts
  every table's rows, as a backup records them for its restore checks: from
  the COPY sections (copycount.py), from the INSERTs of a MariaDB dump
  (mariadb_dump.RowCounter), with SQL in the SQLite copy. Rows written as
  INSERT statements by pg_dump --inserts are not counted: such a backup
  says it has no row counts.
- What it keeps beside `input` for the pipeline: the SQLite copy, and a
  directory-format dump unpacked (its tar is stored again in the layout of
  Strongroom's own directory-format backups, catalog/engine/pgdirectory.py).
- ImportedDump is the dump the pipeline reads, as it reads pg_dump's output:
  the file decompressed, the SQLite copy, or the unpacked directory as a tar.

Refusals are ImportRefused, whose message is for the user.
"""

import contextlib
import io
import os
import re
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

from catalog.engine import crypto, pgdirectory
from catalog.engine.compression import OUTPUT_PIECE, decompress_stream, detect_compression
from catalog.engine.copycount import CopyCounter
from catalog.engine.dumpers import CHUNK_SIZE, Dump
from catalog.engine.errors import CorruptionError, EngineError
from catalog.engine.files import PRIVATE_FILE, create_private_file
from catalog.engine.mariadb_dump import DumpNotUnderstood, RowCounter
from catalog.engine.pipeline import ChunkFile
from catalog.engine.storage.base import describe_os_error
from catalog.engine.tarstream import end_of_archive, member_header, padding

INPUT = "input"  # the file as given
SQLITE_COPY = "checked.sqlite3"  # the SQLite file checked, then stored
UNPACKED = "dump"  # a directory-format dump's files

HEAD_BYTES = 1 << 16
TAIL_BYTES = 512
ENGINES = {"postgresql": "PostgreSQL", "mariadb": "MariaDB/MySQL", "sqlite": "SQLite"}
ENGINE_OF = {
    "custom": "postgresql",
    "tar": "postgresql",
    "directory": "postgresql",
    "plain": "postgresql",
    "mariadb": "mariadb",
    "sqlite": "sqlite",
}
FORMAT_NAMES = {
    "custom": "pg_dump custom-format archive",
    "tar": "pg_dump tar-format archive",
    "directory": "pg_dump directory-format dump in a tar archive",
    "plain": "plain SQL from pg_dump",
    "mariadb": "MariaDB/MySQL SQL dump",
    "sqlite": "SQLite database file",
}
SQLITE_MAGIC = b"SQLite format 3\0"
# pg_dump's archive header: "PGDMP", three version bytes, the sizes of an int
# and an offset, then the format (pg_backup_archiver.h: 1 custom, 3 tar; a
# directory-format toc.dat says 3 as well, 5 is never written).
PG_MAGIC = b"PGDMP"
PG_FORMAT_BYTE = 10
PG_CUSTOM, PG_TAR = 1, 3
PLAIN_HEADER = b"-- PostgreSQL database dump\n"
PLAIN_TRAILER = b"-- PostgreSQL database dump complete"
CLUSTER_HEADER = b"-- PostgreSQL database cluster dump"
# mariadb-dump 10.11 writes a sandbox-mode line before its header.
MARIADB_HEADER = re.compile(rb"\A(?:/\*M!999999\\- enable the sandbox mode \*/ ?\n)?-- (MariaDB|MySQL) dump ")
MARIADB_TRAILER = b"-- Dump completed"
# A statement that names the dump's database: restored, it would write there.
MARIADB_DATABASE_LINE = re.compile(rb"^(?:USE `|CREATE DATABASE )", re.M)
TOC_DATA_LINE = re.compile(r"^\d+; \d+ \d+ (?:TABLE DATA|MATERIALIZED VIEW DATA) ", re.M)
TOC_HEADER = re.compile(r"^;\s+(?P<key>[^:]+):\s*(?P<value>.*)$", re.M)
# How a directory-format data file ends when pg_dump finished it: its rows as
# COPY data or as INSERT statements, then two empty lines; an empty table's
# INSERT file holds those alone.
DATA_FILE_ENDS = (pgdirectory.COPY_END, b";\n\n\n")


class ImportRefused(EngineError):
    """The file cannot be imported; the message says why, for the user."""


@dataclass
class Facts:
    """What a format's check learnt by reading the whole file."""

    table_counts: dict[str, int] | None  # None: not known (rows as INSERT statements)
    server_version: str = ""
    tool_version: str = ""
    notes: list[str] = field(default_factory=list)  # for the job's log
    format: str = ""  # when the check is the one to tell (a tar archive: pg_dump's tar format, or a directory)


@dataclass
class CheckedDump:
    format: str  # as stored: custom, tar, directory, plain, mariadb or sqlite
    description: str  # what it was, in words: "pg_dump custom-format archive, gzip-compressed"
    size: int  # bytes of the file as given
    table_counts: dict[str, int] | None  # None: not known (rows as INSERT statements)
    server_version: str = ""
    tool_version: str = ""
    notes: list[str] = field(default_factory=list)  # for the job's log

    @property
    def engine(self) -> str:
        return ENGINE_OF[self.format]


# --- reading the file as given -------------------------------------------------------


def raw_chunks(path: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            yield chunk


def compression_of(path: str) -> str:
    with open(path, "rb") as handle:
        return detect_compression(handle.read(4))


def plain_chunks(path: str) -> Iterator[bytes]:
    """The file decompressed by its first bytes: gzip (every member of it),
    zstd, or as it is. CorruptionError when the compressed data is damaged
    or cut short."""
    compression = compression_of(path)
    if compression == "gzip":
        return gunzip(raw_chunks(path))
    return decompress_stream(compression, raw_chunks(path))


def gunzip(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """gzip of one member or several (bgzip, `cat a.gz b.gz`), which the
    pipeline's own reader, made for the one member it writes, stops after."""
    inflater, started = zlib.decompressobj(16 + zlib.MAX_WBITS), False
    try:
        for chunk in chunks:
            data = chunk
            while data:
                if inflater.eof:
                    if not data.strip(b"\0"):  # padding after the last member
                        break
                    inflater, started = zlib.decompressobj(16 + zlib.MAX_WBITS), False
                started = True
                if out := inflater.decompress(data, OUTPUT_PIECE):
                    yield out
                data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
    except zlib.error as exc:
        raise CorruptionError(f"the gzip data is damaged ({exc})") from exc
    if started and not inflater.eof:
        raise CorruptionError("the gzip data is truncated")


def head_of(path: str, length: int = HEAD_BYTES) -> bytes:
    """The first `length` bytes of the file decompressed (fewer if it is shorter)."""
    head = b""
    chunks = plain_chunks(path)
    for chunk in chunks:
        head += chunk
        if len(head) >= length:
            break
    if close := getattr(chunks, "close", None):  # a generator: its file is closed now, not when collected
        close()
    return head[:length]


# --- what it is -------------------------------------------------------------------------


def detect(head: bytes) -> str:
    """The format of a dump by its first bytes (decompressed): custom, tar
    (any tar archive, perhaps of a directory-format dump), plain, mariadb or
    sqlite; ImportRefused when it is none."""
    if head.startswith(PG_MAGIC):
        kind = head[PG_FORMAT_BYTE] if len(head) > PG_FORMAT_BYTE else 0
        if kind == PG_TAR:
            raise ImportRefused(
                "This is the table of contents (toc.dat) of a pg_dump dump alone: import the whole tar archive, or "
                "a directory-format dump's directory as a tar archive (tar -cf dump.tar -C DIRECTORY .)."
            )
        if kind != PG_CUSTOM:
            raise ImportRefused("This file starts like a pg_dump archive, but not of a format pg_restore reads.")
        return "custom"
    if len(head) >= 512 and head[257:262] == b"ustar":
        return "tar"  # pg_dump's tar format, or its directory format archived: check_tar() tells
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if b"\n" + CLUSTER_HEADER in b"\n" + head[:256]:
        raise ImportRefused(
            "This is a pg_dumpall dump of a whole cluster; Strongroom imports the dump of one database "
            "(pg_dump DBNAME)."
        )
    if head.startswith(b"--\n" + PLAIN_HEADER) or head.startswith(PLAIN_HEADER):
        return "plain"
    if MARIADB_HEADER.match(head):
        return "mariadb"
    raise ImportRefused(not_a_dump(head))


def not_a_dump(head: bytes) -> str:
    said = (
        "This file is not a dump Strongroom can import. It takes pg_dump's custom, tar and directory formats "
        "(the directory as a tar archive), plain SQL from pg_dump or from mariadb-dump/mysqldump, and SQLite "
        "database files, each possibly compressed with gzip or zstd"
    )
    first = head.split(b"\n", 1)[0][:80]
    if head and all(32 <= byte < 127 or byte in b"\t\r" for byte in first):
        return f"{said}; this one starts with the line “{first.decode()}”."
    return said + "."


def describe(fmt: str, compression: str) -> str:
    said = FORMAT_NAMES[fmt]
    return f"{said}, {compression}-compressed" if compression != "none" else said


def check_dump(staging: str, engine: str, source_name: str, pg_restore: str = "pg_restore") -> CheckedDump:
    """Checks the staging directory's `input` for a source of `engine`;
    ImportRefused when it cannot be imported. Leaves what the pipeline
    reads beside it (the SQLite copy, the unpacked directory)."""
    path = os.path.join(staging, INPUT)
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        if crypto.is_encrypted(handle.read(len(crypto.MAGIC))):
            raise ImportRefused(
                "This is an object Strongroom stored, encrypted: restore or download that backup rather than import it."
            )
    compression = compression_of(path)
    try:
        fmt = detect(head_of(path))
        if ENGINE_OF[fmt] != engine:
            raise ImportRefused(wrong_engine(fmt, engine, source_name))
        facts = CHECKS[fmt](path, staging, pg_restore)
        fmt = facts.format or fmt
    except CorruptionError as exc:
        raise ImportRefused(f"The file cannot be read to its end: {exc}.") from exc
    except OSError as exc:
        raise ImportRefused(describe_os_error(exc, staging) + "; nothing was imported") from exc
    return CheckedDump(
        format=fmt,
        description=describe(fmt, compression),
        size=size,
        table_counts=facts.table_counts,
        server_version=facts.server_version,
        tool_version=facts.tool_version,
        notes=facts.notes,
    )


def wrong_engine(fmt: str, engine: str, source_name: str) -> str:
    found, named = ENGINES[ENGINE_OF[fmt]], FORMAT_NAMES[fmt]
    what = named if found in named else f"{found} dump ({named})"
    return f"This is a {what}, but the source {source_name} is {ENGINES[engine]}: import it into a {found} source."


# --- PostgreSQL archives ------------------------------------------------------------------


def check_custom(path: str, staging: str, pg_restore: str) -> Facts:
    return read_archive(pg_restore, chunks=plain_chunks(path))


def check_tar(path: str, staging: str, pg_restore: str) -> Facts:
    """pg_dump's tar format (toc.dat first, restore.sql last: pg_restore reads
    it as it is), or any other tar archive, which may be of a directory-format
    dump's files. Both say "tar" in their toc.dat, so the members tell."""
    names = walk_tar(plain_chunks(path))
    if names[:1] == [pgdirectory.TOC] and names[-1:] == ["restore.sql"]:
        facts = read_archive(pg_restore, chunks=plain_chunks(path))
        facts.format = "tar"
    else:
        facts = check_directory(path, staging, pg_restore)
        facts.format = "directory"
    return facts


def walk_tar(chunks: Iterable[bytes]) -> list[str]:
    """The names of a tar stream's members, each read to its end; CorruptionError when one is cut short."""
    names = []
    try:
        reader = io.BufferedReader(ChunkFile(chunks), CHUNK_SIZE)
        with tarfile.open(fileobj=reader, mode="r|") as archive:
            for member in archive:
                names.append(member.name)
                if content := archive.extractfile(member):
                    while content.read(CHUNK_SIZE):
                        pass
    except (tarfile.TarError, EOFError) as exc:
        raise CorruptionError(f"the tar archive is damaged or cut short ({exc})") from exc
    return names


def check_directory(path: str, staging: str, pg_restore: str) -> Facts:
    directory = os.path.join(staging, UNPACKED)
    unpack_directory(plain_chunks(path), directory)
    with open(os.path.join(directory, pgdirectory.TOC), "rb") as handle:
        if not handle.read(len(PG_MAGIC)) == PG_MAGIC:
            raise ImportRefused("The tar archive's toc.dat is not the table of contents of a pg_dump dump.")
    for name in sorted(os.listdir(directory)):
        if pgdirectory.DATA_FILE.fullmatch(name) and not finished_data_file(os.path.join(directory, name)):
            raise ImportRefused(f"The dump's data file {name} does not end as pg_dump ends one: it is cut short.")
    return read_archive(pg_restore, directory=directory)


def unpack_directory(chunks: Iterable[bytes], directory: str) -> None:
    """A tar archive of a directory-format dump's files into `directory`
    (new, private), whether they were archived at its top, under "./" or
    under one folder. Refuses any other member, so that no file lands
    anywhere else."""
    os.mkdir(directory, 0o700)
    prefix: str | None = None
    seen: set[str] = set()
    try:
        reader = io.BufferedReader(ChunkFile(chunks), CHUNK_SIZE)
        with tarfile.open(fileobj=reader, mode="r|") as archive:
            for member in archive:
                name = member.name.removeprefix("./")
                if member.isdir():
                    continue
                folder, _, base = name.rpartition("/")
                prefix = folder if prefix is None else prefix
                if not member.isfile() or folder != prefix or "/" in folder or base in seen:
                    raise ImportRefused(
                        f"The tar archive holds {member.name!r}, which is not a file of a pg_dump dump."
                    )
                if not pgdirectory.MEMBER_NAME.fullmatch(base):
                    raise ImportRefused(
                        f"The tar archive holds {member.name!r}, which is not a file of pg_dump's directory format "
                        "(toc.dat and numbered .dat files)."
                    )
                seen.add(base)
                content = archive.extractfile(member)
                assert content is not None, "a regular file has content"
                with create_private_file(os.path.join(directory, base)) as out:
                    shutil.copyfileobj(content, out, CHUNK_SIZE)
    except (tarfile.TarError, EOFError) as exc:
        raise CorruptionError(f"the tar archive is damaged or cut short ({exc})") from exc
    if pgdirectory.TOC not in seen:
        raise ImportRefused(
            "This tar archive is not of a pg_dump dump: it has no toc.dat (a directory-format dump's table of "
            "contents)."
        )


def finished_data_file(path: str) -> bool:
    """An uncompressed data file ends with pg_dump's end of data (a
    compressed one is checked by pg_restore, which refuses one cut short)."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - len(pgdirectory.COPY_END)))
        tail = handle.read()
    return tail == b"\n\n" if size == 2 else tail.endswith(DATA_FILE_ENDS)


def read_archive(pg_restore: str, chunks: Iterable[bytes] | None = None, directory: str | None = None) -> Facts:
    """`pg_restore --list` and `pg_restore --data-only --file=-` read the
    archive (the stream `chunks`, or a `directory`) to its end, the second
    through a CopyCounter; what they say, as CheckedDump's fields."""
    where = [directory] if directory else []
    env = {k: v for k, v in os.environ.items() if k not in ("LC_ALL", "LANGUAGE")} | {"LC_MESSAGES": "C"}
    stdin = subprocess.PIPE if chunks is not None else subprocess.DEVNULL
    with (
        tempfile.TemporaryFile() as listing,
        tempfile.TemporaryFile() as list_errors,
        tempfile.TemporaryFile() as errors,
    ):
        lister = subprocess.Popen(
            [pg_restore, "--list", *where], stdin=stdin, stdout=listing, stderr=list_errors, env=env
        )
        reader = subprocess.Popen(
            [pg_restore, "--data-only", "--file=-", *where],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=errors,
            env=env,
        )
        counter = CopyCounter()
        assert reader.stdout is not None, "started with stdout=PIPE"
        counting = threading.Thread(target=count_into, args=(reader.stdout, counter), name="copy-counter")
        counting.start()
        try:
            if chunks is not None:
                feed_all(chunks, [lister, reader])
        finally:
            for process in (lister, reader):
                if process.stdin is not None:
                    with contextlib.suppress(BrokenPipeError):
                        process.stdin.close()
            list_code, read_code = lister.wait(), reader.wait()
            counting.join()
        toc = read_text(listing)
        list_failure, read_failure = first_error(list_errors), first_error(errors)
    if list_code != 0:
        raise ImportRefused(unreadable_archive(list_failure or f"exit code {list_code}"))
    if read_code != 0:
        raise ImportRefused(
            f"pg_restore stopped reading the archive: {read_failure or f'exit code {read_code}'}. "
            "It is damaged or cut short."
        )
    counter.finish()
    if counter.cut_short:
        raise ImportRefused("The archive's data ends in the middle of a table's rows: it is cut short.")
    header = {match["key"].strip(): match["value"].strip() for match in TOC_HEADER.finditer(toc)}
    # Every table's data as a COPY section, or the counts would be partial.
    counted = not counter.inserts and counter.sections == len(TOC_DATA_LINE.findall(toc))
    notes = (
        [] if counted else ["No row counts recorded at import: its data is not all COPY sections (pg_dump --inserts?)"]
    )
    tool = header.get("Dumped by pg_dump version", "")
    return Facts(
        table_counts=dict(sorted(counter.counts.items())) if counted else None,
        server_version=header.get("Dumped from database version", ""),
        tool_version=f"pg_dump {tool}" if tool else "",
        notes=[*notes, archive_facts(header)],
    )


def feed_all(chunks: Iterable[bytes], processes: list["subprocess.Popen[bytes]"]) -> None:
    """Every chunk to each process still reading its stdin (pg_restore
    --list stops once it has the table of contents)."""
    reading = list(processes)
    for chunk in chunks:
        for process in list(reading):
            assert process.stdin is not None, "started with stdin=PIPE"
            try:
                process.stdin.write(chunk)
            except (BrokenPipeError, ValueError):
                reading.remove(process)
        if not reading:
            return


def count_into(stdout: IO[bytes], counter: CopyCounter) -> None:
    with stdout:
        while chunk := stdout.read(CHUNK_SIZE):
            counter.feed(chunk)


def read_text(handle: IO[bytes]) -> str:
    handle.seek(0)
    return handle.read().decode(errors="replace")


def first_error(handle: IO[bytes]) -> str:
    for line in read_text(handle).splitlines():
        if line.strip():
            return re.sub(r"^pg_restore: (error: )?", "", line.strip())[:300]
    return ""


def unreadable_archive(error: str) -> str:
    said = f"pg_restore cannot read this archive: {error}"
    if "unsupported version" in error:
        said += (
            ". It was made by a newer pg_dump than this host's pg_restore: install newer PostgreSQL client tools, "
            "or make the dump with this version's pg_dump"
        )
    return said + "."


def archive_facts(header: dict[str, str]) -> str:
    facts = [f"{key} {header[key]}" for key in ("dbname", "Archive created at") if header.get(key)]
    return "The archive says: " + "; ".join(facts) if facts else "The archive names no database"


# --- plain SQL -----------------------------------------------------------------------------


def check_plain(path: str, staging: str, pg_restore: str) -> Facts:
    counter, head, tail = CopyCounter(), b"", b""
    for chunk in plain_chunks(path):
        counter.feed(chunk)
        head = head or chunk[:HEAD_BYTES]
        tail = (tail + chunk)[-TAIL_BYTES:]
    counter.finish()
    if counter.cut_short or PLAIN_TRAILER not in tail:
        raise ImportRefused(
            "The SQL ends before pg_dump's closing line (“PostgreSQL database dump complete”): it is cut short."
        )
    if counter.connects:
        raise ImportRefused(
            "This dump creates and connects to its own database (pg_dump --create, or \\connect): restored, it "
            "would write into that database whatever the target. Make it without --create and import that."
        )
    versions = dict(re.findall(rb"^-- Dumped (from database|by pg_dump) version (.+)$", head, re.M))
    notes = []
    if counter.inserts:
        notes.append("No row counts recorded at import: its rows are INSERT statements (pg_dump --inserts)")
    tool = text(versions.get(b"by pg_dump", b""))
    return Facts(
        table_counts=None if counter.inserts else dict(sorted(counter.counts.items())),
        server_version=text(versions.get(b"from database", b"")),
        tool_version=f"pg_dump {tool}" if tool else "",
        notes=notes,
    )


# --- MariaDB and MySQL ------------------------------------------------------------------


def check_mariadb(path: str, staging: str, pg_restore: str) -> Facts:
    counter, names_database, head, tail = RowCounter(), LineStarts(MARIADB_DATABASE_LINE), b"", b""
    counted = True
    for chunk in plain_chunks(path):
        head = head or chunk[:HEAD_BYTES]
        tail = (tail + chunk)[-TAIL_BYTES:]
        if names_database.found(chunk):
            raise ImportRefused(
                "This dump names its database (CREATE DATABASE or USE: mariadb-dump --databases or "
                "--all-databases): restored, it would write into that database whatever the target. Dump the one "
                "database without those options (mariadb-dump DBNAME) and import that."
            )
        if counted:
            try:
                counter.feed(chunk)
            except DumpNotUnderstood:
                counted = False
    try:
        counts = counter.finish() if counted else None
    except DumpNotUnderstood as exc:
        raise ImportRefused(f"The dump cannot be read to its end ({exc}): it is cut short.") from exc
    if MARIADB_TRAILER not in tail:
        raise ImportRefused("The SQL ends before mariadb-dump's closing line (“Dump completed”): it is cut short.")
    server = re.search(rb"^-- Server version\s+(.+)$", head, re.M)
    tool = re.search(rb"^-- ((?:MariaDB|MySQL) dump [^,\n]+)", head, re.M)
    database = re.search(rb"^-- Host: (\S*)\s+Database: (.+)$", head, re.M)
    notes = [] if counted else ["No row counts recorded at import: it is not laid out as mariadb-dump lays it out"]
    if database:
        notes.append(f"The dump says: database {text(database[2])} on {text(database[1]) or 'an unnamed host'}")
    return Facts(
        table_counts=counts,
        server_version=text(server[1]) if server else "",
        tool_version=" ".join(text(tool[1]).split()) if tool else "",
        notes=notes,
    )


def text(value: bytes) -> str:
    return value.decode(errors="replace").strip()


class LineStarts:
    """Finds a line that starts with `pattern` (a re.M pattern anchored with
    ^) in a stream of chunks, also where a line's start falls across two."""

    CARRIED = 64  # longer than any pattern: a line start seen this far was checked whole

    def __init__(self, pattern: re.Pattern[bytes]) -> None:
        self.pattern = pattern
        self.carry = b"\n"  # the newline before the line being read, and its start so far

    def found(self, chunk: bytes) -> bool:
        data = self.carry + chunk
        # From 1: a ^ matches there only after the carried newline.
        hit = self.pattern.search(data, 1) is not None
        newline = data.rfind(b"\n")
        self.carry = data[newline:] if newline >= 0 and len(data) - newline <= self.CARRIED else b"."
        return hit


# --- SQLite --------------------------------------------------------------------------------


def check_sqlite(path: str, staging: str, pg_restore: str) -> Facts:
    copy = os.path.join(staging, SQLITE_COPY)
    with create_private_file(copy) as out:
        for chunk in plain_chunks(path):
            out.write(chunk)
    if problem := sqlite_size_problem(copy):
        raise ImportRefused(problem)
    try:
        conn = sqlite3.connect(copy)
        try:
            result = [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
            if result != ["ok"]:
                raise ImportRefused(f"SQLite's integrity_check finds the database damaged: {'; '.join(result)[:300]}")
            conn.execute("PRAGMA journal_mode=DELETE")  # one file, as a SQLite backup stores it
            counts = sqlite_counts(conn)
            version = conn.execute("SELECT sqlite_version()").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise ImportRefused(f"SQLite cannot read this database: {exc}.") from exc
    return Facts(table_counts=counts, server_version=written_by(copy), tool_version=f"python-sqlite3 {version}")


def sqlite_size_problem(path: str) -> str:
    """A file shorter than the pages its header counts is cut short (the
    count is valid when the header says so: its version-valid-for equals
    its change counter)."""
    with open(path, "rb") as handle:
        header = handle.read(100)
        size = handle.seek(0, os.SEEK_END)
    if len(header) < 100:
        return "The SQLite file is shorter than its own header: it is cut short."
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if header[24:28] == header[92:96] and pages and size < pages * page_size:
        return (
            f"The SQLite file holds {size} bytes where its header counts {pages} pages of {page_size}: it is cut short."
        )
    return ""


def sqlite_counts(conn: sqlite3.Connection) -> dict[str, int]:
    names = conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    return {
        name: conn.execute(f'SELECT count(*) FROM "{name.replace(chr(34), chr(34) * 2)}"').fetchone()[0]
        for (name,) in names
    }


def written_by(path: str) -> str:
    """The SQLite version that last wrote the file, from its header (e.g. 3.40.1)."""
    with open(path, "rb") as handle:
        number = int.from_bytes(handle.read(100)[96:100], "big")
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}" if number else ""


CHECKS = {
    "custom": check_custom,
    "tar": check_tar,
    "plain": check_plain,
    "mariadb": check_mariadb,
    "sqlite": check_sqlite,
}


# --- into the pipeline ---------------------------------------------------------------------


class ImportedDump(Dump):
    """What the pipeline reads of a checked import: its plain bytes."""

    def __init__(
        self,
        staging: str,
        fmt: str,
        table_counts: dict[str, int],
        server_version: str = "",
        tool_version: str = "",
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        super().__init__()
        self.staging, self.fmt, self.chunk_size = staging, fmt, chunk_size
        self.table_counts = table_counts
        self.server_version, self.tool_version = server_version, tool_version

    def __iter__(self) -> Iterator[bytes]:
        if not os.path.isdir(self.staging):
            raise ImportRefused("The checked file of this import is gone from this host; import it again.")
        for chunk in self._chunks():
            self.check_cancelled()
            self.raw_bytes += len(chunk)
            yield chunk

    def _chunks(self) -> Iterator[bytes]:
        if self.fmt == "sqlite":
            return raw_chunks(os.path.join(self.staging, SQLITE_COPY), self.chunk_size)
        if self.fmt == "directory":
            return directory_as_tar(os.path.join(self.staging, UNPACKED), self.chunk_size)
        return plain_chunks(os.path.join(self.staging, INPUT))


def directory_as_tar(directory: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """A directory-format dump's files as one tar stream, toc.dat last, as a
    directory-format backup stores them (pgdirectory.DirectoryDump)."""
    written = 0
    for name in sorted(os.listdir(directory), key=lambda name: (name == pgdirectory.TOC, name)):
        path = os.path.join(directory, name)
        size = os.path.getsize(path)
        header = member_header(name, size, os.path.getmtime(path), PRIVATE_FILE)
        yield header
        yield from raw_chunks(path, chunk_size)
        pad = padding(size)
        yield pad
        written += len(header) + size + len(pad)
    yield end_of_archive(written)
