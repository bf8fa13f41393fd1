"""The first use of the keyring on an empty catalog: after a reinstall the
DBA copies the saved master key files back into the key directory, and the
newest of them is the active key again, instead of a new file to keep safe."""

from io import StringIO

import pytest
from django.core.management import call_command

from catalog import keyring
from catalog.engine import crypto
from catalog.models import AuditEvent, Key

pytestmark = pytest.mark.django_db


def saved_key(key_dir, key_id):
    key_dir.mkdir(mode=0o700, exist_ok=True)
    key = crypto.generate_master_key()
    crypto.write_key_file(str(key_dir / f"{key_id}.key"), key_id, key)
    return key


def files(key_dir):
    return sorted(path.name for path in key_dir.iterdir())


def test_it_takes_the_saved_key_file_as_its_active_key(key_dir):
    key = saved_key(key_dir, "mk-20250114-093000-1a2b")

    assert keyring.active_key() == ("mk-20250114-093000-1a2b", key)

    assert files(key_dir) == ["mk-20250114-093000-1a2b.key"]
    active = Key.objects.get()
    assert (active.is_active, active.origin, active.fingerprint) == (True, Key.IMPORTED, crypto.key_fingerprint(key))
    # As old as its id says: the rotation reminder counts from then.
    assert active.created_at.isoformat() == "2025-01-14T09:30:00+00:00"
    event = AuditEvent.objects.get(action="key.adopt")
    assert event.changes == {
        "key_id": "mk-20250114-093000-1a2b",
        "fingerprint": active.fingerprint,
        "saved_key_files": 1,
    }
    assert keyring.encrypt_secret({"password": "x"}).startswith("v1:mk-20250114-093000-1a2b:")


def test_of_several_saved_keys_the_newest_one_is_active_again(key_dir):
    saved_key(key_dir, "mk-20240301-120000-aaaa")
    newest = saved_key(key_dir, "mk-20250301-120000-0000")
    saved_key(key_dir, "mk-20241231-235959-ffff")

    assert keyring.active_key() == ("mk-20250301-120000-0000", newest)
    assert len(files(key_dir)) == 3 and Key.objects.count() == 1


def test_a_key_the_rebuild_registered_as_retired_becomes_active_again(key_dir):
    key = saved_key(key_dir, "mk-20250114-093000-1a2b")
    Key.objects.create(key_id="mk-20250114-093000-1a2b", fingerprint=crypto.key_fingerprint(key), is_active=False)

    assert keyring.active_key()[0] == "mk-20250114-093000-1a2b"
    assert Key.objects.get().is_active and Key.objects.get().retired_at is None


def test_it_does_not_guess_between_keys_it_cannot_order_and_leaves_other_files_alone(key_dir):
    saved_key(key_dir, "mk-20250114-093000-1a2b")
    saved_key(key_dir, "offsite-vault")  # an id of the DBA's own: no time in it
    (key_dir / "tls.key").write_text("-----BEGIN PRIVATE KEY-----\n")

    key_id, _ = keyring.active_key()

    assert key_id not in ("mk-20250114-093000-1a2b", "offsite-vault")
    assert files(key_dir) == sorted(["mk-20250114-093000-1a2b.key", "offsite-vault.key", "tls.key", f"{key_id}.key"])
    assert Key.objects.get().origin == Key.GENERATED and not AuditEvent.objects.filter(action="key.adopt").exists()


def test_a_file_that_is_not_the_key_the_catalog_knows_by_its_id_is_not_adopted(key_dir):
    saved_key(key_dir, "mk-20250114-093000-1a2b")
    Key.objects.create(key_id="mk-20250114-093000-1a2b", fingerprint="0" * 16, is_active=False)

    assert keyring.active_key()[0] != "mk-20250114-093000-1a2b"
    assert Key.objects.get(key_id="mk-20250114-093000-1a2b").fingerprint == "0" * 16


def test_a_destroyed_key_or_a_file_under_another_keys_name_is_not_adopted(key_dir):
    saved_key(key_dir, "mk-20250301-120000-0000")
    Key.objects.create(key_id="mk-20250301-120000-0000", fingerprint="f" * 16, destroyed_at="2025-06-01T00:00Z")
    crypto.write_key_file(
        str(key_dir / "mk-20260101-000000-0000.key"), "mk-20200101-000000-0000", crypto.generate_master_key()
    )

    key_id, _ = keyring.active_key()

    assert key_id not in ("mk-20250301-120000-0000", "mk-20260101-000000-0000", "mk-20200101-000000-0000")
    assert Key.objects.get(is_active=True).origin == Key.GENERATED


def test_bootstrap_says_the_saved_key_is_active_again(key_dir, admin_user):
    saved_key(key_dir, "mk-20250114-093000-1a2b")
    out = StringIO()

    call_command("bootstrap", stdout=out)

    assert "The saved master key" in out.getvalue() and "is the active key again" in out.getvalue()
    assert "A new master key was generated" not in out.getvalue()
    assert files(key_dir) == ["mk-20250114-093000-1a2b.key"]
