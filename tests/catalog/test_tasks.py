"""Task rules: idempotent claims, one schedule per plan, the heartbeat sweep."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import Schedule

from catalog import backup_runs, services, tasks
from catalog.models import AuditEvent, Backup, Copy
from tests.factories import local_destination, make_plan, pg_source, s3_destination
from tests.harness import s3
from tests.support import files_under

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def plan(pg_database, tmp_path):
    return make_plan(pg_source(pg_database), [local_destination(tmp_path / "b")])


def test_it_runs_a_backup_only_once_when_delivered_twice(plan):
    backup = backup_runs.create_backup("test", plan)

    first = tasks.run_backup(backup.pk)
    second = tasks.run_backup(backup.pk)

    assert (first, second) == ("succeeded", "skipped")
    assert backup.copies.count() == 1
    assert AuditEvent.objects.filter(action="backup.start", object_id=str(backup.pk)).count() == 1


def test_it_refuses_a_second_backup_of_a_busy_plan(plan):
    backup_runs.create_backup("test", plan)
    with pytest.raises(services.Refused, match="already queued or running"):
        backup_runs.create_backup("test", plan)


def test_it_keeps_one_schedule_per_plan_in_sync(plan):
    schedule = Schedule.objects.get(name=plan.schedule_name())
    assert (schedule.cron, schedule.func, schedule.args) == (
        "0 3 * * *",
        "catalog.tasks.run_scheduled_plan",
        repr(plan.pk),
    )

    plan.schedule = "15 */6 * * *"
    services.save_plan("test", plan, changed_fields=["schedule"])
    assert Schedule.objects.get(name=plan.schedule_name()).cron == "15 */6 * * *"

    plan.enabled = False
    services.save_plan("test", plan, changed_fields=["enabled"])
    assert not Schedule.objects.filter(name=plan.schedule_name()).exists()

    plan.enabled = True
    services.save_plan("test", plan, changed_fields=["enabled"])
    services.delete_plan("test", plan)
    assert not Schedule.objects.filter(name__startswith="strongroom-plan-").exists()


def test_it_runs_a_scheduled_slot_and_skips_when_busy(plan):
    assert tasks.run_scheduled_plan(plan.pk) == "succeeded"
    backup = plan.backups.get()
    assert (backup.trigger, backup.triggered_by) == ("schedule", None)

    backup_runs.create_backup("test", plan)
    assert tasks.run_scheduled_plan(plan.pk) == "skipped"
    assert AuditEvent.objects.filter(action="backup.skip").exists()


def test_it_sweeps_a_backup_whose_worker_died(pg_database, tmp_path, s3_bucket):
    plan = make_plan(pg_source(pg_database), [local_destination(tmp_path), s3_destination(s3_bucket)])
    backup = backup_runs.create_backup("test", plan)
    long_ago = timezone.now() - timedelta(minutes=10)
    Backup.objects.filter(pk=backup.pk).update(status=Backup.RUNNING, started_at=long_ago, heartbeat_at=long_ago)
    # What a worker killed mid-upload leaves behind: a partial file and an open multipart upload.
    key = "db/2026/11/24/db-1.dump.zst.enc"
    local_copy, remote_copy = (
        Copy.objects.create(backup=backup, destination=destination, key=key) for destination in plan.destinations.all()
    )
    (tmp_path / "db/2026/11/24").mkdir(parents=True)
    (tmp_path / f"{key}.partial-abc123").write_bytes(b"half a dump")
    s3.client(s3_bucket["endpoint_url"]).create_multipart_upload(Bucket=s3_bucket["bucket"], Key=f"strongroom/{key}")

    assert tasks.tick()["swept"] == [backup.pk]

    backup.refresh_from_db()
    assert backup.status == Backup.FAILED
    assert "stopped responding" in backup.error
    assert files_under(tmp_path) == []
    assert s3.open_uploads(s3_bucket["endpoint_url"], s3_bucket["bucket"]) == []
    assert set(backup.copies.values_list("status", flat=True)) == {Copy.FAILED}


def test_it_leaves_a_backup_with_a_fresh_heartbeat_alone(plan):
    backup = backup_runs.create_backup("test", plan)
    Backup.objects.filter(pk=backup.pk).update(
        status=Backup.RUNNING, started_at=timezone.now(), heartbeat_at=timezone.now()
    )
    assert tasks.tick()["swept"] == []


def test_retention_also_runs_nightly_for_every_plan(plan, tmp_path):
    schedule = Schedule.objects.get(name="strongroom-prune-nightly")
    assert (schedule.func, schedule.schedule_type, schedule.cron) == (
        "catalog.tasks.prune_nightly",
        Schedule.CRON,
        "15 4 * * *",
    )
    plan.retention_mode, plan.keep_last = "last", 5
    services.save_plan("test", plan, changed_fields=["retention_mode", "keep_last"])
    for _ in range(2):
        assert tasks.run_backup(backup_runs.create_backup("test", plan, trigger="schedule").pk) == "succeeded"

    plan.keep_last = 1
    services.save_plan("test", plan, changed_fields=["keep_last"])
    assert tasks.prune_nightly() == {plan.pk: "1 pruned"}
    assert len(files_under(tmp_path / "b")) == 3  # one backup: object, manifest, globals
    assert AuditEvent.objects.filter(action="backup.prune", actor_label="retention").count() == 1
