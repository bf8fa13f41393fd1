"""Local destinations bound to one host (issue 23): the folder of a local
destination is on one host's disk unless every host mounts it, so the
destination names that host, nothing opens it elsewhere, and the work that
reads or writes it goes to that host's own queue. Routing with real worker
processes is in test_destination_host_workers.py."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ

from catalog import backup_runs, holds, lifecycle, rebuild, services, tasks, verification
from catalog.alerts.models import Alert
from catalog.engine import manifest
from catalog.engine.errors import StorageError
from catalog.errors import Refused
from catalog.models import AuditEvent, Backup, BackupPlan, Copy, Destination, Verification, WorkerHeartbeat
from drills import services as drills
from drills.models import Drill
from restore import services as restores
from restore.models import RestoreJob
from tests.catalog.test_pages import RETENTION_DEFAULTS
from tests.factories import (
    local_destination,
    recorded_backup,
    recorded_plan,
    recorded_s3_destination,
    recorded_source,
    sqlite_plan,
)

pytestmark = pytest.mark.django_db

HERE = "host-a"


@pytest.fixture(autouse=True)
def this_host(settings):
    settings.HOST_NAME = HERE


def beat(host, queue):
    WorkerHeartbeat.objects.update_or_create(host=host, queue=queue, defaults={"last_seen": timezone.now()})


def bound(tmp_path, host, name="Host disk"):
    destination = local_destination(tmp_path / name.replace(" ", "-"), name=name)
    destination.host = host
    destination.save()
    return destination


# --- the field, the form and the pages ------------------------------------------


def test_it_offers_every_host_and_the_hosts_whose_workers_beat(admin_client):
    beat("host-b", "strongroom")
    beat("host-b", "strongroom-host-host-b")
    beat("host-c", "strongroom")  # its work queue only

    page = admin_client.get("/destinations/new/").content.decode()

    options = page.split('name="host"', 1)[1].split("</select>", 1)[0]
    assert '<option value="" selected>Every host (a shared mount, or one host only)</option>' in options
    assert "host-a (this host, its own queue&#x27;s workers are not running)" in options
    assert '<option value="host-b">host-b</option>' in options
    assert "host-c (its own queue&#x27;s workers are not running)" in options
    assert options.index("host-a") < options.index("host-b") < options.index("host-c")


def test_it_saves_the_host_of_a_local_destination_and_audits_it(admin_client, tmp_path):
    beat("host-b", "strongroom-host-host-b")
    form = {"name": "Disk B", "kind": "local", "path": str(tmp_path / "b"), "host": "host-b", "lock_mode": "GOVERNANCE"}

    response = admin_client.post("/destinations/new/", form)

    destination = Destination.objects.get(name="Disk B")
    assert response.status_code == 302 and destination.host == "host-b"
    assert AuditEvent.objects.get(action="destination.create").changes["host"] == "host-b"
    page = admin_client.get(f"/destinations/{destination.pk}/").content.decode()
    assert "host-b (the folder is on its disk)" in page
    assert "host-b" in admin_client.get("/destinations/").content.decode()

    admin_client.post(f"/destinations/{destination.pk}/edit/", {**form, "host": ""})
    destination.refresh_from_db()
    assert destination.host == ""
    assert AuditEvent.objects.filter(action="destination.update").latest("pk").changes == {"host": ""}
    assert (
        "every host (a shared mount, or one host only)"
        in admin_client.get(destination.get_absolute_url()).content.decode()
    )


def test_it_refuses_a_host_it_does_not_know(admin_client, tmp_path):
    form = {
        "name": "Disk X",
        "kind": "local",
        "path": str(tmp_path / "x"),
        "host": "nowhere",
        "lock_mode": "GOVERNANCE",
    }

    page = admin_client.post("/destinations/new/", form).content.decode()

    assert "Select a valid choice" in page and not Destination.objects.exists()


def test_an_s3_destination_has_no_host(admin_client):
    form = {"name": "S3", "kind": "s3", "bucket": "b", "host": HERE, "lock_mode": "GOVERNANCE"}

    admin_client.post("/destinations/new/", form)

    assert Destination.objects.get(name="S3").host == ""


# --- the guard -------------------------------------------------------------------


def test_it_refuses_to_open_another_hosts_folder(tmp_path, settings):
    destination = bound(tmp_path, "host-b", name="Disk B")

    with pytest.raises(StorageError) as refused:
        destination.storage()

    folder = tmp_path / "Disk-B"
    assert (
        str(refused.value)
        == f"The folder {folder} of destination “Disk B” is on host host-b's disk; this is host host-a"
    )
    settings.HOST_NAME = "host-b"
    destination.storage().put_bytes("probe", b"x")
    assert (folder / "probe").read_bytes() == b"x"


def test_a_folder_of_every_host_and_s3_open_anywhere(tmp_path):
    shared = local_destination(tmp_path / "shared", name="Shared mount")
    shared.storage().put_bytes("probe", b"x")
    s3 = Destination(name="S3", kind="s3", bucket="b", host="host-b")  # a host on S3 means nothing

    assert s3.bound_host() == "" and s3.reachable_here()


@pytest.mark.django_db(transaction=True)  # the run closes old connections, as a worker's does
def test_a_backup_taken_on_the_wrong_host_writes_nothing_and_says_why(tmp_path, settings):
    plan = sqlite_plan(tmp_path)
    destination = plan.destinations.get()
    destination.host = "host-b"
    destination.save()

    backup = backup_runs.run_backup(backup_runs.create_backup("test", plan).pk)

    assert backup.status == Backup.FAILED
    assert f"is on host host-b's disk; this is host {HERE}" in backup.error
    assert not (tmp_path / "store-Hourly").exists()


def test_the_test_button_says_the_folder_is_on_another_host(admin_client, tmp_path):
    beat("host-b", "strongroom-host-host-b")
    form = {"name": "Disk B", "kind": "local", "path": str(tmp_path / "b"), "host": "host-b"}

    answer = admin_client.post("/destinations/test/", form).content.decode()

    assert "is on host host-b&#x27;s disk; this is host host-a" in answer
    assert not (tmp_path / "b").exists()


def test_the_destination_page_does_not_show_this_hosts_disk_for_another_hosts_folder(admin_client, tmp_path):
    destination = bound(tmp_path, "host-b")

    page = admin_client.get(destination.get_absolute_url()).content.decode()

    assert "Free disk" not in page and destination.disk_usage() is None


# --- routing -----------------------------------------------------------------------


@pytest.fixture
def queued(monkeypatch):
    """Tasks go to the broker (the metadata database's queue) instead of
    running inline; queued() gives {task name: queue} of what waits there."""
    monkeypatch.setattr(Conf, "SYNC", False)

    def read():
        return {task.name(): task.key for task in OrmQ.objects.all()}

    return read


def recorded_backup_on(plan, *destinations):
    """A succeeded backup (no data behind it) with a durable copy on each destination."""
    backup = recorded_backup(plan)
    backup.copies.all().delete()
    for destination in destinations:
        Copy.objects.create(backup=backup, destination=destination, status=Copy.DURABLE, key=f"k/{backup.pk}")
    return backup


def test_a_backup_to_another_hosts_folder_is_queued_for_that_host(tmp_path, queued, django_capture_on_commit_callbacks):
    plan = sqlite_plan(tmp_path)
    plan.destinations.update(host="host-b")

    with django_capture_on_commit_callbacks(execute=True):
        backup = backup_runs.start_backup("test", plan)

    assert queued() == {f"backup-{backup.pk}": "strongroom-host-host-b"}


def test_a_backup_every_host_can_write_goes_to_any_hosts_workers(tmp_path, queued, django_capture_on_commit_callbacks):
    plan = sqlite_plan(tmp_path)

    with django_capture_on_commit_callbacks(execute=True):
        backup = backup_runs.start_backup("test", plan)

    assert queued() == {f"backup-{backup.pk}": "strongroom"}


def test_a_scheduled_backup_of_another_hosts_folder_is_passed_to_that_host(tmp_path, queued):
    plan = sqlite_plan(tmp_path)
    plan.destinations.update(host="host-b")

    backup = backup_runs.run_scheduled_plan(plan.pk)

    assert backup.status == Backup.QUEUED and backup.trigger == "schedule"
    assert queued() == {f"backup-{backup.pk}": "strongroom-host-host-b"}
    assert not (tmp_path / "store-Hourly").exists()


def test_a_plan_may_not_write_to_folders_on_two_hosts(admin_client, tmp_path):
    source = recorded_source()
    on_a, on_b = bound(tmp_path, "host-a", "Disk A"), bound(tmp_path, "host-b", "Disk B")
    s3 = recorded_s3_destination()
    form = {
        "name": "Nightly",
        "source": source.pk,
        "schedule_preset": "cron",
        "schedule": "0 3 * * *",
        "format": "sqlite",
        "compression": "zstd",
        "dump_jobs": "2",
        "destinations": [on_a.pk, on_b.pk, s3.pk],
        **RETENTION_DEFAULTS,
    }

    page = admin_client.post("/plans/new/", form).content.decode()

    assert "A backup runs on one host, and these local folders are on different hosts&#x27; disks: " in page
    assert "Disk A on host-a&#x27;s disk; Disk B on host-b&#x27;s disk" in page
    assert not BackupPlan.objects.exists()
    assert admin_client.post("/plans/new/", {**form, "destinations": [on_a.pk, s3.pk]}).status_code == 302
    plan = BackupPlan.objects.get()
    assert plan.required_host() == "host-a"
    with pytest.raises(Refused, match="different hosts"):
        services.save_plan("test", plan, destinations=[on_a, on_b])


def test_a_destination_may_not_move_to_another_host_than_its_plans_other_folders(admin_client, tmp_path):
    on_a, on_b = bound(tmp_path, "host-a", "Disk A"), bound(tmp_path, "host-b", "Disk B")
    other = local_destination(tmp_path / "c", name="Disk C")
    recorded_plan(recorded_source(), [on_a, other])
    beat("host-b", "strongroom-host-host-b")
    form = {"name": "Disk C", "kind": "local", "path": other.path, "host": "host-b", "lock_mode": "GOVERNANCE"}

    page = admin_client.post(f"/destinations/{other.pk}/edit/", form).content.decode()

    assert "Plan Nightly also writes here. A backup runs on one host" in page
    other.refresh_from_db()
    assert other.host == "" and on_b.host == "host-b"


def test_a_checksum_goes_to_the_host_of_a_copy_and_a_test_restore_reads_a_copy_any_host_reaches(
    tmp_path, queued, django_capture_on_commit_callbacks
):
    on_b, s3 = bound(tmp_path, "host-b", "Disk B"), recorded_s3_destination()
    plan = recorded_plan(recorded_source(), [on_b, s3])
    backup = recorded_backup_on(plan, on_b, s3)
    only_b = recorded_backup_on(plan, on_b)

    with django_capture_on_commit_callbacks(execute=True):
        checksum = verification.create_verification("test", backup, Verification.CHECKSUM)
        restore_test = verification.create_verification("test", backup, Verification.RESTORE)
        restore_test_b = verification.create_verification("test", only_b, Verification.RESTORE)

    assert queued() == {
        f"verify-{checksum.pk}": "strongroom-host-host-b",
        f"verify-{restore_test.pk}": "strongroom",
        f"verify-{restore_test_b.pk}": "strongroom-host-host-b",
    }


def test_a_restore_reads_a_copy_any_host_reaches_else_goes_to_the_copys_host(
    tmp_path, queued, django_capture_on_commit_callbacks
):
    on_b, s3 = bound(tmp_path, "host-b", "Disk B"), recorded_s3_destination()
    plan = recorded_plan(recorded_source(), [on_b, s3], encrypt=False)
    both, only_b = recorded_backup_on(plan, on_b, s3), recorded_backup_on(plan, on_b)

    with django_capture_on_commit_callbacks(execute=True):
        anywhere = restores.request_restore("test", both, target=RestoreJob.NEW, database="one.sqlite3")
        on_host_b = restores.request_restore("test", only_b, target=RestoreJob.NEW, database="two.sqlite3")

    assert queued() == {f"restore-{anywhere.pk}": "strongroom", f"restore-{on_host_b.pk}": "strongroom-host-host-b"}
    assert [copy.destination for copy in both.readable_copies()] == [s3, on_b]  # this host opens S3 first


def test_a_restore_whose_copy_and_safety_backup_are_on_two_hosts_is_refused(tmp_path, queued):
    on_a, on_b = bound(tmp_path, "host-a", "Disk A"), bound(tmp_path, "host-b", "Disk B")
    source = recorded_source()
    old_plan = recorded_plan(source, [on_b], name="Old", encrypt=False)
    recorded_plan(source, [on_a], name="New")
    backup = recorded_backup_on(old_plan, on_b)
    old_plan.destinations.set([on_a])  # the plan writes to host-a's folder since

    with pytest.raises(Refused, match="copies are on host-b's disk only, and the safety backup"):
        restores.request_restore(
            "test",
            backup,
            target=RestoreJob.EXISTING,
            database="inventory-db.sqlite3",
            confirmed_name="inventory-db.sqlite3",
        )

    assert not RestoreJob.objects.exists() and queued() == {}


def test_a_drill_goes_where_it_can_read_the_latest_backup(tmp_path, queued, django_capture_on_commit_callbacks):
    on_b, s3 = bound(tmp_path, "host-b", "Disk B"), recorded_s3_destination()
    source = recorded_source()
    recorded_backup_on(recorded_plan(source, [on_b, s3]), on_b, s3)

    with django_capture_on_commit_callbacks(execute=True):
        checksum = drills.create_drill("test", source, Drill.CHECKSUM)
        partial = drills.create_drill("test", source, Drill.PARTIAL)

    assert queued() == {f"drill-{checksum.pk}": "strongroom-host-host-b", f"drill-{partial.pk}": "strongroom"}


# --- retention, orphans, rebuild, downloads ------------------------------------------


def taken(plan):
    """A backup of the plan as its schedule takes it (the plan's rule judges it), run here."""
    backup = backup_runs.run_backup(backup_runs.create_backup("test", plan, trigger="schedule").pk)
    assert backup.status == Backup.SUCCEEDED, backup.error
    return backup


@pytest.fixture
def two_folder_plan(tmp_path, settings):
    """A plan keeping the last backup in a folder on host-b's disk and a
    shared one, with two backups taken on host-b: the older one is due."""
    settings.HOST_NAME = "host-b"
    plan = sqlite_plan(tmp_path)
    plan.destinations.update(host="host-b")
    plan.destinations.add(local_destination(tmp_path / "shared", name="Shared"))
    BackupPlan.objects.filter(pk=plan.pk).update(retention_mode="last", keep_last=1)
    plan.refresh_from_db()
    old, new = taken(plan), taken(plan)
    settings.HOST_NAME = HERE
    return plan, old, new


def files(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


@pytest.mark.django_db(transaction=True)
def test_the_prune_leaves_another_hosts_folder_to_that_hosts_queue(two_folder_plan, tmp_path, queued, settings):
    plan, old, new = two_folder_plan
    on_b, shared = tmp_path / "store-Hourly", tmp_path / "shared"
    assert files(on_b) == files(shared) and old.object_key in files(on_b)

    report = lifecycle.prune_plan_checked("retention", plan)

    assert report.elsewhere == [(old.pk, "host-b")] and report.queued_for == ["host-b"]
    assert report.summary() == "0 pruned, 1 with copies on host-b's disk (queued there)"
    assert queued() == {f"prune-{plan.pk}-host-b": "strongroom-host-host-b"}
    assert old.object_key not in files(shared)  # what this host reaches is gone
    assert old.object_key in files(on_b)
    old.refresh_from_db()
    assert not old.is_pruned()
    assert not Alert.objects.filter(kind=Alert.RETENTION_FAILED).exists()

    settings.HOST_NAME = "host-b"  # the queued task, on host-b
    assert tasks.prune_plan_on_host(plan.pk) == "1 pruned"

    old.refresh_from_db()
    assert old.is_pruned() and set(old.copies.values_list("status", flat=True)) == {Copy.PRUNED}
    assert files(on_b) == files(shared) and old.object_key not in files(on_b)
    assert new.copies.filter(status=Copy.DURABLE).count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_download_reads_a_copy_this_host_reaches_or_says_which_host_has_it(two_folder_plan, admin_client, tmp_path):
    _, old, new = two_folder_plan

    whole = admin_client.post(f"/backups/{new.pk}/download/")
    assert whole.status_code == 200 and b"".join(whole.streaming_content).startswith(b"SQLite format 3")
    assert AuditEvent.objects.get(action="backup.download").changes["copy"].startswith(str(tmp_path / "shared"))

    old.copies.filter(destination__name="Shared").update(status=Copy.PRUNED)
    refused = admin_client.post(f"/backups/{old.pk}/download/stored/", follow=True).content.decode()

    folder = tmp_path / "store-Hourly"
    assert "No stored copy of this backup can be read: Disk Hourly: The folder " in refused
    assert f"{folder} of destination “Disk Hourly” is on host host-b&#x27;s disk; this is host host-a" in refused


@pytest.mark.django_db(transaction=True)
def test_orphans_and_the_rebuild_of_another_hosts_folder_say_where_to_go(two_folder_plan, admin_client, tmp_path):
    on_b = Destination.objects.get(host="host-b")
    (tmp_path / "store-Hourly" / "stray.bin").write_bytes(b"x")

    scanned = admin_client.post(f"/destinations/{on_b.pk}/scan/").content.decode()
    removed = admin_client.post(
        f"/destinations/{on_b.pk}/orphans/remove/", {"orphan": "object:stray.bin:"}, follow=True
    ).content.decode()
    report = rebuild.rebuild_from("test", on_b)

    where = "is on host host-b&#x27;s disk; this is host host-a. Scan it from Strongroom&#x27;s pages on host-b"
    assert where in scanned and where in removed
    assert (tmp_path / "store-Hourly" / "stray.bin").exists()
    assert report.summary() == (
        f"not read: The folder {tmp_path / 'store-Hourly'} of destination “Disk Hourly” is on host host-b's disk; "
        "this is host host-a. Run manage.py rebuild_catalog --destination 'Disk Hourly' on host-b."
    )


@pytest.mark.django_db(transaction=True)
def test_a_pin_is_written_beside_another_hosts_copy_by_that_host(two_folder_plan, tmp_path, queued, settings):
    _, _, new = two_folder_plan
    on_b, shared = new.copies.get(destination__host="host-b"), new.copies.get(destination__name="Shared")

    assert lifecycle.pin_backup("test", new, "kept for the audit") == []

    assert (tmp_path / "shared" / holds.hold_key(shared)).exists()
    assert not (tmp_path / "store-Hourly" / holds.hold_key(on_b)).exists()
    assert queued() == {f"hold-{new.pk}-host-b": "strongroom-host-host-b"}
    settings.HOST_NAME = "host-b"  # the queued task, on host-b
    assert tasks.store_hold_state(new.pk) == []
    record = manifest.loads((tmp_path / "store-Hourly" / holds.hold_key(on_b)).read_bytes())
    assert record["pinned"] is True and record["hold_reason"] == "kept for the audit"


def test_a_dead_backups_leftovers_on_another_host_are_removed_by_that_host(tmp_path, queued, settings):
    on_b, shared = bound(tmp_path, "host-b", "Disk B"), local_destination(tmp_path / "shared", name="Shared")
    plan = recorded_plan(recorded_source(), [on_b, shared])
    long_ago = timezone.now() - timedelta(hours=1)
    backup = Backup.objects.create(
        source=plan.source,
        plan=plan,
        status=Backup.RUNNING,
        started_at=long_ago,
        heartbeat_at=long_ago,
        worker="host-b:42",
    )
    for destination in (on_b, shared):
        Copy.objects.create(backup=backup, destination=destination, key="shop/left.bin")
        (Path(destination.path) / "shop").mkdir(parents=True)
        (Path(destination.path) / "shop" / "left.bin").write_bytes(b"half a backup")

    assert backup_runs.sweep_stale_backups() == [backup.pk]

    assert set(backup.copies.values_list("status", flat=True)) == {Copy.FAILED}
    assert not (tmp_path / "shared" / "shop" / "left.bin").exists()
    assert (tmp_path / "Disk-B" / "shop" / "left.bin").exists()
    assert queued() == {f"clean-up-{backup.pk}": "strongroom-host-host-b"}  # its copy and its worker's spool
    settings.HOST_NAME = "host-b"  # the queued task, on host-b
    tasks.clean_up_dead_backup(backup.pk)
    assert not (tmp_path / "Disk-B" / "shop" / "left.bin").exists()
