"""Pins, legal holds, labels and exact times survive the loss of the catalog:
they are in the signed manifest, a later change reaches every destination as
a signed hold record, and a rebuilt catalog keeps the same backups retention
kept before."""

import json
from io import StringIO

import pytest
from django.core.management import call_command

from catalog import backup_runs, holds, lifecycle, orphans, services
from catalog.engine import manifest
from catalog.models import AuditEvent, Backup, Destination
from tests.factories import local_destination, make_plan, pg_source, s3_destination
from tests.harness import s3
from tests.harness.sample_db import create_tricky_database
from tests.support import files_under

pytestmark = pytest.mark.django_db(transaction=True)

HOLD_FIELDS = (
    "pinned",
    "legal_hold",
    "hold_reason",
    "label",
    "created_at",
    "started_at",
    "finished_at",
    "hold_changed_at",
)


@pytest.fixture
def plan(pg_database, tmp_path, s3_bucket):
    create_tricky_database(pg_database, big_rows=50)
    destinations = [local_destination(tmp_path / "disk"), s3_destination(s3_bucket)]
    # Retention runs after every backup: it keeps them all until the test tightens it. Labelled
    # backups are judged by that rule too, at once (keep_manual_days=0): pins alone keep them here.
    return make_plan(
        pg_source(pg_database),
        destinations,
        retention_mode="last",
        keep_last=10,
        verify_new_backups=False,
        keep_manual_days=0,
    )


def keep_only_the_last(plan):
    plan.keep_last = 1
    plan.save(update_fields=["keep_last"])


def run(plan, label=""):
    backup = backup_runs.start_backup("test", plan, label=label, trigger="schedule")
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    return backup


def state():
    return {b.pk: {name: getattr(b, name) for name in HOLD_FIELDS} for b in Backup.objects.all()}


def four_backups(plan):
    """Pinned, legal hold, pinned then released, and a newest one with nothing."""
    pinned, held, released, newest = run(plan), run(plan, "pre-migration"), run(plan), run(plan)
    assert lifecycle.pin_backup("test", pinned, "Quarter-end close") == []
    assert lifecycle.pin_backup("test", held, "Litigation 2026-17: keep everything", legal_hold=True) == []
    assert lifecycle.pin_backup("test", released, "Until the audit is over") == []
    assert lifecycle.unpin_backup("test", released) == []
    return pinned, held, released, newest


def forget_everything():
    """The catalog loses its backups; sources, plans, destinations and keys stay."""
    Backup.objects.all().delete()
    assert Backup.objects.count() == 0


def rebuild(*destinations):
    out, err = StringIO(), StringIO()
    call_command(
        "rebuild_catalog", *[arg for name in destinations for arg in ("--destination", name)], stdout=out, stderr=err
    )
    return out.getvalue(), err.getvalue()


def test_a_rebuild_brings_back_pins_holds_labels_and_exact_times(plan, tmp_path):
    pinned, held, released, newest = four_backups(plan)
    before = state()
    assert before[pinned.pk]["pinned"] and before[held.pk]["legal_hold"]
    assert not before[released.pk]["pinned"] and before[released.pk]["hold_changed_at"] is not None
    # created_at is when it was queued, started_at when a worker took it: not the same instant.
    assert before[pinned.pk]["created_at"] != before[pinned.pk]["started_at"]
    keep_only_the_last(plan)
    kept_before = {row.backup.pk for row in lifecycle.preview(plan) if row.keep}
    assert kept_before == {pinned.pk, held.pk, newest.pk}

    forget_everything()
    out, err = rebuild()

    assert err == ""
    assert "Local disk: 4 imported, 0 copies added, 0 already known, 0 refused" in out
    assert "Off-site S3: 0 imported, 4 copies added, 0 already known, 0 refused" in out
    assert state() == before
    # Retention after the rebuild keeps what it kept before, and prunes only the released one.
    report = lifecycle.prune_plan("test", plan)
    assert [pk for pk, _ in report.pruned] == [released.pk]
    assert {b.pk for b in Backup.objects.filter(pruned_at__isnull=True)} == kept_before
    # Its object, manifest and hold record are gone; the kept ones' are there.
    left = files_under(tmp_path / "disk")
    assert not any(name.startswith(released.object_key) for name in left)
    assert manifest.hold_key_for(manifest.manifest_key_for(pinned.object_key)) in left


