"""Importing a dump from the browser, in Chromium: the upload's progress
(the network slowed so that it shows), the check, the new backup's page; a
file over the limit never sent; a refused file said on the form, which
works again without reloading the page."""

import os
import re
import subprocess

import pytest

from catalog.models import Backup
from tests.factories import local_destination, make_plan, pg_source
from tests.harness.sample_db import create_tricky_database, libpq_env
from tests.support import log_in

pytestmark = pytest.mark.django_db(transaction=True)
SHOTS = os.environ.get("STRONGROOM_SCREENSHOTS")  # a directory, to look at the pages by hand


@pytest.fixture
def plan(pg_database, tmp_path):
    create_tricky_database(pg_database, big_rows=20_000)
    return make_plan(
        pg_source(pg_database, name="Orders"), [local_destination(tmp_path / "disk")], verify_new_backups=False
    )


@pytest.fixture
def dump(pg_database, tmp_path):
    path = tmp_path / "orders.dump"
    subprocess.run(
        ["pg_dump", "--format=custom", "--compress=0", "--file", str(path), pg_database["dbname"]],
        env={**os.environ, **libpq_env(pg_database)},
        check=True,
    )
    return path


def slow_uploads(page, bytes_per_second):
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": bytes_per_second},
    )


def test_an_upload_shows_its_progress_and_lands_on_the_new_backup(live_server, page, admin_user, plan, dump):
    log_in(page, live_server, admin_user)
    page.goto(f"{live_server.url}/sources/{plan.source.pk}/")
    page.click("a:has-text('Import a dump')")
    assert page.locator("#id_source").input_value() == str(plan.source.pk)
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/import-form.png", full_page=True)
    page.set_input_files("#id_dump", str(dump))
    slow_uploads(page, dump.stat().st_size // 3)  # about three seconds

    page.click("button:has-text('Check and import')")

    status = page.locator("[data-upload-status]")
    status.filter(has_text=re.compile(r"Uploading: .* of .* \(\d+ %\)")).wait_for()
    assert page.locator("button:has-text('Check and import')").is_disabled()
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/import-uploading.png", full_page=True)
    page.wait_for_url(re.compile(r".*/backups/\d+/$"), timeout=60_000)
    backup = Backup.objects.get()
    assert page.url == f"{live_server.url}/backups/{backup.pk}/"
    assert backup.status == Backup.SUCCEEDED, backup.error
    page.get_by_text("The dump passed its checks: pg_dump custom-format archive. It is being stored.").wait_for()
    page.locator("dd", has_text="Imported by alice from upload orders.dump").wait_for()
    assert backup.table_counts["public.big_ledger"] == 20_000
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/import-backup.png", full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        page.screenshot(path=f"{SHOTS}/import-backup-narrow.png", full_page=True)
        page.goto(f"{live_server.url}/backups/")
        page.screenshot(path=f"{SHOTS}/import-list-narrow.png", full_page=True)
        page.set_viewport_size({"width": 1280, "height": 900})
        page.goto(f"{live_server.url}/backups/")
        page.screenshot(path=f"{SHOTS}/import-list.png", full_page=True)


def test_a_file_over_the_limit_is_not_sent_and_a_refused_one_is_said_on_the_form(
    live_server, page, admin_user, plan, dump, tmp_path, settings
):
    settings.IMPORT_MAX_BYTES = dump.stat().st_size - 1
    log_in(page, live_server, admin_user)
    page.goto(f"{live_server.url}/backups/import/")
    page.select_option("#id_source", str(plan.source.pk))
    sent = []
    page.on("request", lambda request: sent.append(request.url) if request.method == "POST" else None)

    page.set_input_files("#id_dump", str(dump))
    page.click("button:has-text('Check and import')")

    page.get_by_text(re.compile(r"This file is .*, over the import limit of .*: it was not sent\.")).wait_for()
    assert sent == [] and Backup.objects.count() == 0

    notes = tmp_path / "notes.txt"
    notes.write_text("not a dump\n")
    page.set_input_files("#id_dump", str(notes))
    page.click("button:has-text('Check and import')")

    page.get_by_text("this one starts with the line “not a dump”").wait_for()
    assert page.url == f"{live_server.url}/backups/import/" and Backup.objects.count() == 0
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/import-refused.png", full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        page.screenshot(path=f"{SHOTS}/import-refused-narrow.png", full_page=True)
        page.set_viewport_size({"width": 1280, "height": 900})
    # The form from the answer works as the first did: the same file is refused again, and nothing is kept.
    assert page.locator("#id_source").input_value() == str(plan.source.pk)
    page.set_input_files("#id_dump", str(notes))
    with page.expect_response(lambda response: response.request.method == "POST"):
        page.click("button:has-text('Check and import')")
    page.locator(".flash-error", has_text="starts with the line").wait_for()
    assert len(sent) == 2 and Backup.objects.count() == 0
