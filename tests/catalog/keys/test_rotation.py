"""Key rotation end to end, on a real PostgreSQL source with copies on local
disk and on an S3 server: rotate, destroy the old key, and every retained
backup must still verify, restore (rows identical), decrypt with the
standalone tool holding only the new key file, and come back through the
catalog rebuild from its rewritten manifests."""

import base64
import json
import subprocess
import sys
import uuid

import pytest

from catalog import keyring, keys, rebuild, verification
from catalog.engine import crypto, manifest
from catalog.models import Backup, Copy, Destination, Key, KeyRotation, Source, Verification
from catalog.services import Refused
from restore.models import RestoreJob
from tests.catalog.keys.conftest import SOURCE_PASSWORD, take_backup
from tests.harness import pg, s3
from tests.harness.sample_db import pg_restore, table_fingerprints
from tests.support import restore_now

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def plan_with_password(plan):
    source = plan.source
    source.set_secrets(password=SOURCE_PASSWORD)
    source.save()
    return plan


def manifests_of(backup, s3_bucket):
    """{destination kind: parsed manifest} read straight from the storage."""
    found = {}
    for copy in backup.copies.filter(status=Copy.DURABLE).select_related("destination"):
        found[copy.destination.kind] = json.loads(copy.destination.storage().get_bytes(copy.manifest_key))
    return found


def s3_object(s3_bucket, key):
    return (
        s3.client(s3_bucket["endpoint_url"])
        .get_object(Bucket=s3_bucket["bucket"], Key=f"strongroom/{key}")["Body"]
        .read()
    )


def restores_identically(backup, source_db, expected):
    name = f"sr_rotated_{uuid.uuid4().hex[:8]}"
    try:
        job = restore_now(backup, target="new", database=name)
        assert job.status == "succeeded", job.summary
        assert table_fingerprints({**source_db, "dbname": name}) == expected
    finally:
        pg.drop_database(name)


def decrypt(stored, out, key_id):
    """The standalone tool as a person runs it, given one key file."""
    argv = [
        sys.executable,
        "-m",
        "catalog.engine.decrypt",
        "--key-file",
        str(keyring.key_path(key_id)),
        str(stored),
        str(out),
    ]
    return subprocess.run(argv, capture_output=True, text=True)


def checksum_passes(backup):
    check = verification.create_verification("test", backup, Verification.CHECKSUM, enqueue_it=False)
    check = verification.run_here(check)
    assert check.status == Verification.PASSED, check.summary


