"""PostgreSQL WAL files, without Django: their names and positions, a WAL
file read as a pipeline dump, and pg_receivewal run as a child process.
LSNs, and the segment names made from them, are lsn.py's.
"""

import os
import re
import signal
import subprocess
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from catalog.engine.dumpers import libpq_env, normalize_conninfo
from catalog.engine.errors import SourceError
from catalog.engine.files import PRIVATE_FILE, make_private_dirs
from catalog.engine.lsn import DEFAULT_SEGMENT_SIZE, segments_per_log

CHUNK_SIZE = 1 << 20
SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
PARTIAL_RE = re.compile(r"^([0-9A-F]{24})\.partial$")
HISTORY_RE = re.compile(r"^([0-9A-F]{8})\.history$")


def is_segment_name(name: str) -> bool:
    return bool(SEGMENT_RE.match(name))


def is_history_name(name: str) -> bool:
    return bool(HISTORY_RE.match(name))


def is_partial_name(name: str) -> bool:
    return bool(PARTIAL_RE.match(name))


def segment_timeline(name: str) -> int:
    """The timeline of a segment, partial or history file name."""
    return int(name[:8], 16)


def segment_position(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """The segment's number in the WAL stream (a partial counts as its segment)."""
    match = SEGMENT_RE.match(name[:24])
    if not match:
        raise ValueError(f"Not a WAL segment name: {name!r}")
    return int(match.group(2), 16) * segments_per_log(segment_size) + int(match.group(3), 16)


def kind_of(name: str) -> str | None:
    """'segment', 'partial' or 'history' for a file pg_receivewal writes; None for anything else."""
    if is_segment_name(name):
        return "segment"
    if is_partial_name(name):
        return "partial"
    if is_history_name(name):
        return "history"
    return None


class WalFileDump:
    """A WAL file read in chunks, shaped like a Dump for run_pipeline. Reads
    at most `length` bytes, so a partial segment being written is shipped as
    it was when shipping started."""

    server_version = tool_version = ""
    table_counts: ClassVar[dict[str, int]] = {}

    def __init__(self, path: str | os.PathLike[str], length: int | None = None) -> None:
        self.path = path
        self.length = os.path.getsize(path) if length is None else length
        self.raw_bytes = 0
        self.cancelled = False

    def __iter__(self) -> Iterator[bytes]:
        with open(self.path, "rb") as handle:
            while self.raw_bytes < self.length and not self.cancelled:
                chunk = handle.read(min(CHUNK_SIZE, self.length - self.raw_bytes))
                if not chunk:
                    break
                self.raw_bytes += len(chunk)
                yield chunk

    def cancel(self) -> None:
        self.cancelled = True


class BytesDump(WalFileDump):
    """A WAL file already in memory (one pushed over HTTP, at most a segment)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)
        self.raw_bytes = 0
        self.cancelled = False

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.data), CHUNK_SIZE):
            chunk = self.data[start : start + CHUNK_SIZE]
            self.raw_bytes += len(chunk)
            yield chunk


# --- pg_receivewal --------------------------------------------------------------


def receivewal_argv(pg_receivewal: str, directory: str | os.PathLike[str], slot: str) -> list[str]:
    """The command line: no host, user or password on it (see receivewal_env)."""
    return [pg_receivewal, "-D", str(directory), "--slot", slot, "--synchronous", "--no-loop", "--no-password"]


def receivewal_env(conninfo: Mapping[str, Any]) -> dict[str, str]:
    """Where to connect, and the password, through libpq's environment: a
    command line is visible to every user of the machine."""
    params = normalize_conninfo(conninfo)
    env = libpq_env({k: v for k, v in params.items() if k != "dbname"})
    env.pop("PGDATABASE", None)
    env.setdefault("PGAPPNAME", "strongroom_wal_receiver")
    env["PGCONNECT_TIMEOUT"] = "10"
    return env


def start_receivewal(
    pg_receivewal: str,
    directory: str | os.PathLike[str],
    slot: str,
    conninfo: Mapping[str, Any],
    log_path: str | os.PathLike[str],
) -> "subprocess.Popen[bytes]":
    """Starts pg_receivewal writing into `directory`; its messages go to `log_path`."""
    make_private_dirs(directory)  # the source's WAL holds every change to its data
    log = os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE), "ab")
    try:
        return subprocess.Popen(
            receivewal_argv(pg_receivewal, directory, slot),
            env=receivewal_env(conninfo),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise SourceError(
            f"{pg_receivewal} was not found; install the PostgreSQL client tools or set PG_RECEIVEWAL"
        ) from exc
    finally:
        log.close()


def stop_process(process: "subprocess.Popen[Any]", timeout: float = 10) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def last_error_line(log_path: str | os.PathLike[str], limit: int = 8192) -> str:
    """The last thing pg_receivewal said, for the page (never holds a password:
    it is not on its command line nor in what it prints)."""
    try:
        with open(log_path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(log_path) - limit))
            lines = [line.strip() for line in handle.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return ""
    for line in reversed(lines):
        if "error" in line.lower() or "fatal" in line.lower() or "could not" in line.lower():
            return re.sub(r"^pg_receivewal: (error: )?", "", line)[:500]
    return lines[-1][:500] if lines else ""
