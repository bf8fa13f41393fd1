"""A Google Cloud Storage destination end to end against the GCS emulator
(tests/harness/gcs.py): a realistic PostgreSQL database backed up there
compressed and encrypted, checksummed, restored, found by the orphan scan and
the catalog rebuild, pruned, held to its quota, and tested from its form."""

import hashlib
import json
import uuid
from io import StringIO

import pytest
import requests
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from catalog import backup_runs, orphans, services
from catalog.models import Backup, Copy, Destination
from tests.factories import make_plan, pg_source
from tests.harness import pg
from tests.harness.sample_db import create_tricky_database, schema_dump, table_fingerprints
from tests.support import restore_now

pytestmark = pytest.mark.django_db(transaction=True)
GB = 2**30


def gcs_destination(bucket, name="Off-site GCS", **fields):
    """An off-site destination in the test bucket, signing in with the writer's key."""
    destination = Destination(
        name=name,
        kind="gcs",
        bucket=bucket["bucket"],
        prefix="strongroom",
        endpoint_url=bucket["endpoint_url"],
        offsite=True,
        **fields,
    )
    return services.save_destination(
        "test", destination, secrets={"service_account_json": bucket["service_account_json"]}
    )


def bucket_keys(bucket):
    return [key.removeprefix("strongroom/") for key in bucket["server"].all_keys(bucket["bucket"])]


def stored_keys(backup):
    """The object, manifest and globals keys of a backup."""
    globals_key = [backup.object_key + ".manifest.json.globals"] if backup.globals_sha256 else []
    return sorted([backup.object_key, backup.object_key + ".manifest.json", *globals_key])


def run(plan, **options):
    backup = backup_runs.start_backup("test", plan, **options)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    return backup


@pytest.fixture
def database(pg_database):
    create_tricky_database(pg_database, big_rows=2000)
    return pg_database


@pytest.fixture
def plan(database, gcs_bucket):
    return make_plan(
        pg_source(database),
        [gcs_destination(gcs_bucket)],
        format="custom",
        compression="zstd",
        encrypt=True,
        retention_mode="last",
        keep_last=10,
    )


@pytest.fixture
def new_name(pg_server):
    name = f"sr_gcs_{uuid.uuid4().hex[:8]}"
    yield name
    pg.drop_database(name)


def test_a_backup_is_stored_checksummed_and_restored_identical(plan, gcs_bucket, database, new_name):
    backup = run(plan)

    copy = backup.copies.get()
    assert copy.status == Copy.DURABLE and copy.size == backup.stored_bytes
    assert bucket_keys(gcs_bucket) == stored_keys(backup)
    stored = gcs_bucket["server"].client().bucket(gcs_bucket["bucket"]).blob(f"strongroom/{copy.key}")
    assert hashlib.sha256(stored.download_as_bytes()).hexdigest() == backup.sha256
    checksum = backup.verifications.get()  # every new backup is checksummed right after it is taken
    assert (checksum.kind, checksum.status) == ("checksum", "passed"), checksum.summary
    assert checksum.evidence["copies"][0]["sha256"] == backup.sha256

    job = restore_now(backup, target="new", database=new_name)

    assert job.status == "succeeded", job.summary
    restored = {**database, "dbname": new_name}
    assert table_fingerprints(restored) == table_fingerprints(database)
    assert schema_dump(restored) == schema_dump(database)


def test_the_orphan_scan_finds_a_stray_object_and_removes_it(plan, gcs_bucket, admin_client):
    """An unknown object is listed and removed. An upload killed mid-way
    leaves nothing to list: GCS shows only completed uploads, and keeps an
    unfinished session's bytes out of the bucket until it expires."""
    backup = run(plan)
    destination = Destination.objects.get()
    bucket = gcs_bucket["server"].client().bucket(gcs_bucket["bucket"])
    bucket.blob("strongroom/stray.dump").upload_from_string(b"left by a crash")
    session = bucket.blob("strongroom/unfinished.dump").create_resumable_upload_session()
    requests.put(session, data=b"y" * (256 << 10), headers={"Content-Range": "bytes 0-262143/*"}, timeout=10)

    assert [(o.kind, o.key) for o in orphans.scan(destination)] == [("object", "stray.dump")]
    page = admin_client.post(f"/destinations/{destination.pk}/scan/").content.decode()
    assert "stray.dump" in page and "unfinished.dump" not in page

    tokens = [o.token for o in orphans.scan(destination)]
    response = admin_client.post(f"/destinations/{destination.pk}/orphans/remove/", {"orphan": tokens})
    assert response.status_code == 302
    assert bucket_keys(gcs_bucket) == stored_keys(backup)
    assert orphans.scan(destination) == []