@pytest.mark.parametrize("destination", ["Local disk", "Off-site S3"])
def test_each_destination_alone_is_enough(plan, destination):
    four_backups(plan)
    before = state()

    forget_everything()
    out, err = rebuild(destination)

    assert err == "" and f"{destination}: 4 imported" in out
    assert state() == before
    events = AuditEvent.objects.filter(action="backup.import")
    assert sorted(e.changes["hold"] for e in events) == ["legal hold", "none", "none", "pinned"]


def test_the_hold_record_is_signed_beside_the_manifest_and_the_manifest_holds_the_times(plan, tmp_path, s3_bucket):
    backup = run(plan, "before-upgrade")
    lifecycle.pin_backup("test", backup, "Keep for the upgrade")
    backup.refresh_from_db()
    manifest_key = manifest.manifest_key_for(backup.object_key)

    data = json.loads((tmp_path / "disk" / manifest_key).read_text())
    assert data["label"] == "before-upgrade"
    assert data["created_at"] == backup.created_at.isoformat()
    assert data["started_at"] == backup.started_at.isoformat()
    assert data["finished_at"] == backup.finished_at.isoformat()
    assert (data["pinned"], data["legal_hold"], data["hold_reason"]) == (False, False, "")  # pinned afterwards
    record = json.loads((tmp_path / "disk" / manifest.hold_key_for(manifest_key)).read_text())
    assert {
        k: record[k]
        for k in ("kind", "backup_id", "object_key", "sha256", "pinned", "legal_hold", "hold_reason", "changed_at")
    } == {
        "kind": "hold",
        "backup_id": backup.pk,
        "object_key": backup.object_key,
        "sha256": backup.sha256,
        "pinned": True,
        "legal_hold": False,
        "hold_reason": "Keep for the upgrade",
        "changed_at": backup.hold_changed_at.isoformat(),
    }
    in_s3 = (
        s3.client(s3_bucket["endpoint_url"])
        .get_object(Bucket=s3_bucket["bucket"], Key="strongroom/" + manifest.hold_key_for(manifest_key))["Body"]
        .read()
    )
    assert json.loads(in_s3) == record
    # Both are part of the backup: no orphan, and pruning removes both.
    assert [orphans.scan(d) for d in Destination.objects.all()] == [[], []]
    lifecycle.unpin_backup("test", backup)
    keep_only_the_last(plan)
    run(plan)
    assert not any(name.startswith(backup.object_key) for name in files_under(tmp_path / "disk"))
    assert not any(backup.object_key in key for key in s3.all_keys(s3_bucket["endpoint_url"], s3_bucket["bucket"]))


def test_a_pin_made_while_the_backup_ran_is_in_its_manifest(plan, tmp_path):
    backup = backup_runs.create_backup("test", plan)
    lifecycle.pin_backup("test", backup, "Safety backup before the restore", legal_hold=True)  # no copy yet
    backup_runs.run_backup(backup.pk)
    backup.refresh_from_db()
    before = state()

    data = json.loads((tmp_path / "disk" / manifest.manifest_key_for(backup.object_key)).read_text())
    assert (data["pinned"], data["legal_hold"], data["hold_reason"]) == (True, True, "Safety backup before the restore")
    forget_everything()
    rebuild()
    assert state() == before


def test_a_destination_that_cannot_take_the_record_keeps_the_pin_and_says_so(plan, admin_client):
    backup = run(plan)
    lifecycle.pin_backup("test", backup, "Month-end")
    bucket = Destination.objects.get(kind="s3")
    real_bucket = bucket.bucket
    Destination.objects.filter(pk=bucket.pk).update(bucket="no-such-bucket")

    response = admin_client.post(f"/backups/{backup.pk}/unpin/", follow=True)

    assert response.status_code == 200
    page = response.content.decode()
    assert "no longer pinned" in page and "could not record it" in page and "no-such-bucket does not exist" in page
    backup.refresh_from_db()
    assert not backup.pinned  # the catalog has the change
    event = AuditEvent.objects.get(action="backup.hold_not_stored", object_id=str(backup.pk))
    assert event.changes["pinned"] is False and "Off-site S3: S3 bucket no-such-bucket" in event.changes["errors"][0]
    before = state()

    # The S3 copy still says pinned (older), the local one released (newer): the newer wins, in either order.
    Destination.objects.filter(pk=bucket.pk).update(bucket=real_bucket)
    forget_everything()
    out, _ = rebuild("Off-site S3")
    assert "Off-site S3: 1 imported" in out and Backup.objects.get().pinned
    out, _ = rebuild("Local disk")
    assert "Local disk: 0 imported, 1 copy added" in out
    assert state() == before


