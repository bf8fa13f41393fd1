"""The point-in-time path of the restore wizard, the job page and the PITR
drill button, through the client and in Chromium."""

import os
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django.utils import timezone

from pitr.models import PitrRestore
from tests.harness.pg import free_port
from tests.pitr.test_pitr_restore import (  # noqa: F401 — fixtures
    insert_batch,
    protected,
    restore_root,
    restored_batches,
    switch_and_ship,
    take_base_backup,
)
from tests.support import log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
SHOTS = os.environ.get("STRONGROOM_SCREENSHOTS")  # a directory, to look at the pages by hand


def test_the_wizard_offers_the_point_in_time_path_and_shows_the_plan(protected, admin_client):
    cluster, source = protected
    base = take_base_backup(source, cluster.destination)
    insert_batch(cluster, 1)
    switch_and_ship(cluster, source)

    assert (
        reverse("pitr_restore_start", args=[source.pk])
        in admin_client.get(reverse("restore_step", args=["what"]), follow=True).content.decode()
    )
    page = admin_client.get(reverse("pitr_restore_start", args=[source.pk])).content.decode()
    assert "Verify PITR" in page and "Start the restore" in page
    plan = admin_client.get(reverse("pitr_restore_plan", args=[source.pk]), {"target_kind": "latest"}).content.decode()
    assert f"#{base.pk}" in plan and base.base_wal.start_segment in plan and "Expected restore size" in plan
    too_early = admin_client.get(
        reverse("pitr_restore_plan", args=[source.pk]), {"target_kind": "time", "target_time": "2001-01-01T00:00:00"}
    ).content.decode()
    assert "No base backup was finished before" in too_early


def test_it_restores_from_the_form_and_shows_how_to_connect(protected, admin_client, restore_root, settings):
    settings.TIME_ZONE = "America/New_York"  # the moment is typed in the site's time zone
    cluster, source = protected
    take_base_backup(source, cluster.destination)
    insert_batch(cluster, 1)
    time.sleep(1.1)
    moment = datetime.now(UTC).astimezone(ZoneInfo("America/New_York"))
    time.sleep(1.1)
    insert_batch(cluster, 2)
    switch_and_ship(cluster, source)
    port = free_port()

    response = admin_client.post(
        reverse("pitr_restore_start", args=[source.pk]),
        {
            "target_kind": "time",
            "target_time": moment.strftime("%Y-%m-%dT%H:%M:%S"),
            "data_directory": os.path.join(restore_root, "from-form"),
            "port": port,
        },
    )

    job = PitrRestore.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("pitr_restore_detail", args=[job.pk])
    assert job.status == PitrRestore.SUCCEEDED, job.summary + job.log
    assert restored_batches(job) == [1]
    page = admin_client.get(response["Location"]).content.decode()
    assert f"psql -h localhost -p {port}" in page and "Recovered to" in page

    admin_client.post(reverse("pitr_restore_stop_server", args=[job.pk]))
    job.refresh_from_db()
    assert job.report["stopped_at"]
    assert not os.path.exists(os.path.join(job.data_directory, "postmaster.pid"))


def test_a_bad_directory_gets_a_clear_message_and_no_job(protected, admin_client, restore_root):
    cluster, source = protected
    take_base_backup(source, cluster.destination)
    response = admin_client.post(
        reverse("pitr_restore_start", args=[source.pk]),
        {"target_kind": "latest", "data_directory": "/etc", "port": free_port()},
        follow=True,
    )
    assert "Restores go under" in response.content.decode()
    assert not PitrRestore.objects.exists()


