"""Enabling continuous protection: the prerequisites check names exactly what
is missing, a replication slot is created, and only administrators may."""

import os

import pytest

from catalog.audit import AuditEvent
from pitr.models import ContinuousProtection
from tests.factories import local_destination, make_plan
from tests.pitr.wal_helpers import cluster_source, execute, wal_cluster

pytestmark = pytest.mark.django_db


@pytest.fixture
def cluster():
    cluster = wal_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture
def minimal_cluster():
    cluster = wal_cluster(wal_level="minimal", max_wal_senders="0")
    yield cluster
    cluster.stop()


def slots(cluster):
    return [row[0] for row in execute(cluster, "SELECT slot_name FROM pg_replication_slots")]


def enable_url(source):
    return f"/pitr/sources/{source.pk}/protection/enable/"


def test_it_names_wal_level_and_senders_on_a_minimal_cluster(admin_client, minimal_cluster, tmp_path):
    source = cluster_source(minimal_cluster)
    destination = local_destination(tmp_path / "wal")
    response = admin_client.post(
        enable_url(source),
        {"mode": "stream", "destinations": [destination.pk], "recovery_window_days": 14, "enable": "1"},
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "wal_level is minimal: set wal_level = replica" in page
    assert "max_wal_senders is 0 and 0 are in use" in page
    assert "A replication connection was refused" in page
    protection = ContinuousProtection.objects.get(source=source)
    assert not protection.enabled
    assert slots(minimal_cluster) == []
    assert not AuditEvent.objects.filter(action="pitr.enable").exists()


def test_it_names_a_role_without_replication_and_quotes_the_server(admin_client, cluster, tmp_path):
    execute(cluster, "CREATE ROLE shipper LOGIN")
    source = cluster_source(cluster, user="shipper")
    destination = local_destination(tmp_path / "wal")
    response = admin_client.post(
        enable_url(source),
        {"mode": "stream", "destinations": [destination.pk], "recovery_window_days": 14, "check": "1"},
    )
    page = response.content.decode()
    assert "Role shipper has neither REPLICATION nor superuser: run ALTER ROLE shipper REPLICATION;" in page
    assert "must be superuser or replication role to start walsender" in page  # the server's own words
    assert "wal_level is minimal" not in page
    assert "Replication slot strongroom_" in page and "will be created" in page
    assert slots(cluster) == []


def test_it_enables_streaming_with_a_slot_and_the_plans_destinations(admin_client, cluster, tmp_path):
    source = cluster_source(cluster)
    destination = local_destination(tmp_path / "wal")
    local_destination(tmp_path / "other", name="Other disk")
    make_plan(source, [destination])
    page = admin_client.get(enable_url(source)).content.decode()
    assert f'value="{destination.pk}" checked' in page.replace("\n", " ") or "checked" in page
    response = admin_client.post(
        enable_url(source),
        {"mode": "stream", "destinations": [destination.pk], "recovery_window_days": 7, "enable": "1"},
    )
    assert response.status_code == 302
    protection = ContinuousProtection.objects.get(source=source)
    assert protection.enabled and protection.mode == "stream"
    assert protection.slot_name == f"strongroom_{source.pk}"
    assert list(protection.destinations.all()) == [destination]
    assert protection.recovery_window_days == 7
    assert protection.check_report["segment_size"] == 1 << 20
    assert slots(cluster) == [protection.slot_name]
    # The slot reserves WAL from now on: nothing is recycled before the receiver has it.
    assert execute(cluster, "SELECT restart_lsn IS NOT NULL FROM pg_replication_slots")[0][0]
    event = AuditEvent.objects.get(action="pitr.enable")
    assert event.changes["slot"] == protection.slot_name and event.changes["destinations"] == [str(destination)]

    response = admin_client.post(f"/pitr/sources/{source.pk}/protection/disable/")
    assert response.status_code == 302
    assert not ContinuousProtection.objects.get(source=source).enabled
    assert slots(cluster) == []
    assert AuditEvent.objects.filter(action="pitr.disable").exists()


def test_it_shows_the_archive_command_without_any_secret(admin_client, cluster, tmp_path):
    source = cluster_source(cluster)
    destination = local_destination(tmp_path / "wal")
    response = admin_client.post(
        enable_url(source),
        {"mode": "archive", "destinations": [destination.pk], "recovery_window_days": 14, "enable": "1"},
    )
    assert response.status_code == 302
    protection = ContinuousProtection.objects.get(source=source)
    assert protection.enabled and protection.mode == "archive" and protection.slot_name == ""
    assert slots(cluster) == []  # no replication connection in archive mode
    panel = admin_client.get(f"/pitr/sources/{source.pk}/protection/").content.decode()
    assert f"/api/v1/sources/{source.pk}/wal/%f" in panel
    assert "-H @/etc/strongroom/wal-token -T %p" in panel


def test_auditors_cannot_enable_or_disable(auditor_client, cluster, tmp_path):
    source = cluster_source(cluster)
    destination = local_destination(tmp_path / "wal")
    response = auditor_client.post(
        enable_url(source),
        {"mode": "stream", "destinations": [destination.pk], "recovery_window_days": 14, "enable": "1"},
    )
    assert response.status_code == 403
    assert auditor_client.get(enable_url(source)).status_code == 403
    assert auditor_client.post(f"/pitr/sources/{source.pk}/protection/disable/").status_code == 403
    assert not ContinuousProtection.objects.filter(source=source).exists()
    assert slots(cluster) == []
    assert auditor_client.get(f"/pitr/sources/{source.pk}/protection/").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_the_enable_page_in_a_browser_says_what_is_missing(minimal_cluster, tmp_path, live_server, page, admin_user):
    from tests.support import log_in

    source = cluster_source(minimal_cluster)
    make_plan(source, [local_destination(tmp_path / "wal")])
    log_in(page, live_server, admin_user)
    page.goto(f"{live_server.url}{source.get_absolute_url()}")
    page.locator("#protection-panel").wait_for()
    assert "Off" in page.locator("#protection-panel").inner_text()
    page.click("text=Enable continuous protection")
    page.click("button[name=enable]")
    missing = page.locator("#prerequisites .missing")
    assert "wal_level is minimal" in missing.inner_text()
    os.makedirs("/tmp/shots-wal", exist_ok=True)
    page.screenshot(path="/tmp/shots-wal/enable-missing.png", full_page=True)
    assert not ContinuousProtection.objects.get(source=source).enabled


def test_it_quotes_the_server_when_pg_hba_has_no_replication_line(cluster):
    from pathlib import Path

    from pitr import wal

    hba = Path(cluster.datadir, "pg_hba.conf")
    hba.write_text("".join(line for line in hba.read_text().splitlines(keepends=True) if "replication" not in line))
    cluster.pg_ctl("reload")
    source = cluster_source(cluster)
    report = wal.check_prerequisites(source)
    assert not report["ok"]
    [refusal] = report["missing"]
    assert "no pg_hba.conf entry for replication connection" in refusal
    assert "host replication postgres" in refusal  # the line to add
