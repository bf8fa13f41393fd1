"""The Keys page through the client: who may do what, the rotate form
(generate, paste, upload), destruction, the reminder alert, and that no key
material reaches a page, the audit trail, a log or a rotation's log."""

import base64
import json
import logging
from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from catalog import keyring, keys
from catalog.alerts import hooks
from catalog.alerts.models import Alert
from catalog.engine import crypto
from catalog.models import AuditEvent, Key, KeyRotation
from tests.catalog.keys.conftest import take_backup

pytestmark = pytest.mark.django_db(transaction=True)


def spellings(key):
    """Every way key bytes could be written out."""
    return [
        key.hex(),
        key.hex().upper(),
        base64.b64encode(key).decode(),
        base64.urlsafe_b64encode(key).decode(),
        base64.b64encode(key).decode().rstrip("="),
    ]


def assert_nowhere(key, *texts):
    for text in texts:
        for spelling in spellings(key):
            assert spelling not in text


def all_audit_text():
    return json.dumps([[e.action, e.object_repr, e.changes] for e in AuditEvent.objects.all()])


def test_auditors_read_the_page_and_get_403_on_every_post(auditor_client, admin_user):
    keyring.active_key()
    rotation, _ = keys.start_rotation(admin_user)
    old = Key.objects.get(is_active=False)
    page = auditor_client.get(reverse("key_list"))
    assert page.status_code == 200
    text = page.content.decode()
    assert rotation.new_key.key_id in text and rotation.new_key.fingerprint in text and old.key_id in text
    assert "Rotate to the new key" not in text and "Destroy" not in text
    posts = [
        reverse("key_rotate"),
        reverse("key_destroy", args=[old.pk]),
        reverse("key_rotation_resume", args=[rotation.pk]),
        reverse("key_rotation_cancel", args=[rotation.pk]),
    ]
    for url in posts:
        assert auditor_client.post(url, {"source": "generate", "confirm_key_id": old.key_id}).status_code == 403, url
    assert Key.objects.count() == 2 and Key.objects.filter(destroyed_at__isnull=False).count() == 0
    assert auditor_client.get(reverse("key_rotation_progress", args=[rotation.pk])).status_code == 200


