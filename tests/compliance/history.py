"""A known October 2026, built directly with the ORM, for the compliance report.

Inventory DB (RPO 24 h, RTO 4 h), plan "Inventory nightly" at 03:00 to a local
disk and an off-site S3 bucket: a good backup every day at 03:00 (10 minutes
each) except on 10 October, which only has a failed run; the backup of
11 October ran late, at 15:00. So 10 October is short and the RPO is breached
from 10 Oct 03:00 (24 h after the backup of the 9th) until 11 Oct 15:00 (when
the late backup was taken): 36 h. 24 of its 30 good backups passed
a checksum (80.0 %); a test restore passed on 20 October in 754 s.

Billing DB (no RPO, no RTO), plan "Billing twice daily" at 00:00 and 12:00 to
a local disk only, created on 15 October at 12:30: 2 good backups a day from
16 October, so never short and never breached (target 12 h + 2 h grace).

Drills and restores in October: a full manual drill of 41 min (within 4 h), a
partial automatic test of 5 h (over), a failed checksum drill, a restore of
Inventory DB in 90 min (within) and one of Billing DB (no RTO: unknown).
Retention pruned two August backups on 3 October; a backup was pinned on
14 October. Keys: rotation to mk-2026 on 18 October (62 of 62 re-wrapped),
mk-2025 retired that day, mk-2024 destroyed on 25 October."""

from datetime import UTC, datetime, timedelta

import time_machine

from catalog import audit
from catalog.models import Backup, BackupPlan, Copy, Key, KeyRotation, Source, Verification
from drills.models import Drill
from restore.models import RestoreJob
from tests.factories import local_destination, s3_destination


def at(day, hour=3, minute=0, month=10):
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def good_backup(source, plan, started, destinations=(), **fields):
    backup = Backup.objects.create(
        source=source,
        plan=plan,
        format="custom",
        compression="zstd",
        status=Backup.SUCCEEDED,
        trigger="schedule",
        created_at=started,
        started_at=started,
        finished_at=started + timedelta(minutes=10),
        **fields,
    )
    for destination in destinations:
        Copy.objects.create(
            backup=backup,
            destination=destination,
            status=Copy.DURABLE,
            key=f"b{backup.pk}",
            durable_at=backup.finished_at,
        )
    return backup


