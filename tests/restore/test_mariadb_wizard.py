"""The restore wizard for a MariaDB backup in Chromium, step by step: chosen
tables into a new database, finished, with its report; the existing database
is not offered, and says why. Each page is also shot at a phone's width
(STRONGROOM_SCREENSHOTS=dir keeps the shots)."""

import os
import uuid

import pytest

from restore.models import RestoreJob
from tests.factories import mariadb_backup
from tests.harness.mariadb_sample import sample_database, table_counts
from tests.support import log_in

pytestmark = pytest.mark.django_db(transaction=True)

SHOTS = os.environ.get("STRONGROOM_SCREENSHOTS")


@pytest.fixture
def backup(mariadb_server, tmp_path):
    with sample_database(mariadb_server, prefix="sr_wizard") as name:
        yield mariadb_backup(mariadb_server, name, tmp_path / "disk")


def shot(page, name):
    """The page at a laptop's width and a phone's, then back to the laptop's."""
    if SHOTS:
        for width, height in ((390, 844), (1280, 900)):
            page.set_viewport_size({"width": width, "height": height})
            page.screenshot(path=f"{SHOTS}/{name}-{width}.png", full_page=True)


def test_the_wizard_restores_chosen_tables_of_a_mariadb_backup_into_a_new_database(
    live_server, page, admin_user, backup, mariadb_server
):
    name = f"sr_wizard_{uuid.uuid4().hex[:6]}"
    log_in(page, live_server, admin_user)
    page.goto(f"{live_server.url}/restores/new/?backup={backup.pk}")
    page.wait_for_url("**/restores/new/what/")
    shot(page, "mariadb-1-what")
    page.click("button:has-text('Next')")

    page.wait_for_url("**/restores/new/where/")
    assert page.input_value("#id_database").startswith(f"{backup.source.dbname}_restored_")
    existing = page.locator("label.choice.refused", has_text="The existing database")
    assert "MariaDB cannot rename a database" in existing.inner_text()
    assert page.locator("input[name=target][value=existing]").is_disabled()
    assert "The backup was taken on MariaDB 10.11" in page.content()
    page.fill("#id_database", name)
    shot(page, "mariadb-2-where")
    page.click("button:has-text('Next')")

    page.wait_for_url("**/restores/new/scope/")
    assert page.get_by_text(f"database {backup.source.dbname}").count() == 1
    page.check("input[name=scope][value=some]")
    page.check("input[value='film']")
    page.check("input[value='order lines']")
    shot(page, "mariadb-3-scope")
    page.click("button:has-text('Next')")

    page.wait_for_url("**/restores/new/review/")
    words = page.locator(".plan-in-words").inner_text()
    assert f"Restore 2 tables (film, order lines) from backup #{backup.pk}" in words
    assert f"into a new database `{name}`" in words and "views, routines and events do not" in words
    assert page.locator("input[name=owners][value=keep]").is_checked()
    shot(page, "mariadb-4-review")
    try:
        page.click("button:has-text('Restore into a new database')")

        page.wait_for_url("**/restores/*/")
        page.locator(".flash-success").wait_for()
        shot(page, "mariadb-5-report")
        job = RestoreJob.objects.get()
        assert job.status == "succeeded", job.summary
        with mariadb_server.connect() as conn:
            assert table_counts(conn, name) == {"film": 1000, "order lines": 295}
        report = page.locator("main").inner_text()
        assert f"Restored into the new database {name}." in report and "order lines" in report
    finally:
        mariadb_server.drop_database(name)
