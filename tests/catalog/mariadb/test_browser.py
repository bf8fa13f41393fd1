"""A MariaDB source in the browser: the form shows the fields the engine
takes and its port, the Test button answers, and the source's page after a
backup reads right, at desktop and phone widths."""

import os

import pytest

from catalog import backup_runs
from catalog.models import Backup, Source
from tests.factories import local_destination, make_plan
from tests.harness.mariadb import TEST_PASSWORD
from tests.support import log_in

SHOTS = os.environ.get("STRONGROOM_SCREENSHOTS")  # a directory, to look at the pages by hand

pytestmark = pytest.mark.django_db(transaction=True)


def shoot(page, name):
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/{name}.png", full_page=True)


def on_a_phone(page, name):
    """The same page 390 px wide: nothing but the tables, which scroll, is wider than the screen."""
    page.set_viewport_size({"width": 390, "height": 844})
    wider = page.evaluate(
        "[...document.querySelectorAll('main *')].filter(e => !e.closest('table, pre, .table-wrap'))"
        ".filter(e => e.getBoundingClientRect().right > window.innerWidth + 1).map(e => e.outerHTML.slice(0, 80))"
    )
    assert wider == []
    shoot(page, name)
    page.set_viewport_size({"width": 1280, "height": 900})


def test_a_mariadb_source_is_added_tested_and_backed_up(
    live_server, page, admin_user, mariadb_server, mariadb_sample, tmp_path
):
    log_in(page, live_server, admin_user)
    page.goto(f"{live_server.url}/sources/new/")
    assert page.input_value("#id_port") == "5432"

    page.select_option("#id_engine", "mariadb")

    assert page.input_value("#id_port") == "3306"  # PostgreSQL's default gave way to MariaDB's
    assert not page.locator('[data-field="dsn"]').is_visible()
    assert not page.locator('[data-field="sqlite_path"]').is_visible()
    info = mariadb_server.info()
    page.fill("#id_name", "Shop (MariaDB)")
    page.fill("#id_host", info["host"])
    page.fill("#id_port", str(info["port"]))
    page.fill("#id_dbname", mariadb_sample)
    page.fill("#id_user", info["user"])
    page.fill("#id_password", info["password"])
    page.click("button:has-text('Test connection')")
    result = page.locator(".test-result.ok")
    result.wait_for()
    assert "has every privilege a complete backup needs" in result.inner_text()
    shoot(page, "mariadb-source-form-1280")
    on_a_phone(page, "mariadb-source-form-390")
    page.click("button:has-text('Save source')")
    page.wait_for_url(f"{live_server.url}/sources/*/")

    source = Source.objects.get()
    plan = make_plan(source, [local_destination(tmp_path)], format="mariadb", verify_new_backups=False)
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    page.goto(f"{live_server.url}{source.get_absolute_url()}")
    text = page.inner_text("main")
    assert "MariaDB or MySQL" in text and f"strongroom@127.0.0.1:{info['port']}/{mariadb_sample}" in text
    assert "MariaDB/MySQL SQL dump" in text
    assert "continuous protection" not in text.lower()  # PostgreSQL's WAL streaming is not offered
    assert TEST_PASSWORD not in page.content()
    shoot(page, "mariadb-source-page-1280")
    on_a_phone(page, "mariadb-source-page-390")
    page.goto(f"{live_server.url}/")
    assert "Shop (MariaDB)" in page.inner_text("main")
    shoot(page, "mariadb-dashboard-1280")
    page.goto(f"{live_server.url}{backup.get_absolute_url()}")
    rows = sum(backup.table_counts.values())
    assert f"14 tables, {rows:,} rows, counted in the dump's own snapshot" in page.inner_text("main")
    shoot(page, "mariadb-backup-page-1280")
    on_a_phone(page, "mariadb-backup-page-390")
