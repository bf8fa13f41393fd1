"""Point-in-time restores: which base backup and which WAL reach a target,
the checks before anything is written, and the job that unpacks the base
backup into a new data directory, replays the WAL through restore_command
and promotes the restored cluster at the target. A "verify PITR" drill does
the same into a scratch directory, at a restore point it makes on the source
right after counting the source's rows, and compares the counts.

Shared by the wizard (pitr/restore_views.py), the task and the wal_fetch
command (the restore_command)."""

import logging
import os
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import psycopg
from django.conf import settings
from django.contrib.auth.models import User
from django.db import close_old_connections, transaction
from django.db.models import QuerySet
from django.utils import timezone
from psycopg import sql
from psycopg.rows import TupleRow

from catalog import audit, jobs, keyring, queues
from catalog.engine import dumpers
from catalog.engine import pitr as engine
from catalog.engine import wal as walfiles
from catalog.engine.dumpers import ConnParams
from catalog.engine.errors import Cancelled, CorruptionError, EngineError, StorageError
from catalog.engine.lsn import segment_name_for_lsn, segment_name_for_position
from catalog.engine.pipeline import restore_stream
from catalog.errors import Refused
from catalog.models import BASE_BACKUP_FORMAT, Backup, Source
from catalog.text import count_text
from pitr import wal
from pitr.models import PitrRestore, WalSegment

log = logging.getLogger(__name__)

DRILL_POINT_PREFIX = "strongroom-drill-"


# --- planning -------------------------------------------------------------------


@dataclass
class Plan:
    """What a restore to the target will do: the base backup, the WAL it
    replays (first and last segment, inclusive) and the bytes it writes."""

    base_backup: Backup
    wal_from: str
    wal_to: str
    segments: int
    expected_bytes: int
    newest_wal_at: datetime | None = None


def complete_base_backups(source: Source) -> QuerySet[Backup]:
    """Base backups of `source` that can be restored: stored, not pruned,
    and with all the WAL they need to reach consistency."""
    return (
        Backup.objects.filter(
            source=source,
            format=BASE_BACKUP_FORMAT,
            status__in=Backup.WITH_DATA,
            pruned_at__isnull=True,
            base_wal__wal_complete_at__isnull=False,
            base_wal__finished_at__isnull=False,
        )
        .select_related("base_wal")
        .order_by("-base_wal__finished_at")
    )


def choose_base_backup(source: Source, target_kind: str, target_time: datetime | None = None) -> Backup:
    """The latest base backup whose WAL is complete and which was consistent
    before the target. A named restore point's moment is unknown, so it
    starts from the oldest one: any point after it can be found."""
    backups = complete_base_backups(source)
    if target_kind == PitrRestore.TIME:
        backups = backups.filter(base_wal__finished_at__lte=target_time)
    elif target_kind == PitrRestore.RESTORE_POINT:
        backups = backups.order_by("base_wal__finished_at")
    backup = backups.first()
    if backup is None:
        if target_kind == PitrRestore.TIME and complete_base_backups(source).exists():
            oldest_backup = complete_base_backups(source).last()
            assert oldest_backup is not None  # exists() just said there is one
            oldest = oldest_backup.base_wal.finished_at
            raise Refused(
                f"No base backup was finished before {local(target_time)}: the earliest moment this "
                f"source can be restored to is {local(oldest)}."
            )
        raise Refused(
            f"{source} has no base backup with all its WAL stored yet, so there is nothing to restore "
            "from. Take a base backup first."
        )
    return backup


def newest_wal(source: Source) -> WalSegment | None:
    return wal.stored_segments(source).order_by("-position", "kind").first()


def last_segment_needed(
    source: Source, base_backup: Backup, target_kind: str, target_time: datetime | None = None
) -> str:
    """The last WAL file recovery must read: for a moment, the first one
    stored after it (it holds the first commit past the target, where
    recovery stops); otherwise the newest one stored."""
    bounds = base_backup.base_wal
    newest = newest_wal(source)
    last = newest.name[:24] if newest else bounds.end_segment
    if target_kind == PitrRestore.TIME:
        after = (
            wal.stored_segments(source)
            .filter(received_at__gt=target_time)
            .exclude(position__lt=walfiles.segment_position(bounds.end_segment, wal.segment_size_of(source)))
            .order_by("position")
            .first()
        )
        if after is None:
            raise Refused(
                f"Strongroom holds WAL only up to {local(newest.received_at) if newest else 'the base backup'}"
                f": {local(target_time)} is later than the last shipped change. Choose an earlier moment, "
                "or “the latest possible”."
            )
        last = after.name[:24]
    return max(last, bounds.end_segment)


