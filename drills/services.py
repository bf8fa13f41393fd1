"""Running and recording DR drills. Views, the tick and the task call these.

An automatic drill reuses what already proves a backup: a checksum drill is a
checksum verification of the source's latest good backup, a full drill is a
test restore of the whole backup into a scratch database (its restore time
compared with the source's RTO), and a partial drill is a restore of two of
the backup's tables, the largest and the smallest, into a new scratch
database that is dropped afterwards, with their row counts compared with the
backup's snapshot."""

import contextlib
import logging
import os
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import close_old_connections, transaction
from django.utils import timezone

from catalog import audit, jobs, queues, verification
from catalog.alerts import hooks
from catalog.engine import mariadb_restore, restorers
from catalog.engine.errors import EngineError
from catalog.errors import Refused
from catalog.models import BASE_BACKUP_FORMAT, Backup, Copy, Source, Verification
from catalog.text import duration_text
from drills import monitoring
from drills import schedule as drill_schedule
from drills.models import Drill, DrillSchedule
from restore.models import RestoreJob

log = logging.getLogger(__name__)

# An automatic drill that failed is tried again this long after, not every minute.
RETRY_AFTER = timedelta(days=1)
# A queued drill no worker took in this long is given up (the tick queues it again later).
QUEUED_TOO_LONG = timedelta(days=1)


def rto_text(minutes: int | None) -> str:
    return duration_text(timedelta(minutes=minutes)) if minutes else ""


def seconds_text(seconds: float | None) -> str:
    """'41 min' for a drill; under a minute, seconds, since small databases restore fast."""
    if seconds is None:
        return "—"
    if seconds < 0.1:
        return "under 0.1 s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return duration_text(timedelta(seconds=seconds))


def actor_user(actor: User | str) -> User | None:
    return None if isinstance(actor, str) else actor


# --- schedule and manual drills ---------------------------------------------------


def update_schedule(actor: User | str, schedule: DrillSchedule, changed: Iterable[str]) -> DrillSchedule:
    """Saves a schedule edited on the drills page; `changed` names the fields."""
    with transaction.atomic():
        schedule.save()
        audit.record(actor, "drill.schedule.update", schedule, audit.describe_changes(schedule, changed))
    check_alerts(schedule.source_id)
    return schedule


def record_manual_drill(
    actor: User | str,
    source: Source,
    *,
    kind: str,
    performed_at: datetime,
    minutes: int | None,
    passed: bool,
    notes: str,
) -> Drill:
    """A drill done by hand (say, a restore onto standby hardware), with its measured time."""
    now = timezone.now()
    status = Drill.PASSED if passed else Drill.FAILED
    with transaction.atomic():
        drill = Drill.objects.create(
            source=source,
            kind=kind,
            how=Drill.MANUAL,
            status=status,
            performed_by=actor_user(actor),
            performed_at=performed_at,
            seconds=minutes * 60 if minutes is not None else None,
            rto_minutes=source.rto_minutes,
            notes=notes,
            finished_at=now,
            summary=f"Recorded by hand: {status}"
            + (f" in {seconds_text(minutes * 60)}" if minutes is not None else ""),
        )
        audit.record(
            actor,
            "drill.record",
            drill,
            {
                "kind": kind,
                "status": status,
                "performed_at": performed_at.isoformat(),
                "minutes": minutes,
                "notes": notes[:500],
            },
        )
    check_alerts(source.pk)
    return drill


# --- queueing ------------------------------------------------------------------


def latest_good_backup(source: Source) -> Backup | None:
    """The newest succeeded backup that still has a durable copy to read.
    A physical base backup is drilled by "Verify PITR" (pitr), not here."""
    backups = source.backups.good().exclude(format=BASE_BACKUP_FORMAT).filter(copies__status=Copy.DURABLE).distinct()
    return backups.order_by("-finished_at").first()


def create_drill(
    actor: User | str,
    source: Source,
    kind: str,
    trigger: str = "manual",
    enqueue_it: bool = True,
) -> Drill:
    """Queues an automatic drill of `kind`; at most one is active per source and kind."""
    if kind not in drill_schedule.KINDS:
        raise Refused("Unknown kind of drill.")
    with transaction.atomic():
        # Two ticks or clicks cannot both queue one. NO KEY: see catalog.alerts.health.refresh_source.
        Source.objects.select_for_update(no_key=True).get(pk=source.pk)
        label = drill_schedule.KIND_LABELS[kind].lower()
        if Drill.objects.filter(source=source, kind=kind, status__in=Drill.ACTIVE_STATUSES).exists():
            raise Refused(f"A {label} of {source} is already queued or running.")
        if latest_good_backup(source) is None:
            raise Refused(f"{source} has no good backup with a stored copy yet: there is nothing to drill on.")
        drill = Drill.objects.create(
            source=source,
            kind=kind,
            how=Drill.AUTOMATIC,
            status=Drill.QUEUED,
            performed_by=actor_user(actor),
            rto_minutes=source.rto_minutes,
        )
        audit.record(actor, "drill.run", drill, {"kind": kind, "trigger": trigger})
        if enqueue_it:
            transaction.on_commit(lambda: enqueue(drill.pk))
    return drill


