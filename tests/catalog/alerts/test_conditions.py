"""Each alert condition besides source health opens when it starts and
resolves when it clears, with words an on-call engineer can act on."""

from collections import namedtuple
from datetime import timedelta

import pytest
import time_machine

from catalog import models as catalog_models
from catalog import verification as verification_service
from catalog.alerts import conditions, hooks
from catalog.alerts.models import Alert, Notification
from catalog.models import Backup, Copy, Verification
from restore import services as restore_services
from restore.models import RestoreJob
from tests.catalog.alerts.helpers import HOUR, T0, dispatched, finished_backup  # noqa: F401 — dispatched is a fixture
from tests.factories import local_destination, recorded_plan, recorded_s3_destination, recorded_source

pytestmark = pytest.mark.django_db

MB = 2**20


def open_one(kind):
    return Alert.objects.get(kind=kind, resolved_at__isnull=True)


def is_resolved(alert):
    alert.refresh_from_db()
    return alert.resolved_at is not None


@pytest.fixture
def two_destinations(db):
    return local_destination("/srv/backups"), recorded_s3_destination()


def test_a_partial_backup_opens_an_alert_naming_the_failed_copy(two_destinations, dispatched):
    local, s3 = two_destinations
    plan = recorded_plan(recorded_source(), [local, s3])
    backup = finished_backup(
        plan,
        status=Backup.PARTIAL,
        copies={local: (Copy.DURABLE, ""), s3: (Copy.FAILED, "S3 bucket offsite does not exist")},
    )

    alert = open_one(Alert.BACKUP_PARTIAL)
    assert alert.key == f"plan:{plan.pk}" and alert.url == f"/backups/{backup.pk}/"
    assert alert.title == f"Backup #{backup.pk} of plan Nightly is partial: 1 of 2 copies failed"
    assert (
        "Off-site S3: S3 bucket offsite does not exist" in alert.detail and "Durable in Local disk only" in alert.detail
    )

    finished_backup(
        plan, status=Backup.PARTIAL, at=T0, copies={local: (Copy.DURABLE, ""), s3: (Copy.FAILED, "Access denied")}
    )
    assert Alert.objects.filter(kind=Alert.BACKUP_PARTIAL).count() == 1  # the same open problem, updated
    assert "Access denied" in open_one(Alert.BACKUP_PARTIAL).detail

    finished_backup(plan)
    assert is_resolved(alert) and "succeeded with every copy" in Alert.objects.get(pk=alert.pk).resolution
    assert [e for k, _, e in dispatched if k == Alert.BACKUP_PARTIAL] == [Notification.OPENED, Notification.RESOLVED]


def running_verification(backup, kind=Verification.CHECKSUM):
    return Verification.objects.create(
        backup=backup,
        source=backup.source,
        kind=kind,
        status=Verification.RUNNING,
        started_at=backup.finished_at,
        heartbeat_at=backup.finished_at,
    )


def test_a_failed_verification_opens_and_a_later_pass_of_that_kind_resolves(db):
    plan = recorded_plan(recorded_source())
    backup = finished_backup(plan)
    job = running_verification(backup)
    job.summary = "Local disk: SHA-256 mismatch, first bad byte at offset 4096"
    verification_service.finish_verification(job, Verification.FAILED)

    alert = open_one(Alert.VERIFICATION_FAILED)
    assert alert.key == f"source:{plan.source_id}:checksum" and alert.severity == Alert.CRITICAL
    assert alert.title == "Checksum of Inventory DB failed" and alert.url == f"/verifications/{job.pk}/"
    assert f"Backup #{backup.pk}: Local disk: SHA-256 mismatch" in alert.detail

    restore_test = running_verification(backup, Verification.RESTORE)
    restore_test.summary = "Restored and compared"
    verification_service.finish_verification(restore_test, Verification.PASSED)
    assert not is_resolved(alert)  # a pass of another kind says nothing about checksums

    again = running_verification(finished_backup(plan))
    again.summary = "Every copy matches"
    verification_service.finish_verification(again, Verification.PASSED)
    assert is_resolved(alert)


def restore_job(backup, status=RestoreJob.RUNNING):
    return RestoreJob.objects.create(
        backup=backup,
        source=backup.source,
        target_database="inventory_restored",
        status=status,
        started_at=backup.finished_at,
        heartbeat_at=backup.finished_at,
    )


def test_a_failed_restore_opens_and_a_later_successful_one_resolves(db):
    plan = recorded_plan(recorded_source())
    backup = finished_backup(plan)
    job = restore_job(backup)
    job.summary = "The target server is older (PostgreSQL 14) than the backup's (16)."
    restore_services.finish_restore(job, RestoreJob.FAILED)

    alert = open_one(Alert.RESTORE_FAILED)
    assert alert.key == f"source:{plan.source_id}" and alert.title == f"Restore #{job.pk} of Inventory DB failed"
    assert "older (PostgreSQL 14)" in alert.detail and alert.url == f"/restores/{job.pk}/"

    restore_services.finish_restore(restore_job(backup), RestoreJob.SUCCEEDED)
    assert is_resolved(alert)