def plan_restore(
    source: Source, target_kind: str, target_time: datetime | None = None, restore_point: str = ""
) -> Plan:
    """The base backup and exact WAL range for the target, refusing a target
    that lies past a gap in the stored WAL (naming the missing segment)."""
    if target_kind == PitrRestore.TIME and target_time is None:
        raise Refused("Choose the moment to restore to.")
    if target_kind == PitrRestore.RESTORE_POINT and not restore_point.strip():
        raise Refused("Give the name of the restore point (made with pg_create_restore_point).")
    backup = choose_base_backup(source, target_kind, target_time)
    wal_from = backup.base_wal.start_segment
    wal_to = last_segment_needed(source, backup, target_kind, target_time)
    missing = wal.missing_segments(source, wal_from, wal_to)
    if missing:
        before = (
            wal.stored_segments(source)
            .filter(position__lt=walfiles.segment_position(missing[0], wal.segment_size_of(source)))
            .order_by("-position")
            .first()
        )
        reachable = f" The latest moment before the gap is about {local(before.received_at)}." if before else ""
        raise Refused(
            f"WAL segment {missing[0]} is missing from storage"
            f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}, so recovery cannot get "
            f"past it: this target lies after the gap.{reachable} Choose a moment before the gap, or "
            "take a new base backup to restore from."
        )
    segments = wal.segments_between(source, wal_from, wal_to)
    newest = newest_wal(source)
    return Plan(
        base_backup=backup,
        wal_from=wal_from,
        wal_to=wal_to,
        segments=len(segments),
        expected_bytes=(backup.raw_bytes or 0) + sum(s.size for s in segments),
        newest_wal_at=newest.received_at if newest else None,
    )


def local(moment: datetime | None) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S %Z") if moment else "—"


# --- asking ---------------------------------------------------------------------


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_host(host: str) -> None:
    """A restore goes to the chosen host's own queue: some worker there must take it."""
    hosts = queues.hosts_with_own_queue()
    if host not in hosts:
        running = f" It runs on {', '.join(hosts)}." if hosts else ""
        raise Refused(
            f"No worker runs host {host}'s own queue, so nothing there would take the restore: start "
            f"Strongroom's workers on {host} (make run, or strongroom-host.service), or choose another host." + running
        )


def check_destination(data_directory: str, port: int | None, host: str, job: PitrRestore | None = None) -> None:
    """Refuses a data directory or port that the restore cannot use on `host`.
    The directory and the port can only be looked at on that host itself: the
    web process checks them when it runs there, and the worker checks them
    again before it writes anything (`job` is then the restore itself)."""
    here = host == settings.HOST_NAME
    if here:
        problem = engine.check_target_directory(data_directory, str(settings.PITR_RESTORE_ROOT))
        if problem:
            raise Refused(problem)
        if not engine.user_can_reach(data_directory, settings.PITR_OS_USER):
            raise Refused(
                f"The OS user {settings.PITR_OS_USER}, who runs the restored server, cannot reach "
                f"{data_directory}: a directory above it is closed to them. Choose another place, or open it "
                "(chmod o+x)."
            )
    elif not os.path.isabs(data_directory):
        raise Refused("The data directory must be an absolute path on the chosen host.")
    others = PitrRestore.objects.filter(host=host, status__in=PitrRestore.ACTIVE_STATUSES)
    if job is not None:
        others = others.exclude(pk=job.pk)
    if others.filter(data_directory=os.path.normpath(data_directory)).exists():
        raise Refused(f"Another restore is already writing into {data_directory} on {host}.")
    if not port or not 1024 <= int(port) <= 65535:
        raise Refused("Choose a port between 1024 and 65535 for the restored server.")
    if (here and not port_is_free(int(port))) or others.filter(port=port).exists():
        raise Refused(f"Port {port} is already in use on {host}; choose another.")


