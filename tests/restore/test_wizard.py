"""The restore wizard in the browser, step by step, as an administrator at 3 a.m."""

import os

import psycopg
import pytest

from catalog import backup_runs
from restore.models import RestoreJob
from tests.factories import local_destination, make_plan, pg_source
from tests.harness import pg
from tests.harness.sample_db import create_tricky_database, table_fingerprints
from tests.support import log_in

pytestmark = pytest.mark.django_db(transaction=True)
SHOTS = os.environ.get("STRONGROOM_SCREENSHOTS")


@pytest.fixture
def backup(pg_database, tmp_path):
    create_tricky_database(pg_database, big_rows=500)
    plan = make_plan(pg_source(pg_database), [local_destination(tmp_path)], verify_new_backups=False)
    return backup_runs.start_backup("test", plan)


def shot(page, name):
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/{name}.png", full_page=True)


def test_the_wizard_restores_two_tables_into_a_new_database(live_server, page, admin_user, backup, pg_database):
    log_in(page, live_server, admin_user)
    page.goto(f"{live_server.url}/backups/{backup.pk}/")
    page.click("text=Restore…")

    page.wait_for_url("**/restores/new/what/")
    assert page.locator(f"#backup-{backup.pk}").is_checked()
    shot(page, "wizard-1-what")
    page.click("button:has-text('Next')")

    page.wait_for_url("**/restores/new/where/")
    suggested = page.input_value("#id_database")
    assert suggested.endswith("_restored_" + backup.created_at.strftime("%Y%m%d"))
    page.check("input[name=target][value=new]")
    page.fill("#id_database", "wizard_restored")
    shot(page, "wizard-2-where")
    page.click("button:has-text('Next')")

    page.wait_for_url("**/restores/new/scope/")
    page.check("input[name=scope][value=some]")
    page.check("input[value='public.big_ledger']")
    page.check("input[value='Inventory.StockItem']")
    shot(page, "wizard-3-scope")
    page.click("button:has-text('Next')")

    page.wait_for_url("**/restores/new/review/")
    text = page.locator(".plan-in-words").inner_text()
    assert (
        "Restore 2 tables (Inventory.StockItem, public.big_ledger)" in text and "new database `wizard_restored`" in text
    )
    page.click("text=← Back")  # going back keeps the choices
    page.wait_for_url("**/restores/new/scope/")
    assert page.locator("input[value='public.big_ledger']").is_checked()
    page.click("button:has-text('Next')")
    page.wait_for_url("**/restores/new/review/")
    shot(page, "wizard-5-review")
    page.click("button:has-text('Restore into a new database')")

    page.wait_for_url("**/restores/*/")
    page.locator(".flash-success").wait_for()
    shot(page, "wizard-6-report")
    job = RestoreJob.objects.get()
    try:
        assert job.status == "succeeded", job.summary
        restored = {**pg_database, "dbname": "wizard_restored"}
        tables = table_fingerprints(restored)
        assert set(k for k in tables if not k.startswith("sequence")) == {
            "public.big_ledger",
            '"Inventory"."StockItem"',
        }
        assert tables["public.big_ledger"] == table_fingerprints(pg_database)["public.big_ledger"]
    finally:
        pg.drop_database("wizard_restored")


def test_auditors_see_the_history_but_cannot_start_a_restore(auditor_client, backup):
    assert auditor_client.get(f"/restores/new/?backup={backup.pk}").status_code == 403
    assert auditor_client.get("/restores/new/what/").status_code == 403
    assert auditor_client.post(f"/backups/{backup.pk}/download/").status_code == 403
    assert auditor_client.get("/restores/").status_code == 200


