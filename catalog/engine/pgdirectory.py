"""pg_dump's directory format, stored as one tar archive of its files.

`pg_dump --format=directory --jobs=N` dumps N tables at once, each into a
file of its own, and writes its table of contents (toc.dat) last. A backup
cannot stream that the way it streams a custom-format dump from stdout, so
DirectoryDump lets pg_dump write into a private spool directory and, as soon
as pg_dump reports a table's file finished (`--verbose` prints "finished item
<id> ..." once a job is done with it), adds the file to the tar stream and
removes it. The compression, encryption and uploads downstream therefore run
while pg_dump is still dumping, and the spool holds only the files not yet
streamed. When pg_dump has exited, whatever is left (large objects, files it
did not report) follows, toc.dat last.

The row counts come from the same files as they pass, rather than from a
count(*) of every table beside pg_dump, which read the whole database a second
time: a table's data file holds its rows as COPY text, one line each, ended by
pg_dump's terminator line and two empty ones, and the table of contents says
which table each file is. Tables with inheritance children (whose count(*)
counts theirs), tables an extension owns, and any file that does not end as
expected are counted in the dump's snapshot as before.

unpack() is the way back: it writes such an archive into a new private
directory for `pg_restore --jobs`, refusing any member that is not one of the
files pg_dump writes there, so that a damaged or crafted archive cannot put a
file anywhere else."""

import contextlib
import io
import os
import queue
import re
import shutil
import signal
import subprocess
import tarfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

import psycopg

from catalog.engine.dumpers import (
    CHUNK_SIZE,
    TABLES_BY_OID,
    PostgresDump,
    count_rows,
    describe_pg_error,
    first_line,
    libpq_env,
)
from catalog.engine.errors import CorruptionError, SourceError
from catalog.engine.files import PRIVATE_DIR, PRIVATE_FILE, create_private_file
from catalog.engine.pipeline import ChunkFile
from catalog.engine.tarstream import end_of_archive, member_header, padding

TOC = "toc.dat"
# The files pg_dump writes in a directory-format dump: the table of contents,
# one file per table's data and per large object (compressed ones end in .gz,
# .lz4 or .zst), and the large objects' own tables of contents.
MEMBER_NAME = re.compile(r"(toc\.dat|blobs(_\d+)?\.toc|(blob_)?\d+\.dat(\.gz|\.lz4|\.zst)?)")
DATA_FILE = re.compile(r"(\d+)\.dat")
# How pg_dump ends a table's COPY data in an archive: after the last row's line.
COPY_END = b"\\.\n\n\n"
COPY_END_LINES = COPY_END.count(b"\n")
# `pg_restore --list`'s line for a table's data: its dump ID, then the table's OID.
TABLE_DATA_LINE = re.compile(r"^(\d+); \d+ (\d+) TABLE DATA ")
# What `pg_dump --verbose` prints once a parallel job has written a table's data.
FINISHED = re.compile(rb"^pg_dump: finished item (\d+) ")
# pg_dump's lines that are not progress: kept for the error message.
PROBLEM = re.compile(rb"^pg_dump: (error|warning|detail|hint): |^(?!pg_dump: )")
KEPT_LINES = 40
TRUNCATED = "The dump's archive ends in the middle of a file: it is truncated"