def request_pitr_restore(
    actor: audit.Actor,
    source: Source,
    *,
    target_kind: str,
    target_time: datetime | None = None,
    restore_point: str = "",
    data_directory: str,
    port: int | None,
    host: str | None = None,
    enqueue: bool = True,
) -> PitrRestore:
    """Queues a restore into `data_directory` on `host` (this one unless
    another is named), for that host's own queue."""
    # Only the chosen kind of target counts (a form may send the others too).
    target_time = target_time if target_kind == PitrRestore.TIME else None
    restore_point = restore_point if target_kind == PitrRestore.RESTORE_POINT else ""
    host = host or settings.HOST_NAME
    check_host(host)
    # On this host, the path as the filesystem resolves it; another host's
    # filesystem is not here to ask.
    if host == settings.HOST_NAME:
        data_directory = os.path.realpath(data_directory)
    check_destination(data_directory, port, host)
    assert port is not None  # check_destination refused a missing port
    plan = plan_restore(source, target_kind, target_time, restore_point)
    return create_job(
        actor,
        source,
        plan,
        target_kind=target_kind,
        target_time=target_time,
        restore_point=restore_point.strip(),
        data_directory=os.path.normpath(data_directory),
        port=int(port),
        host=host,
        is_drill=False,
        enqueue=enqueue,
    )


def request_pitr_drill(actor: audit.Actor, source: Source, enqueue: bool = True) -> PitrRestore:
    """A drill restores to a restore point made when it runs; here we only
    check that a restore is possible at all."""
    plan = plan_restore(source, PitrRestore.LATEST)
    return create_job(
        actor,
        source,
        plan,
        target_kind=PitrRestore.RESTORE_POINT,
        data_directory="",
        port=None,
        is_drill=True,
        enqueue=enqueue,
    )


def create_job(actor: audit.Actor, source: Source, plan: Plan, *, enqueue: bool, **fields: Any) -> PitrRestore:
    with transaction.atomic():
        job = PitrRestore.objects.create(
            source=source,
            base_backup=plan.base_backup,
            wal_from=plan.wal_from,
            wal_to=plan.wal_to,
            report={"expected_bytes": plan.expected_bytes, "segments": plan.segments},
            requested_by=cast(User | None, actor if not isinstance(actor, str) else None),
            **fields,
        )
        audit.record(
            actor,
            "pitr.drill.queue" if job.is_drill else "pitr.restore.queue",
            job,
            {
                "base_backup": plan.base_backup.pk,
                "target": describe_target(job),
                "wal_from": plan.wal_from,
                "wal_to": plan.wal_to,
                "data_directory": job.data_directory,
                "port": job.port,
                "host": job.host,
            },
        )
        if enqueue:
            transaction.on_commit(lambda: enqueue_pitr_restore(job))
    return job


def describe_target(job: PitrRestore) -> str:
    if job.target_kind == PitrRestore.TIME:
        return local(job.target_time)
    if job.target_kind == PitrRestore.RESTORE_POINT:
        return f"restore point “{job.restore_point}”" if job.restore_point else "a restore point made by the drill"
    return "the latest possible"


def enqueue_pitr_restore(job: PitrRestore) -> None:
    """A restore goes to its host's own queue; a drill, into a scratch
    directory, to whichever host's workers are free."""
    queues.enqueue_for(job.host, "pitr.tasks.run_pitr_restore", job.pk, task_name=f"pitr-restore-{job.pk}")


def cancel_pitr_restore(actor: audit.Actor, job: PitrRestore) -> PitrRestore:
    return jobs.cancel_job(
        actor, job, "pitr.restore.cancel", summary="Cancelled before it started; nothing was written."
    )


# --- fetching WAL (restore_command) -------------------------------------------------


def stored_wal_file(source: Source, name: str) -> WalSegment | None:
    """The stored WAL file recovery asks for by name; for a segment that was
    only shipped partially (the newest, when the source stopped), its
    partial, so that recovery replays up to the last shipped commit."""
    found = WalSegment.objects.filter(source=source, name=name, status=WalSegment.STORED).first()
    if found is None and walfiles.is_segment_name(name):
        found = WalSegment.objects.filter(source=source, name=f"{name}.partial", status=WalSegment.STORED).first()
    return found


