"""DR drills as an administrator and an auditor use them, in Chromium."""

import os

import pytest

from catalog import backup_runs
from catalog.models import Backup
from drills import services as drills
from drills.models import Drill
from tests.factories import local_destination, make_plan, pg_source
from tests.harness.sample_db import create_tricky_database
from tests.support import log_in

pytestmark = pytest.mark.django_db(transaction=True)
SHOTS = os.environ.get("STRONGROOM_SCREENSHOTS")  # a directory, to look at the pages by hand


def shot(page, name):
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/{name}.png", full_page=True)


def test_an_administrator_runs_and_records_drills_and_an_auditor_reads_them(
    live_server, page, browser, admin_user, auditor_user, pg_database, tmp_path
):
    create_tricky_database(pg_database, big_rows=500)
    source = pg_source(pg_database)
    source.rto_minutes = 240
    source.save()
    plan = make_plan(source, [local_destination(tmp_path)], verify_new_backups=False)
    backup = backup_runs.start_backup("test", plan)
    assert Backup.objects.get(pk=backup.pk).status == Backup.SUCCEEDED
    log_in(page, live_server, admin_user)

    page.goto(f"{live_server.url}{source.get_absolute_url()}")
    drills_card = page.locator("#source-drills")
    drills_card.get_by_text("Last full drill: none yet").wait_for()
    shot(page, "source-before")
    drills_card.get_by_text("schedule and history").click()

    # The tests' task cluster runs inline, so the drill has run when the page comes back.
    page.locator("tr:has-text('Full restore drill') button:has-text('Run now')").click()
    page.get_by_text("Full restore drill queued").wait_for()
    assert page.locator(".badge:text-is('Passed')").count() == 1
    page.get_by_text("into a scratch database took").wait_for()
    shot(page, "drills-after-run")

    # On a real cluster a drill runs later: the page follows it without a reload.
    waiting = drills.create_drill(admin_user, source, Drill.CHECKSUM, enqueue_it=False)
    page.reload()
    page.locator("#drill-board .badge:text-is('Queued')").first.wait_for()
    drills.run_drill(waiting.pk)
    page.locator("#drill-board tr:has-text('Checksum verification') .badge:text-is('Passed')").wait_for()

    page.select_option("#id_kind", "partial")
    page.fill("#id_performed_at", "2026-08-02T09:30")
    page.fill("#id_minutes", "17")
    page.fill("#id_notes", "Restored the orders table onto the standby host by hand.")
    page.click("button:has-text('Record drill')")
    page.get_by_text("Partial restore test of 2026-08-02 recorded.").wait_for()
    assert Drill.objects.filter(how=Drill.MANUAL, kind="partial", seconds=17 * 60).exists()

    page.fill("#id_full_every_days", "0")
    page.click("button:has-text('Save schedule')")
    page.get_by_text("Between 1 and").wait_for()
    shot(page, "drills-schedule-error")

    page.goto(f"{live_server.url}{source.get_absolute_url()}")
    drills_card.get_by_text("Last partial drill: 2026-08-02, 17 min (RTO 4 h)").wait_for()
    full = Drill.objects.get(kind="full")
    assert full.status == Drill.PASSED
    shot(page, "source-after")

    auditor = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    log_in(auditor, live_server, auditor_user)
    auditor.click("nav >> text=Drills")
    auditor.get_by_text("Latest drills").wait_for()
    assert auditor.get_by_text("Run now").count() == 0
    shot(auditor, "drills-list-auditor")
    auditor.get_by_role("link", name=source.name).first.click()
    auditor.get_by_text("History").wait_for()
    assert auditor.get_by_text("Record a drill done by hand").count() == 0
    shot(auditor, "drills-source-auditor")
    auditor.context.close()
