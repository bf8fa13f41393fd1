"""An Azure Blob destination end to end, on Azurite (tests/harness/azurite.py):
a real PostgreSQL database backed up (compressed and encrypted) into a
container, checked and restored from it; the orphan scan, the catalog
rebuild, retention and quotas acting on what is really in the container;
and the form's Test button."""

from io import StringIO
from urllib.parse import parse_qs, quote

import pytest
from django.core.management import call_command
from django.utils import timezone

from catalog import backup_runs, orphans, services, verification
from catalog.models import Backup, Copy, Destination, Verification
from tests.factories import make_plan, pg_source
from tests.harness import azurite, pg
from tests.harness.sample_db import create_tricky_database, schema_dump, table_fingerprints
from tests.support import restore_now

pytestmark = pytest.mark.django_db(transaction=True)
GB = 2**30


def azure_destination(container, name="Off-site Azure", **fields):
    """An off-site Azure destination on the test container, with the account key."""
    destination = Destination(
        name=name,
        kind="azure",
        bucket=container["container"],
        prefix="strongroom",
        endpoint_url=container["endpoint_url"],
        account_name=container["account_name"],
        offsite=True,
        **fields,
    )
    return services.save_destination("test", destination, secrets={"account_key": container["account_key"]})


def stored(container):
    """The committed blobs under the destination's prefix, relative to it."""
    return [name.removeprefix("strongroom/") for name in azurite.committed_blobs(container)]


def stored_keys(backup):
    """The object, manifest and globals keys of a PostgreSQL backup."""
    return sorted(
        [backup.object_key, backup.object_key + ".manifest.json", backup.object_key + ".manifest.json.globals"]
    )


@pytest.fixture
def source(pg_database):
    create_tricky_database(pg_database, big_rows=2000)
    return pg_source(pg_database)


def run(plan):
    backup = backup_runs.start_backup("test", plan, trigger="schedule")
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    return backup


def test_a_backup_goes_to_azure_is_verified_and_restores_identical(source, azure_container, pg_database):
    plan = make_plan(
        source,
        [azure_destination(azure_container)],
        compression="zstd",
        encrypt=True,
        verify_new_backups=False,
        retention_mode="last",
        keep_last=10,
    )

    backup = run(plan)

    copy = backup.copies.get()
    assert copy.status == Copy.DURABLE and backup.encrypted and backup.compression == "zstd"
    assert stored(azure_container) == stored_keys(backup)
    assert azurite.uncommitted_blobs(azure_container) == []
    blob = azurite.container_client(azure_container).get_blob_client(f"strongroom/{copy.key}")
    assert blob.get_blob_properties().size == copy.size == backup.stored_bytes

    checksum = verification.create_verification("test", backup, Verification.CHECKSUM, enqueue_it=False)
    checksum = verification.run_here(checksum)
    assert checksum.status == Verification.PASSED, checksum.summary

    name = f"sr_azure_{backup.pk}_{timezone.now():%H%M%S}"
    job = restore_now(backup, target="new", database=name)
    try:
        assert job.status == "succeeded", job.summary
        assert job.report["copy"] == "Off-site Azure"
        restored = {**pg_database, "dbname": name}
        assert schema_dump(restored) == schema_dump(pg_database)
        assert table_fingerprints(restored) == table_fingerprints(pg_database)
    finally:
        pg.drop_database(name)


def test_the_orphan_scan_finds_and_removes_a_partial_and_an_unknown_object(source, azure_container, admin_client):
    destination = azure_destination(azure_container)
    backup = run(make_plan(source, [destination]))
    container = azurite.container_client(azure_container)
    container.upload_blob("strongroom/stray.dump", b"left by hand")
    unfinished = container.get_blob_client("strongroom/unfinished.dump")
    unfinished.stage_block("block-1", b"y" * 100)  # a write killed before it committed

    found = orphans.scan(destination)
    assert {(o.kind, o.key, o.size) for o in found} == {
        ("object", "stray.dump", 12),
        ("partial", "unfinished.dump", 100),
    }
    page = admin_client.post(f"/destinations/{destination.pk}/scan/").content.decode()
    assert "2 items the catalog does not know" in page and "unfinished.dump" in page

    response = admin_client.post(
        f"/destinations/{destination.pk}/orphans/remove/", {"orphan": [o.token for o in found]}
    )

    assert response.status_code == 302
    assert stored(azure_container) == stored_keys(backup)
    assert azurite.uncommitted_blobs(azure_container) == []
    assert orphans.scan(destination) == []