def fetch_wal_file(source: Source, name: str, path: str) -> bool:
    """Writes WAL file `name` to `path` atomically, checked against its
    SHA-256 and decrypted. False when Strongroom does not hold it (normal at
    the end of the WAL); raises CorruptionError or StorageError otherwise.
    A partial the receiver stores again while it is read is read again."""
    segment = stored_wal_file(source, name)
    if segment is None:
        return False
    for _ in range(REREADS):
        try:
            write_wal_file(segment, path)
            return True
        except CorruptionError:
            # The newest partial may have been stored again while it was read: then read the new one.
            if (segment := wal.stored_again(segment)) is None:
                raise
    write_wal_file(segment, path)
    return True


# How often a partial WAL file stored again mid-read is read again before its last version counts.
REREADS = 4


def write_wal_file(segment: WalSegment, path: str) -> None:
    partial = f"{path}.strongroom-partial"
    try:
        with open(partial, "wb") as handle:
            for chunk in wal.read_wal(segment):
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise


def restore_command(job: PitrRestore, staging: str) -> str:
    """The restore_command for the restored server. When it runs as the
    worker's own OS user it asks Strongroom for each file (wal_fetch); when
    it runs as another user (who cannot read the master key), the worker
    fetches the range into `staging` first and recovery copies from there."""
    if engine.current_user() == settings.PITR_OS_USER:
        manage = os.path.join(settings.BASE_DIR, "manage.py")
        return f'"{sys.executable}" "{manage}" wal_fetch {job.source_id} "%f" "%p"'
    return f'cp "{staging}/%f" "%p"'


def stage_wal(job: PitrRestore, staging: str, cancel_event: threading.Event) -> int:
    """Fetches the history files and the planned range (plus the next stored
    segment, where the stop may lie when the range's last one has no commit)
    into `staging`, readable by the restored server's OS user."""
    os.makedirs(staging, mode=0o700)
    engine.give_to(staging, settings.PITR_OS_USER)
    size = wal.segment_size_of(job.source)
    names = list(
        WalSegment.objects.filter(source=job.source, kind=WalSegment.HISTORY, status=WalSegment.STORED).values_list(
            "name", flat=True
        )
    )
    wal_to = job.wal_to
    if job.target_kind == PitrRestore.TIME:
        following = segment_name_for_position(
            walfiles.segment_timeline(wal_to), walfiles.segment_position(wal_to, size) + 1, size
        )
        if stored_wal_file(job.source, following):
            wal_to = following
    names += [s.name[:24] for s in wal.segments_between(job.source, job.wal_from, wal_to)]
    for name in names:
        if cancel_event.is_set():
            raise Cancelled("Cancelled by request")
        target = os.path.join(staging, name)
        fetch_wal_file(job.source, name, target)
        engine.give_to(target, settings.PITR_OS_USER)
    return len(names)


# --- running ----------------------------------------------------------------------


class Watch(jobs.JobWatch):
    def __init__(self, job: PitrRestore) -> None:
        super().__init__(PitrRestore, job.pk)
        self.job = job

    def progress(self) -> dict[str, Any]:
        return {"phase": self.job.phase[:40]}


def run_pitr_restore(job_id: int) -> PitrRestore | None:
    close_old_connections()
    job = jobs.claim(
        PitrRestore, job_id, "pitr.restore.start", related=("source", "base_backup", "base_backup__base_wal")
    )
    if job is None:
        return None
    if job.host and job.host != settings.HOST_NAME:
        job.summary = (
            f"This restore was for host {job.host}, and a worker on {settings.HOST_NAME} took it: "
            "nothing was written. Start it again."
        )
        return finish(job, PitrRestore.FAILED)
    if not job.host:  # a drill runs wherever a worker was free: its directory is here
        job.host = settings.HOST_NAME
        PitrRestore.objects.filter(pk=job.pk).update(host=job.host)
    started = time.monotonic()
    try:
        with Watch(job) as watch:
            carry_out(job, watch.cancel_event)
        status = PitrRestore.SUCCEEDED
    except Cancelled as exc:
        status, job.summary = PitrRestore.CANCELLED, f"{exc}; the restored directory was removed."
    except (EngineError, Refused, psycopg.Error, OSError) as exc:
        status, job.summary = PitrRestore.FAILED, f"{exc}"[:440].rstrip(".") + ". The restored directory was removed."
    except Exception as exc:
        log.exception("Point-in-time restore %s failed unexpectedly", job_id)
        status, job.summary = PitrRestore.FAILED, f"Unexpected error ({type(exc).__name__}); see the worker log."
    job.report["total_seconds"] = round(time.monotonic() - started, 3)
    return finish(job, status)


