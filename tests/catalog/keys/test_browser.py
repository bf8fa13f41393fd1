"""The Keys page as an administrator and an auditor use it, in Chromium:
rotate, take the key file once, destroy the old key."""

import base64
import os

import pytest

from catalog import keyring
from catalog.models import Key
from tests.catalog.keys.conftest import take_backup
from tests.support import log_in

pytestmark = pytest.mark.django_db(transaction=True)
SHOTS = os.environ.get("STRONGROOM_SCREENSHOTS")  # a directory, to look at the pages by hand


def shot(page, name):
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/{name}.png", full_page=True)


def test_an_administrator_rotates_and_destroys_the_old_key(live_server, page, admin_user, plan, tmp_path):
    backup = take_backup(plan)
    old = Key.objects.get(is_active=True)
    log_in(page, live_server, admin_user)

    page.click("text=Keys")
    page.locator("#active-key").get_by_text(old.key_id).wait_for()
    shot(page, "keys-before")
    page.check("input[name=source][value=generate]")
    page.click("text=Rotate to the new key")
    page.get_by_text("Download the key file now").wait_for()
    new = Key.objects.get(is_active=True)
    page.fill("input[name=password]", "correct horse battery")
    shot(page, "key-created")
    with page.expect_download() as download_info:
        page.click("#key-download")
    saved = tmp_path / "downloaded.key"
    download_info.value.save_as(saved)
    assert saved.read_bytes() == keyring.key_path(new.key_id).read_bytes()
    assert saved.read_text().startswith("strongroom-master-key v1\nid: " + new.key_id)

    page.goto(f"{live_server.url}/keys/")
    rotations = page.locator("#rotation-table")
    rotations.get_by_text("1 of 1 backup re-wrapped").wait_for()
    rotations.get_by_text("Succeeded").wait_for()
    row = page.locator(f"tr[data-key='{old.key_id}']")
    assert "0 backups, 0 secrets" in row.locator(".need").inner_text()
    assert row.locator(".opens").inner_text() == "1 backup"
    shot(page, "keys-after-rotation")

    row.locator("input[name=confirm_key_id]").fill(old.key_id)
    page.on("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Destroy").click()
    page.get_by_text(f"Destroyed {old.key_id}: its key file is deleted.").wait_for()
    assert "Destroyed" in page.locator(f"tr[data-key='{old.key_id}']").inner_text()
    shot(page, "keys-after-destroy")
    assert Key.objects.get(pk=old.pk).destroyed_at is not None
    html = page.content()
    for key in (keyring.master_key(new.key_id),):
        assert base64.b64encode(key).decode() not in html and key.hex() not in html
    backup.refresh_from_db()
    assert backup.key_id == new.key_id


def test_an_auditor_sees_the_keys_without_any_button(live_server, page, auditor_user, admin_user):
    keyring.active_key()
    log_in(page, live_server, auditor_user)
    page.click("text=Keys")
    page.locator("#active-key").wait_for()
    assert page.locator("#rotate").count() == 0
    assert page.get_by_role("button", name="Destroy").count() == 0
    shot(page, "keys-auditor")


def test_a_failed_rotation_says_why_and_resumes(live_server, page, admin_user, plan, s3_bucket):
    from tests.harness import s3

    backup = take_backup(plan)
    old = Key.objects.get(is_active=True)
    remote = backup.copies.get(destination__kind="s3")
    client = s3.client(s3_bucket["endpoint_url"])
    kept = client.get_object(Bucket=s3_bucket["bucket"], Key=f"strongroom/{remote.manifest_key}")["Body"].read()
    client.delete_object(Bucket=s3_bucket["bucket"], Key=f"strongroom/{remote.manifest_key}")
    log_in(page, live_server, admin_user)
    page.goto(f"{live_server.url}/keys/")
    page.click("text=Rotate to the new key")
    page.click("text=Back to the keys")
    page.locator("#rotation-table").get_by_text("Failed").wait_for()
    row = page.locator(f"tr[data-key='{old.key_id}']")
    assert "Cannot be destroyed" in row.inner_text() and f"#{backup.pk}" in row.inner_text()
    page.locator("#rotation-table summary").click()
    page.get_by_text("its manifest on Off-site S3 cannot be read").wait_for()
    shot(page, "keys-rotation-failed")

    client.put_object(Bucket=s3_bucket["bucket"], Key=f"strongroom/{remote.manifest_key}", Body=kept)
    page.get_by_role("button", name="Resume").click()
    page.get_by_text("resumed: it re-wraps what is left").wait_for()
    page.locator("#rotation-table").get_by_text("Succeeded").wait_for()
    assert page.locator(f"tr[data-key='{old.key_id}']").get_by_role("button", name="Destroy").is_visible()
    shot(page, "keys-rotation-resumed")