def test_a_generated_key_is_offered_for_download_and_never_shown(plan, admin_client, caplog):
    caplog.set_level(logging.DEBUG)
    take_backup(plan)
    old = Key.objects.get(is_active=True)
    old_bytes = keyring.master_key(old.key_id)

    response = admin_client.post(reverse("key_rotate"), {"source": "generate"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    new = Key.objects.get(is_active=True)
    new_bytes = keyring.master_key(new.key_id)
    text = response.content.decode()
    # The file itself comes only from the download, after the password (tests/catalog/keys/test_key_banner.py).
    assert "off this machine" in text and f'action="{reverse("key_download", args=[new.pk])}"' in text
    assert 'name="password"' in text

    rotation = KeyRotation.objects.get()
    assert (rotation.status, rotation.done, rotation.total) == (KeyRotation.SUCCEEDED, 1, 1)
    keys.destroy_key("test", old)
    pages = [text] + [
        admin_client.get(reverse(name)).content.decode() for name in ("key_list", "audit_list", "alert_list")
    ]
    pages.append(admin_client.get(reverse("key_rotation_progress", args=[rotation.pk])).content.decode())
    rotation.refresh_from_db()
    for key in (old_bytes, new_bytes):
        assert_nowhere(key, *pages, all_audit_text(), caplog.text, rotation.log, rotation.summary)
    assert {"key.generate", "key.rotate", "key.rotate.succeeded", "backup.rewrap", "key.destroy"} <= set(
        AuditEvent.objects.values_list("action", flat=True)
    )


def test_it_imports_a_pasted_key_or_a_key_file(admin_client, tmp_path):
    keyring.active_key()
    pasted = crypto.generate_master_key()
    response = admin_client.post(
        reverse("key_rotate"), {"source": "paste", "pasted_key": base64.b64encode(pasted).decode()}
    )
    assert response.status_code == 302
    imported = Key.objects.get(is_active=True)
    assert imported.origin == Key.IMPORTED and imported.fingerprint == crypto.key_fingerprint(pasted)
    assert keyring.master_key(imported.key_id) == pasted
    page = admin_client.get(reverse("key_list")).content.decode()
    assert "Imported" in page
    assert_nowhere(pasted, page, all_audit_text())

    crypto.write_key_file(str(tmp_path / "offsite.key"), "mk-from-the-safe", file_bytes := crypto.generate_master_key())
    with open(tmp_path / "offsite.key", "rb") as upload:
        response = admin_client.post(reverse("key_rotate"), {"source": "upload", "key_file": upload})
    assert response.status_code == 302
    assert Key.objects.get(is_active=True).key_id == "mk-from-the-safe"
    assert keyring.master_key("mk-from-the-safe") == file_bytes

    # Bad input: a clear message, nothing created.
    before = Key.objects.count()
    response = admin_client.post(reverse("key_rotate"), {"source": "paste", "pasted_key": "c2hvcnQ="})
    assert response.status_code == 400
    assert "A master key is 32 bytes (256 bits); the pasted one is 5 bytes." in response.content.decode()
    response = admin_client.post(
        reverse("key_rotate"), {"source": "paste", "pasted_key": base64.b64encode(pasted).decode()}
    )
    assert response.status_code == 400 and "already known as" in response.content.decode()
    with open(tmp_path / "offsite.key", "rb") as upload:
        response = admin_client.post(reverse("key_rotate"), {"source": "upload", "key_file": upload})
    assert response.status_code == 400 and "A key with id mk-from-the-safe exists already." in response.content.decode()
    assert Key.objects.count() == before


def test_destroying_needs_the_typed_id_and_nothing_left_needing_it(plan, admin_client, admin_user):
    backup = take_backup(plan)
    old = Key.objects.get(is_active=True)
    keys.start_rotation(admin_user)
    response = admin_client.post(reverse("key_destroy", args=[old.pk]), {"confirm_key_id": "wrong"}, follow=True)
    assert f"Type the key id {old.key_id} to confirm" in response.content.decode()
    assert Key.objects.get(pk=old.pk).destroyed_at is None

    active = Key.objects.get(is_active=True)
    response = admin_client.post(
        reverse("key_destroy", args=[active.pk]), {"confirm_key_id": active.key_id}, follow=True
    )
    assert "is the active key: rotate to a new key first" in response.content.decode()

    response = admin_client.post(reverse("key_destroy", args=[old.pk]), {"confirm_key_id": old.key_id}, follow=True)
    assert f"Destroyed {old.key_id}: its key file is deleted." in response.content.decode()
    assert not keyring.key_path(old.key_id).exists()
    assert AuditEvent.objects.filter(action="key.destroy", object_id=str(old.pk)).count() == 1
    backup.refresh_from_db()
    assert backup.key_id == active.key_id
    # The download streams the plain dump, opened with the new key alone.
    response = admin_client.post(reverse("backup_download", args=[backup.pk]))
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"PGDMP")


def test_the_reminder_opens_after_the_rotation_period_and_resolves_after_rotation(admin_user, settings):
    settings.KEY_ROTATION_DAYS = 365
    key_id, _ = keyring.active_key()
    hooks.periodic_checks()
    assert not Alert.objects.filter(kind=Alert.KEY_ROTATION_DUE).exists()

    with time_machine.travel(timezone.now() + timedelta(days=364), tick=False):
        hooks.periodic_checks()
        assert not Alert.objects.filter(kind=Alert.KEY_ROTATION_DUE).exists()
    with time_machine.travel(timezone.now() + timedelta(days=365, minutes=1), tick=False):
        hooks.periodic_checks()
        alert = Alert.objects.get(kind=Alert.KEY_ROTATION_DUE, resolved_at__isnull=True)
        assert alert.key == f"key:{key_id}"
        assert alert.title == f"Master key {key_id} is 365 days old: rotate it"
        hooks.periodic_checks()  # still due: the same alert, not a second one
        assert Alert.objects.filter(kind=Alert.KEY_ROTATION_DUE).count() == 1

        rotation, _ = keys.start_rotation(admin_user)
        hooks.periodic_checks()
        alert.refresh_from_db()
        assert alert.resolved_at is not None
        assert alert.resolution == f"Master key {key_id} was rotated: {rotation.new_key.key_id} is active now."
        assert not Alert.objects.filter(kind=Alert.KEY_ROTATION_DUE, resolved_at__isnull=True).exists()