def test_a_destination_over_its_quota_share_opens_and_pruning_resolves(db, settings):
    settings.STORAGE_ALERT_SHARE = 0.8
    s3 = recorded_s3_destination(quota_gb=1)
    plan = recorded_plan(recorded_source(), [s3])
    backup = finished_backup(plan)
    Copy.objects.filter(backup=backup).update(size=int(0.85 * 2**30))

    assert conditions.check_storage() == [s3.pk]
    alert = open_one(Alert.STORAGE_FULL)
    assert alert.key == f"destination:{s3.pk}" and alert.title == "Destination Off-site S3 is above 80 %"
    assert "870.4 MB of the 1.0 GB quota used (85 %)" in alert.detail and alert.url == f"/destinations/{s3.pk}/"
    conditions.check_storage()
    assert Alert.objects.filter(kind=Alert.STORAGE_FULL).count() == 1

    Copy.objects.filter(backup=backup).update(status=Copy.PRUNED)
    assert conditions.check_storage() == []
    assert is_resolved(alert)


def test_a_local_disk_over_the_share_opens_and_space_freed_resolves(db, monkeypatch, tmp_path):
    local = local_destination(tmp_path / "not-made-yet")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(catalog_models.shutil, "disk_usage", lambda path: usage(100 * 2**30, 90 * 2**30, 10 * 2**30))
    assert conditions.check_storage() == [local.pk]
    alert = open_one(Alert.STORAGE_FULL)
    assert f"The disk under {tmp_path}/not-made-yet is 90 % full (10.0 GB free of 100.0 GB)" in alert.detail

    monkeypatch.setattr(catalog_models.shutil, "disk_usage", lambda path: usage(100 * 2**30, 50 * 2**30, 50 * 2**30))
    conditions.check_storage()
    assert is_resolved(alert)


def history(plan, sizes):
    for day, size in enumerate(sizes):
        finished_backup(plan, at=T0 + day * 24 * HOUR, raw_bytes=size)


def test_a_backup_far_below_the_median_opens_a_size_alert_and_a_usual_one_resolves(db):
    plan = recorded_plan(recorded_source())
    history(plan, [366 * MB] * 7)
    small = finished_backup(plan, at=T0 + 8 * 24 * HOUR, raw_bytes=142 * MB)

    alert = open_one(Alert.SIZE_ANOMALY)
    assert alert.key == f"plan:{plan.pk}" and alert.severity == Alert.WARNING
    assert alert.title == f"Backup #{small.pk} of plan Nightly is 61 % smaller than usual"
    assert alert.detail.startswith("142.0 MB, 61 % below the median 366.0 MB of the previous 7 good backups")

    finished_backup(plan, at=T0 + 9 * 24 * HOUR, raw_bytes=360 * MB)
    assert is_resolved(alert)


def test_it_judges_size_against_the_plans_tolerance_both_ways(db):
    plan = recorded_plan(recorded_source(), size_tolerance_percent=50)
    history(plan, [100 * MB, 100 * MB, 100 * MB])
    finished_backup(plan, at=T0 + 3 * 24 * HOUR, raw_bytes=149 * MB)
    assert not Alert.objects.filter(kind=Alert.SIZE_ANOMALY).exists()  # +49 %: within ±50 %
    large = finished_backup(plan, at=T0 + 4 * 24 * HOUR, raw_bytes=260 * MB)
    # The median of 100, 100, 100 and 149 MB is still 100 MB.
    assert open_one(Alert.SIZE_ANOMALY).title == f"Backup #{large.pk} of plan Nightly is 160 % larger than usual"


def test_it_needs_three_earlier_backups_and_a_tolerance_to_judge_size(db):
    plan = recorded_plan(recorded_source())
    history(plan, [100 * MB, 100 * MB])
    finished_backup(plan, at=T0 + 2 * 24 * HOUR, raw_bytes=1 * MB)
    assert not Alert.objects.filter(kind=Alert.SIZE_ANOMALY).exists()

    off = recorded_plan(recorded_source("Orders"), name="Orders nightly", size_tolerance_percent=0)
    history(off, [100 * MB] * 7)
    finished_backup(off, at=T0 + 8 * 24 * HOUR, raw_bytes=1 * MB)
    assert not Alert.objects.filter(kind=Alert.SIZE_ANOMALY).exists()