def test_a_tampered_hold_record_is_not_used_and_the_rebuild_says_so(plan, tmp_path):
    backup = run(plan)
    lifecycle.pin_backup("test", backup, "Keep")
    path = tmp_path / "disk" / manifest.hold_key_for(manifest.manifest_key_for(backup.object_key))
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "pinned": False}))

    forget_everything()
    out, err = rebuild("Local disk")

    assert "Local disk: 1 imported" in out
    assert "hold record not used" in err and "signature does not verify" in err
    assert not Backup.objects.get().pinned  # the manifest's own state, from before the pin


def test_a_lone_hold_record_is_an_orphan(plan, tmp_path):
    backup = run(plan)
    lifecycle.pin_backup("test", backup, "Keep")
    disk = Destination.objects.get(kind="local")
    hold_key = manifest.hold_key_for(manifest.manifest_key_for(backup.object_key))
    (tmp_path / "disk" / "gone.dump.manifest.json.hold").write_text("{}")

    assert [(o.kind, o.key) for o in orphans.scan(disk)] == [("hold", "gone.dump.manifest.json.hold")]
    backup.copies.filter(destination=disk).delete()  # the catalog forgot this copy: one whole backup, listed once
    assert sorted((o.kind, o.key) for o in orphans.scan(disk)) == [
        ("backup", backup.object_key),
        ("hold", "gone.dump.manifest.json.hold"),
    ]
    removed, errors = orphans.remove("test", disk, [o.token for o in orphans.scan(disk)])
    assert errors == [] and files_under(tmp_path / "disk") == []
    assert hold_key not in files_under(tmp_path / "disk")


def test_an_object_lock_destination_takes_hold_records_and_gives_them_back(pg_database, s3_server, tmp_path):
    create_tricky_database(pg_database, big_rows=50)
    client = s3.client(s3_server)
    client.create_bucket(Bucket="locked-holds", ObjectLockEnabledForBucket=True)
    destination = s3_destination({"endpoint_url": s3_server, "bucket": "locked-holds", **s3.CREDENTIALS})
    destination.immutable_days, destination.lock_mode = 2, "COMPLIANCE"
    services.save_destination("test", destination, changed_fields=["immutable_days", "lock_mode"])
    plan = make_plan(
        pg_source(pg_database), [destination], retention_mode="last", keep_last=1, verify_new_backups=False
    )
    pinned, released = run(plan), run(plan)

    # Records are state, not evidence: written without a lock, so they can change again.
    assert lifecycle.pin_backup("test", pinned, "Regulator asked", legal_hold=True) == []
    assert lifecycle.pin_backup("test", released, "For a day") == []
    assert lifecycle.unpin_backup("test", released) == []
    key = "strongroom/" + manifest.hold_key_for(manifest.manifest_key_for(pinned.object_key))
    assert "ObjectLockMode" not in client.head_object(Bucket="locked-holds", Key=key)
    before = state()

    forget_everything()
    out, err = rebuild("Off-site S3")

    assert err == "" and "Off-site S3: 2 imported" in out
    assert state() == before


def test_rotating_the_key_signs_the_hold_records_again(plan, tmp_path):
    from catalog import keys

    backup = run(plan)
    lifecycle.pin_backup("test", backup, "Keep")
    rotation, _ = keys.start_rotation("test", enqueue=False)
    keys.run_rotation(rotation.pk)
    new_id = rotation.new_key.key_id

    path = tmp_path / "disk" / manifest.hold_key_for(manifest.manifest_key_for(backup.object_key))
    assert json.loads(path.read_text())["manifest_key_id"] == new_id
    storage = Destination.objects.get(kind="local").storage()
    data = json.loads((tmp_path / "disk" / manifest.manifest_key_for(backup.object_key)).read_text())
    assert holds.read_hold_record(storage, str(path.relative_to(tmp_path / "disk")), 100, data)["pinned"]
