"""The export plan form as an administrator uses it, in Chromium: the Tables
section appears only for export formats, lists the source's live tables,
previews what a named set matches, and keeps the choice when a row filter is
refused."""

import os

import pytest

from catalog.models import BackupPlan
from tests.catalog.exports.sample_inventory import create_inventory
from tests.factories import local_destination, pg_source
from tests.support import log_in

pytestmark = pytest.mark.django_db(transaction=True)
SHOTS = os.environ.get("STRONGROOM_SCREENSHOTS")  # a directory, to look at the pages by hand


def test_an_administrator_builds_an_export_plan_in_the_browser(live_server, page, admin_user, pg_database, tmp_path):
    create_inventory(pg_database)
    source = pg_source(pg_database)
    local_destination(tmp_path / "exports")
    log_in(page, live_server, admin_user)

    page.goto(f"{live_server.url}/plans/new/?source={source.pk}")
    assert page.locator("[data-field=export_tables]").is_hidden()  # a dump format: no table picker
    page.fill("#id_name", "Weekly export")
    page.select_option("#id_format", "csv")
    picker = page.locator("#export-picker")
    picker.get_by_text("schema public").wait_for()
    assert page.locator("[data-field=export_tables]").is_visible()
    assert picker.locator("input[name=export_table]").count() == 5

    picker.locator("input[value='public.orders']").check()
    picker.locator("input[name='where:public.orders']").fill("nope > 3")
    picker.locator("input[name=set_label]").first.fill("audit logs")
    picker.locator("input[name=set_pattern]").first.fill("public.audit_*")
    picker.locator("input[name=set_pattern]").first.press("Tab")  # change: the picker shows what it matches
    picker.get_by_text("public.audit_changes, public.audit_logins").wait_for()
    assert picker.locator("input[value='public.orders']").is_checked()  # the choice survives the reload
    page.get_by_label("Local disk").check()

    page.click("button:has-text('Save plan')")
    picker.get_by_text('column "nope" does not exist').wait_for()
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/export-plan-form.png", full_page=True)
    assert not BackupPlan.objects.exists()
    picker.locator("input[name='where:public.orders']").fill("total > 150")
    page.click("button:has-text('Save plan')")

    page.get_by_text("Exported tables").wait_for()
    plan = BackupPlan.objects.get()
    assert plan.export_tables == [{"schema": "public", "name": "orders", "where": "total > 150"}]
    assert plan.export_sets == [{"label": "audit logs", "pattern": "public.audit_*"}]
    assert page.get_by_text("public.audit_*").is_visible()
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/export-plan.png", full_page=True)


def test_an_export_of_a_sqlite_file_is_restored_into_a_new_file_through_the_wizard(
    live_server, page, admin_user, tmp_path
):
    import sqlite3

    from catalog import backup_runs, services
    from catalog.models import Source
    from restore.models import RestoreJob
    from tests.factories import make_plan

    path = tmp_path / "shop.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT, total NUMERIC);
            CREATE TABLE sessions (id INTEGER PRIMARY KEY, token TEXT);
            INSERT INTO orders VALUES (1, 'كتاب', 12.5), (2, '', NULL);
            INSERT INTO sessions VALUES (1, 'not exported');
        """)
    source = services.save_source("test", Source(name="Shop", engine="sqlite", sqlite_path=str(path), port=None))
    plan = make_plan(
        source,
        [local_destination(tmp_path / "exports")],
        name="Orders export",
        format="jsonl",
        verify_new_backups=False,
        export_tables=[{"schema": "main", "name": "orders", "where": ""}],
    )
    backup = backup_runs.start_backup("test", plan)
    log_in(page, live_server, admin_user)

    page.goto(f"{live_server.url}/restores/new/?backup={backup.pk}")
    page.click("button:has-text('Next')")
    page.wait_for_url("**/restores/new/where/")
    assert page.get_by_text("A new file").is_visible()
    assert page.locator("input[name=target][value=existing]").count() == 0  # an export never goes over its source
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/export-sqlite-restore-where.png", full_page=True)
    name = page.input_value("#id_database")
    page.click("button:has-text('Next')")
    page.wait_for_url("**/restores/new/scope/")
    page.click("button:has-text('Next')")
    page.wait_for_url("**/restores/new/review/")
    page.click("button:has-text('Restore into a new file')")
    page.wait_for_url("**/restores/*/")
    page.locator(".flash-success").wait_for()
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/export-sqlite-restore-report.png", full_page=True)

    job = RestoreJob.objects.get()
    assert job.status == "succeeded", job.summary
    with sqlite3.connect(tmp_path / name) as restored:
        assert restored.execute("SELECT * FROM orders ORDER BY id").fetchall() == [(1, "كتاب", 12.5), (2, "", None)]