def test_the_catalog_comes_back_from_the_manifests_in_the_bucket(plan, gcs_bucket):
    backup = run(plan, label="pre-migration")
    before = (backup.pk, backup.sha256, backup.object_key, backup.label, backup.table_counts)

    call_command("flush", interactive=False, verbosity=0)  # the metadata database is lost
    gcs_destination(gcs_bucket)
    out, err = StringIO(), StringIO()
    call_command("rebuild_catalog", stdout=out, stderr=err)

    assert err.getvalue() == ""
    assert "Off-site GCS: 1 imported, 0 copies added, 0 already known, 0 refused" in out.getvalue()
    imported = Backup.objects.get()
    assert (imported.pk, imported.sha256, imported.object_key, imported.label, imported.table_counts) == before
    assert imported.copies.get().status == Copy.DURABLE


def test_retention_removes_pruned_backups_from_the_bucket(plan, gcs_bucket):
    plan.keep_last = 1
    plan.save()
    first = run(plan, trigger="schedule")
    second = run(plan, trigger="schedule")  # retention runs after each good backup

    first.refresh_from_db()
    assert first.is_pruned() and first.copies.get().status == Copy.PRUNED
    assert bucket_keys(gcs_bucket) == stored_keys(second)  # gone from the server, not only from the catalog


def record_stored(plan, size):
    """A backup the catalog believes takes `size` bytes in the plan's destination."""
    backup = Backup.objects.create(
        source=plan.source,
        plan=plan,
        status=Backup.SUCCEEDED,
        format="custom",
        compression="zstd",
        stored_bytes=size,
        finished_at=timezone.now(),
    )
    Copy.objects.create(
        backup=backup,
        destination=plan.destinations.get(),
        key=f"old/{backup.pk}",
        size=size,
        status=Copy.DURABLE,
        durable_at=timezone.now(),
    )
    return backup


@pytest.mark.parametrize("last_was_tiny", [False, True], ids=["refused up front", "stopped at the quota"])
def test_a_quota_keeps_a_backup_from_going_over_it(plan, gcs_bucket, last_was_tiny):
    Destination.objects.update(quota_gb=1)
    old = record_stored(plan, GB - 20_000)
    if last_was_tiny:  # no refusal up front: the backup is stopped once it passes the 20 kB left
        Backup.objects.filter(pk=old.pk).update(stored_bytes=1)

    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()

    assert backup.status == Backup.FAILED
    expected = "reached its quota" if last_was_tiny else "would go over its quota"
    assert f"Off-site GCS {expected}" in backup.error
    assert bucket_keys(gcs_bucket) == []
    assert gcs_bucket["server"].open_sessions(gcs_bucket["bucket"]) == {}


def form_values(gcs_bucket, **values):
    return {
        "name": "Off-site GCS",
        "kind": "gcs",
        "bucket": gcs_bucket["bucket"],
        "prefix": "strongroom",
        "endpoint_url": gcs_bucket["endpoint_url"],
        "service_account_json": gcs_bucket["service_account_json"],
        **values,
    }


def test_the_form_test_button_says_it_works_or_what_is_wrong(admin_client, gcs_bucket, gcs_server):
    url = reverse("destination_test")

    page = admin_client.post(url, form_values(gcs_bucket)).content.decode()
    assert f"Wrote, read and deleted a probe object in gs://{gcs_bucket['bucket']}/strongroom" in page

    forged = gcs_server.forged_key()
    page = admin_client.post(url, form_values(gcs_bucket, service_account_json=forged)).content.decode()
    assert f"Google did not accept the service account key for bucket {gcs_bucket['bucket']}" in page
    assert json.loads(forged)["private_key_id"] not in page and "PRIVATE KEY" not in page

    page = admin_client.post(url, form_values(gcs_bucket, bucket="no-such-bucket")).content.decode()
    assert "Google Cloud Storage bucket no-such-bucket does not exist" in page

    metadata = json.dumps({**json.loads(gcs_bucket["service_account_json"]), "token_uri": "http://169.254.169.254/t"})
    page = admin_client.post(url, form_values(gcs_bucket, service_account_json=metadata)).content.decode()
    assert "The sign-in URL (token_uri) of the key of Off-site GCS is refused" in page
    assert "cloud metadata service" in page


def test_a_saved_destination_is_tested_with_its_stored_key(admin_client, gcs_bucket):
    destination = gcs_destination(gcs_bucket)
    values = form_values(gcs_bucket, service_account_json="", destination_id=destination.pk)
    page = admin_client.post(reverse("destination_test"), values).content.decode()
    assert "Wrote, read and deleted a probe object" in page