def enqueue(drill_id: int) -> None:
    # Always a work queue, named: the tick that queues drills runs on the monitor cluster.
    queues.enqueue_for(drill_host(drill_id), "drills.tasks.run_drill", drill_id, task_name=f"drill-{drill_id}")


def drill_host(drill_id: int) -> str:
    """Where the drill's backup can be read as the drill reads it: a checksum
    drill reads every copy, the restores one (Backup.host_to_read)."""
    drill = Drill.objects.select_related("source").get(pk=drill_id)
    backup = latest_good_backup(drill.source)
    return backup.host_to_read(every_copy=drill.kind == Drill.CHECKSUM) if backup else ""


def queue_due_drills(now: datetime | None = None) -> list[int]:
    """Called by the tick: queues each due kind of each source whose schedule is automatic."""
    now = now or timezone.now()
    queued = []
    for source in drill_schedule.sources_with_backups():
        schedule = drill_schedule.schedule_of(source)
        if not schedule.automatic:
            continue
        for status in drill_schedule.statuses_of(source):
            if not status.is_due(now) or status.active is not None:
                continue
            latest = (
                Drill.objects.filter(source=source, kind=status.kind, how=Drill.AUTOMATIC)
                .order_by("-created_at")
                .first()
            )
            if latest is not None and latest.created_at > now - RETRY_AFTER:
                continue  # it failed recently; a failing drill is an alert, not a loop
            with contextlib.suppress(Refused):
                queued.append(create_drill("schedule", source, status.kind, trigger="schedule").pk)
    return queued


# --- running --------------------------------------------------------------------


def run_drill(drill_id: int) -> Drill | None:
    """The worker side. Returns the finished drill, or None if another worker has it."""
    close_old_connections()
    # A drill has no heartbeat of its own: the verification or restore it runs has one.
    drill = jobs.claim(
        Drill,
        drill_id,
        "drill.start",
        lambda drill: {"kind": drill.kind},
        related=("source",),
        performed_at=timezone.now(),
    )
    if drill is None:
        return None
    try:
        backup = latest_good_backup(drill.source)
        if backup is None:
            raise Refused("No good backup with a stored copy is left to drill on.")
        drill.backup = backup
        Drill.objects.filter(pk=drill.pk).update(backup=backup)
        passed = RUNNERS[drill.kind](drill, backup)
    except (Refused, EngineError) as exc:
        passed, drill.summary = False, str(exc)
    except Exception as exc:  # never leave a drill "running"
        log.exception("Drill %s failed unexpectedly", drill_id)
        passed, drill.summary = False, f"Unexpected error ({type(exc).__name__}); see the worker log."
    return finish_drill(drill, passed)


def finish_drill(drill: Drill, passed: bool) -> Drill:
    status = Drill.PASSED if passed else Drill.FAILED
    jobs.finish(
        drill,
        status,
        f"drill.{status}",
        {"summary": drill.summary[:500], "seconds": drill.seconds},
        summary=drill.summary[:500],
        seconds=drill.seconds,
    )
    drill.refresh_from_db()
    check_alerts(drill.source_id)
    return drill


def check_alerts(source_id: int) -> None:
    """Opens or resolves the source's overdue-drill alerts now rather than at the next tick."""
    hooks.quietly(monitoring.check_overdue_drills)(source_ids=[source_id])


def link(drill: Drill, **jobs: Verification | RestoreJob) -> None:
    for name, job in jobs.items():
        setattr(drill, name, job)
    Drill.objects.filter(pk=drill.pk).update(**jobs)


def run_verification_for(drill: Drill, backup: Backup, kind: str) -> Verification:
    """A verification of `backup` for the drill, run here (this is already a worker)."""
    job = verification.create_verification("drill", backup, kind, trigger="policy", enqueue_it=False)
    link(drill, verification=job)
    return verification.run_here(job)


def run_checksum_drill(drill: Drill, backup: Backup) -> bool:
    job = run_verification_for(drill, backup, Verification.CHECKSUM)
    duration = job.duration()
    drill.seconds = duration.total_seconds() if duration else None
    drill.summary = f"Checksum verification #{job.pk} of backup #{backup.pk} {job.status}: {job.summary}"
    return job.status == Verification.PASSED


