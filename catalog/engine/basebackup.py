"""Physical base backups: pg_basebackup's tar stream as a dump.

`pg_basebackup -D - -Ft -X none` writes the data directory as one tar to its
stdout, which is the stream the pipeline compresses, encrypts and stores.
The WAL is not in it (-X none): the continuous protection of the source ships
it, and a restore fetches it by restore_command. So the dump records which
WAL the copy needs to reach consistency: the start point and timeline from
the backup_label inside the tar (read on the fly, never buffered whole), and
the end point from the backup manifest pg_basebackup appends to the tar.

Writing to stdout handles one tablespace only, so a cluster with extra
tablespaces is refused up front, before anything is written. The password
reaches pg_basebackup through PGPASSWORD, never its arguments.
"""

import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypedDict

import psycopg

from catalog.engine.dumpers import (
    CHUNK_SIZE,
    Dump,
    connect,
    describe_pg_error,
    first_line,
    libpq_env,
    major_version,
    normalize_conninfo,
    one,
    pg_dump_version,
)
from catalog.engine.errors import SourceError
from catalog.engine.lsn import parse_lsn, segment_name_for_lsn

EXTRA_TABLESPACES = "SELECT spcname FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY 1"
TAR_BLOCK = 512
ZERO_BLOCK = bytes(TAR_BLOCK)


class LabelFields(TypedDict, total=False):
    start_lsn: str
    start_segment: str
    timeline: int
    start_time: str


class WalBounds(TypedDict, total=False):
    """The WAL a base backup needs (every key set once the stream has ended)."""

    timeline: int
    start_lsn: str
    end_lsn: str
    start_segment: str
    end_segment: str
    segment_size: int
    start_time: str


def parse_backup_label(text: str) -> LabelFields:
    """The fields of a backup_label file that recovery depends on."""
    fields: LabelFields = {}
    match = re.search(r"^START WAL LOCATION: ([0-9A-F]+/[0-9A-F]+) \(file ([0-9A-F]{24})\)", text, re.MULTILINE)
    if match:
        fields["start_lsn"], fields["start_segment"] = match.group(1), match.group(2)
    match = re.search(r"^START TIMELINE: (\d+)", text, re.MULTILINE)
    if match:
        fields["timeline"] = int(match.group(1))
    match = re.search(r"^START TIME: (.+)$", text, re.MULTILINE)
    if match:
        fields["start_time"] = match.group(1).strip()
    return fields


class TarWatcher:
    """Follows a tar stream as it passes and keeps a few small members, or the
    tail of a big one, without holding anything else: backup_label, and the
    end of backup_manifest, where its WAL range is."""

    def __init__(
        self,
        keep_tail_of: Iterable[str] = ("backup_manifest",),
        wanted: Iterable[str] = ("backup_label",),
        limit: int = 1 << 16,
    ) -> None:
        self.wanted = set(wanted) | set(keep_tail_of)
        self.keep_tail_of = set(keep_tail_of)
        self.limit = limit
        self.members: dict[str, bytes] = {}
        self.names: list[str] = []  # top-level member names, for the sanity check
        self._buffer = b""
        self._skip = 0  # bytes of the current member (and padding) still to pass
        self._capture: tuple[str, int, bytes] | None = None  # (name, bytes of the member left, bytes kept)

    def feed(self, data: bytes) -> None:
        # An index walks the chunk: slicing the rest off after every member
        # would copy a chunk once per small file in it.
        data = self._buffer + data if self._buffer else data
        position, end = 0, len(data)
        while position < end:
            if self._skip:
                taken = min(self._skip, end - position)
                if self._capture is not None:
                    self._keep(data[position : position + taken])
                position += taken
                self._skip -= taken
                continue
            if end - position < TAR_BLOCK:
                break
            header = data[position : position + TAR_BLOCK]
            position += TAR_BLOCK
            if header == ZERO_BLOCK:
                continue
            name = header[:100].split(b"\0", 1)[0].decode(errors="replace")
            size_field = header[124:136]
            size = int(size_field.split(b"\0", 1)[0].strip() or b"0", 8) if size_field[0] & 0x80 == 0 else 0
            if "/" not in name.rstrip("/"):
                self.names.append(name)
            self._skip = (size + TAR_BLOCK - 1) // TAR_BLOCK * TAR_BLOCK
            if name in self.wanted and size and (size <= self.limit or name in self.keep_tail_of):
                self._capture = (name, size, b"")
        self._buffer = data[position:]  # less than a header

    def _keep(self, data: bytes) -> None:
        assert self._capture is not None, "called while a member is captured"
        name, left, kept = self._capture
        piece = data[:left]
        kept = (kept + piece)[-self.limit :] if name in self.keep_tail_of else kept + piece
        self._capture = (name, left - len(piece), kept)
        if self._capture[1] == 0:
            self.members[name] = kept
            self._capture = None