def test_auditors_may_look_but_not_restore_or_drill(protected, auditor_client, admin_user, restore_root):
    cluster, source = protected
    take_base_backup(source, cluster.destination)
    job = PitrRestore.objects.create(
        source=source, target_kind="latest", status=PitrRestore.FAILED, summary="An earlier failure"
    )
    for name, args in [
        ("pitr_restore_start", [source.pk]),
        ("pitr_drill_start", [source.pk]),
        ("pitr_restore_cancel", [job.pk]),
        ("pitr_restore_stop_server", [job.pk]),
    ]:
        response = auditor_client.post(
            reverse(name, args=args),
            {"target_kind": "latest", "port": free_port(), "data_directory": os.path.join(restore_root, "x")},
        )
        assert response.status_code == 403, name
    assert PitrRestore.objects.count() == 1
    assert auditor_client.get(reverse("pitr_restore_detail", args=[job.pk])).status_code == 200


def test_the_point_in_time_path_in_a_browser(protected, live_server, page, admin_user, restore_root):
    cluster, source = protected
    take_base_backup(source, cluster.destination)
    insert_batch(cluster, 1)
    switch_and_ship(cluster, source)
    shots = SHOTS or "/tmp/shots-pitr-restore"
    os.makedirs(shots, exist_ok=True)
    log_in(page, live_server, admin_user)

    page.goto(f"{live_server.url}{reverse('restore_start')}")
    page.click(f"text=Restore {source} to a point in time")
    page.wait_for_url(f"**/pitr/sources/{source.pk}/restore/")
    page.check("input[name=target_kind][value=latest]")
    page.locator("#pitr-plan-facts").wait_for()
    assert "wal to replay" in page.inner_text("#pitr-plan").lower()
    page.screenshot(path=f"{shots}/pitr-wizard.png", full_page=True)

    page.check("input[name=target_kind][value=time]")
    page.fill("#id_target_time", "2001-01-01T00:00:00")
    page.locator("#pitr-refusal").wait_for()
    page.screenshot(path=f"{shots}/pitr-wizard-refused.png", full_page=True)

    page.check("input[name=target_kind][value=latest]")
    page.fill("#id_data_directory", os.path.join(restore_root, "from-browser"))
    page.click("button:has-text('Start the restore')")
    page.wait_for_url("**/pitr/restores/*/")
    page.locator(".badge.status-succeeded").first.wait_for()
    assert "Connect to the restored server" in page.content()
    assert PitrRestore.objects.get().target_time is None  # the moment typed before choosing "latest" is not kept
    page.screenshot(path=f"{shots}/pitr-restore-done.png", full_page=True)

    page.goto(f"{live_server.url}{reverse('pitr_restore_start', args=[source.pk])}")
    page.click("button:has-text('Run a PITR drill now')")
    page.wait_for_url("**/pitr/restores/*/")
    page.locator(".badge.status-succeeded").first.wait_for(timeout=60000)
    assert "Drill passed" in page.inner_text(".flash-success")
    page.screenshot(path=f"{shots}/pitr-drill.png", full_page=True)

    page.goto(f"{live_server.url}{reverse('pitr_restore_list')}")
    assert page.locator("table .badge.status-succeeded").count() == 2
    page.screenshot(path=f"{shots}/pitr-restore-list.png", full_page=True)


def test_a_queued_restore_can_be_cancelled(admin_client):
    from catalog.models import AuditEvent
    from tests.factories import pg_source

    source = pg_source({"host": "127.0.0.1", "port": 1, "user": "nobody", "dbname": "gone"}, name="Gone")
    job = PitrRestore.objects.create(source=source, target_kind="latest", status=PitrRestore.QUEUED)
    response = admin_client.post(reverse("pitr_restore_cancel", args=[job.pk]), follow=True)
    job.refresh_from_db()
    assert job.status == PitrRestore.CANCELLED
    assert "nothing was written" in job.summary
    assert "Cancelled before it started" in response.content.decode()
    assert AuditEvent.objects.filter(action="pitr.restore.cancel", object_id=str(job.pk)).exists()


