"""The WAL receiver supervisor: one pg_receivewal per source under streaming
protection, restarted when it dies (with a growing pause), and the shipping
of what it writes.

pg_receivewal writes <segment>.partial while a segment fills and renames it
when complete. Completed segments and history files are shipped through the
pipeline and then removed from the spool; the partial is shipped again
whenever it changed (at most every PARTIAL_INTERVAL seconds), so the recovery
point is seconds old. The partial stays in the spool: pg_receivewal resumes
from it after a restart.
"""

import atexit
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, close_old_connections, connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import F
from django.utils import timezone

from catalog.engine import wal as walfiles
from catalog.engine.errors import EngineError
from pitr import wal
from pitr.models import ContinuousProtection

log = logging.getLogger(__name__)

PARTIAL_INTERVAL = 2.0
SLOT_LAG_INTERVAL = 15.0
HEARTBEAT_INTERVAL = 5.0
MAX_BACKOFF = 60.0
# How often a supervisor that does not lead tries to (see Leadership).
STANDBY_INTERVAL = 2.0
# The session-level advisory lock on the metadata database whose holder
# streams WAL: any fixed 64-bit number no other program uses there.
LEADER_LOCK_KEY = 0x5354_524F_4E47_5741  # "STRONGWA"


# Every pg_receivewal this process started and has not stopped: stopped at
# exit too, so none outlives its supervisor (they run in their own session).
_children: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _stop_children() -> None:
    for process in list(_children):
        walfiles.stop_process(process, timeout=5)


def spool_dir(source_id: int) -> Path:
    return Path(settings.WAL_SPOOL_DIR) / str(source_id)


def spool_full(directory: str | os.PathLike[str]) -> str:
    """Why pg_receivewal stopped when the spool's disk is full: it cannot
    even write its own log then. "" while there is room."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return ""
    if free >= 64 << 10:
        return ""
    return (
        f"Disk full on {directory}: pg_receivewal cannot write the WAL spool; free some space "
        "(the replication slot keeps the WAL on the source until then)"
    )


class Receiver:
    """One source's pg_receivewal and the state of its shipping."""

    def __init__(self, protection: ContinuousProtection) -> None:
        self.source_id = protection.source_id
        self.protection_id = protection.pk
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at: datetime | None = None
        self.started_mono = 0.0
        self.failures = 0  # in a row, for the backoff
        self.next_start = 0.0
        self.partial_shipped: dict[str, int] = {}  # name -> mtime shipped
        self.partial_at = 0.0
        self.lag_at = 0.0
        self.beat_at = 0.0

    @property
    def directory(self) -> Path:
        return spool_dir(self.source_id) / "wal"

    @property
    def log_path(self) -> Path:
        return spool_dir(self.source_id) / "pg_receivewal.log"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ensure_running(self, protection: ContinuousProtection) -> None:
        if self.running():
            return
        if self.process is not None:  # it died
            code = self.process.returncode
            error = (
                spool_full(self.directory)
                or walfiles.last_error_line(self.log_path)
                or f"pg_receivewal exited with code {code}"
            )
            _children.discard(self.process)
            self.process = None
            self.failures += 1
            self.next_start = time.monotonic() + min(MAX_BACKOFF, 2 ** (self.failures - 1))
            ContinuousProtection.objects.filter(pk=protection.pk).update(receiver_pid=None, receiver_error=error[:500])
            log.warning("pg_receivewal of source %s stopped: %s", self.source_id, error)
        if time.monotonic() < self.next_start:
            return
        restarted = protection.receiver_started_at is not None
        try:
            self.process = walfiles.start_receivewal(
                settings.PG_RECEIVEWAL,
                self.directory,
                protection.slot_name,
                protection.source.conninfo(),
                self.log_path,
            )
        except EngineError as exc:
            self.failures += 1
            self.next_start = time.monotonic() + min(MAX_BACKOFF, 2 ** (self.failures - 1))
            ContinuousProtection.objects.filter(pk=protection.pk).update(receiver_pid=None, receiver_error=str(exc))
            return
        _children.add(self.process)
        self.started_at, self.started_mono = timezone.now(), time.monotonic()
        fields = dict(
            receiver_pid=self.process.pid,
            receiver_host=socket.gethostname(),
            receiver_started_at=self.started_at,
            receiver_heartbeat_at=self.started_at,
        )
        if restarted:
            fields["receiver_restarts"] = F("receiver_restarts") + 1
        ContinuousProtection.objects.filter(pk=protection.pk).update(**fields)

    def heartbeat(self) -> None:
        if self.running() and time.monotonic() - self.beat_at >= HEARTBEAT_INTERVAL:
            self.beat_at = time.monotonic()
            updates: dict[str, object] = {"receiver_heartbeat_at": timezone.now()}
            if time.monotonic() - self.started_mono > 30:
                updates["receiver_error"] = ""  # it has stayed up: the last error is history
                self.failures = 0
            ContinuousProtection.objects.filter(pk=self.protection_id).update(**updates)

    def ship(self, protection: ContinuousProtection) -> None:
        """Ships what is complete, then the partial if it changed."""
        if not self.directory.is_dir():
            return
        names = sorted(os.listdir(self.directory))
        for name in names:
            kind = walfiles.kind_of(name)
            if kind in ("segment", "history"):
                path = self.directory / name
                try:
                    wal.ship_wal_path(protection, path)
                except EngineError as exc:
                    ContinuousProtection.objects.filter(pk=protection.pk).update(
                        receiver_error=f"Could not store {name}: {exc}"[:500]
                    )
                    return  # keep it in the spool; try again on the next round
                path.unlink(missing_ok=True)
        now = time.monotonic()
        if now - self.partial_at < PARTIAL_INTERVAL:
            return
        for name in names:
            if walfiles.kind_of(name) != "partial":
                continue
            path = self.directory / name
            try:
                mtime = path.stat().st_mtime_ns
            except FileNotFoundError:
                continue  # completed meanwhile: next round ships it
            if self.partial_shipped.get(name) == mtime:
                continue
            self.partial_at = now
            try:
                wal.ship_wal_path(protection, path)
            except (EngineError, FileNotFoundError) as exc:
                log.warning("Could not store %s: %s", name, exc)
                continue
            self.partial_shipped = {name: mtime}

    def check_lag(self, protection: ContinuousProtection) -> None:
        if time.monotonic() - self.lag_at >= SLOT_LAG_INTERVAL:
            self.lag_at = time.monotonic()
            wal.refresh_slot_lag(protection)

    def stop(self) -> None:
        if self.process is not None:
            walfiles.stop_process(self.process)
            _children.discard(self.process)
            self.process = None
        ContinuousProtection.objects.filter(pk=self.protection_id).update(receiver_pid=None)


