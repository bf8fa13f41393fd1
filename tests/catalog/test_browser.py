"""Retention preview and test restore as an administrator uses them, in Chromium."""

import os

import pytest

from catalog import backup_runs
from catalog.models import Backup
from tests.factories import local_destination, make_plan, pg_source
from tests.harness.sample_db import create_tricky_database
from tests.support import files_under, log_in

pytestmark = pytest.mark.django_db(transaction=True)
SHOTS = os.environ.get("STRONGROOM_SCREENSHOTS")  # a directory, to look at the pages by hand


def test_the_plan_form_previews_retention_before_saving(live_server, page, admin_user, pg_database, tmp_path):
    create_tricky_database(pg_database, big_rows=20)
    plan = make_plan(pg_source(pg_database), [local_destination(tmp_path)], retention_mode="last", keep_last=10)
    # Scheduled runs: the plan's rule judges them (manual ones have a rule of their own).
    backups = [backup_runs.start_backup("test", plan, trigger="schedule") for _ in range(3)]
    assert all(Backup.objects.get(pk=b.pk).status == Backup.SUCCEEDED for b in backups)
    log_in(page, live_server, admin_user)

    page.goto(f"{live_server.url}/plans/{plan.pk}/edit/")
    preview = page.locator("#retention-preview")
    preview.get_by_text("of 3 stored backups").wait_for()
    assert page.locator("[data-field=keep_daily]").is_hidden()  # GFS counts only show for GFS

    page.fill("#id_keep_last", "1")
    preview.get_by_text("2 pruned").wait_for()
    assert preview.locator(".badge.outcome-prune").count() == 2
    assert preview.get_by_text("last #1").is_visible()
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/retention-preview.png", full_page=True)

    page.select_option("#id_retention_mode", "gfs")
    assert page.locator("[data-field=keep_daily]").is_visible()
    preview.get_by_text("Dry run of “30 daily, 12 weekly").wait_for()
    assert len(files_under(tmp_path)) == 9  # three backups of three files each; previews change nothing

    page.select_option("#id_retention_mode", "last")
    page.fill("#id_keep_last", "1")
    page.click("button:has-text('Save plan')")
    page.get_by_text("They are deleted at the next retention run").wait_for()
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Apply retention now')")
    page.get_by_text("Retention applied: 2 pruned.").wait_for()
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/plan-after-prune.png", full_page=True)
    assert len(files_under(tmp_path)) == 3
    assert Backup.objects.filter(plan=plan, pruned_at__isnull=False).count() == 2


def test_a_test_restore_from_the_backup_page(live_server, page, admin_user, pg_database, tmp_path):
    create_tricky_database(pg_database, big_rows=500)
    plan = make_plan(pg_source(pg_database), [local_destination(tmp_path)], verify_new_backups=False)
    backup = backup_runs.start_backup("test", plan)
    log_in(page, live_server, admin_user)

    page.goto(f"{live_server.url}/backups/{backup.pk}/")
    page.click("button:has-text('Test restore')")
    page.wait_for_url(f"{live_server.url}/verifications/*/")
    page.locator(".badge.verify-passed").first.wait_for()
    assert "rows match the backup's snapshot exactly" in page.locator(".flash-success").inner_text()
    assert page.locator("text=Restore took").is_visible()
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/verification.png", full_page=True)
