"""Restoring a physical base backup to a point in time, without Django.

The base backup is pg_basebackup's tar of the data directory (no WAL inside):
it is unpacked into a new, empty directory owned by the OS user that will run
the restored server, recovery.signal and the recovery settings are written
(restore_command fetches each WAL file, the target says where to stop, and
recovery_target_action=promote opens the cluster for writes there), the
server is started with pg_ctl as that user, and we wait until it promotes.
What it actually reached is read from its log, because PostgreSQL reports
the commit time of the last transaction it replayed there and nowhere else.

PostgreSQL refuses to run as root, so every command that touches the data
directory runs as `os_user` through runuser when we are root.
"""

import os
import pwd
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from catalog.engine.errors import Cancelled, EngineError

LOG_NAME = "strongroom-recovery.log"
READY = "database system is ready to accept connections"
STOP_TIME = re.compile(r"time (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?(?: ?[+-]\d\d(?::?\d\d)?| UTC)?)")


class RecoveryError(EngineError):
    pass


@dataclass
class RecoveryTarget:
    """Where recovery stops: at a moment ("time"), at the end of the WAL
    ("latest") or at a restore point made by pg_create_restore_point."""

    kind: str = "latest"
    time: datetime | None = None
    name: str = ""

    def settings(self) -> dict[str, str]:
        if self.kind == "time":
            assert self.time is not None, "a time target has its time"
            return {"recovery_target_time": self.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")}
        if self.kind == "restore_point":
            return {"recovery_target_name": self.name}
        return {}


def current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def as_user(argv: Sequence[str], os_user: str) -> list[str]:
    """argv run as os_user: through runuser when we are root and it is not."""
    if os.geteuid() == 0 and os_user != "root":
        return ["runuser", "-u", os_user, "--"] + list(argv)
    if os_user != current_user():
        raise RecoveryError(f"Only root can run the restored server as {os_user}; we are {current_user()}")
    return list(argv)


def give_to(path: str, os_user: str) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, os_user, pwd.getpwnam(os_user).pw_gid)


def check_target_directory(path: str, allowed_root: str) -> str | None:
    """Why `path` cannot receive a restore, or None. It must be absolute, under
    the allowed root, and not exist or be empty."""
    if not path or not os.path.isabs(path):
        return "Give an absolute path on the worker host, e.g. /var/lib/postgresql/restored."
    real = os.path.realpath(path)
    root = os.path.realpath(allowed_root)
    if os.path.commonpath([real, root]) != root or real == root:
        return f"Restores go under {root}: choose a directory inside it."
    if os.path.exists(real) and (not os.path.isdir(real) or os.listdir(real)):
        return f"{real} already exists and is not empty: a restore never writes over files."
    return None


def user_can_reach(path: str, os_user: str) -> bool:
    """Whether os_user can get to `path` (every directory above it must let
    them through), or it would fail later, half-way through unpacking."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if os.geteuid() != 0 or os_user == "root":
        return os.access(existing, os.X_OK)
    return subprocess.run(as_user(["test", "-x", existing], os_user), capture_output=True).returncode == 0


def make_data_directory(path: str, os_user: str) -> None:
    """Creates the (empty) data directory with the mode PostgreSQL insists on."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    os.makedirs(path, exist_ok=True)
    if os.listdir(path):
        raise RecoveryError(f"{path} is not empty")
    os.chmod(path, 0o700)
    give_to(path, os_user)