def test_a_plan_breaking_3_2_1_opens_and_an_offsite_copy_resolves(two_destinations):
    local, s3 = two_destinations
    plan = recorded_plan(recorded_source(), [local])
    backup = finished_backup(plan)
    alert = open_one(Alert.THREE_TWO_ONE)
    # One alert for every plan that misses 3-2-1 (issue 20), here the one plan, and what to do.
    assert alert.key == "plans" and alert.title == "Plan Nightly does not meet 3-2-1"
    assert alert.detail.startswith(
        f"Nightly (backup #{backup.pk}) lacks a second copy (only 1); a second kind of storage"
    )
    assert "an off-site copy" in alert.detail and alert.url == f"/plans/{plan.pk}/"
    assert "To meet it: Tick Off-site S3 in the plan" in alert.detail

    plan.destinations.add(s3)
    finished_backup(plan)
    assert is_resolved(alert)


def test_a_backup_queued_too_long_opens_a_stuck_alert_until_it_ends(db, settings):
    settings.STUCK_QUEUED_MINUTES = 15
    with time_machine.travel(T0, tick=False) as traveller:
        plan = recorded_plan(recorded_source())
        queued = Backup.objects.create(source=plan.source, plan=plan, format="sqlite", compression="zstd")
        traveller.move_to(T0 + timedelta(minutes=15) - timedelta(seconds=1))
        assert hooks.periodic_checks()["stuck"] == []
        traveller.move_to(T0 + timedelta(minutes=15))
        assert hooks.periodic_checks()["stuck"] == [queued.pk]

        alert = open_one(Alert.STUCK_JOB)
        assert alert.key == f"backup:{queued.pk}" and alert.severity == Alert.CRITICAL
        assert "no worker has taken it: is the task cluster running?" in alert.detail
        traveller.move_to(T0 + timedelta(minutes=16))
        hooks.periodic_checks()
        assert Alert.objects.filter(kind=Alert.STUCK_JOB).count() == 1

        Backup.objects.filter(pk=queued.pk).update(status=Backup.CANCELLED)
        hooks.periodic_checks()
    assert is_resolved(alert)
    assert Alert.objects.get(pk=alert.pk).resolution == f"Backup #{queued.pk} is no longer stuck: it ended cancelled."


def test_a_backup_running_three_times_longer_than_usual_is_stuck(db):
    with time_machine.travel(T0, tick=False) as traveller:
        plan = recorded_plan(recorded_source())
        for day in range(3):
            finished_backup(plan, at=T0 - (day + 1) * 24 * HOUR, minutes=20)
        running = Backup.objects.create(
            source=plan.source,
            plan=plan,
            format="sqlite",
            compression="zstd",
            status=Backup.RUNNING,
            started_at=T0,
            heartbeat_at=T0,
        )
        traveller.move_to(T0 + timedelta(minutes=60))
        assert conditions.check_stuck_jobs() == []  # 3 × 20 min is not passed yet
        traveller.move_to(T0 + timedelta(minutes=61))
        assert conditions.check_stuck_jobs() == [running.pk]
    alert = open_one(Alert.STUCK_JOB)
    assert "its plan's backups usually take 20 min; 3× that has passed" in alert.detail


def test_a_paused_source_raises_no_condition_alert(two_destinations):
    local, _ = two_destinations
    plan = recorded_plan(recorded_source(paused=True), [local])
    finished_backup(plan)
    finished_backup(plan, status=Backup.PARTIAL, at=T0)
    assert not Alert.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_real_backup_brings_the_source_up_and_judges_its_copies(tmp_path):
    import sqlite3

    from catalog import backup_runs, services

    database = tmp_path / "inventory.sqlite3"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO items (name) VALUES (?)", [(f"item {i}",) for i in range(100)])
    source = recorded_source()
    source.sqlite_path = str(database)
    services.save_source("test", source, changed_fields=["sqlite_path"])
    plan = recorded_plan(source, [local_destination(tmp_path / "backups")])

    backup = backup_runs.run_backup(backup_runs.create_backup("test", plan).pk)

    assert backup.status == Backup.SUCCEEDED
    source.refresh_from_db()
    assert source.status == "up" and source.last_good_at == backup.created_at
    assert source.late_at == backup.created_at + source.expected_interval()
    assert open_one(Alert.THREE_TWO_ONE).detail.startswith(
        f"Nightly (backup #{backup.pk}) lacks a second copy (only 1)"
    )


def test_a_verification_abandoned_by_a_dead_worker_alerts(db, settings):
    with time_machine.travel(T0, tick=False) as traveller:
        plan = recorded_plan(recorded_source())
        job = running_verification(finished_backup(plan, at=T0 - HOUR))
        traveller.move_to(T0 + timedelta(seconds=settings.HEARTBEAT_TIMEOUT + 1))
        assert verification_service.sweep_stale_verifications() == [job.pk]
    assert "The worker stopped responding" in open_one(Alert.VERIFICATION_FAILED).detail
