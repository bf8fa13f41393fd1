"""The master key's only copy: until an administrator downloads its file
(after re-entering their password) or says they hold a copy, every page says
that losing this machine loses every encrypted backup. Both are audited; the
download is the file as it is on disk, for administrators only, never cached."""

import base64
import subprocess
import sys

import pytest
from django.conf import settings
from django.urls import reverse

from catalog import keyring, keys
from catalog.engine import crypto
from catalog.models import AuditEvent, Key

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"  # tests/conftest.py make_user
BANNER = "every encrypted backup is lost with it, off-site copies included"


@pytest.fixture
def active_key():
    keyring.active_key()  # generated here, as on a first start
    return Key.objects.get(is_active=True)


def page(client, name, *args):
    response = client.get(reverse(name, args=args))
    assert response.status_code == 200, name
    return response.content.decode()


def test_every_page_warns_until_a_copy_is_kept(active_key, admin_client, auditor_client, client):
    for name in ("dashboard", "backup_list", "source_list", "plan_list", "audit_list", "key_list"):
        text = page(admin_client, name)
        assert BANNER in text and active_key.key_id in text, name
        assert reverse("key_download", args=[active_key.pk]) in text, name
    auditor_page = page(auditor_client, "dashboard")
    assert BANNER in auditor_page and "An administrator should download it" in auditor_page
    assert reverse("key_download", args=[active_key.pk]) not in auditor_page
    assert BANNER not in client.get(reverse("login")).content.decode()


def test_no_banner_before_any_key_or_for_an_imported_one(admin_client):
    assert BANNER not in page(admin_client, "dashboard")
    keys.start_rotation("test", key=crypto.generate_master_key(), enqueue=False)
    assert Key.objects.get(is_active=True).origin == Key.IMPORTED
    assert BANNER not in page(admin_client, "dashboard")


def test_the_download_asks_for_the_password_and_refuses_a_wrong_one(active_key, admin_client):
    key_bytes = keyring.master_key(active_key.key_id)
    url = reverse("key_download", args=[active_key.pk])

    form = admin_client.get(url)
    assert form.status_code == 200 and 'type="password"' in form.content.decode()
    wrong = admin_client.post(url, {"password": "not my password"})

    assert wrong.status_code == 400
    assert "That is not your password" in wrong.content.decode()
    assert "attachment" not in wrong.get("Content-Disposition", "")
    for text in (form.content.decode(), wrong.content.decode()):
        assert base64.b64encode(key_bytes).decode() not in text
    assert not AuditEvent.objects.filter(action="key.download").exists()
    active_key.refresh_from_db()
    assert active_key.needs_a_copy() and BANNER in page(admin_client, "dashboard")


def test_the_download_is_the_key_file_as_on_disk_audited_and_never_cached(active_key, admin_client, admin_user):
    on_disk = keyring.key_path(active_key.key_id).read_bytes()

    response = admin_client.post(reverse("key_download", args=[active_key.pk]), {"password": PASSWORD})

    assert response.status_code == 200
    assert response.content == on_disk
    assert crypto.parse_key_file(response.content.decode()) == (
        active_key.key_id,
        keyring.master_key(active_key.key_id),
    )
    assert response["Content-Disposition"] == f'attachment; filename="{active_key.key_id}.key"'
    assert response["Content-Type"] == "application/octet-stream"
    assert "no-store" in response["Cache-Control"] and "private" in response["Cache-Control"]
    event = AuditEvent.objects.get(action="key.download")
    assert event.actor_label == admin_user.username
    assert event.changes == {"key_id": active_key.key_id, "fingerprint": active_key.fingerprint}
    active_key.refresh_from_db()
    assert (active_key.copy_held_how, active_key.copy_held_by) == (Key.DOWNLOADED, admin_user)
    assert BANNER not in page(admin_client, "dashboard")
    assert f"Downloaded by {admin_user.username}" in page(admin_client, "key_list")


def test_wrong_passwords_count_as_failed_sign_ins(active_key, admin_client, settings):
    url = reverse("key_download", args=[active_key.pk])
    for _ in range(settings.AXES_FAILURE_LIMIT):
        admin_client.post(url, {"password": "guess"})

    locked = admin_client.post(url, {"password": PASSWORD})

    assert locked.status_code == 429 and locked.content != keyring.key_path(active_key.key_id).read_bytes()
    assert not AuditEvent.objects.filter(action="key.download").exists()


def test_auditors_cannot_download_or_record_a_copy(active_key, auditor_client):
    assert auditor_client.get(reverse("key_download", args=[active_key.pk])).status_code == 403
    assert auditor_client.post(reverse("key_download", args=[active_key.pk]), {"password": PASSWORD}).status_code == 403
    assert auditor_client.post(reverse("key_record_copy", args=[active_key.pk]), {"holds_copy": "1"}).status_code == 403
    active_key.refresh_from_db()
    assert active_key.needs_a_copy()
    assert not AuditEvent.objects.filter(action__in=["key.download", "key.copy_confirmed"]).exists()


def test_saying_you_hold_a_copy_is_audited_and_ends_the_banner(active_key, admin_client, admin_user):
    url = reverse("key_record_copy", args=[active_key.pk])
    admin_client.post(url, {})  # the box not ticked
    active_key.refresh_from_db()
    assert active_key.needs_a_copy()

    response = admin_client.post(url, {"holds_copy": "1"}, follow=True)

    assert "Recorded that you hold a copy" in response.content.decode()
    active_key.refresh_from_db()
    assert (active_key.copy_held_how, active_key.copy_held_by) == (Key.CONFIRMED, admin_user)
    event = AuditEvent.objects.get(action="key.copy_confirmed")
    assert (event.actor_label, event.changes["key_id"]) == (admin_user.username, active_key.key_id)
    assert BANNER not in page(admin_client, "dashboard")


def test_a_new_generated_key_needs_its_own_copy(active_key, admin_client, admin_user):
    keys.confirm_copy_held(admin_user, active_key)
    assert BANNER not in page(admin_client, "dashboard")

    keys.start_rotation("test", enqueue=False)

    assert BANNER in page(admin_client, "dashboard")


def test_the_keys_page_shows_the_fingerprint_a_copy_is_checked_against(active_key, admin_client, tmp_path):
    downloaded = tmp_path / f"{active_key.key_id}.key"
    downloaded.write_bytes(
        admin_client.post(reverse("key_download", args=[active_key.pk]), {"password": PASSWORD}).content
    )

    checked = subprocess.run(
        [sys.executable, "-m", "catalog.engine.decrypt", "--fingerprint", "--key-file", str(downloaded)],
        capture_output=True,
        text=True,
        cwd=settings.BASE_DIR,
        check=True,
    )

    assert f"{active_key.key_id}  fingerprint {active_key.fingerprint}" in checked.stdout
    assert active_key.fingerprint in page(admin_client, "key_list")