def extract_tar_stream(
    chunks: Iterable[bytes], datadir: str, os_user: str, cancel_event: threading.Event | None = None
) -> int:
    """Unpacks a tar given as an iterable of bytes into datadir, as os_user so
    that every file is theirs. Returns the bytes unpacked."""
    process = subprocess.Popen(
        as_user(["tar", "-x", "-f", "-", "-C", datadir], os_user), stdin=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdin, stderr = process.stdin, process.stderr
    assert stdin is not None and stderr is not None, "started with stdin and stderr=PIPE"
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(stderr.read()), daemon=True)
    reader.start()
    total = 0
    try:
        for chunk in chunks:
            if cancel_event is not None and cancel_event.is_set():
                raise Cancelled("Cancelled by request")
            stdin.write(chunk)
            total += len(chunk)
        stdin.close()
    except BrokenPipeError:
        pass
    except BaseException:
        process.kill()
        process.wait()
        raise
    code = process.wait()
    reader.join()
    if code != 0:
        message = " ".join(b"".join(errors).decode(errors="replace").split())[:300] or f"tar exited with {code}"
        raise RecoveryError(f"Unpacking the base backup failed: {message}")
    return total


def quote(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def write_recovery_settings(
    datadir: str, os_user: str, *, restore_command: str, target: RecoveryTarget, port: int
) -> None:
    """recovery.signal plus the settings that make the copy recover to the
    target and open on its own port, appended to postgresql.auto.conf (later
    lines win over the source's own settings)."""
    for leftover in ("postmaster.pid", "postmaster.opts", "standby.signal"):
        if os.path.exists(os.path.join(datadir, leftover)):
            os.remove(os.path.join(datadir, leftover))
    settings: dict[str, object] = {
        "restore_command": restore_command,
        **target.settings(),
        "recovery_target_action": "promote",
        "recovery_target_timeline": "latest",
        "port": port,
        "listen_addresses": "localhost",
        # A socket-less restored copy needs no writable socket directory on this host.
        "unix_socket_directories": "",
        # The copy must never push WAL into the source's archive, or stream from it.
        "archive_mode": "off",
        "primary_conninfo": "",
        "primary_slot_name": "",
        # We read the recovered time from the log: keep it in English and in UTC.
        "lc_messages": "C",
        "log_timezone": "UTC",
        "logging_collector": "off",
    }
    lines = ["", "# Added by Strongroom for a point-in-time restore"]
    lines += [f"{name} = {quote(value)}" for name, value in settings.items()]
    for name in ("postgresql.auto.conf", "recovery.signal"):
        path = os.path.join(datadir, name)
        with open(path, "a") as handle:
            if name == "postgresql.auto.conf":
                handle.write("\n".join(lines) + "\n")
        os.chmod(path, 0o600)
        give_to(path, os_user)
    wal_dir = os.path.join(datadir, "pg_wal")
    if not os.path.isdir(wal_dir):
        os.makedirs(os.path.join(wal_dir, "archive_status"))
        for path in (wal_dir, os.path.join(wal_dir, "archive_status")):
            os.chmod(path, 0o700)
            give_to(path, os_user)


def log_path(datadir: str) -> str:
    return os.path.join(datadir, LOG_NAME)


def pg_ctl(
    pg_ctl_bin: str, datadir: str, os_user: str, *args: str, check: bool = True, env: Mapping[str, str] | None = None
) -> "subprocess.CompletedProcess[str]":
    result = subprocess.run(
        as_user([pg_ctl_bin, "-D", datadir, *args], os_user), capture_output=True, text=True, env=env
    )
    if check and result.returncode != 0:
        raise RecoveryError(f"pg_ctl {args[-1]} failed: {(result.stderr or result.stdout).strip()[-300:]}")
    return result


# What a restored server (and its restore_command) needs when it must not
# inherit our environment, which may hold secrets its OS user should not see.
PLAIN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def start(pg_ctl_bin: str, datadir: str, os_user: str, env: Mapping[str, str] | None = None) -> None:
    """Starts the server without waiting: recovery may take a long time.
    `env`: the server's environment (default: ours)."""
    pg_ctl(pg_ctl_bin, datadir, os_user, "-l", log_path(datadir), "-W", "start", env=env)


def is_running(pg_ctl_bin: str, datadir: str, os_user: str) -> bool:
    return pg_ctl(pg_ctl_bin, datadir, os_user, "status", check=False).returncode == 0


def read_log(datadir: str, limit: int = 1 << 20) -> str:
    try:
        with open(log_path(datadir), "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - limit))
            return handle.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def promoted(log_text: str) -> bool:
    return any(line.rstrip().endswith(READY) for line in log_text.splitlines())


def failure_reason(log_text: str) -> str:
    """The line that says why the server stopped, in PostgreSQL's words."""
    lines = [line for line in log_text.splitlines() if "FATAL:" in line or "PANIC:" in line]
    if not lines:
        tail = [line for line in log_text.splitlines() if line.strip()][-1:]
        return "the server stopped during recovery" + (f"; its log ends with: {tail[0][:300]}" if tail else "")
    return lines[0].split(":  ", 1)[-1].strip()[:300]


def wait_until_promoted(
    pg_ctl_bin: str,
    datadir: str,
    os_user: str,
    *,
    timeout: float = 3600,
    cancel_event: threading.Event | None = None,
    on_progress: Callable[[str], object] | None = None,
) -> str:
    """Waits until the restored server has reached its target and opened for
    writes. Raises RecoveryError with PostgreSQL's reason when it stops."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        text = read_log(datadir)
        if promoted(text):
            return text
        if cancel_event is not None and cancel_event.is_set():
            raise Cancelled("Cancelled by request")
        if not is_running(pg_ctl_bin, datadir, os_user) and not is_starting(datadir, started):
            text = read_log(datadir)
            if promoted(text):
                return text
            raise RecoveryError(f"Recovery failed: {failure_reason(text)}")
        if time.monotonic() > deadline:
            raise RecoveryError(f"Recovery did not finish within {timeout} seconds")
        if on_progress:
            on_progress(last_restored_file(text))
        time.sleep(0.3)


def is_starting(datadir: str, started: float) -> bool:
    """pg_ctl start -W returns before the postmaster has written its pid file."""
    return time.monotonic() - started < 10 and not read_log(datadir).strip()


def last_restored_file(log_text: str) -> str:
    found = re.findall(r'restored log file "([0-9A-F]{24}[^"]*)" from archive', log_text)
    return found[-1] if found else ""


def parse_log_time(text: str) -> datetime:
    text = text.strip()
    if text.endswith(" UTC"):
        text = text[:-4] + "+00:00"
    match = re.search(r" ?([+-]\d\d)(?::?(\d\d))?$", text)
    if match:
        text = text[: match.start()] + f"{match.group(1)}:{match.group(2) or '00'}"
    return datetime.fromisoformat(text)


def recovered_time(log_text: str) -> datetime | None:
    """The commit time of the last transaction recovery replayed, from the
    server's log: "last completed transaction was at log time …"; None when
    recovery replayed no transaction."""
    found = None
    for line in log_text.splitlines():
        if "last completed transaction was at log time" in line:
            found = line.split("log time", 1)[1]
    if found is None:
        return None
    return parse_log_time(found)


def stop_point(log_text: str) -> str:
    """How recovery stopped, in PostgreSQL's words ("recovery stopping before
    commit of transaction 812, time …"), or ""."""
    for line in log_text.splitlines():
        if "recovery stopping" in line:
            return line.split("LOG:", 1)[-1].strip()
    return ""


def stop(pg_ctl_bin: str, datadir: str, os_user: str, *, remove: bool = False, mode: str = "fast") -> None:
    """Stops the restored server if it runs; removes its directory if asked."""
    if os.path.exists(os.path.join(datadir, "postmaster.pid")):
        result = pg_ctl(pg_ctl_bin, datadir, os_user, "-m", mode, "-w", "-t", "60", "stop", check=False)
        if result.returncode != 0 and mode != "immediate":
            pg_ctl(pg_ctl_bin, datadir, os_user, "-m", "immediate", "-w", "stop", check=False)
    if remove:
        shutil.rmtree(datadir, ignore_errors=True)