class DirectoryDump(PostgresDump):
    """A PostgresDump in the directory format with `jobs` parallel jobs, read
    as a tar stream. `spool` is a directory that need not exist: it is made
    private for the dump's files and removed by close()."""

    def __init__(
        self,
        conninfo: Mapping[str, Any],
        spool: str | os.PathLike[str],
        jobs: int,
        chunk_size: int = CHUNK_SIZE,
        pg_dump: str = "pg_dump",
        pg_dumpall: str = "pg_dumpall",
        pg_restore: str = "pg_restore",
    ) -> None:
        super().__init__(conninfo, fmt="directory", chunk_size=chunk_size, pg_dump=pg_dump, pg_dumpall=pg_dumpall)
        self.pg_restore = pg_restore
        self.spool = os.fspath(spool)
        self.jobs = jobs
        self.output = os.path.join(self.spool, "dump")
        self._finished: queue.Queue[int | None] = queue.Queue()
        self._problems: list[str] = []
        self._stderr_reader: threading.Thread | None = None
        self._tables_by_oid: dict[int, tuple[str, str]] = {}  # the tables counted from their files
        self._rows_by_dump_id: dict[int, int | None] = {}  # None: the file did not end as pg_dump ends one

    def _spawn(self, snapshot: str) -> None:
        # A spool left by a worker that died mid-backup is no use to anyone.
        shutil.rmtree(self.spool, ignore_errors=True)
        os.makedirs(self.spool, PRIVATE_DIR)
        os.chmod(self.spool, PRIVATE_DIR)
        argv = [
            self.pg_dump,
            f"--snapshot={snapshot}",
            "--no-password",
            "--format=directory",
            f"--jobs={self.jobs}",
            # The pipeline compresses the tar once, with zstd's threads.
            "--compress=0",
            "--verbose",
            f"--file={self.output}",
        ]
        env = libpq_env(self.params)
        # "finished item" is read in English, whatever the machine's locale.
        env.pop("LC_ALL", None)
        env.pop("LANGUAGE", None)
        env["LC_MESSAGES"] = "C"
        with self._lock:
            self.check_cancelled()
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        assert self._process.stderr is not None, "started with stderr=PIPE"
        self._stderr_reader = threading.Thread(
            target=self._read_stderr, args=(self._process.stderr,), name="pg_dump-progress", daemon=True
        )
        self._stderr_reader.start()

    def _read_stderr(self, stderr: IO[bytes]) -> None:
        """Runs in its own thread: tells __iter__ which files are finished,
        keeps what is not progress, and says None when pg_dump has gone."""
        try:
            for line in stderr:
                if match := FINISHED.match(line):
                    self._finished.put(int(match[1]))
                elif PROBLEM.match(line) and line.strip():
                    self._problems.append(line.decode(errors="replace").rstrip())
                    del self._problems[:-KEPT_LINES]
        finally:
            self._finished.put(None)

    def __iter__(self) -> Iterator[bytes]:
        if self._process is None:
            self.start()
        assert self._process is not None, "started by start()"
        while (dump_id := self._finished.get()) is not None:
            self.check_cancelled()
            name = f"{dump_id}.dat"
            if os.path.exists(os.path.join(self.output, name)):
                yield from self._member(name)
        self._finish()
        # Large objects, anything pg_dump did not report, and the table of
        # contents last: it is written when everything else is.
        for name in sorted(os.listdir(self.output), key=lambda name: (name == TOC, name)):
            self.check_cancelled()
            if name == TOC:
                self.table_counts = dict(sorted({**self.table_counts, **self._counts_from_files()}.items()))
            yield from self._member(name)
        end = end_of_archive(self.raw_bytes)
        self.raw_bytes += len(end)
        yield end

    def _member(self, name: str) -> Iterator[bytes]:
        """One finished file as a tar member, removed once it is streamed."""
        path = os.path.join(self.output, name)
        with open(path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            size = stat.st_size
            header = member_header(name, size, stat.st_mtime, PRIVATE_FILE)
            self.raw_bytes += len(header)
            yield header
            left, lines, tail = size, 0, b""
            while left and (chunk := handle.read(min(self.chunk_size, left))):
                left -= len(chunk)
                lines += chunk.count(b"\n")
                tail = (tail + chunk[-len(COPY_END) :])[-len(COPY_END) :]
                self.raw_bytes += len(chunk)
                yield chunk
        if left:
            raise SourceError(f"pg_dump's file {name} shrank while it was being stored")
        if match := DATA_FILE.fullmatch(name):
            self._rows_by_dump_id[int(match[1])] = lines - COPY_END_LINES if tail == COPY_END else None
        pad = padding(size)
        self.raw_bytes += len(pad)
        yield pad
        os.unlink(path)

    def _count_rows(self, conn: psycopg.Connection[Any]) -> dict[str, int]:
        """In the facts thread: only the tables whose count needs SQL (with
        inheritance children, owned by an extension) are counted here; the
        others are counted from their files (_counts_from_files)."""
        counts = {}
        for oid, schema, table, needs_sql in conn.execute(TABLES_BY_OID):
            if needs_sql:
                counts[f"{schema}.{table}"] = count_rows(conn, schema, table)
            else:
                self._tables_by_oid[oid] = (schema, table)
        return counts

    def _counts_from_files(self) -> dict[str, int]:
        """The rows of each table counted from its data file, the table found
        by its OID in the table of contents; a table without a counted file
        is counted in the snapshot, still open (pg_dump has finished)."""
        listing = subprocess.run([self.pg_restore, "--list", self.output], capture_output=True, text=True)
        file_of = {}
        for line in listing.stdout.splitlines() if listing.returncode == 0 else []:
            if match := TABLE_DATA_LINE.match(line):
                file_of[int(match[2])] = int(match[1])
        assert self._conn is not None, "the snapshot's connection, opened by start()"
        counts = {}
        for oid, (schema, table) in self._tables_by_oid.items():
            rows = self._rows_by_dump_id.get(file_of.get(oid, -1))
            try:
                counts[f"{schema}.{table}"] = count_rows(self._conn, schema, table) if rows is None else rows
            except psycopg.Error as exc:
                self._raise_source_error(exc)
        return counts

    def _finish(self) -> None:
        assert self._process is not None, "started by start()"
        code = self._process.wait()
        if self._stderr_reader is not None:
            self._stderr_reader.join()
        self.check_cancelled()
        if code != 0:
            raise SourceError(self._failure_in_words(code))
        self._wait_for_facts()

    def _failure_in_words(self, code: int) -> str:
        errors = "\n".join(line for line in self._problems if "error:" in line) or "\n".join(self._problems)
        if "No space left on device" in errors:
            return (
                f"Not enough free disk in {self.spool} for pg_dump's files, which are kept there until each is "
                f"stored: {first_line(errors)}"
            )
        if "could not obtain lock" in errors:
            return (
                "A parallel dump job could not lock a table that another session meanwhile asked to lock "
                "exclusively (pg_dump's jobs do not wait for locks); run the backup again at a quieter time, "
                f"or use the custom format: {first_line(errors)}"
            )
        return describe_pg_error(errors, self.params) if errors else f"pg_dump exited with code {code}"

    def _terminate_process(self) -> None:
        """As for one pg_dump, but to its whole process group: its jobs are
        processes of their own, each with a connection to the source."""
        if self._process is not None and self._process.poll() is None:
            self._signal_group(signal.SIGTERM)
            threading.Timer(5, self._signal_group, args=(signal.SIGKILL,)).start()

    def _signal_group(self, signum: int) -> None:
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signum)

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:  # stopped early: a failure downstream
            self._signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=10)
            self._signal_group(signal.SIGKILL)  # a job still writing
        super().close()
        if self._stderr_reader is not None:
            self._stderr_reader.join(timeout=10)  # pg_dump's jobs close stderr when they exit
        if self._process is not None and self._process.stderr is not None:
            self._process.stderr.close()
        shutil.rmtree(self.spool, ignore_errors=True)


