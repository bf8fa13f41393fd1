"""Master keys every host can use: with a key-encryption key (STRONGROOM_KEK)
they are sealed in the metadata database, so a key made or rotated on one host
opens backups and connection secrets on another host that shares the database
and the KEK, with a key directory of its own (here: empty). A wrong KEK is
refused in words; a destroyed key's sealed copy is wiped; the Keys page says
where keys are held, and its key-file export decrypts a backup with the
standalone tool. Real PostgreSQL source, copies on disk and on moto's S3."""

import base64
import io
import json
import os
import subprocess
import sys
import tarfile
import uuid

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.urls import reverse

from backupsite import envconfig
from catalog import keyring, keys, verification
from catalog.checks import MASTER_KEYS_PER_HOST, check_keys_per_host
from catalog.engine import crypto, keyseal
from catalog.models import AuditEvent, Destination, Key, KeyRotation, Source, Verification
from tests.catalog.keys.conftest import SOURCE_PASSWORD, on_host, take_backup
from tests.factories import local_destination, make_plan, pg_source, s3_destination
from tests.harness import pg
from tests.harness.sample_db import pg_restore, table_fingerprints
from tests.harness.worker import ROOT, database_url
from tests.support import restore_now

pytestmark = pytest.mark.django_db(transaction=True)

WRONG_KEK = "The key-encryption key does not open master key {}: is STRONGROOM_KEK the same on every host?"


def spellings(key):
    return [key.hex(), key.hex().upper(), base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode()]


def assert_nowhere(key, *texts):
    for text in texts:
        for spelling in spellings(key):
            assert spelling not in text


def audit_text():
    return json.dumps([[event.action, event.object_repr, event.changes] for event in AuditEvent.objects.all()])


@pytest.fixture
def plan_on_host_a(kek, source_db, tmp_path, s3_bucket, settings):
    """Host A: its own key directory, the database store. The plan's secrets
    (the source's password, the S3 secret key) are sealed with the first key."""
    on_host(settings, tmp_path / "host-a-keys")
    source = pg_source(source_db)
    source.set_secrets(password=SOURCE_PASSWORD)
    source.save()
    destinations = [local_destination(tmp_path / "disk"), s3_destination(s3_bucket)]
    return make_plan(source, destinations, encrypt=True, verify_new_backups=False, retention_mode="last", keep_last=20)


def checksum_passes(backup):
    check = verification.create_verification("test", backup, Verification.CHECKSUM, enqueue_it=False)
    check = verification.run_here(check)
    assert check.status == Verification.PASSED, check.summary