def set_phase(job: PitrRestore, phase: str, line: str | None = None) -> None:
    job.phase = phase[:40]
    if line:
        job.append_log(line)
    PitrRestore.objects.filter(pk=job.pk).update(
        phase=job.phase,
        log=job.log,
        report=job.report,
        data_directory=job.data_directory,
        port=job.port,
        restore_point=job.restore_point,
        wal_to=job.wal_to,
    )


def carry_out(job: PitrRestore, cancel_event: threading.Event) -> None:
    if job.is_drill:
        job.data_directory = os.path.join(str(settings.PITR_RESTORE_ROOT), f"strongroom-drill-{job.pk}")
        job.port = free_port()
        set_phase(job, "marking the source", "Counting the source's rows and making a restore point.")
        mark_source(job)
    else:
        # The request was checked on the web host, which may not be this one.
        check_destination(job.data_directory, job.port, job.host, job)
    datadir, os_user = job.data_directory, settings.PITR_OS_USER
    staging = os.path.join(os.path.dirname(datadir), f".strongroom-wal-{job.pk}")
    created = False
    try:
        set_phase(
            job,
            "unpacking the base backup",
            f"Unpacking base backup #{job.base_backup_id} into {datadir} (as {os_user}).",
        )
        engine.make_data_directory(datadir, os_user)
        created = True
        unpack_base_backup(job, datadir, os_user, cancel_event)
        command = restore_command(job, staging)
        if command.startswith("cp "):
            set_phase(job, "fetching WAL", f"Fetching WAL {job.wal_from} to {job.wal_to} for {os_user}.")
            job.report["wal_files_fetched"] = stage_wal(job, staging, cancel_event)
        assert job.port is not None  # chosen with the request, or above for a drill
        engine.write_recovery_settings(
            datadir, os_user, restore_command=command, target=recovery_target(job), port=job.port
        )
        set_phase(job, "replaying WAL", f"Starting the restored server on port {job.port}; replaying WAL.")
        # wal_fetch needs our settings from the environment; a cp from staging, run by another OS user, must
        # not see them (they may hold the metadata database's password).
        engine.start(settings.PG_CTL, datadir, os_user, env=engine.PLAIN_ENV if command.startswith("cp ") else None)

        def on_progress(name: str) -> None:
            if name and name != job.report.get("replaying"):
                job.report["replaying"] = name
                set_phase(job, "replaying WAL")

        text = engine.wait_until_promoted(
            settings.PG_CTL,
            datadir,
            os_user,
            timeout=settings.PITR_RECOVERY_TIMEOUT,
            cancel_event=cancel_event,
            on_progress=on_progress,
        )
        job.recovered_to = engine.recovered_time(text)
        job.report["stop"] = engine.stop_point(text)
        job.report.pop("replaying", None)
        if job.is_drill:
            set_phase(job, "comparing row counts", "Comparing row counts with the source's at the restore point.")
            compare_counts(job)
        job.summary = outcome_in_words(job)
        job.append_log(job.summary)
    except BaseException:
        if created:
            engine.stop(settings.PG_CTL, datadir, os_user, remove=True, mode="immediate")
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if job.is_drill and created:
            engine.stop(settings.PG_CTL, datadir, os_user, remove=True)


def recovery_target(job: PitrRestore) -> engine.RecoveryTarget:
    if job.target_kind == PitrRestore.TIME:
        return engine.RecoveryTarget("time", time=job.target_time)
    if job.target_kind == PitrRestore.RESTORE_POINT:
        return engine.RecoveryTarget("restore_point", name=job.restore_point)
    return engine.RecoveryTarget("latest")