def unpack(plain_chunks: Iterable[bytes], directory: str | os.PathLike[str]) -> None:
    """Writes a directory-format dump stored as a tar archive into
    `directory` (new, made private). The stream is read to its very end, so
    that the pipeline checks its SHA-256 before pg_restore reads a file."""
    os.mkdir(directory, PRIVATE_DIR)
    os.chmod(directory, PRIVATE_DIR)
    reader = ChunkFile(plain_chunks)
    names = set()
    try:
        with tarfile.open(fileobj=io.BufferedReader(reader, CHUNK_SIZE), mode="r|") as archive:
            for member in archive:
                if not member.isfile() or not MEMBER_NAME.fullmatch(member.name) or member.name in names:
                    raise CorruptionError(
                        f"The archive holds {member.name!r}, which is not a file of pg_dump's directory format"
                    )
                names.add(member.name)
                content = archive.extractfile(member)
                assert content is not None, "a regular file has content"
                with create_private_file(os.path.join(directory, member.name)) as out:
                    shutil.copyfileobj(content, out, CHUNK_SIZE)
    except EOFError as exc:
        raise CorruptionError(TRUNCATED) from exc
    except tarfile.TarError as exc:
        if "unexpected end of data" in str(exc):  # what a stream that stops mid-member raises
            raise CorruptionError(TRUNCATED) from exc
        raise CorruptionError(f"The dump is not a readable tar archive: {exc}") from exc
    reader.drain()
    if TOC not in names:
        raise CorruptionError("The dump's archive has no table of contents (toc.dat)")
