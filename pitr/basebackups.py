"""Physical base backups: what a catalog backup of format "basebackup" needs
besides the pipeline every backup shares.

Before it runs, the source's continuous protection must be on and healthy:
a base backup without the WAL after it restores nothing. After the stream,
its WAL bounds are recorded (BaseBackupWal), the server is asked to switch
to a new WAL segment so that the end segment is complete and gets shipped
now, and the backup becomes good only once every segment from its start to
its end is stored (wal_complete_at): until then catalog queries leave it out
of the source's last good backup, retention's newest good backup, restore
choices and compliance (Backup.waiting_for_wal, BackupQuerySet.good)."""

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from catalog import audit
from catalog.engine.basebackup import WalBounds, switch_wal
from catalog.engine.errors import EngineError
from catalog.models import Backup, Source
from pitr.models import BaseBackupWal, ContinuousProtection


def protection_problem(source: Source) -> str | None:
    """Why base backups of `source` cannot be taken now, in words; None when
    they can."""
    protection = ContinuousProtection.objects.filter(source=source).first()
    if protection is None or not protection.enabled:
        return (
            f"{source} has no continuous protection: a physical base backup needs the WAL after it to be "
            "restored. Enable continuous protection on the source's page first."
        )
    if protection.mode == ContinuousProtection.STREAM and protection.receiver_error:
        return (
            f"The continuous protection of {source} is not healthy ({protection.receiver_error}); "
            "a base backup now could not be recovered. Fix the WAL receiver first."
        )
    if not protection.destinations.exists():
        return f"The continuous protection of {source} has no destination for its WAL yet."
    return None


def backup_start_time(text: str) -> datetime | None:
    """backup_label's 'START TIME: 2026-11-26 04:35:41 UTC' as an aware datetime."""
    try:
        moment = datetime.strptime(text.replace(" UTC", ""), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if text.endswith("UTC") else None


def record_wal_bounds(backup: Backup, wal: WalBounds) -> BaseBackupWal:
    """After the stream: the WAL the backup needs, the switch that completes
    its end segment, and its completeness if the WAL is already there."""
    with transaction.atomic():
        bounds, _ = BaseBackupWal.objects.update_or_create(
            backup=backup,
            defaults={
                "timeline": wal["timeline"],
                "start_lsn": wal["start_lsn"],
                "end_lsn": wal["end_lsn"],
                "start_segment": wal["start_segment"],
                "end_segment": wal["end_segment"],
                "started_at": backup_start_time(wal.get("start_time", "")) or backup.started_at,
                "finished_at": timezone.now(),
            },
        )
        audit.record(
            "worker",
            "backup.wal_bounds",
            backup,
            {"timeline": bounds.timeline, "start_segment": bounds.start_segment, "end_segment": bounds.end_segment},
        )
    backup.append_log(
        f"Needs WAL {bounds.start_segment} to {bounds.end_segment} (LSN {bounds.start_lsn} to "
        f"{bounds.end_lsn}, timeline {bounds.timeline}); good once those segments are stored."
    )
    try:
        switch_wal(backup.source.conninfo())
    except EngineError as exc:
        # Not fatal: the segment completes when the server fills it.
        backup.append_log(f"Could not switch to a new WAL segment ({exc}); the end segment ships once it fills up.")
    # Under heavy writes the segments may all be stored already, and none
    # stored after this would ask again.
    complete_waiting(backup.source)
    return bounds


def import_wal_bounds(backup: Backup, wal: Mapping[str, Any]) -> None:
    """A base backup brought back from its manifest by the catalog rebuild:
    its WAL bounds again, complete once the WAL it needs is in the catalog."""
    BaseBackupWal.objects.update_or_create(
        backup=backup,
        defaults={
            "timeline": wal.get("timeline") or 1,
            "start_lsn": wal.get("start_lsn") or "",
            "end_lsn": wal.get("end_lsn") or "",
            "start_segment": wal.get("start_segment") or "",
            "end_segment": wal.get("end_segment") or "",
            "started_at": backup.started_at,
            "finished_at": backup.finished_at,
        },
    )
    complete_waiting(backup.source, actor="rebuild")


def missing_wal(backup: Backup) -> list[str]:
    """The names of the WAL segments a waiting base backup still needs, oldest
    first (empty when complete or not a base backup with recorded bounds)."""
    from pitr.wal import missing_segments

    bounds = backup.wal_bounds()
    if bounds is None or bounds.wal_complete_at is not None or not bounds.end_segment:
        return []
    return missing_segments(backup.source, bounds.start_segment, bounds.end_segment)


def complete_waiting(source: Source, actor: audit.Actor = "worker") -> list[int]:
    """Called when WAL segments of `source` were stored: the base backups
    whose WAL is now all there become good, which may move the source's last
    good backup, so its health is refreshed. Returns the backup ids."""
    from catalog.alerts.health import refresh_source
    from pitr.wal import mark_base_backup_wal

    completed = mark_base_backup_wal(source)
    if not completed:
        return []
    with transaction.atomic():
        for backup in Backup.objects.filter(pk__in=completed).select_related("base_wal"):
            audit.record(
                actor,
                "backup.wal_complete",
                backup,
                {"start_segment": backup.base_wal.start_segment, "end_segment": backup.base_wal.end_segment},
            )
    refresh_source(source)
    return completed