def unpack_base_backup(job: PitrRestore, datadir: str, os_user: str, cancel_event: threading.Event) -> None:
    """From the first copy that reads back whole; a damaged copy fails the
    restore (the directory is removed), since tar has already written it."""
    backup = job.base_backup
    assert backup is not None  # every restore is planned from one (and it is protected from deletion)
    copies = backup.readable_copies()
    if not copies:
        raise StorageError(f"Base backup #{backup.pk} has no durable copy left.")
    if backup.encrypted:
        keyring.master_key(backup.key_id)  # a clear message before anything is written
    copy = copies[0]
    plain = restore_stream(
        copy.destination.storage().open_reader(copy.key),
        keyring=keyring.lookup,
        expected_sha256=backup.sha256,
        key_wraps=backup.key_wraps,
    )
    try:
        unpacked = engine.extract_tar_stream(plain, datadir, os_user, cancel_event)
    except (CorruptionError, StorageError) as exc:
        raise EngineError(f"Base backup #{backup.pk} could not be read from {copy.destination}: {exc}") from exc
    job.report["unpacked_bytes"] = unpacked
    job.append_log(f"Unpacked {unpacked} bytes from {copy.destination}.")


def source_params(source: Source) -> ConnParams:
    return dumpers.normalize_conninfo(source.conninfo())


