"""Quotas: a backup that would go over fails up front or stops before it
fills the destination, and the dashboard shows how full each destination is."""

import pytest
from django.utils import timezone

from catalog import backup_runs
from catalog.models import Backup, Copy
from tests.factories import local_destination, make_plan, pg_source
from tests.harness.sample_db import create_tricky_database
from tests.support import files_under

pytestmark = pytest.mark.django_db(transaction=True)
GB = 2**30


@pytest.fixture
def plan(pg_database, tmp_path):
    create_tricky_database(pg_database, big_rows=2000)
    destination = local_destination(tmp_path / "disk")
    destination.quota_gb = 1
    destination.save()
    return make_plan(pg_source(pg_database), [destination], retention_mode="last", keep_last=50)


def record_stored(plan, size):
    """A backup the catalog believes takes `size` bytes on the plan's destination."""
    backup = Backup.objects.create(
        source=plan.source,
        plan=plan,
        status=Backup.SUCCEEDED,
        format="custom",
        compression="zstd",
        stored_bytes=size,
        finished_at=timezone.now(),
    )
    Copy.objects.create(
        backup=backup,
        destination=plan.destinations.get(),
        key=f"old/{backup.pk}",
        size=size,
        status=Copy.DURABLE,
        durable_at=timezone.now(),
    )
    return backup


def test_a_backup_that_would_go_over_the_quota_fails_up_front(plan, tmp_path):
    record_stored(plan, GB - 1000)  # 1000 bytes left; the last backup took almost 1 GB

    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()

    assert backup.status == Backup.FAILED
    assert "Local disk would go over its quota: 1024.0 MB of 1.0 GB used" in backup.error
    assert "Prune old backups or raise the quota" in backup.error
    assert files_under(tmp_path / "disk") == []


def test_a_backup_larger_than_expected_stops_at_the_quota(plan, tmp_path):
    small = record_stored(plan, GB - 20_000)
    Backup.objects.filter(pk=small.pk).update(stored_bytes=1)  # the last one was tiny: no refusal up front

    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()

    assert backup.status == Backup.FAILED
    assert "Local disk reached its quota of 1.0 GB; the copy was stopped and removed." in backup.error
    assert files_under(tmp_path / "disk") == []


def dashboard(client):
    return client.get("/").content.decode().replace("\xa0", " ")


def test_the_dashboard_shows_use_against_quota_and_warns_at_80_percent(plan, admin_client):
    record_stored(plan, int(0.5 * GB))
    page = dashboard(admin_client)
    assert "50 % of 1.0 GB" in page and "nearly full" not in page
    assert "Free disk" in page and page.count(" GB</td>") + page.count(" MB</td>") >= 2

    record_stored(plan, int(0.31 * GB))
    page = dashboard(admin_client)
    assert "81 % of 1.0 GB" in page and "nearly full" in page


def test_within_quota_a_backup_runs_normally(plan, tmp_path):
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    assert len(files_under(tmp_path / "disk")) == 3  # the object, its manifest and its globals