def build_history(tmp_path, s3_bucket, admin_user):
    local = local_destination(tmp_path / "local")
    offsite = s3_destination(s3_bucket)
    inventory = Source.objects.create(
        name="Inventory DB", slug="inventory", rpo_minutes=24 * 60, rto_minutes=240, created_at=at(1, month=8)
    )
    nightly = BackupPlan.objects.create(
        name="Inventory nightly", source=inventory, schedule="0 3 * * *", created_at=at(1, month=8)
    )
    nightly.destinations.set([local, offsite])
    billing = Source.objects.create(
        name="Billing DB", slug="billing", engine="sqlite", sqlite_path="/srv/b.db", created_at=at(15, 12)
    )
    twice = BackupPlan.objects.create(
        name="Billing twice daily", source=billing, schedule="0 0,12 * * *", format="sqlite", created_at=at(15, 12, 30)
    )
    twice.destinations.set([local])

    good_backup(inventory, nightly, at(30, month=9), [local, offsite])
    inventory_backups = {}
    for day in range(1, 32):
        if day == 10:
            Backup.objects.create(
                source=inventory,
                plan=nightly,
                format="custom",
                compression="zstd",
                status=Backup.FAILED,
                created_at=at(10),
                started_at=at(10),
                finished_at=at(10, 3, 2),
                error="connection refused",
            )
            continue
        started = at(11, 15) if day == 11 else at(day)
        inventory_backups[day] = good_backup(inventory, nightly, started, [local, offsite])
    for day, backup in inventory_backups.items():
        if day <= 25:
            Verification.objects.create(
                backup=backup,
                source=inventory,
                kind="checksum",
                status="passed",
                created_at=backup.finished_at,
                finished_at=backup.finished_at,
            )
    Verification.objects.create(
        backup=inventory_backups[26],
        source=inventory,
        kind="checksum",
        status="failed",
        created_at=at(26, 4),
        finished_at=at(26, 4),
    )
    Verification.objects.create(
        backup=inventory_backups[19],
        source=inventory,
        kind="restore",
        status="passed",
        created_at=at(20, 4),
        started_at=at(20, 4),
        finished_at=at(20, 4, 13),
        restore_seconds=754,
    )
    Verification.objects.create(
        backup=inventory_backups[31],
        source=inventory,
        kind="restore",
        status="failed",
        created_at=at(2, 4, month=11),
        finished_at=at(2, 4, 5, month=11),
    )  # after October

    for day in range(16, 32):
        for hour in (0, 12):
            good_backup(billing, twice, at(day, hour), [local])

    Drill.objects.create(
        source=inventory,
        kind=Drill.FULL,
        how=Drill.MANUAL,
        status=Drill.PASSED,
        performed_at=at(5, 9),
        seconds=41 * 60,
        rto_minutes=240,
        performed_by=admin_user,
    )
    Drill.objects.create(
        source=inventory,
        kind=Drill.PARTIAL,
        status=Drill.PASSED,
        performed_at=at(12, 9),
        seconds=5 * 3600,
        rto_minutes=240,
    )
    Drill.objects.create(
        source=inventory, kind=Drill.CHECKSUM, status=Drill.FAILED, performed_at=at(21, 9), rto_minutes=240
    )
    Drill.objects.create(
        source=inventory,
        kind=Drill.FULL,
        status=Drill.PASSED,
        performed_at=at(20, 9, month=9),
        seconds=60,
        rto_minutes=240,
    )  # September: not in the report
    RestoreJob.objects.create(
        backup=inventory_backups[21],
        source=inventory,
        target_database="inventory_restored",
        status="succeeded",
        created_at=at(22, 10),
        started_at=at(22, 10),
        finished_at=at(22, 11, 30),
    )
    RestoreJob.objects.create(
        backup=Backup.objects.filter(source=billing).first(),
        source=billing,
        target_database="billing_restored",
        status="succeeded",
        created_at=at(23, 8),
        started_at=at(23, 8),
        finished_at=at(23, 8, 30),
    )

    for day in (1, 2):
        Backup.objects.create(
            source=inventory,
            plan=nightly,
            format="custom",
            compression="zstd",
            status=Backup.SUCCEEDED,
            created_at=at(day, month=8),
            started_at=at(day, month=8),
            finished_at=at(day, 3, 10, month=8),
            pruned_at=at(3, 4),
            prune_reason=f"not kept by the rule (daily beyond 30, 2026-08-0{day})",
        )
    Backup.objects.create(
        source=inventory,
        plan=nightly,
        format="custom",
        compression="zstd",
        status=Backup.SUCCEEDED,
        created_at=at(3, month=8),
        started_at=at(3, month=8),
        finished_at=at(3, 3, 10, month=8),
        pruned_at=at(4, 4, month=11),
        prune_reason="November",
    )
    pinned = inventory_backups[14]
    with time_machine.travel(at(14, 9), tick=False):
        audit.record(admin_user, "backup.pin", pinned, {"reason": "before the schema migration"})

    Key.objects.create(
        key_id="mk-2024",
        fingerprint="a" * 64,
        created_at=at(1, month=1) - timedelta(days=365),
        retired_at=at(1, month=1),
        destroyed_at=at(25, 12),
    )
    old = Key.objects.create(key_id="mk-2025", fingerprint="b" * 64, created_at=at(1, month=1), retired_at=at(18, 10))
    new = Key.objects.create(key_id="mk-2026", fingerprint="c" * 64, origin=Key.IMPORTED, created_at=at(18, 10))
    KeyRotation.objects.create(
        new_key=new,
        previous_key_id=old.key_id,
        status="succeeded",
        total=62,
        done=62,
        requested_by=admin_user,
        created_at=at(18, 10),
        started_at=at(18, 10),
        finished_at=at(18, 10, 5),
    )
    return {"inventory": inventory, "billing": billing, "nightly": nightly, "twice": twice, "pinned": pinned}
