"""catalog/jobs.py: the sweep that every job kind shares."""

from catalog import jobs
from catalog.models import AuditEvent, Backup
from tests.factories import recorded_backup, sqlite_plan


def test_a_clean_up_that_fails_leaves_its_job_running_and_the_others_are_swept(db, tmp_path):
    plan = sqlite_plan(tmp_path)
    stuck, dead = (recorded_backup(plan, status=Backup.RUNNING, minutes_ago=60) for _ in range(2))
    Backup.objects.filter(pk__in=[stuck.pk, dead.pk]).update(heartbeat_at=None, finished_at=None)
    cleaned = []

    def clean_up(job):
        if job.pk == stuck.pk:
            raise OSError("scratch database still in use")
        cleaned.append(job.pk)

    swept = jobs.sweep(jobs.stale(Backup).order_by("pk"), "backup.failed", {"why": "test"}, clean_up=clean_up)

    assert swept == cleaned == [dead.pk]
    assert Backup.objects.get(pk=stuck.pk).status == Backup.RUNNING  # the next tick tries again
    assert Backup.objects.get(pk=dead.pk).status == Backup.FAILED
    assert AuditEvent.objects.filter(action="backup.failed", object_id=str(dead.pk)).count() == 1