class BaseBackupDump(Dump):
    """Iterates over pg_basebackup's tar. Use as a context manager.

    After the stream ends, `wal` says what WAL the backup needs: timeline,
    start and end LSN and segment names, the segment size, the start time."""

    def __init__(
        self,
        conninfo: Mapping[str, Any],
        chunk_size: int = CHUNK_SIZE,
        pg_basebackup: str = "pg_basebackup",
        label: str = "strongroom",
    ) -> None:
        super().__init__()
        self.params = normalize_conninfo(conninfo)
        self.chunk_size = chunk_size
        self.pg_basebackup = pg_basebackup
        self.label = label
        self.server_version = ""
        self.tool_version = ""
        self.segment_size: int | None = None
        self.wal: WalBounds = {}
        self._tar = TarWatcher()

    def start(self) -> None:
        """Checks the cluster can be backed up this way, then starts pg_basebackup."""
        self.tool_version = pg_dump_version(self.pg_basebackup)
        with self._lock:
            self.check_cancelled()
        with connect(self.params) as conn:
            try:
                self.server_version = one(conn, "SHOW server_version")
                self.segment_size = int(
                    one(
                        conn,
                        "SELECT setting::bigint * (CASE unit WHEN 'B' THEN 1 WHEN 'kB' THEN 1024 "
                        "WHEN 'MB' THEN 1048576 ELSE 1 END) FROM pg_settings WHERE name = 'wal_segment_size'",
                    )
                )
                extra = [row[0] for row in conn.execute(EXTRA_TABLESPACES).fetchall()]
            except psycopg.Error as exc:
                raise SourceError(describe_pg_error(exc, self.params)) from exc
        tool = self.tool_version.split()[-1] if self.tool_version else ""
        if major_version(tool) < major_version(self.server_version):
            raise SourceError(
                f"pg_basebackup {tool} is older than the server ({self.server_version}); "
                "install a newer PostgreSQL client"
            )
        if extra:
            raise SourceError(
                f"The cluster has tablespaces outside its data directory ({', '.join(extra)}); a physical base "
                "backup streamed through Strongroom covers a single tablespace. Back these up with a logical plan."
            )
        self._spawn()

    def _spawn(self) -> None:
        # -X none: the WAL comes from continuous protection, not from the tar.
        argv = [
            self.pg_basebackup,
            "--pgdata=-",
            "--format=tar",
            "--wal-method=none",
            "--checkpoint=fast",
            "--verbose",
            "--no-password",
            f"--label={self.label}",
        ]
        with self._lock:
            self.check_cancelled()
            self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - outlives start(): the process writes it
            self._process = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=self._stderr, env=libpq_env(self.params), start_new_session=True
            )

    def __iter__(self) -> Iterator[bytes]:
        if self._process is None:
            self.start()
        assert self._process is not None and self._process.stdout is not None, "started by start()"
        stdout = self._process.stdout
        while chunk := stdout.read(self.chunk_size):
            self.raw_bytes += len(chunk)
            self._tar.feed(chunk)
            yield chunk
        self._finish()

    def _finish(self) -> None:
        assert self._process is not None and self._stderr is not None, "started by start()"
        code = self._process.wait()
        self.check_cancelled()
        self._stderr.seek(0)
        output = self._stderr.read().decode(errors="replace")
        if code != 0:
            errors = [line for line in output.splitlines() if "error" in line.lower()] or [output]
            message = describe_pg_error(errors[0], self.params)
            raise SourceError(
                f"pg_basebackup failed: {message}" if message else f"pg_basebackup exited with code {code}"
            )
        self.wal = self._wal_bounds(output)

    def _wal_bounds(self, output: str) -> WalBounds:
        label = self._tar.members.get("backup_label")
        if label is None or "PG_VERSION" not in self._tar.names:
            raise SourceError("pg_basebackup's output is not a base backup (no backup_label or PG_VERSION in the tar)")
        fields = parse_backup_label(label.decode(errors="replace"))
        # With -X none pg_basebackup prints no end point; its manifest, the
        # tar's last member, ends with the WAL range the backup needs.
        tail = self._tar.members.get("backup_manifest", b"").decode(errors="replace")
        end = re.findall(r'"End-LSN":\s*"([0-9A-F]+/[0-9A-F]+)"', tail)
        if "start_lsn" not in fields or not end:
            raise SourceError(
                "Could not read the WAL start and end points of the base backup: " + (first_line(output) or "no output")
            )
        timeline = fields.get("timeline", 1)
        assert self.segment_size is not None, "read by start()"
        start, end_lsn = parse_lsn(fields["start_lsn"]), parse_lsn(end[-1])
        # The end point is just past the backup's last record: when it falls on
        # a segment boundary, that record is in the segment before.
        return {
            "timeline": timeline,
            "start_lsn": fields["start_lsn"],
            "end_lsn": end[-1],
            "start_segment": fields["start_segment"],
            "end_segment": segment_name_for_lsn(timeline, max(start, end_lsn - 1), self.segment_size),
            "segment_size": self.segment_size,
            "start_time": fields.get("start_time", ""),
        }

    def cancel(self) -> None:
        """Stops pg_basebackup; safe from another thread."""
        self._cancelled.set()
        with self._lock:
            self._terminate_process()

    def close(self) -> None:
        self._close_process()


def switch_wal(conninfo: Mapping[str, Any]) -> str:
    """Closes the current WAL segment so that the base backup's end segment is
    complete and gets shipped now rather than when the server fills it.
    Returns the switch point, or raises SourceError."""
    params = normalize_conninfo(conninfo)
    try:
        with psycopg.connect(**params, autocommit=True, connect_timeout=10) as conn:
            return str(one(conn, "SELECT pg_switch_wal()"))
    except psycopg.Error as exc:
        raise SourceError(describe_pg_error(exc, params)) from exc