def test_after_rotation_and_destruction_every_backup_still_restores(
    plan_with_password, source_db, s3_bucket, tmp_path, admin_user
):
    expected = table_fingerprints(source_db)
    first, second = take_backup(plan_with_password), take_backup(plan_with_password, label="second")
    old_key = Key.objects.get(is_active=True)
    assert first.key_id == second.key_id == old_key.key_id

    rotation, generated = keys.start_rotation(admin_user)  # the task runs inline in tests
    rotation.refresh_from_db()
    new_id = rotation.new_key.key_id
    assert len(generated) == 32 and rotation.new_key.origin == Key.GENERATED
    assert (rotation.status, rotation.done, rotation.total) == (KeyRotation.SUCCEEDED, 2, 2), rotation.log
    assert rotation.previous_key_id == old_key.key_id

    new_master = keyring.master_key(new_id)
    for backup in (first, second):
        backup.refresh_from_db()
        assert backup.key_id == new_id
        assert set(backup.key_wraps) == {old_key.key_id, new_id}
        for data in manifests_of(backup, s3_bucket).values():
            assert data["manifest_key_id"] == new_id
            assert manifest.verify_manifest(data, crypto.derive_manifest_key(new_master))
            assert data["encryption"]["key_wraps"] == backup.key_wraps
            assert data["encryption"]["key_id"] == old_key.key_id  # the header's, which never changes
    # The data was not re-encrypted: the stored objects are byte for byte the same.
    local_copy = first.copies.get(destination__kind="local")
    remote_copy = first.copies.get(destination__kind="s3")
    assert crypto.read_header(s3_object(s3_bucket, remote_copy.key)[:4096])[0]["key_id"] == old_key.key_id

    keys.destroy_key(admin_user, old_key)
    assert not keyring.key_path(old_key.key_id).exists()
    assert Key.objects.get(pk=old_key.pk).destroyed_at is not None
    assert list(Key.objects.filter(destroyed_at__isnull=True).values_list("key_id", flat=True)) == [new_id]

    # Connection secrets were re-sealed: they open with the new key alone.
    source = Source.objects.get()
    assert source.secret_token.startswith(f"v1:{new_id}:")
    assert source.secrets()["password"] == SOURCE_PASSWORD
    assert Destination.objects.get(kind="s3").secrets()["secret_access_key"] == s3_bucket["secret_access_key"]

    for backup in (first, second):
        backup.refresh_from_db()
        checksum_passes(backup)
        restores_identically(backup, source_db, expected)

    # The standalone tool, with only the new key file, on both copies.
    local_path = tmp_path / "disk" / local_copy.key
    result = decrypt(local_path, tmp_path / "local.dump", new_id)
    assert result.returncode == 0, result.stderr
    remote = tmp_path / "remote" / "backup.dump.zst.enc"
    remote.parent.mkdir()
    remote.write_bytes(s3_object(s3_bucket, remote_copy.key))
    (tmp_path / "remote" / (remote.name + manifest.SUFFIX)).write_bytes(s3_object(s3_bucket, remote_copy.manifest_key))
    result = decrypt(remote, tmp_path / "remote.dump", new_id)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "remote.dump").read_bytes() == (tmp_path / "local.dump").read_bytes()
    restored = f"sr_standalone_{uuid.uuid4().hex[:8]}"
    conninfo = pg.create_database(restored)
    try:
        pg_restore(str(tmp_path / "remote.dump"), conninfo)
        assert table_fingerprints(conninfo) == expected
    finally:
        pg.drop_database(restored)

    # Without the manifest, the header names the destroyed key: the tool says so.
    alone = tmp_path / "alone.enc"
    alone.write_bytes(local_path.read_bytes())
    result = decrypt(alone, tmp_path / "alone.dump", new_id)
    assert result.returncode == 2 and f"master key {old_key.key_id} is not available" in result.stderr

    # The catalog is lost; the rebuild reads the rewritten manifests.
    RestoreJob.objects.all().delete()
    Backup.objects.all().delete()
    reports = [rebuild.rebuild_from("test", destination) for destination in Destination.objects.order_by("name")]
    assert [len(report.refused) for report in reports] == [0, 0], [report.refused for report in reports]
    assert Backup.objects.count() == 2
    for backup in Backup.objects.all():
        assert backup.key_id == new_id and new_id in backup.key_wraps
        assert backup.copies.count() == 2
        checksum_passes(backup)
    restores_identically(Backup.objects.get(label="second"), source_db, expected)


def test_a_backup_that_failed_to_rewrap_blocks_destroying_its_key(plan, s3_bucket, tmp_path, admin_user):
    backup = take_backup(plan)
    old_key = Key.objects.get(is_active=True)
    local_copy = backup.copies.get(destination__kind="local")
    remote_copy = backup.copies.get(destination__kind="s3")
    local_manifest = (tmp_path / "disk" / local_copy.manifest_key).read_bytes()
    remote_manifest = s3_object(s3_bucket, remote_copy.manifest_key)
    # The S3 manifest is gone: the rotation rewrites the local one first, then fails on S3.
    client = s3.client(s3_bucket["endpoint_url"])
    client.delete_object(Bucket=s3_bucket["bucket"], Key=f"strongroom/{remote_copy.manifest_key}")

    rotation, _ = keys.start_rotation(admin_user)
    rotation.refresh_from_db()
    assert (rotation.status, rotation.done, rotation.total) == (KeyRotation.FAILED, 0, 1)
    assert f"Backup #{backup.pk}: not re-wrapped — its manifest on Off-site S3 cannot be read" in rotation.log
    assert "resume the rotation" in rotation.summary
    # Untouched: the catalog as before, the local manifest put back byte for byte.
    backup.refresh_from_db()
    assert (backup.key_id, backup.key_wraps) == (old_key.key_id, {})
    assert (tmp_path / "disk" / local_copy.manifest_key).read_bytes() == local_manifest

    with pytest.raises(Refused) as refused:
        keys.destroy_key(admin_user, old_key)
    assert str(refused.value) == (
        f"{old_key.key_id} is still needed by 1 retained backup (#{backup.pk}): no live key opens them. "
        "Resume the rotation to re-wrap them (its log says why they were not), then destroy it."
    )
    assert keyring.key_path(old_key.key_id).exists()
    assert Key.objects.get(pk=old_key.pk).destroyed_at is None

    # Put the manifest back, resume: it finishes what was left.
    client.put_object(Bucket=s3_bucket["bucket"], Key=f"strongroom/{remote_copy.manifest_key}", Body=remote_manifest)
    keys.resume_rotation(admin_user, rotation)
    rotation.refresh_from_db()
    assert (rotation.status, rotation.done, rotation.total) == (KeyRotation.SUCCEEDED, 1, 1), rotation.log
    keys.resume_rotation(admin_user, rotation)  # idempotent: nothing left to do
    rotation.refresh_from_db()
    assert (rotation.status, rotation.done, rotation.total) == (KeyRotation.SUCCEEDED, 1, 1)
    keys.destroy_key(admin_user, old_key)
    backup.refresh_from_db()
    checksum_passes(backup)