class Leadership:
    """Exactly one supervisor streams WAL when several hosts share the
    metadata database: the one whose own session on it holds an advisory
    lock. A host that dies takes its session, and so the lock, with it, and
    another host's supervisor takes the lock within STANDBY_INTERVAL. With
    SQLite metadata there is one host, and it leads. (Two supervisors that
    overlapped for a moment would not stream twice: a replication slot takes
    one pg_receivewal at a time.)"""

    def __init__(self) -> None:
        self.session: BaseDatabaseWrapper | None = None

    def held(self) -> bool:
        if connection.vendor != "postgresql":
            return True
        try:
            if self.session is not None:
                with self.session.cursor() as cursor:
                    cursor.execute("SELECT 1")  # the session lives, so the lock is still ours
                return True
            session = connections.create_connection(DEFAULT_DB_ALIAS)
            with session.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [LEADER_LOCK_KEY])
                (taken,) = cursor.fetchone()
            if not taken:
                session.close()
                return False
            self.session = session
            return True
        except DatabaseError:
            log.exception("Cannot tell whether this supervisor leads; it does not while it cannot")
            self.release()
            return False

    def release(self) -> None:
        if self.session is not None:
            with contextlib.suppress(DatabaseError):
                self.session.close()
            self.session = None


class Supervisor:
    """Keeps one Receiver per enabled streaming protection while it leads
    (Leadership), until stopped."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.receivers: dict[int, Receiver] = {}
        self.stop_event = threading.Event()
        self.leadership = Leadership()
        self.leading: bool | None = None  # None: not known yet

    def enabled(self) -> dict[int, ContinuousProtection]:
        return {
            p.pk: p
            for p in ContinuousProtection.objects.filter(enabled=True, mode=ContinuousProtection.STREAM).select_related(
                "source"
            )
        }

    def round(self) -> None:
        close_old_connections()
        protections = self.enabled()
        for pk in list(self.receivers):
            if pk not in protections:
                self.receivers.pop(pk).stop()
        for pk, protection in protections.items():
            receiver = self.receivers.setdefault(pk, Receiver(protection))
            try:
                receiver.ship(protection)  # first: what an earlier run left in the spool
                receiver.ensure_running(protection)
                receiver.heartbeat()
                receiver.check_lag(protection)
            except Exception:  # one source's trouble must not stop the others
                log.exception("WAL receiver round failed for source %s", protection.source_id)

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                if self.leadership.held():
                    if self.leading is not True:
                        log.info("Leading: this host's supervisor streams the WAL of every protected source")
                    self.leading = True
                    self.round()
                    self.stop_event.wait(self.interval)
                else:
                    if self.leading is True:
                        log.warning("No longer leading: stopping this host's WAL receivers")
                        self.shutdown()
                    elif self.leading is None:
                        log.info("Standing by: another host's supervisor streams the WAL")
                    self.leading = False
                    self.stop_event.wait(STANDBY_INTERVAL)
        finally:
            self.shutdown()
            self.leadership.release()

    def shutdown(self) -> None:
        for receiver in self.receivers.values():
            try:
                receiver.stop()
            except Exception:
                log.exception("Could not stop a WAL receiver")
        self.receivers.clear()