def run_full_drill(drill: Drill, backup: Backup) -> bool:
    job = run_verification_for(drill, backup, Verification.RESTORE)
    drill.seconds = job.restore_seconds
    if job.status != Verification.PASSED:
        drill.summary = f"Test restore #{job.pk} of backup #{backup.pk} {job.status}: {job.summary}"
        return False
    assert drill.seconds is not None  # a test restore that passed was timed
    took = f"Full restore of backup #{backup.pk} into a scratch database took {seconds_text(drill.seconds)}"
    if drill.rto_minutes and drill.seconds > drill.rto_minutes * 60:
        drill.summary = f"{took}: slower than the RTO target of {rto_text(drill.rto_minutes)}. {job.summary}"
        return False
    target = f" (RTO {rto_text(drill.rto_minutes)})" if drill.rto_minutes else " (no RTO target set)"
    drill.summary = f"{took}{target}. {job.summary}"
    return True


def partial_tables(backup: Backup) -> list[str]:
    """The backup's largest table by rows and its smallest, so both ends of the data are proven."""
    counts = backup.table_counts or {}
    if not counts:
        return []
    by_size = sorted(counts, key=lambda table: (-counts[table], table))
    return sorted({by_size[0], by_size[-1]})


def run_partial_drill(drill: Drill, backup: Backup) -> bool:
    from restore import services as restores  # the restore app builds on the catalog
    from restore.models import RestoreJob

    tables = partial_tables(backup)
    if not tables:
        raise Refused(f"Backup #{backup.pk} recorded no table to restore.")
    sqlite = backup.source.engine == "sqlite"
    # A scratch name: recognised (and dropped) by the sweeps should this worker die.
    name = (
        f"strongroom-drill-{drill.pk}-{secrets.token_hex(4)}.sqlite3" if sqlite else restorers.scratch_name(backup.pk)
    )
    job = restores.request_restore("drill", backup, target=RestoreJob.NEW, database=name, tables=tables, enqueue=False)
    link(drill, restore_job=job)
    try:
        # None when it was cancelled before this could claim it: then judged as it now stands.
        job = restores.run_restore(job.pk) or RestoreJob.objects.get(pk=job.pk)
    finally:
        gone = drop_scratch(backup.source, name)
    drill.seconds = job.report.get("total_seconds")
    what = f"{len(tables)} tables ({', '.join(tables)}) of backup #{backup.pk}"
    if job.status != RestoreJob.SUCCEEDED:
        drill.summary = f"Restore #{job.pk} of {what} {job.status}: {job.summary}"
        return False
    counts = job.report.get("row_counts", {})
    rows = ", ".join(f"{table} {count['restored']}" for table, count in sorted(counts.items()))
    drill.summary = (
        f"Restored {what} into a scratch {'file' if sqlite else 'database'} in {seconds_text(drill.seconds)}; "
        f"row counts match the backup ({rows}); scratch {'dropped' if gone else 'NOT dropped: ' + name}."
    )
    return gone


def drop_scratch(source: Source, name: str) -> bool:
    """Removes the partial drill's scratch database (or file); True when it is gone."""
    try:
        if source.engine == "sqlite":
            from restore import sqlite as sqlite_restore

            path = sqlite_restore.directory_of(source) / name
            if path.exists():
                os.unlink(path)
            return not path.exists()
        from restore.services import target_server

        server = target_server(source)
        if source.engine == "mariadb":
            mariadb_restore.drop_database(server, name)
            return not mariadb_restore.database_exists(server, name)
        restorers.ScratchDatabase(server, name).drop()
        return not restorers.database_exists(server, name)
    except (EngineError, OSError) as exc:
        log.warning("Could not remove the drill's scratch %s: %s", name, exc)
        return False


RUNNERS = {Drill.CHECKSUM: run_checksum_drill, Drill.PARTIAL: run_partial_drill, Drill.FULL: run_full_drill}


def sweep_stale_drills(now: datetime | None = None) -> list[int]:
    """Fails drills left running by a worker that died (their verification or
    restore was swept already) and queued drills no worker ever took."""
    now = now or timezone.now()
    limit = now - timedelta(seconds=settings.HEARTBEAT_TIMEOUT)
    running = Drill.objects.filter(status=Drill.RUNNING, performed_at__lt=limit)
    dead = [drill for drill in running.select_related("verification", "restore_job") if not watched(drill, limit)]
    summary = "The worker stopped responding; the drill was abandoned."
    swept = jobs.sweep(dead, "drill.failed", {"summary": summary}, summary=summary)
    summary = "No worker took this drill for a day: is the task cluster running?"
    never_taken = Drill.objects.filter(status=Drill.QUEUED, created_at__lt=now - QUEUED_TOO_LONG)
    return swept + jobs.sweep(
        never_taken, "drill.failed", {"summary": summary}, from_status=Drill.QUEUED, summary=summary
    )


def watched(drill: Drill, limit: datetime) -> bool:
    """Whether the drill's verification or restore still vouches for it: its
    own heartbeat watches it while it runs, and just after it ended the
    worker may be judging the drill."""
    job = drill.verification or drill.restore_job
    return job is not None and (job.is_active() or (job.finished_at is not None and job.finished_at >= limit))