def manage_py_on_another_host(tmp_path, kek, *args):
    """manage.py as a third host runs it: a process of its own, the same
    metadata database, a key directory of its own that holds nothing."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url(connection.settings_dict),
        "STRONGROOM_KEY_DIR": str(tmp_path / "host-c-keys"),
        "STRONGROOM_KEK": base64.b64encode(kek).decode(),
    }
    argv = [sys.executable, "manage.py", *args]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_rotation_on_one_host_is_usable_on_another_at_once(
    plan_on_host_a, source_db, tmp_path, settings, admin_user, kek
):
    expected = table_fingerprints(source_db)
    backup = take_backup(plan_on_host_a)
    first_key = Key.objects.get(is_active=True)
    assert first_key.sealed_key.startswith(f"kek-v1:{keyseal.kek_fingerprint(kek)}:")

    rotation, generated = keys.start_rotation(admin_user)  # on host A; the job runs inline
    rotation.refresh_from_db()
    assert rotation.status == KeyRotation.SUCCEEDED, rotation.log
    new_key = Key.objects.get(is_active=True)
    keys.destroy_key(admin_user, first_key)  # from now on only the key made on host A opens anything
    # Host A wrote no key file: the key is in the database alone, sealed.
    assert not (tmp_path / "host-a-keys").exists() or list((tmp_path / "host-a-keys").iterdir()) == []
    assert new_key.sealed_key.startswith("kek-v1:")
    assert_nowhere(generated, new_key.sealed_key, audit_text())

    on_host(settings, tmp_path / "host-b-keys")  # host B: nothing in its key directory, nothing opened yet
    assert keyring.master_key(new_key.key_id) == generated
    backup.refresh_from_db()
    assert backup.key_id == new_key.key_id
    checksum_passes(backup)
    name = f"sr_host_b_{uuid.uuid4().hex[:8]}"
    try:
        job = restore_now(backup, target="new", database=name)
        assert job.status == "succeeded", job.summary
        assert table_fingerprints({**source_db, "dbname": name}) == expected
    finally:
        pg.drop_database(name)
    # The connection secrets, re-sealed on host A with the new key, open here.
    assert Source.objects.get().secrets()["password"] == SOURCE_PASSWORD
    assert Destination.objects.get(kind="s3").secrets()["secret_access_key"] == "testing"
    # A backup taken on host B is sealed with the key made on host A.
    second = take_backup(plan_on_host_a, label="on host b")
    assert second.key_id == new_key.key_id
    assert not (tmp_path / "host-b-keys").exists() or list((tmp_path / "host-b-keys").iterdir()) == []

    # A third host, in a process of its own, verifies both with the same KEK...
    result = manage_py_on_another_host(tmp_path, kek, "verify", "--backup", str(backup.pk), "--kind", "checksum")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Backup #{backup.pk} checksum: passed" in result.stdout
    # ...and is told in words when it was given another one.
    result = manage_py_on_another_host(tmp_path, os.urandom(32), "verify", "--backup", str(second.pk))
    assert result.returncode != 0
    assert WRONG_KEK.format(new_key.key_id) in result.stdout + result.stderr
    assert_nowhere(generated, result.stdout, result.stderr)


def test_a_wrong_or_missing_kek_is_refused_in_plain_words(kek, settings):
    key_id, key = keyring.active_key()
    sealed = Key.objects.get().sealed_key

    other = os.urandom(32)
    settings.KEY_ENCRYPTION_KEY = other
    with pytest.raises(keyring.KeyUnavailable) as refused:
        keyring.master_key(key_id)
    assert str(refused.value) == (
        WRONG_KEK.format(key_id) + f" (it was sealed under the KEK with fingerprint {keyseal.kek_fingerprint(kek)}, "
        f"and this host's is {keyseal.kek_fingerprint(other)})"
    )
    with pytest.raises(keyring.KeyUnavailable, match="does not open master key"):
        keyring.decrypt_secret(keyring.encrypt_secret({"password": "x"}, key_id=key_id))

    # While the KEK changes, the previous one still opens the keys sealed under it.
    settings.KEY_ENCRYPTION_KEY_PREVIOUS = kek
    assert keyring.master_key(key_id) == key

    settings.KEY_ENCRYPTION_KEY, settings.KEY_ENCRYPTION_KEY_PREVIOUS = None, None
    with pytest.raises(keyring.KeyUnavailable) as refused:
        keyring.master_key(key_id)
    assert str(refused.value).startswith(
        f"Master key {key_id} is sealed in the metadata database, and this host has no key-encryption key to "
        "open it: set STRONGROOM_KEK (or STRONGROOM_KEK_FILE)"
    )

    # A sealed copy moved onto another key's row does not open as that key.
    settings.KEY_ENCRYPTION_KEY = kek
    other_key = crypto.generate_master_key()
    Key.objects.create(key_id="mk-other", fingerprint=crypto.key_fingerprint(other_key), sealed_key=sealed)
    with pytest.raises(keyring.KeyUnavailable) as refused:
        keyring.master_key("mk-other")
    assert (
        str(refused.value)
        == "Master key mk-other cannot be opened: its sealed copy is damaged, or belongs to another key"
    )


def test_the_sealed_copy_round_trips_and_holds_no_plain_key(kek, key_dir):
    key_id, key = keyring.active_key()
    row = Key.objects.get()
    assert row.sealed_key.startswith(f"kek-v1:{keyseal.kek_fingerprint(kek)}:")
    assert row.fingerprint == crypto.key_fingerprint(key)
    assert not key_dir.exists()  # nothing written to this host's disk
    assert_nowhere(key, row.sealed_key, audit_text())
    assert row.sealed_key not in audit_text()

    keyring.forget_opened_keys()
    assert keyring.master_key(key_id) == key
    token = keyring.encrypt_secret({"password": SOURCE_PASSWORD})
    keyring.forget_opened_keys()
    assert keyring.decrypt_secret(token) == {"password": SOURCE_PASSWORD}
    # Sealing twice gives two different texts (a fresh nonce), both opening to the key.
    again = keyring.seal(key_id, key)
    assert again != row.sealed_key and keyring.open_sealed(key_id, row.fingerprint, again) == key


def test_a_saved_key_file_taken_back_on_a_reinstall_is_sealed_for_the_other_hosts(kek, key_dir, settings, tmp_path):
    key_dir.mkdir(mode=0o700)
    key = crypto.generate_master_key()
    crypto.write_key_file(str(key_dir / "mk-20250114-093000-1a2b.key"), "mk-20250114-093000-1a2b", key)

    assert keyring.active_key() == ("mk-20250114-093000-1a2b", key)

    row = Key.objects.get()
    assert row.origin == Key.IMPORTED and row.sealed_key.startswith(f"kek-v1:{keyseal.kek_fingerprint(kek)}:")
    on_host(settings, tmp_path / "host-b-keys")
    assert keyring.master_key(row.key_id) == key


def test_a_destroyed_key_loses_its_sealed_copy(kek, admin_user, settings, tmp_path):
    old_id, _ = keyring.active_key()
    keys.start_rotation(admin_user)
    old = Key.objects.get(key_id=old_id)
    assert old.sealed_key

    keys.destroy_key(admin_user, old)

    old.refresh_from_db()
    assert old.destroyed_at is not None and old.sealed_key == ""
    event = AuditEvent.objects.get(action="key.destroy")
    assert event.changes["sealed_copy_wiped"] is True
    on_host(settings, tmp_path / "another-host")
    with pytest.raises(keyring.KeyUnavailable, match=f"Master key {old_id} is not in .*, and it was destroyed"):
        keyring.master_key(old_id)


def test_the_keys_page_says_where_keys_are_held_and_exports_a_key_file_the_standalone_tool_uses(
    plan_on_host_a, source_db, admin_client, admin_user, tmp_path, kek
):
    expected = table_fingerprints(source_db)
    backup = take_backup(plan_on_host_a)
    keys.start_rotation(admin_user)
    old, new = Key.objects.get(is_active=False), Key.objects.get(is_active=True)
    keys.destroy_key(admin_user, old)

    page = " ".join(admin_client.get(reverse("key_list")).content.decode().split())
    assert f"the metadata database, sealed under the key-encryption key {keyseal.kek_fingerprint(kek)}" in page
    assert "a rotation here is usable on all of them at once" in page
    assert new.sealed_key.split(":")[-1] not in page and "unsealed-keys" not in page
    assert "exists only in the metadata database" in page  # the banner: no copy held yet

    response = admin_client.post(reverse("key_download", args=[new.pk]), {"password": "correct horse battery"})
    assert response.status_code == 200
    key_file = tmp_path / "exported" / f"{new.key_id}.key"
    key_file.parent.mkdir()
    key_file.write_bytes(response.content)
    assert crypto.load_key_file(str(key_file)) == (new.key_id, keyring.master_key(new.key_id))
    assert AuditEvent.objects.filter(action="key.download", object_id=str(new.pk)).exists()
    new.refresh_from_db()
    assert new.copy_held_how == Key.DOWNLOADED

    # The stored files as the backup's page gives them, decrypted away from Strongroom with that file alone.
    response = admin_client.post(reverse("backup_download_stored", args=[backup.pk]))
    assert response.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(b"".join(response.streaming_content))) as archive:
        archive.extractall(tmp_path / "stored", filter="data")
    (folder,) = (tmp_path / "stored").iterdir()
    (stored,) = [path for path in folder.iterdir() if path.name.endswith(".enc")]
    out = tmp_path / "plain.dump"
    argv = [sys.executable, "-m", "catalog.engine.decrypt", "--key-file", str(key_file), str(stored), str(out)]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    restored = f"sr_exported_{uuid.uuid4().hex[:8]}"
    conninfo = pg.create_database(restored)
    try:
        pg_restore(str(out), conninfo)
        assert table_fingerprints(conninfo) == expected
    finally:
        pg.drop_database(restored)


def test_the_keys_page_names_keys_other_hosts_cannot_find_yet(admin_client, settings):
    key_id, _ = keyring.active_key()  # a key file, made before the KEK was set
    settings.KEY_ENCRYPTION_KEY = os.urandom(32)
    page = admin_client.get(reverse("key_list")).content.decode()
    assert 'id="unsealed-keys"' in page and key_id in page and "manage.py seal_keys" in page


def test_hosts_sharing_a_metadata_database_are_told_to_seal_their_keys(settings, monkeypatch):
    monkeypatch.setitem(settings.DATABASES["default"], "ENGINE", "django.db.backends.postgresql")
    settings.KEY_ENCRYPTION_KEY, settings.KMS_KEY_ID = None, ""
    [warning] = check_keys_per_host()
    assert warning.id == MASTER_KEYS_PER_HOST == "catalog.W006"
    assert f"Master keys are files in {settings.KEY_DIR}, on this host only" in warning.msg
    assert "STRONGROOM_KEK" in warning.hint and "seal_keys" in warning.hint

    settings.KEY_ENCRYPTION_KEY = os.urandom(32)
    assert check_keys_per_host() == []
    settings.KEY_ENCRYPTION_KEY, settings.KMS_KEY_ID = None, "alias/strongroom"
    assert check_keys_per_host() == []
    settings.KMS_KEY_ID = ""
    monkeypatch.setitem(settings.DATABASES["default"], "ENGINE", "django.db.backends.sqlite3")
    assert check_keys_per_host() == []  # one host


def settings_in_a_fresh_process(tmp_path, **values):
    """The real settings module, read by `manage.py check` with an environment of its own."""
    kept = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if name in os.environ}
    env = {**kept, "STRONGROOM_DATA_DIR": str(tmp_path / "data"), "DJANGO_SETTINGS_MODULE": "backupsite.settings"}
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env={**env, **values}, capture_output=True, text=True
    )


def test_a_malformed_kek_stops_start_up_without_showing_it(tmp_path):
    result = settings_in_a_fresh_process(tmp_path, STRONGROOM_KEK="not base64, surely!")
    assert result.returncode != 0
    assert "ImproperlyConfigured: STRONGROOM_KEK is not base64: it must be 32 random bytes in base64" in result.stderr
    assert "not base64, surely" not in result.stderr

    short = base64.b64encode(b"sixteen bytes!!!").decode()
    (tmp_path / "kek").write_text(short + "\n")
    result = settings_in_a_fresh_process(tmp_path, STRONGROOM_KEK_FILE=str(tmp_path / "kek"))
    assert result.returncode != 0
    assert "STRONGROOM_KEK_FILE must be 32 bytes (256 bits) in base64, and it holds 16 bytes" in result.stderr
    assert short not in result.stderr

    (tmp_path / "kek").write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    result = settings_in_a_fresh_process(tmp_path, STRONGROOM_KEK_FILE=str(tmp_path / "kek"))
    assert result.returncode == 0, result.stderr


def test_the_previous_kek_is_checked_as_well(monkeypatch):
    monkeypatch.setenv("STRONGROOM_KEK_PREVIOUS", "%%%")
    with pytest.raises(ImproperlyConfigured, match="STRONGROOM_KEK_PREVIOUS is not base64"):
        envconfig.key_encryption_key("STRONGROOM_KEK_PREVIOUS")
    monkeypatch.delenv("STRONGROOM_KEK_PREVIOUS")
    assert envconfig.key_encryption_key("STRONGROOM_KEK_PREVIOUS") is None
