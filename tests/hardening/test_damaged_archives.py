"""Corrupt, truncated, foreign and tampered manifests and archives, on a local
and an S3 (moto) destination: the catalog rebuild refuses each with its
reason and imports nothing; checksum verification fails naming the copy;
a restore fails with the reason and creates no database."""

import json
import os
import secrets
from io import StringIO

import psycopg
import pytest
from django.core.management import call_command

from catalog import backup_runs, keyring, rebuild, verification
from catalog.engine import crypto, manifest
from catalog.models import AuditEvent, Backup, Copy, Destination, Key
from tests.factories import local_destination, make_plan, pg_source, s3_destination
from tests.harness import s3
from tests.harness.sample_db import create_tricky_database, table_fingerprints
from tests.support import execute_sql, restore_now

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def backups(pg_database, tmp_path, s3_bucket):
    """Two good backups of one plan, each on a local disk and in S3."""
    create_tricky_database(pg_database, big_rows=300)
    destinations = [local_destination(tmp_path / "disk"), s3_destination(s3_bucket)]
    plan = make_plan(
        pg_source(pg_database), destinations, retention_mode="last", keep_last=10, verify_new_backups=False
    )
    done = [backup_runs.start_backup("test", plan) for _ in range(2)]
    for backup in done:
        backup.refresh_from_db()
        assert backup.status == Backup.SUCCEEDED, backup.error
    return done


class Stored:
    """Reads and overwrites the stored bytes of a destination behind Strongroom's back."""

    def __init__(self, destination, tmp_path, s3_bucket):
        self.destination = destination
        if destination.kind == "local":
            self.root = tmp_path / "disk"
        else:
            self.client, self.bucket = s3.client(s3_bucket["endpoint_url"]), s3_bucket["bucket"]

    def read(self, key):
        if self.destination.kind == "local":
            return (self.root / key).read_bytes()
        return self.client.get_object(Bucket=self.bucket, Key=f"strongroom/{key}")["Body"].read()

    def write(self, key, data):
        if self.destination.kind == "local":
            (self.root / key).write_bytes(data)
        else:
            self.client.put_object(Bucket=self.bucket, Key=f"strongroom/{key}", Body=data)


def destinations(tmp_path, s3_bucket):
    return [Stored(d, tmp_path, s3_bucket) for d in Destination.objects.order_by("kind")]  # local, s3


