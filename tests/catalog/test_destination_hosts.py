"""Local destinations bound to one host (issue 23): the folder of a local
destination is on one host's disk unless every host mounts it, so the
destination names that host, nothing opens it elsewhere, and the work that
reads or writes it goes to that host's own queue. Routing with real worker
processes is in test_destination_host_workers.py."""

import pytest
from django.utils import timezone

from catalog.models import AuditEvent, Destination, WorkerHeartbeat
from tests.factories import local_destination

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
