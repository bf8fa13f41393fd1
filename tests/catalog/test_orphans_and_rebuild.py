"""Orphans are found and removed on request; the catalog comes back from the
manifests after the metadata database is lost."""

import json
from io import StringIO

import pytest
from django.core.management import call_command

from catalog import backup_runs, orphans
from catalog.models import AuditEvent, Backup, Copy, Destination, Source
from tests.factories import local_destination, make_plan, pg_source, s3_destination
from tests.harness import s3
from tests.harness.sample_db import create_tricky_database
from tests.support import files_under

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def plan(pg_database, tmp_path, s3_bucket):
    create_tricky_database(pg_database, big_rows=200)
    destinations = [local_destination(tmp_path / "disk"), s3_destination(s3_bucket)]
    return make_plan(pg_source(pg_database), destinations, retention_mode="last", keep_last=10)


def run(plan):
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    return backup


def test_orphans_are_listed_and_removed_on_request_leaving_backups_alone(plan, tmp_path, s3_bucket, admin_client):
    backup = run(plan)
    disk, bucket = Destination.objects.get(kind="local"), Destination.objects.get(kind="s3")
    root = tmp_path / "disk"
    (root / "stray.dump").write_bytes(b"left by a crash")
    (root / "nightly").mkdir(exist_ok=True)
    (root / "nightly" / "x.dump.zst.enc.partial-1a2b").write_bytes(b"half")
    (root / "gone.dump.manifest.json").write_text("{}")
    client = s3.client(s3_bucket["endpoint_url"])
    client.put_object(Bucket=s3_bucket["bucket"], Key="strongroom/stray.dump", Body=b"x")
    upload = client.create_multipart_upload(Bucket=s3_bucket["bucket"], Key="strongroom/unfinished.dump")
    client.upload_part(
        Bucket=s3_bucket["bucket"],
        Key="strongroom/unfinished.dump",
        UploadId=upload["UploadId"],
        PartNumber=1,
        Body=b"y" * 100,
    )

    assert {(o.kind, o.key) for o in orphans.scan(disk)} == {
        ("object", "stray.dump"),
        ("partial", "nightly/x.dump.zst.enc.partial-1a2b"),
        ("manifest", "gone.dump.manifest.json"),
    }
    found = orphans.scan(bucket)
    assert {(o.kind, o.key) for o in found} == {("object", "stray.dump"), ("partial", "unfinished.dump")}
    page = admin_client.post(f"/destinations/{bucket.pk}/scan/").content.decode()
    assert "2 items the catalog does not know" in page and "unfinished.dump" in page

    for destination in (disk, bucket):
        tokens = [o.token for o in orphans.scan(destination)]
        response = admin_client.post(f"/destinations/{destination.pk}/orphans/remove/", {"orphan": tokens})
        assert response.status_code == 302
    kept = [backup.object_key, backup.object_key + ".manifest.json", backup.object_key + ".manifest.json.globals"]
    assert files_under(root) == sorted(kept)
    assert s3.all_keys(s3_bucket["endpoint_url"], s3_bucket["bucket"]) == sorted("strongroom/" + key for key in kept)
    assert s3.open_uploads(s3_bucket["endpoint_url"], s3_bucket["bucket"]) == []
    assert orphans.scan(disk) == [] and orphans.scan(bucket) == []
    event = AuditEvent.objects.filter(action="destination.orphans_removed").first()
    assert event and event.changes["errors"] == []


def test_a_whole_backup_unknown_to_the_catalog_is_offered_for_import_not_removal(plan, admin_client):
    backup = run(plan)
    disk = Destination.objects.get(kind="local")
    Copy.objects.filter(backup=backup, destination=disk).delete()  # as if the catalog forgot it

    assert [(o.kind, o.key) for o in orphans.scan(disk)] == [("backup", backup.object_key)]
    page = admin_client.post(f"/destinations/{disk.pk}/scan/").content.decode()
    assert "import it with the catalog rebuild" in page
    assert 'value="backup:' in page and " checked" not in page


def snapshot():
    return sorted(
        (
            b.pk,
            b.sha256,
            b.object_key,
            b.stored_bytes,
            json.dumps(b.table_counts, sort_keys=True),
            b.label,
            sorted(c.destination.name for c in b.copies.filter(status=Copy.DURABLE)),
        )
        for b in Backup.objects.all()
    )


def test_the_catalog_comes_back_from_the_manifests(plan, tmp_path, s3_bucket):
    run(plan)
    labelled = backup_runs.start_backup("test", plan, label="pre-migration")
    assert Backup.objects.get(pk=labelled.pk).status == Backup.SUCCEEDED
    before = snapshot()
    assert len(before) == 2 and all(len(row[-1]) == 2 for row in before)

    # The metadata database is lost; the key directory and the storage survive.
    call_command("flush", interactive=False, verbosity=0)
    assert Backup.objects.count() == 0
    local_destination(tmp_path / "disk")
    s3_destination(s3_bucket)

    out, err = StringIO(), StringIO()
    call_command("rebuild_catalog", stdout=out, stderr=err)
    assert err.getvalue() == ""
    assert "Local disk: 2 imported, 0 copies added, 0 already known, 0 refused" in out.getvalue()
    assert "Off-site S3: 0 imported, 2 copies added, 0 already known, 0 refused" in out.getvalue()
    assert snapshot() == before
    source = Source.objects.get()
    assert (source.engine, source.dbname) == ("postgresql", plan.source.dbname)
    assert AuditEvent.objects.filter(action="backup.import").count() == 4

    out = StringIO()
    call_command("rebuild_catalog", stdout=out)
    assert out.getvalue().count("0 imported, 0 copies added, 2 already known, 0 refused") == 2
    assert snapshot() == before

    # New backups get new ids after the imported ones.
    new_plan = make_plan(Source.objects.get(), list(Destination.objects.all()), name="Again")
    assert run(new_plan).pk > max(row[0] for row in before)


def test_a_tampered_manifest_is_refused(plan, tmp_path):
    backup = run(plan)
    path = tmp_path / "disk" / (backup.object_key + ".manifest.json")
    data = json.loads(path.read_text())
    data["label"] = "forged"
    path.write_text(json.dumps(data))
    Backup.objects.all().delete()

    err = StringIO()
    call_command("rebuild_catalog", "--destination", "Local disk", stdout=StringIO(), stderr=err)
    assert "signature does not verify" in err.getvalue()
    assert Backup.objects.count() == 0


def test_the_admin_action_imports_too(plan, admin_client, admin_user):
    backup = run(plan)
    before = snapshot()
    Backup.objects.all().delete()
    admin_user.is_staff = True
    admin_user.save()

    response = admin_client.post(
        "/admin/catalog/destination/",
        {
            "action": "import_backups",
            "_selected_action": [d.pk for d in Destination.objects.all()],
        },
        follow=True,
    )

    page = response.content.decode()
    assert "Local disk: 1 imported, 0 copies added" in page and "Off-site S3: 0 imported, 1 copy added" in page
    assert snapshot() == before and Backup.objects.get().pk == backup.pk
