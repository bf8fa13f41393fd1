"""The main journeys of an administrator and of an auditor, in Chromium, with a
screenshot of every page visited for docs/JOURNEYS.md.

The screenshots go to tmp_path unless STRONGROOM_SCREENSHOTS names a directory
(docs/screenshots to regenerate the documentation's pictures): a normal run
must not rewrite tracked files."""

import csv
import io
import json
import os
import re
import uuid
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.utils import timezone
from django_q.conf import Conf

from catalog import backup_runs, tasks
from catalog.models import AuditEvent, Backup, Copy, Verification
from catalog.roles import grant_roles
from restore.models import RestoreJob
from tests.conftest import make_user
from tests.factories import local_destination, make_plan, pg_source
from tests.harness import pg
from tests.harness.sample_db import create_tricky_database, table_fingerprints
from tests.support import in_thread, log_in

pytestmark = pytest.mark.django_db(transaction=True)
ADMIN_PASSWORD = "journey-Admin-pa55"
WIDTH = 1280


class Camera:
    """Numbered full-page screenshots: 01-login.png, 02-dashboard.png, …
    For the docs they are reduced to 128 colours, which keeps a page's text
    sharp at a third of the size."""

    def __init__(self, page, directory, for_docs, start):
        self.page, self.directory, self.for_docs, self.number = page, Path(directory), for_docs, start
        self.directory.mkdir(parents=True, exist_ok=True)
        self.taken = []

    def shot(self, name):
        assert self.page.viewport_size["width"] == WIDTH
        path = self.directory / f"{self.number:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        if self.for_docs:
            from PIL import Image

            with Image.open(path) as image:
                image.convert("RGB").quantize(colors=128, method=Image.Quantize.FASTOCTREE).save(path)
            assert path.stat().st_size < 250_000, f"{path.name} is {path.stat().st_size} bytes: too big for the docs"
        self.taken.append(path)
        self.number += 1
        return path


def camera(page, tmp_path, start):
    docs = os.environ.get("STRONGROOM_SCREENSHOTS")
    return Camera(page, docs or tmp_path / "screenshots", bool(docs), start)


@pytest.fixture
def restored_name():
    name = f"journey_restored_{uuid.uuid4().hex[:8]}"
    yield name
    pg.drop_database(name)


def add_destination(page, name, kind, fields, offsite=False, before_saving=lambda: None):
    """Fills in the destination form, tests it (the test must pass) and saves it."""
    page.click("nav >> text=Destinations")
    page.click("text=Add destination")
    page.fill("#id_name", name)
    page.select_option("#id_kind", kind)
    for field, value in fields.items():
        page.fill(f"#id_{field}", value)
    if offsite:
        page.check("#id_offsite")
    page.click("button:has-text('Test')")
    page.locator("#test-result .ok").wait_for()
    before_saving()
    page.click("button:has-text('Save destination')")
    page.get_by_text(f"Saved {name}.").wait_for()


