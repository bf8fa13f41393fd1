"""Work on a local destination bound to a host, with real `manage.py
qcluster` processes as two hosts on the test database: what writes the
folder runs on the host whose disk holds it, whichever other host's workers
are free, and a worker on another host refuses it in words."""

import pytest

from catalog import backup_runs, lifecycle, queues
from catalog.engine import manifest
from catalog.models import AuditEvent, Backup, Copy
from tests.catalog.test_destination_hosts import this_host, two_folder_plan  # noqa: F401 — fixtures
from tests.catalog.test_host_queues import start_cluster, wait_for  # noqa: F401 — start_cluster is a fixture
from tests.factories import sqlite_plan

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def finished(backup, worker_logs, timeout=60):
    def done():
        backup.refresh_from_db()
        return backup.status not in Backup.ACTIVE_STATUSES

    try:
        wait_for(done, timeout=timeout, what=f"backup {backup.pk}")
    except AssertionError:
        raise AssertionError("\n".join(worker.log()[-3000:] for worker in worker_logs)) from None
    return backup


def test_a_backup_to_host_as_folder_is_taken_by_host_a_while_host_b_is_free(start_cluster, tmp_path):
    workers = [start_cluster("host-a", "strongroom-host"), start_cluster("host-b")]
    wait_for(lambda: queues.hosts_with_own_queue() == ["host-a"] and queues.work_hosts() == ["host-b"], what="both")
    plan = sqlite_plan(tmp_path)
    plan.destinations.update(host="host-a")
    folder = tmp_path / "store-Hourly"

    backup = finished(backup_runs.start_backup("test", plan), workers)

    assert backup.status == Backup.SUCCEEDED, backup.error
    assert backup.worker.startswith("host-a:")
    copy = backup.copies.get()
    assert copy.status == Copy.DURABLE
    assert (folder / copy.key).stat().st_size == copy.size
    assert (folder / manifest.manifest_key_for(copy.key)).exists()


def test_a_worker_on_another_host_refuses_the_folder_and_writes_nothing(start_cluster, tmp_path):
    """A task queued for any host (as before the destination had its host)
    and taken by host-b: nothing is written, and the backup says why."""
    workers = [start_cluster("host-b")]
    wait_for(lambda: queues.work_hosts() == ["host-b"], what="host-b's workers")
    plan = sqlite_plan(tmp_path)
    plan.destinations.update(host="host-a")
    backup = backup_runs.create_backup("test", plan)

    backup_runs.enqueue_backup(backup, "")
    finished(backup, workers)

    assert backup.status == Backup.FAILED and backup.worker.startswith("host-b:")
    folder = tmp_path / "store-Hourly"
    assert f"The folder {folder} of destination “Disk Hourly” is on host host-a's disk; this is host host-b" in (
        backup.error
    )
    assert not folder.exists()


def test_the_prune_of_host_bs_folder_is_done_by_host_b(start_cluster, two_folder_plan, settings):
    """Run on host-a (this process), the rule prunes the shared folder's
    copy and queues the rest for host-b's own queue, whose worker finishes it."""
    plan, old, new = two_folder_plan
    workers = [start_cluster("host-b", "strongroom-host")]
    wait_for(lambda: queues.hosts_with_own_queue() == ["host-b"], what="host-b's own queue")

    report = lifecycle.prune_plan_checked("retention", plan)

    assert report.queued_for == ["host-b"]

    def pruned():
        old.refresh_from_db()
        return old.is_pruned()

    try:
        wait_for(pruned, what="the prune on host-b")
    except AssertionError:
        raise AssertionError(workers[0].log()[-3000:]) from None
    assert set(old.copies.values_list("status", flat=True)) == {Copy.PRUNED}
    event = AuditEvent.objects.get(action="backup.prune", object_id=str(old.pk))
    assert event.actor_label == "retention"
    assert new.copies.filter(status=Copy.DURABLE).count() == 2