def test_auditors_see_the_list_of_point_in_time_restores(auditor_client):
    from tests.factories import pg_source

    source = pg_source({"host": "127.0.0.1", "port": 1, "user": "nobody", "dbname": "gone"}, name="Gone")
    PitrRestore.objects.create(
        source=source,
        target_kind="restore_point",
        restore_point="strongroom-drill-9",
        is_drill=True,
        status=PitrRestore.SUCCEEDED,
    )
    page = auditor_client.get(reverse("pitr_restore_list")).content.decode()
    assert "strongroom-drill-9" in page and "drill" in page
    assert reverse("pitr_restore_list") in auditor_client.get(reverse("restore_list")).content.decode()


def test_the_wizard_offers_the_live_hosts_and_queues_the_restore_for_the_chosen_one(
    protected, admin_client, restore_root, monkeypatch, settings
):
    """Another host's restore goes to that host's own queue, and its stop too:
    this process is not that host, so both are left queued for it."""
    from django_q.conf import Conf
    from django_q.models import OrmQ

    from catalog import queues
    from catalog.models import WorkerHeartbeat

    cluster, source = protected
    take_base_backup(source, cluster.destination)
    WorkerHeartbeat.objects.create(host="vault-b", queue="strongroom-host-vault-b", last_seen=timezone.now())
    WorkerHeartbeat.objects.create(host="web-only", queue="strongroom", last_seen=timezone.now())
    assert queues.hosts_with_own_queue() == sorted([settings.HOST_NAME, "vault-b"])
    monkeypatch.setattr(Conf, "SYNC", False)

    page = admin_client.get(reverse("pitr_restore_start", args=[source.pk])).content.decode()
    assert '<option value="vault-b"' in page and "web-only" not in page
    assert f'<option value="{settings.HOST_NAME}" selected>' in page
    response = admin_client.post(
        reverse("pitr_restore_start", args=[source.pk]),
        {"target_kind": "latest", "data_directory": "/srv/restores/orders", "port": 6543, "host": "vault-b"},
    )

    job = PitrRestore.objects.get()
    assert response.status_code == 302 and job.status == PitrRestore.QUEUED
    assert (job.host, job.data_directory, job.port) == ("vault-b", "/srv/restores/orders", 6543)
    assert list(OrmQ.objects.values_list("key", flat=True)) == ["strongroom-host-vault-b"]
    assert "vault-b" in admin_client.get(reverse("pitr_restore_detail", args=[job.pk])).content.decode()
    # A second restore into the same directory on the same host is refused there too.
    again = admin_client.post(
        reverse("pitr_restore_start", args=[source.pk]),
        {"target_kind": "latest", "data_directory": "/srv/restores/orders", "port": 6544, "host": "vault-b"},
        follow=True,
    )
    assert "Another restore is already writing into /srv/restores/orders on vault-b" in again.content.decode()

    # Its server runs on vault-b: stopping it from here asks vault-b's queue to.
    PitrRestore.objects.filter(pk=job.pk).update(status=PitrRestore.SUCCEEDED)
    OrmQ.objects.all().delete()
    stop = admin_client.post(reverse("pitr_restore_stop_server", args=[job.pk]), follow=True)
    assert "Asked host vault-b to stop the restored server on port 6543" in stop.content.decode()
    assert list(OrmQ.objects.values_list("key", flat=True)) == ["strongroom-host-vault-b"]
    assert OrmQ.objects.get().task["func"] == "pitr.tasks.stop_restored_server"


def test_a_host_that_stopped_beating_is_refused_with_the_reason(protected, admin_client, restore_root):
    cluster, source = protected
    take_base_backup(source, cluster.destination)

    response = admin_client.post(
        reverse("pitr_restore_start", args=[source.pk]),
        {"target_kind": "latest", "data_directory": "/srv/x", "port": 6543, "host": "vault-gone"},
        follow=True,
    )

    assert "No worker runs host vault-gone&#x27;s own queue" in response.content.decode()
    assert not PitrRestore.objects.exists()
