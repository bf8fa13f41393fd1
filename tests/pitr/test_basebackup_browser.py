"""A physical base backup plan as an administrator sets it up and reads its
backups, in Chromium. STRONGROOM_SCREENSHOTS=<directory> keeps screenshots."""

import os

import pytest

from catalog import backup_runs
from catalog.models import Backup, BackupPlan
from pitr.models import BaseBackupWal
from tests.factories import local_destination
from tests.pitr.test_basebackup import cluster, protected_source, ship_needed_wal  # noqa: F401 (a fixture)
from tests.support import log_in

pytestmark = pytest.mark.django_db(transaction=True)
SHOTS = os.environ.get("STRONGROOM_SCREENSHOTS")


def shot(page, name):
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/{name}.png", full_page=True)


def test_an_administrator_plans_base_backups_and_sees_one_wait_for_its_wal(
    live_server, page, admin_user, cluster, tmp_path
):  # noqa: F811
    local = local_destination(tmp_path / "backups")
    source = protected_source(cluster, [local])
    log_in(page, live_server, admin_user)

    page.goto(f"{live_server.url}/plans/new/?source={source.pk}")
    page.fill("#id_name", "Nightly physical")
    page.select_option("#id_format", "basebackup")
    page.get_by_text("runs only while the source's continuous protection is on").wait_for()
    page.check(f"input[name=destinations][value='{local.pk}']")
    shot(page, "basebackup-plan-form")
    page.click("button:has-text('Save plan')")
    plan = BackupPlan.objects.get(name="Nightly physical")
    assert plan.format == "basebackup"

    backup = backup_runs.start_backup("test", plan)
    assert Backup.objects.get(pk=backup.pk).status == Backup.SUCCEEDED
    bounds = BaseBackupWal.objects.get(backup=backup)
    page.goto(f"{live_server.url}{backup.get_absolute_url()}")
    page.get_by_text(f"Waiting for WAL {bounds.start_segment}.").wait_for()
    assert page.get_by_text("Physical base backup (the whole cluster as one tar").is_visible()
    assert page.locator("button:has-text('Test restore')").count() == 0
    shot(page, "basebackup-waiting")
    page.goto(f"{live_server.url}/backups/")
    page.get_by_text("waiting for WAL").wait_for()
    shot(page, "basebackup-list")

    ship_needed_wal(cluster, source, bounds)
    page.goto(f"{live_server.url}{backup.get_absolute_url()}")
    page.get_by_text("all stored since").wait_for()
    assert page.get_by_text("Waiting for WAL").count() == 0
    shot(page, "basebackup-complete")


def test_running_a_base_backup_plan_without_protection_says_why(live_server, page, admin_user, cluster, tmp_path):  # noqa: F811
    from tests.factories import make_plan, pg_source

    source = pg_source({**cluster.server, "dbname": "postgres"}, name="Unprotected cluster")
    plan = make_plan(source, [local_destination(tmp_path / "backups")], name="Physical", format="basebackup")
    log_in(page, live_server, admin_user)

    page.goto(f"{live_server.url}{plan.get_absolute_url()}")
    page.locator("form.run-form button[type=submit]").click()
    page.get_by_text("Unprotected cluster has no continuous protection").wait_for()
    shot(page, "basebackup-refused")
    assert not Backup.objects.exists()