def test_an_administrator_sets_up_backs_up_verifies_restores_and_alerts(
    live_server, page, pg_database, s3_bucket, tmp_path, restored_name, httpserver, monkeypatch, settings
):
    settings.NOTIFY_RETRY_DELAYS = (0, 0, 0)
    settings.KEY_DIR = key_dir = tmp_path / "keys"  # a key directory of this test's own
    create_tricky_database(pg_database, big_rows=2000)
    # First start: the bootstrap command makes the master key and the administrator.
    grant_roles(Group, Permission)  # a transactional test flushed the groups the migration made
    monkeypatch.setenv("STRONGROOM_ADMIN_PASSWORD", ADMIN_PASSWORD)
    out = io.StringIO()
    call_command("bootstrap", stdout=out)
    assert "master key" in out.getvalue() and len(list(key_dir.glob("mk-*.key"))) == 1
    cam = camera(page, tmp_path, 1)
    url = live_server.url

    page.goto(f"{url}/")
    page.wait_for_url(re.compile(r".*/login/\?next=/$"))
    cam.shot("login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/")
    cam.shot("dashboard-empty")

    # A PostgreSQL source, its connection tested before saving.
    page.click("nav >> text=Sources")
    page.click("text=Add source")
    page.fill("#id_name", "Inventory DB")
    page.select_option("#id_engine", "postgresql")
    page.fill("#id_host", pg_database["host"])
    page.fill("#id_port", str(pg_database["port"]))
    page.fill("#id_dbname", pg_database["dbname"])
    page.fill("#id_user", pg_database["user"])
    page.click("button:has-text('Test connection')")
    page.locator("#test-result .ok").get_by_text("Connected: PostgreSQL").wait_for()
    cam.shot("source-form")
    page.click("button:has-text('Save source')")
    page.get_by_text("Saved Inventory DB.").wait_for()
    cam.shot("source-detail")

    # A local directory and an S3 bucket (moto), each tested.
    add_destination(page, "Local disk", "local", {"path": str(tmp_path / "backups")})
    s3_fields = {
        name: s3_bucket[name] for name in ("bucket", "endpoint_url", "region", "access_key_id", "secret_access_key")
    }
    add_destination(
        page,
        "Off-site S3",
        "s3",
        {**s3_fields, "prefix": "strongroom"},
        offsite=True,
        before_saving=lambda: cam.shot("destination-form-s3"),
    )
    cam.shot("destination-detail")

    # A plan writing encrypted dumps to both.
    page.click("nav >> text=Plans")
    page.click("text=New plan")
    page.fill("#id_name", "Nightly")
    page.select_option("#id_source", label="Inventory DB")
    page.select_option("#id_schedule_preset", "daily")  # a preset; the cron box is for schedules of one's own
    page.fill("#id_schedule_time", "02:30")
    page.locator("#cron-preview").get_by_text("At 02:30").wait_for()
    page.check("#id_encrypt")
    page.check("input[name=destinations] >> nth=0")
    page.check("input[name=destinations] >> nth=1")
    cam.shot("plan-form")
    page.click("button:has-text('Save plan')")
    page.get_by_text("Saved Nightly.").wait_for()
    cam.shot("plan-detail")

    # "Back up now": the page polls while a worker (a thread here) runs it.
    monkeypatch.setattr(Conf, "SYNC", False)  # leave it queued for the worker below
    page.fill("input[name=label]", "pre-migration")
    page.click("button:has-text('Back up now')")
    page.wait_for_url(re.compile(r".*/backups/\d+/$"))
    page.get_by_text("Waiting for a worker").wait_for()
    cam.shot("backup-queued")
    monkeypatch.setattr(Conf, "SYNC", True)
    backup = Backup.objects.get()
    worker = in_thread(tasks.run_backup, backup.pk)
    page.locator("h1 .status-succeeded").wait_for(timeout=60_000)  # swapped in by htmx, no reload
    worker.join(timeout=60)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    assert backup.label == "pre-migration" and backup.copies.filter(status=Copy.DURABLE).count() == 2
    page.reload()
    cam.shot("backup-succeeded")

    # A checksum verification of every copy.
    page.click("button:has-text('Verify')")
    page.wait_for_url(re.compile(r".*/verifications/\d+/$"))
    page.locator(".badge.verify-passed").first.wait_for()
    assert Verification.objects.filter(backup=backup, kind="checksum").latest("pk").status == "passed"
    cam.shot("verification")

    # The restore wizard, into a new database.
    page.goto(f"{url}/backups/{backup.pk}/")
    page.click("text=Restore…")
    page.wait_for_url("**/restores/new/what/")
    cam.shot("restore-what")
    page.click("button:has-text('Next')")
    page.wait_for_url("**/restores/new/where/")
    page.check("input[name=target][value=new]")
    page.fill("#id_database", restored_name)
    cam.shot("restore-where")
    page.click("button:has-text('Next')")
    page.wait_for_url("**/restores/new/scope/")
    cam.shot("restore-scope")
    page.click("button:has-text('Next')")
    page.wait_for_url("**/restores/new/review/")
    assert restored_name in page.locator(".plan-in-words").inner_text()
    cam.shot("restore-review")
    page.click("button:has-text('Restore into a new database')")
    page.wait_for_url("**/restores/*/")
    page.locator(".flash-success").wait_for()
    job = RestoreJob.objects.get()
    assert job.status == "succeeded", job.summary
    cam.shot("restore-report")
    assert table_fingerprints({**pg_database, "dbname": restored_name}) == table_fingerprints(pg_database)

    # An alert channel, and its "Send test" reaching a local webhook receiver.
    httpserver.expect_request("/hook").respond_with_data("ok")
    page.click("nav >> text=Alerts")
    page.click("text=Alert channels")
    page.click("text=Add channel")
    page.fill("#id_name", "Ops hook")
    page.select_option("#id_kind", "webhook")
    page.fill("#id_url", httpserver.url_for("/hook"))
    cam.shot("channel-form")
    page.click("button[type=submit].primary")
    page.get_by_text("not shown again").wait_for()
    cam.shot("channel-created")
    page.click("text=Send test")
    page.locator("#test-result").get_by_text("Test message sent").wait_for()
    [(request, _)] = httpserver.log
    assert json.loads(request.get_data())["event"] == "test"
    assert request.headers["X-Strongroom-Signature"].startswith("sha256=")
    cam.shot("channel-tested")

    page.click("nav >> text=Dashboard")
    cam.shot("dashboard")
    # Every change the administrator made is in the audit trail, under their name.
    done_by_admin = set(AuditEvent.objects.filter(actor_label="admin").values_list("action", flat=True))
    assert {
        "source.create",
        "destination.create",
        "plan.create",
        "backup.queue",
        "verification.queue",
        "restore.queue",
        "channel.created",
    } <= done_by_admin, done_by_admin
    assert len(cam.taken) == 20