def flipped(data):
    data = bytearray(data)
    data[len(data) // 2] ^= 0x01
    return bytes(data)


def signed(data, key_id=None, master=None):
    """`data` signed as Strongroom signs a manifest: by a holder of the key, so
    only the fields' own checks can refuse it."""
    key_id = key_id or data["manifest_key_id"]
    master = master or keyring.master_key(key_id)
    return manifest.dumps(
        manifest.sign_manifest({**data, "manifest_key_id": key_id}, crypto.derive_manifest_key(master))
    )


def edited(data, **fields):
    return manifest.dumps({**data, **fields})  # the old signature stays


def manifest_damage(data, tmp_path):
    """(what, new manifest bytes, the refusal expected) for one stored manifest."""
    size = data["stored_bytes"]
    foreign_master = crypto.generate_master_key()
    # A key file planted where anyone who can write to a destination could put it.
    planted = tmp_path / "planted"
    planted.with_suffix(".key").unlink(missing_ok=True)
    crypto.write_key_file(str(planted.with_suffix(".key")), "planted", foreign_master)
    planted_id = os.path.relpath(planted, keyring.key_path("x").parent)
    return [
        ("edited sha256", edited(data, sha256="0" * 64), "signature does not verify"),
        ("edited size", edited(data, stored_bytes=size + 1), "signature does not verify"),
        ("key outside the destination", edited(data, object_key="../../etc/passwd"), "signature does not verify"),
        ("huge numbers", edited(data, stored_bytes=10**30, raw_bytes=-(10**30)), "signature does not verify"),
        (
            "signed by another installation's key with the same id",
            signed(data, master=foreign_master),
            "signature does not verify",
        ),
        (
            "signed by a key that is not here",
            signed(data, key_id="mk-elsewhere", master=foreign_master),
            "Master key mk-elsewhere is not in",
        ),
        (
            "signed by a key file planted outside the key directory",
            signed(data, key_id=planted_id, master=foreign_master),
            "is not a master key id",
        ),
        ("invalid JSON", manifest.dumps(data)[:-40], "the manifest cannot be read"),
        ("binary garbage", secrets.token_bytes(300), "the manifest cannot be read"),
        ("not an object", b"[1, 2, 3]", "the manifest is not a JSON object"),
        ("nested too deep", b"[" * 200_000, "the manifest cannot be read"),
        (
            "signed, with a key outside the destination",
            signed({**data, "object_key": "../../etc/passwd"}),
            "the manifest describes '../../etc/passwd', not the object beside it",
        ),
        (
            "signed, with huge numbers",
            signed({**data, "raw_bytes": 10**30}),
            "raw_bytes is not a count the catalog can hold",
        ),
        (
            "signed, with a negative row count",
            signed({**data, "table_counts": {"public.t": -1}}),
            "row count of public.t is not a count the catalog can hold",
        ),
        ("signed, with an unknown format", signed({**data, "format": "zip"}), "unknown format 'zip'"),
        (
            "signed, with a wrong size",
            signed({**data, "stored_bytes": size + 7}),
            f"the object has {size} bytes, the manifest says {size + 7}",
        ),
        ("signed, with another checksum", signed({**data, "sha256": "ab" * 32}), "the object's SHA-256 differs"),
        ("signed, with a label too long to store", signed({**data, "label": "x" * 500}), "the catalog cannot store"),
    ]


def archive_damage(original, other):
    return [
        ("one flipped byte in the middle", flipped(original), "the object's SHA-256 differs"),
        ("truncated", original[: len(original) // 2], f"the object has {len(original) // 2} bytes"),
        ("another backup's archive", other, "the object"),  # its size or else its SHA-256 differs
        ("random bytes of the right size", secrets.token_bytes(len(original)), "the object's SHA-256 differs"),
    ]


def test_the_rebuild_refuses_damaged_manifests_and_archives_and_imports_nothing(backups, tmp_path, s3_bucket, settings):
    first, second = backups
    # The metadata database lost its backups; the storage and the keys survive.
    Backup.objects.all().delete()
    keys_before = set(Key.objects.values_list("key_id", flat=True))

    for stored in destinations(tmp_path, s3_bucket):
        manifest_key = manifest.manifest_key_for(first.object_key)
        original_manifest, original = stored.read(manifest_key), stored.read(first.object_key)
        data = json.loads(original_manifest)
        cases = [(what, (manifest_key, bad), reason) for what, bad, reason in manifest_damage(data, tmp_path)]
        cases += [
            (what, (first.object_key, bad), reason)
            for what, bad, reason in archive_damage(original, stored.read(second.object_key))
        ]
        for what, (key, bad), reason in cases:
            stored.write(key, bad)
            try:
                report = rebuild.rebuild_from("test", stored.destination)
            finally:
                stored.write(manifest_key, original_manifest)
                stored.write(first.object_key, original)
            refused = dict(report.refused)
            assert manifest_key in refused, (stored.destination.kind, what, report)
            assert reason in refused[manifest_key], (stored.destination.kind, what, refused[manifest_key])
            assert len(report.refused) == 1 and first.pk not in report.imported  # the undamaged one comes in
            assert list(Backup.objects.values_list("pk", flat=True)) == [second.pk]
        assert not Copy.objects.filter(key=first.object_key).exists()
        assert set(Key.objects.values_list("key_id", flat=True)) == keys_before
        assert not AuditEvent.objects.filter(action="backup.import", object_id=str(first.pk)).exists()

    # The command says the same: each refusal with its reason.
    disk = tmp_path / "disk"
    (disk / manifest.manifest_key_for(first.object_key)).write_bytes(b"{not json")
    out, err = StringIO(), StringIO()
    call_command("rebuild_catalog", "--destination", "Local disk", stdout=out, stderr=err)
    assert "Local disk: 0 imported, 0 copies added, 1 already known, 1 refused" in out.getvalue()
    assert f"refused {first.object_key}.manifest.json: the manifest cannot be read" in err.getvalue()
    assert list(Backup.objects.values_list("pk", flat=True)) == [second.pk]

    # A destination outside LOCAL_DESTINATION_ROOTS is not read at all.
    settings.LOCAL_DESTINATION_ROOTS = [tmp_path / "elsewhere"]
    out = StringIO()
    call_command("rebuild_catalog", "--destination", "Local disk", stdout=out)
    assert "Local disk: not read: " in out.getvalue() and "LOCAL_DESTINATION_ROOTS" in out.getvalue()


def database_exists(server, name):
    with psycopg.connect(**{**server, "dbname": "postgres"}) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def test_damaged_archives_fail_verification_and_restore_on_both_destinations(
    backups, tmp_path, s3_bucket, pg_server, pg_database
):
    first, second = backups
    stores = destinations(tmp_path, s3_bucket)
    originals = [stored.read(first.object_key) for stored in stores]
    damages = archive_damage(originals[0], stores[0].read(second.object_key))
    for index, (what, _, _) in enumerate(damages):
        for stored, original in zip(stores, originals, strict=True):
            stored.write(first.object_key, archive_damage(original, stored.read(second.object_key))[index][1])
        try:
            check = verification.create_verification("test", first, "checksum")
            job = restore_now(first, target="new", database="never_restored")
        finally:
            for stored, original in zip(stores, originals, strict=True):
                stored.write(first.object_key, original)
        check.refresh_from_db()
        assert check.status == "failed", what
        assert "Copy on Local disk (" in check.summary and "Copy on Off-site S3 (s3://" in check.summary, what
        assert check.summary.count("Copy on ") == 2 and "is damaged" in check.summary, check.summary
        assert job.status == "failed", (what, job.summary)
        assert "No copy could be read: Local disk: " in job.summary and "; Off-site S3: " in job.summary, job.summary
        assert not database_exists(pg_server, "never_restored")
        assert not database_exists(pg_server, job.report["scratch_database"])  # dropped again
    assert Copy.objects.filter(backup=first, verified_at__isnull=False).count() == 0

    # Into the source database itself (after its safety backup): left exactly as it was.
    execute_sql(pg_database, "DELETE FROM big_ledger WHERE id <= 10")
    before = table_fingerprints(pg_database)
    for stored, original in zip(stores, originals, strict=True):
        stored.write(first.object_key, flipped(original))
    try:
        job = restore_now(
            first,
            target="existing",
            database=pg_database["dbname"],
            tables=["public.big_ledger"],
            mode="full",
            confirmed_name=pg_database["dbname"],
        )
    finally:
        for stored, original in zip(stores, originals, strict=True):
            stored.write(first.object_key, original)
    assert job.status == "failed" and "No copy could be read: Local disk: " in job.summary, job.summary
    assert table_fingerprints(pg_database) == before
    assert not database_exists(pg_server, job.report["scratch_database"])

    # Put back, the same backup verifies and restores.
    check = verification.create_verification("test", first, "checksum")
    check.refresh_from_db()
    assert check.status == "passed", check.summary


def test_damaged_manifests_fail_checksum_verification_on_both_destinations(backups, tmp_path, s3_bucket):
    first, _ = backups
    manifest_key = manifest.manifest_key_for(first.object_key)
    for stored in destinations(tmp_path, s3_bucket):
        original = stored.read(manifest_key)
        data = json.loads(original)
        cases = [
            ("edited checksum", edited(data, sha256="0" * 64), "the manifest's signature does not verify"),
            (
                "signed, with another size",
                signed({**data, "stored_bytes": 1}),
                "checksum or size differs from the catalog",
            ),
            ("invalid JSON", original[:-40], "the manifest cannot be read"),
            ("not an object", b'"just a string"', "the manifest is not a JSON object"),
            (
                "signed by a planted key file",
                signed(data, key_id="../../../x", master=crypto.generate_master_key()),
                "is not a master key id",
            ),
        ]
        for what, bad, reason in cases:
            stored.write(manifest_key, bad)
            try:
                check = verification.create_verification("test", first, "checksum")
            finally:
                stored.write(manifest_key, original)
            check.refresh_from_db()
            assert check.status == "failed", what
            assert check.summary.startswith(f"Copy on {stored.destination.name} (") and reason in check.summary, (
                what,
                check.summary,
            )
            assert check.summary.count("Copy on ") == 1  # the other copy is intact