def test_a_secret_sealed_only_with_the_old_key_blocks_its_destruction(admin_user):
    source = Source(name="Sealed", engine="postgresql", host="localhost", dbname="x", user="u")
    source.set_secrets(password=SOURCE_PASSWORD)
    source.save()
    old_key = Key.objects.get(is_active=True)
    old_token = source.secret_token
    keys.start_rotation(admin_user)
    # Someone restores the old sealed value behind the rotation's back (e.g. from a dump).
    Source.objects.filter(pk=source.pk).update(secret_token=old_token)
    with pytest.raises(Refused, match=r"still needed by 1 stored secret \(source “Sealed”\)"):
        keys.destroy_key(admin_user, old_key)


def test_an_imported_key_must_be_new_and_32_bytes(admin_user):
    key = crypto.generate_master_key()
    rotation, generated = keys.start_rotation(admin_user, key=key, key_id="mk-imported-1")
    assert generated is None and rotation.new_key.origin == Key.IMPORTED
    assert keyring.master_key("mk-imported-1") == key
    with pytest.raises(Refused, match="already known as mk-imported-1"):
        keys.start_rotation(admin_user, key=key)
    with pytest.raises(Refused, match="32 bytes"):
        keys.decode_pasted_key(base64.b64encode(b"x" * 16).decode())
    with pytest.raises(Refused, match="not valid base64"):
        keys.decode_pasted_key("not base64!")
    with pytest.raises(Refused, match="letters, digits"):
        keys.start_rotation(admin_user, key=crypto.generate_master_key(), key_id="../escape")
    assert Key.objects.count() == 1 and KeyRotation.objects.count() == 1


def test_a_backup_kept_only_on_s3_is_rewrapped_from_a_ranged_read(source_db, s3_bucket, admin_user):
    from tests.factories import make_plan, pg_source, s3_destination

    plan = make_plan(pg_source(source_db), [s3_destination(s3_bucket)], encrypt=True, verify_new_backups=False)
    backup = take_backup(plan)
    old_key = Key.objects.get(is_active=True)
    copy = backup.copies.get()
    head = copy.destination.storage().read_head(copy.key, keys.HEAD_BYTES)
    assert len(head) == keys.HEAD_BYTES and s3_object(s3_bucket, copy.key).startswith(head)

    rotation, _ = keys.start_rotation(admin_user)
    rotation.refresh_from_db()
    assert rotation.status == KeyRotation.SUCCEEDED, rotation.log
    keys.destroy_key(admin_user, old_key)
    backup.refresh_from_db()
    checksum_passes(backup)


def test_a_queued_rotation_can_be_cancelled_and_resumed(plan, admin_user):
    backup = take_backup(plan)
    rotation, _ = keys.start_rotation(admin_user, enqueue=False)
    with pytest.raises(Refused, match="A key rotation is still running"):
        keys.start_rotation(admin_user)
    keys.cancel_rotation(admin_user, rotation)
    rotation.refresh_from_db()
    assert (rotation.status, rotation.summary) == (KeyRotation.CANCELLED, "Cancelled before it started.")
    assert Key.objects.count() == 2
    keys.resume_rotation(admin_user, rotation)  # queued, and run inline by the sync cluster
    rotation.refresh_from_db()
    assert (rotation.status, rotation.done, rotation.total) == (KeyRotation.SUCCEEDED, 1, 1), rotation.log
    backup.refresh_from_db()
    assert backup.key_id == rotation.new_key.key_id
