"""`manage.py seal_keys`: moving the key files of a one-host install into the
metadata database, removing the files once the sealed copies open, and
re-sealing every key under a new KEK; each step audited, each run again
changing nothing. Real backups (PostgreSQL source, copies on disk and S3)
prove the keys still open them on a host with no key file."""

import base64
import os
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from catalog import keyring, keys, verification
from catalog.engine import keyseal
from catalog.models import AuditEvent, Key, KeyRotation, Verification
from tests.catalog.keys.conftest import on_host, take_backup

pytestmark = pytest.mark.django_db(transaction=True)


def seal_keys(*args):
    out = StringIO()
    call_command("seal_keys", *args, stdout=out)
    return out.getvalue()


def checksum_passes(backup):
    check = verification.create_verification("test", backup, Verification.CHECKSUM, enqueue_it=False)
    check = verification.run_here(check)
    assert check.status == Verification.PASSED, check.summary


def files(key_dir):
    return sorted(path.name for path in key_dir.iterdir()) if key_dir.exists() else []


def sealed_under(key_id):
    scheme, kek_fp, _ = keyseal.parse(Key.objects.get(key_id=key_id).sealed_key)
    return scheme, kek_fp


def test_it_moves_the_key_files_into_the_database_then_reseals_them_under_a_new_kek(
    plan, admin_user, settings, key_dir, tmp_path
):
    # One host, keys as files: a backup, then a rotation, so two live keys and a backup wrapped for both.
    backup = take_backup(plan)
    rotation, _ = keys.start_rotation(admin_user)
    rotation.refresh_from_db()
    assert rotation.status == KeyRotation.SUCCEEDED, rotation.log
    old_id, new_id = rotation.previous_key_id, rotation.new_key.key_id
    assert files(key_dir) == sorted([f"{old_id}.key", f"{new_id}.key"])
    with pytest.raises(CommandError, match="Keys are kept as files on this host: set STRONGROOM_KEK"):
        seal_keys()

    first_kek = os.urandom(32)
    settings.KEY_ENCRYPTION_KEY = first_kek
    out = seal_keys()
    assert f"{old_id}: sealed from its key file, sealed under the key-encryption key" in out
    assert "Sealed 2, already sealed 0, files removed 0, left as they were 0." in out
    for key_id in (old_id, new_id):
        assert sealed_under(key_id) == ("kek-v1", keyseal.kek_fingerprint(first_kek))
    events = AuditEvent.objects.filter(action="key.seal").order_by("id")
    assert [event.changes["key_id"] for event in events] == [old_id, new_id]
    assert events[0].changes["was"] == {"scheme": "key file only"}
    assert events[0].changes["now"] == {"scheme": "kek-v1", "kek": keyseal.kek_fingerprint(first_kek)}
    assert files(key_dir) == sorted([f"{old_id}.key", f"{new_id}.key"])  # kept until asked

    # Again: nothing to do, nothing audited.
    out = seal_keys()
    assert "Sealed 0, already sealed 2, files removed 0" in out and f"{new_id}: already sealed under" in out
    assert AuditEvent.objects.filter(action="key.seal").count() == 2

    # Another host, with no key file, opens the backup already.
    on_host(settings, tmp_path / "host-b-keys")
    backup.refresh_from_db()
    checksum_passes(backup)

    # Back on the first host: the files go once the sealed copies are read back.
    on_host(settings, key_dir)
    out = seal_keys("--remove-files")
    assert "files removed 2" in out and f"{old_id}: its file {key_dir / (old_id + '.key')} is removed" in out
    assert files(key_dir) == []
    assert AuditEvent.objects.filter(action="key.file.remove").count() == 2
    on_host(settings, key_dir)
    checksum_passes(backup)
    assert "files removed 0" in seal_keys("--remove-files")

    # A new KEK: with only the new one, the keys sealed under the first do not open, and stay as they were.
    second_kek = os.urandom(32)
    settings.KEY_ENCRYPTION_KEY = second_kek
    out = StringIO()
    with pytest.raises(CommandError, match=f"Not sealed: {old_id}, {new_id}"):
        call_command("seal_keys", stdout=out)
    assert (
        f"{new_id}: left as it was: there is no file of it in {key_dir}, and its sealed copy does not open here "
        f"(it was sealed under the KEK with fingerprint {keyseal.kek_fingerprint(first_kek)}, and this host's is "
        f"{keyseal.kek_fingerprint(second_kek)})"
    ) in out.getvalue()
    assert sealed_under(new_id) == ("kek-v1", keyseal.kek_fingerprint(first_kek))

    # Given the previous one in a file, it re-seals them under the new one.
    previous_file = tmp_path / "previous-kek"
    previous_file.write_text(base64.b64encode(first_kek).decode() + "\n")
    out = seal_keys("--previous-kek-file", str(previous_file))
    assert "Sealed 2, already sealed 0" in out and f"{new_id}: sealed again, sealed under" in out
    for key_id in (old_id, new_id):
        assert sealed_under(key_id) == ("kek-v1", keyseal.kek_fingerprint(second_kek))
    event = AuditEvent.objects.filter(action="key.seal").latest("id")
    assert event.changes["was"]["kek"] == keyseal.kek_fingerprint(first_kek)
    assert event.changes["now"]["kek"] == keyseal.kek_fingerprint(second_kek)
    assert "already sealed 2" in seal_keys()

    # Only the new KEK now: every host with it opens the backup, restored secrets included.
    on_host(settings, tmp_path / "host-c-keys")
    assert settings.KEY_ENCRYPTION_KEY_PREVIOUS is None
    backup.refresh_from_db()
    checksum_passes(backup)
    assert plan.source.secrets() is not None

    # A KEK change the other way, with the previous one in the environment as every host would have it.
    settings.KEY_ENCRYPTION_KEY, settings.KEY_ENCRYPTION_KEY_PREVIOUS = first_kek, second_kek
    assert "Sealed 2" in seal_keys()
    settings.KEY_ENCRYPTION_KEY_PREVIOUS = None
    on_host(settings, tmp_path / "host-d-keys")
    assert keyring.master_key(new_id)
    for event in AuditEvent.objects.filter(action__startswith="key."):
        assert "sealed_key" not in event.changes


def test_a_key_whose_file_is_elsewhere_is_named_and_the_others_are_sealed(admin_user, settings, key_dir, tmp_path):
    keyring.active_key()
    rotation, _ = keys.start_rotation(admin_user)
    old_id = rotation.previous_key_id
    (key_dir / f"{old_id}.key").rename(tmp_path / "on-the-other-host.key")
    keyring._read_key.cache_clear()
    (key_dir / "tls.key").write_text("not a master key\n")
    settings.KEY_ENCRYPTION_KEY = os.urandom(32)

    out = StringIO()
    with pytest.raises(CommandError, match=f"Not sealed: {old_id} "):
        call_command("seal_keys", stdout=out)

    text = out.getvalue()
    assert f"{old_id}: left as it was: there is no file of it in {key_dir}, and it is not sealed yet." in text
    assert "Run this on the host that has its file" in text
    assert f"{key_dir / 'tls.key'}: left alone: not a live key of this catalog." in text
    assert Key.objects.get(key_id=rotation.new_key.key_id).sealed_key.startswith("kek-v1:")
    assert Key.objects.get(key_id=old_id).sealed_key == ""