def test_the_catalog_comes_back_from_the_manifests_in_the_container(source, azure_container):
    backup = run(make_plan(source, [azure_destination(azure_container)]))
    before = (backup.pk, backup.sha256, backup.object_key, backup.table_counts)

    call_command("flush", interactive=False, verbosity=0)  # the metadata database is lost
    azure_destination(azure_container)
    out, err = StringIO(), StringIO()
    call_command("rebuild_catalog", stdout=out, stderr=err)

    assert err.getvalue() == ""
    assert "Off-site Azure: 1 imported, 0 copies added, 0 already known, 0 refused" in out.getvalue()
    imported = Backup.objects.get()
    assert (imported.pk, imported.sha256, imported.object_key, imported.table_counts) == before
    assert imported.copies.get().status == Copy.DURABLE


def test_retention_removes_pruned_backups_from_the_container(source, azure_container):
    plan = make_plan(source, [azure_destination(azure_container)], retention_mode="last", keep_last=1)

    first = run(plan)
    assert stored(azure_container) == stored_keys(first)
    second = run(plan)  # retention runs after each good backup

    first.refresh_from_db()
    assert first.is_pruned() and first.copies.get().status == Copy.PRUNED
    assert stored(azure_container) == stored_keys(second)


def test_a_quota_refuses_a_backup_up_front_and_stops_one_that_grows_past_it(source, azure_container):
    destination = azure_destination(azure_container, quota_gb=1)
    plan = make_plan(source, [destination], retention_mode="last", keep_last=50)
    now = timezone.now()
    earlier = Backup.objects.create(
        source=plan.source, plan=plan, status=Backup.SUCCEEDED, format="custom", stored_bytes=GB, finished_at=now
    )
    Copy.objects.create(
        backup=earlier, destination=destination, key="old/1", size=GB - 1000, status=Copy.DURABLE, durable_at=now
    )

    refused = backup_runs.start_backup("test", plan)
    refused.refresh_from_db()
    assert refused.status == Backup.FAILED
    assert "Off-site Azure would go over its quota" in refused.error

    Backup.objects.filter(pk=earlier.pk).update(stored_bytes=1)  # the last one was tiny: no refusal up front
    Copy.objects.filter(backup=earlier).update(size=GB - 20_000)
    stopped = backup_runs.start_backup("test", plan)
    stopped.refresh_from_db()
    assert stopped.status == Backup.FAILED
    assert "Off-site Azure reached its quota of 1.0 GB; the copy was stopped and removed." in stopped.error
    assert azurite.committed_blobs(azure_container) == [] and azurite.uncommitted_blobs(azure_container) == []


def test_the_test_button_says_it_works_or_what_is_wrong(admin_client, azure_container):
    form = {
        "name": "Azure",
        "kind": "azure",
        "bucket": azure_container["container"],
        "prefix": "strongroom",
        "endpoint_url": azure_container["endpoint_url"],
        "account_name": azure_container["account_name"],
    }

    ok = admin_client.post("/destinations/test/", {**form, "account_key": azure_container["account_key"]})
    wrong = admin_client.post("/destinations/test/", {**form, "account_key": "V3Jvbmcga2V5IGZvciB0aGUgdGVzdA=="})
    sas = azurite.container_sas(azure_container, "rl")
    read_only = admin_client.post("/destinations/test/", {**form, "account_name": "", "sas_token": sas})
    missing = admin_client.post(
        "/destinations/test/", {**form, "bucket": "no-such-container", "account_key": azure_container["account_key"]}
    )

    container = azure_container["container"]
    assert f"Wrote, read and deleted a probe object in azure://devstoreaccount1/{container}/strongroom" in text(ok)
    assert "Azure rejected the credentials for container" in text(wrong)
    assert "V3Jvbmcga2V5IGZvciB0aGUgdGVzdA==" not in wrong.content.decode()
    assert "Azure denied access to container" in text(read_only)
    signature = parse_qs(sas)["sig"][0]
    assert signature not in read_only.content.decode() and quote(signature) not in read_only.content.decode()
    assert "Azure container no-such-container does not exist in storage account devstoreaccount1" in text(missing)
    assert azurite.committed_blobs(azure_container) == [] and not Destination.objects.exists()


def test_the_form_refuses_a_sas_token_in_the_endpoint_url(admin_client, azure_container):
    sas = azurite.container_sas(azure_container)
    response = admin_client.post(
        "/destinations/new/",
        {
            "name": "Azure",
            "kind": "azure",
            "bucket": azure_container["container"],
            "endpoint_url": f"{azure_container['endpoint_url']}?{sas}",
            "account_name": azure_container["account_name"],
        },
    )
    assert "Give the blob service URL without a query" in text(response)
    assert not Destination.objects.exists()


def text(response):
    return " ".join(response.content.decode().replace("&#x27;", "'").split())
