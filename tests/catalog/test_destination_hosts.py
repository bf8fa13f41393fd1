"""Local destinations bound to one host (issue 23): the folder of a local
destination is on one host's disk unless every host mounts it, so the
destination names that host, nothing opens it elsewhere, and the work that
reads or writes it goes to that host's own queue. Routing with real worker
processes is in test_destination_host_workers.py."""

import pytest
from django.utils import timezone

from catalog import backup_runs
from catalog.engine.errors import StorageError
from catalog.models import AuditEvent, Backup, Destination, WorkerHeartbeat
from tests.factories import local_destination, sqlite_plan

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