def count_rows(conn: psycopg.Connection[TupleRow]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for schema, table in conn.execute(dumpers.COUNT_TABLES).fetchall():
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        row = conn.execute(query).fetchone()
        assert row is not None  # count(*) returns exactly one row
        counts[f"{schema}.{table}"] = row[0]
    return counts


def mark_source(job: PitrRestore) -> None:
    """Counts every table's rows in one snapshot, makes a restore point right
    after, and switches WAL so that the segment holding it ships now. Then
    waits (up to a few minutes) until that segment is stored."""
    name = f"{DRILL_POINT_PREFIX}{job.pk}-{timezone.now():%Y%m%d%H%M%S}"
    with psycopg.connect(**source_params(job.source), connect_timeout=10) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        counts = count_rows(conn)
        row = conn.execute("SELECT pg_create_restore_point(%s)::text", [name]).fetchone()
        assert row is not None  # a SELECT without FROM returns exactly one row
        lsn = row[0]
        conn.commit()
        try:
            conn.execute("SELECT pg_switch_wal()")
            conn.commit()
        except psycopg.Error:
            conn.rollback()  # without the right, the receiver ships the partial segment in a moment anyway
    assert job.base_backup is not None  # every restore is planned from one (and it is protected from deletion)
    timeline = job.base_backup.base_wal.timeline
    segment = segment_name_for_lsn(timeline, lsn, wal.segment_size_of(job.source))
    job.restore_point, job.wal_to = name, segment
    job.report.update(expected_counts=counts, restore_point_lsn=lsn)
    set_phase(job, "waiting for WAL", f"Restore point {name} at {lsn}, in WAL segment {segment}.")
    deadline = time.monotonic() + 300
    while (
        not wal.stored_segments(job.source)
        .filter(
            position__gte=walfiles.segment_position(segment, wal.segment_size_of(job.source)),
            received_at__gte=job.started_at,
        )
        .exists()
    ):
        if time.monotonic() > deadline:
            raise Refused(
                f"WAL segment {segment}, holding the drill's restore point, was not shipped within "
                "5 minutes: is continuous protection running?"
            )
        time.sleep(0.5)
    missing = wal.missing_segments(job.source, job.wal_from, segment)
    if missing:
        raise Refused(f"WAL segment {missing[0]} is missing from storage, so the drill cannot replay past it.")


def compare_counts(job: PitrRestore) -> None:
    params: dict[str, Any] = {
        "host": "localhost",
        "port": job.port,
        "user": source_params(job.source).get("user"),
        "dbname": job.source.dbname,
        "password": source_params(job.source).get("password"),
    }
    with psycopg.connect(**{k: v for k, v in params.items() if v}, connect_timeout=10) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        found = count_rows(conn)
    expected = job.report.get("expected_counts", {})
    differences = {
        table: {"source": expected.get(table), "restored": found.get(table)}
        for table in sorted(set(expected) | set(found))
        if expected.get(table) != found.get(table)
    }
    job.report.update(restored_counts=found, differences=differences, counts_match=not differences)
    if differences:
        raise EngineError(
            f"Row counts differ at the restore point in {len(differences)} table(s): "
            + ", ".join(
                f"{t} (source {d['source']}, restored {d['restored']})" for t, d in list(differences.items())[:5]
            )
        )


def outcome_in_words(job: PitrRestore) -> str:
    reached = f"Recovered to {local(job.recovered_to)}" if job.recovered_to else "Recovered (no transaction replayed)"
    if job.is_drill:
        tables = len(job.report.get("expected_counts", {}))
        return (
            f"Drill passed: {reached}; the row counts of {count_text(tables, 'table')} match the source at the "
            "restore point. The scratch cluster was stopped and removed."
        )
    return f"{reached}. The restored server runs on port {job.port} of the worker host."


def finish(job: PitrRestore, status: str) -> PitrRestore:
    now = timezone.now()
    jobs.finish(
        job,
        status,
        f"pitr.restore.{status}",
        {"summary": job.summary[:500], "recovered_to": job.recovered_to},
        summary=job.summary[:500],
        report=job.report,
        log=job.log,
        phase="",
        recovered_to=job.recovered_to,
        restore_point=job.restore_point,
        wal_to=job.wal_to,
        data_directory=job.data_directory,
        port=job.port,
        finished_at=now,
        heartbeat_at=now,
    )
    job.refresh_from_db()
    return job


def stop_restored_server(actor: audit.Actor, job: PitrRestore) -> bool:
    """Stops a restored server the wizard started (its directory stays).
    The server runs on the restore's host: from another host, the stop is
    queued for that host's own queue. True when it stopped here and now."""
    if job.is_drill or job.status != PitrRestore.SUCCEEDED or not job.data_directory:
        raise Refused("Only a finished restore's server can be stopped here.")
    if job.host and job.host != settings.HOST_NAME:
        with transaction.atomic():
            audit.record(actor, "pitr.restore.stop_server.request", job, {"host": job.host})
            transaction.on_commit(
                lambda: queues.enqueue_on_host(
                    job.host, "pitr.tasks.stop_restored_server", job.pk, task_name=f"pitr-stop-{job.pk}"
                )
            )
        return False
    stop_here(actor, job)
    return True


def stop_here(actor: audit.Actor, job: PitrRestore) -> None:
    engine.stop(settings.PG_CTL, job.data_directory, settings.PITR_OS_USER)
    with transaction.atomic():
        job.report["stopped_at"] = timezone.now().isoformat()
        PitrRestore.objects.filter(pk=job.pk).update(report=job.report)
        audit.record(actor, "pitr.restore.stop_server", job, {"data_directory": job.data_directory})


def connection_hint(job: PitrRestore) -> str:
    params = source_params(job.source)
    user = params.get("user") or "postgres"
    return f"psql -h localhost -p {job.port} -U {user} {job.source.dbname or 'postgres'}"


def sweep_stale_pitr_restores(now: datetime | None = None) -> list[int]:
    """Fails the restores whose worker stopped beating: their server may
    still be recovering, so it is stopped and the half-restored directory
    (which the job created: it had to be new or empty) removed."""
    now = now or timezone.now()
    return jobs.sweep(
        jobs.stale(PitrRestore, now),
        "pitr.restore.failed",
        {"summary": "worker stopped responding"},
        clean_up=remove_restored_cluster,
        finished_at=now,
        phase="",
        summary="The worker stopped responding; the half-restored directory was removed.",
    )


def remove_restored_cluster(job: PitrRestore) -> None:
    """Stops a dead worker's restored server and removes its directory; if
    that fails, the job stays running and the next tick tries again. The
    directory is on the restore's host: from another host (the tick runs on
    any), the removal is queued for that host's own queue, which runs it
    when the host is back if it is the one that died."""
    if job.host and job.host != settings.HOST_NAME:
        queues.enqueue_on_host(
            job.host, "pitr.tasks.remove_restored_cluster", job.pk, task_name=f"pitr-clean-up-{job.pk}"
        )
        return
    if job.data_directory and os.path.isdir(job.data_directory):
        engine.stop(settings.PG_CTL, job.data_directory, settings.PITR_OS_USER, remove=True, mode="immediate")