def test_an_auditor_reviews_history_audit_trail_and_compliance(live_server, page, pg_database, tmp_path, settings):
    settings.KEY_DIR = tmp_path / "keys"
    create_tricky_database(pg_database, big_rows=200)
    admin = make_user("alice", "Administrators")
    auditor = make_user("audrey", "Auditors")
    plan = make_plan(
        pg_source(pg_database), [local_destination(tmp_path / "backups")], retention_mode="last", keep_last=10
    )
    backups = [backup_runs.start_backup(admin, plan, label=label) for label in ("", "pre-migration")]
    assert [Backup.objects.get(pk=b.pk).status for b in backups] == [Backup.SUCCEEDED] * 2
    cam = camera(page, tmp_path, 30)
    log_in(page, live_server, auditor)
    cam.shot("auditor-dashboard")

    page.click("nav >> text=Backups")
    page.get_by_text("pre-migration").first.wait_for()
    assert page.locator("text=Back up now").count() == 0
    cam.shot("backup-history")
    page.click(f"a[href='/backups/{backups[1].pk}/']")
    page.wait_for_url(f"**/backups/{backups[1].pk}/")
    assert page.locator("button:has-text('Verify')").count() == 0  # auditors only look
    cam.shot("auditor-backup-detail")

    page.click("nav >> text=Audit")
    total = AuditEvent.objects.count()
    page.click("text=Verify the chain")
    page.locator("#verify-result").get_by_text(f"{total} events, chain intact").wait_for()
    cam.shot("audit-trail")
    page.select_option("#id_action", "backup.queue")
    page.wait_for_url("**action=backup.queue**")
    page.locator("#audit-results").get_by_text("2 events match these filters").wait_for()
    cam.shot("audit-filtered")
    with page.expect_download() as download:
        page.click("a:has-text('CSV')")
    with open(download.value.path(), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and {row["action"] for row in rows} == {"backup.queue"}
    assert {row["actor_label"] for row in rows} == {"alice"}
    assert {row["object_id"] for row in rows} == {str(b.pk) for b in backups}
    assert all(len(row["hash"]) == 64 for row in rows)

    page.click("nav >> text=Compliance")
    today = timezone.localdate()
    page.fill("#id_start", today.replace(day=1).isoformat())
    page.fill("#id_end", today.isoformat())
    page.click("button:has-text('Show report')")
    page.get_by_text("2 of 2 good backups checksum-verified").wait_for()
    cam.shot("compliance-report")