def test_a_download_is_the_plain_dump_and_is_audited(admin_client, backup, pg_database, tmp_path):
    from catalog.models import AuditEvent

    response = admin_client.post(f"/backups/{backup.pk}/download/")
    dump = tmp_path / "downloaded.dump"
    dump.write_bytes(b"".join(response.streaming_content))
    assert dump.read_bytes()[:5] == b"PGDMP"  # pg_restore's custom format, decrypted and decompressed
    assert AuditEvent.objects.filter(action="backup.download", object_id=str(backup.pk)).exists()
    with psycopg.connect(**pg_database) as conn:
        assert conn.execute("SELECT count(*) FROM big_ledger").fetchone()[0] == 500


def test_replacing_a_table_in_place_asks_for_the_database_name(live_server, page, admin_user, backup, pg_database):
    with psycopg.connect(**pg_database, autocommit=True) as conn:
        conn.execute("DELETE FROM big_ledger WHERE id <= 5")
    log_in(page, live_server, admin_user)
    page.goto(f"{live_server.url}/restores/new/?backup={backup.pk}")
    page.click("button:has-text('Next')")
    page.check("input[name=target][value=existing]")
    page.click("button:has-text('Next')")
    page.check("input[name=scope][value=some]")
    page.check("input[value='public.big_ledger']")
    page.click("button:has-text('Next')")
    page.wait_for_url("**/restores/new/mode/")
    page.check("input[name=mode][value=full]")
    page.click("button:has-text('Next')")

    page.wait_for_url("**/restores/new/review/")
    words = page.locator(".plan-in-words").inner_text()
    assert f"Replace 1 table (public.big_ledger) of `{pg_database['dbname']}` with its contents" in words
    assert "A safety backup is taken first." in words
    page.fill("#id_confirm", "not-the-name")
    page.click("button:has-text('Replace 1 table')")
    page.get_by_text(f"Type the database's name, {pg_database['dbname']}").wait_for()
    assert RestoreJob.objects.count() == 0
    page.fill("#id_confirm", pg_database["dbname"])
    shot(page, "wizard-confirm")
    page.click("button:has-text('Replace 1 table')")

    page.wait_for_url("**/restores/*/")
    page.locator(".flash-success").wait_for()
    job = RestoreJob.objects.get()
    assert job.status == "succeeded" and job.safety_backup is not None
    assert page.locator(f"a[href='/backups/{job.safety_backup.pk}/']").count() >= 1
    with psycopg.connect(**pg_database) as conn:
        assert conn.execute("SELECT count(*) FROM big_ledger").fetchone()[0] == 500


def test_a_preview_through_the_wizard_reports_and_changes_nothing(live_server, page, admin_user, backup, pg_database):
    with psycopg.connect(**pg_database, autocommit=True) as conn:
        conn.execute("DELETE FROM big_ledger WHERE id <= 4; UPDATE big_ledger SET memo = 'x' WHERE id = 9")
    before = table_fingerprints(pg_database)
    log_in(page, live_server, admin_user)
    page.goto(f"{live_server.url}/restores/new/?backup={backup.pk}")
    page.click("button:has-text('Next')")
    page.check("input[name=target][value=existing]")
    page.click("button:has-text('Next')")
    page.check(".schema-toggle[data-schema=public]")  # a whole schema at once
    assert page.locator("input[value='public.big_ledger']").is_checked()
    assert page.locator("input[name=scope][value=some]").is_checked()
    page.click("button:has-text('Next')")
    page.check("input[name=mode][value=preview]")
    page.click("button:has-text('Next')")
    assert "nothing in" in page.locator(".plan-in-words").inner_text()
    assert page.locator("#id_confirm").count() == 0  # a preview changes nothing: no name to type
    page.click("button:has-text('Preview differences')")

    page.wait_for_url("**/restores/*/")
    page.locator(".flash-success").wait_for()
    row = page.locator("tr", has_text="public.big_ledger")
    assert row.locator("td").all_inner_texts()[1:] == ["500", "496", "4", "0", "1"]
    shot(page, "wizard-preview-report")
    assert table_fingerprints(pg_database) == before
