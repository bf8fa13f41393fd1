"""Retention against real storage: what is pruned is gone from disk and S3,
what is kept is untouched, pins and Object Lock hold, and every step is audited."""

import json
from datetime import timedelta
from io import StringIO

import botocore.exceptions
import pytest
from django.core.management import call_command
from django.utils import timezone

from catalog import backup_runs, lifecycle, services
from catalog.models import AuditEvent, Backup, Copy
from tests.factories import local_destination, make_plan, pg_source, s3_destination
from tests.harness import s3
from tests.harness.sample_db import create_tricky_database
from tests.support import files_under

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def small_database(pg_database):
    create_tricky_database(pg_database, big_rows=50)
    return pg_database


def run(plan, label=""):
    # As its schedule runs it: the plan's rule judges these (manual backups have
    # a rule of their own, tests/catalog/test_day_one_defaults.py).
    backup = backup_runs.start_backup("test", plan, label=label, trigger="schedule")
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    return backup


def stored_keys(backup):
    """The object, manifest and globals keys of a backup, relative to its destinations."""
    globals_key = [backup.object_key + ".manifest.json.globals"] if backup.globals_sha256 else []
    return sorted([backup.object_key, backup.object_key + ".manifest.json", *globals_key])


def s3_keys(bucket):
    return [key.removeprefix("strongroom/") for key in s3.all_keys(bucket["endpoint_url"], bucket["bucket"])]


def test_pruning_removes_exactly_the_pruned_backups_from_disk_and_s3(small_database, s3_bucket, tmp_path):
    plan = make_plan(
        pg_source(small_database),
        [local_destination(tmp_path), s3_destination(s3_bucket)],
        retention_mode="last",
        keep_last=2,
    )

    backups = [run(plan) for _ in range(4)]  # retention runs after each good backup

    old, kept = backups[:2], backups[2:]
    expected = sorted(key for backup in kept for key in stored_keys(backup))
    assert files_under(tmp_path) == expected
    assert sorted(s3_keys(s3_bucket)) == expected
    for backup in old:
        backup.refresh_from_db()
        assert backup.is_pruned() and backup.prune_reason == "older than the last 2"
        assert set(backup.copies.values_list("status", flat=True)) == {Copy.PRUNED}
        assert AuditEvent.objects.filter(action="backup.prune", object_id=str(backup.pk)).exists()
    for backup in kept:
        backup.refresh_from_db()
        assert not backup.is_pruned()
        assert set(backup.copies.values_list("status", flat=True)) == {Copy.DURABLE}
    # The rows stay for history.
    assert Backup.objects.filter(plan=plan).count() == 4


def test_a_pinned_backup_is_kept_until_unpinned(small_database, tmp_path):
    # keep_manual_days=0: the labelled backup is judged by the rule as soon as its pin is released.
    plan = make_plan(
        pg_source(small_database), [local_destination(tmp_path)], retention_mode="last", keep_last=1, keep_manual_days=0
    )
    first = run(plan, label="pre-migration")
    lifecycle.pin_backup("test", first, "Before the 2026 schema migration", legal_hold=True)

    second = run(plan)
    third = run(plan)

    first.refresh_from_db()
    second.refresh_from_db()
    assert not first.is_pruned() and first.legal_hold
    assert second.is_pruned()
    # The pin is in storage too, beside the manifest, for a rebuilt catalog to keep it.
    hold_record = first.object_key + ".manifest.json.hold"
    assert files_under(tmp_path) == sorted(stored_keys(first) + [hold_record] + stored_keys(third))

    lifecycle.unpin_backup("test", first)
    report = lifecycle.prune_plan("test", plan)

    first.refresh_from_db()
    assert [pk for pk, _ in report.pruned] == [first.pk] and first.is_pruned()
    assert files_under(tmp_path) == stored_keys(third)
    actions = list(AuditEvent.objects.filter(object_id=str(first.pk)).values_list("action", flat=True))
    assert {"backup.legal_hold", "backup.unpin", "backup.prune"} <= set(actions)
    hold = AuditEvent.objects.get(action="backup.legal_hold", object_id=str(first.pk))
    assert hold.changes == {"reason": "Before the 2026 schema migration"}


def test_a_pin_needs_a_reason(small_database, tmp_path):
    plan = make_plan(pg_source(small_database), [local_destination(tmp_path)])
    backup = run(plan)
    with pytest.raises(services.Refused, match="Say why"):
        lifecycle.pin_backup("test", backup, "   ")
    backup.refresh_from_db()
    assert not backup.pinned


def test_object_lock_blocks_early_deletion(small_database, s3_server):
    bucket = {"endpoint_url": s3_server, "bucket": "locked-bucket", **s3.CREDENTIALS}
    client = s3.client(s3_server)
    client.create_bucket(Bucket="locked-bucket", ObjectLockEnabledForBucket=True)
    destination = s3_destination(bucket)
    destination.immutable_days, destination.lock_mode = 2, "COMPLIANCE"
    services.save_destination("test", destination, changed_fields=["immutable_days", "lock_mode"])
    plan = make_plan(pg_source(small_database), [destination], retention_mode="last", keep_last=1)

    first = run(plan)
    second = run(plan)

    copy = first.copies.get()
    assert copy.locked_until > timezone.now() + timedelta(days=1)
    head = client.head_object(Bucket="locked-bucket", Key=f"strongroom/{first.object_key}")
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"] >= copy.locked_until
    rows = {row.backup.pk: row for row in lifecycle.preview(plan)}
    assert rows[first.pk].outcome() == "locked" and rows[second.pk].outcome() == "keep"
    report = lifecycle.prune_plan("test", plan)
    assert [pk for pk, _ in report.waiting] == [first.pk] and report.pruned == []
    assert sorted(s3_keys(bucket)) == sorted(stored_keys(first) + stored_keys(second))

    # The lock is the server's, not just ours: even when the catalog's date is
    # wrong, the delete is refused and the backup stays in the catalog.
    Copy.objects.filter(pk=copy.pk).update(locked_until=timezone.now() - timedelta(minutes=1))
    report = lifecycle.prune_plan("test", plan)
    first.refresh_from_db()
    assert [pk for pk, _ in report.errors] == [first.pk] and not first.is_pruned()
    assert "denied" in report.errors[0][1].lower()
    version = client.list_object_versions(Bucket="locked-bucket", Prefix=f"strongroom/{first.object_key}")["Versions"][
        0
    ]
    with pytest.raises(botocore.exceptions.ClientError):
        client.delete_object(Bucket="locked-bucket", Key=version["Key"], VersionId=version["VersionId"])


def test_the_destination_test_says_when_the_bucket_has_no_object_lock(s3_bucket):
    destination = s3_destination(s3_bucket)
    destination.immutable_days = 7
    ok, message = services.test_destination(destination)
    assert not ok
    assert "Object Lock is not enabled on bucket" in message


def test_the_prune_command_previews_as_text_and_json_and_then_prunes(small_database, tmp_path):
    plan = make_plan(
        pg_source(small_database), [local_destination(tmp_path)], name="Nightly", retention_mode="last", keep_last=10
    )
    backups = [run(plan) for _ in range(3)]
    plan.retention_mode, plan.keep_last = "last", 1
    plan.save()

    out = StringIO()
    call_command("prune", "--dry-run", "--plan", "Nightly", stdout=out)
    text = out.getvalue()
    assert "Nightly (keep the last 1; at least 1): 1 kept, 2 would be pruned, 0 locked" in text
    assert f"#{backups[2].pk}" in text and "last #1" in text

    out = StringIO()
    call_command("prune", "--dry-run", "--json", stdout=out)
    preview = json.loads(out.getvalue())["Nightly"]
    assert [(row["backup"], row["outcome"]) for row in preview] == [
        (backups[2].pk, "keep"),
        (backups[1].pk, "prune"),
        (backups[0].pk, "prune"),
    ]
    assert len(files_under(tmp_path)) == 9  # three backups of three files each; a dry run changes nothing

    out = StringIO()
    call_command("prune", "--plan", str(plan.pk), stdout=out)
    assert out.getvalue().strip() == "Nightly: 2 pruned"
    assert files_under(tmp_path) == stored_keys(backups[2])


def test_the_preview_endpoint_shows_what_an_unsaved_rule_would_do(small_database, tmp_path, admin_client):
    plan = make_plan(pg_source(small_database), [local_destination(tmp_path)], retention_mode="days", keep_days=7)
    backups = [run(plan) for _ in range(3)]
    form = {
        "plan_id": plan.pk,
        "retention_mode": "last",
        "keep_daily": 30,
        "keep_weekly": 12,
        "keep_monthly": 12,
        "keep_yearly": 5,
        "keep_last": 2,
        "keep_days": 30,
        "keep_minimum": 1,
    }

    page = admin_client.post("/plans/retention-preview/", form).content.decode()

    assert "of 3 stored backups, <strong>2</strong> kept" in page
    assert page.count("outcome-prune") >= 1 and "last #2" in page
    plan.refresh_from_db()
    assert plan.retention_mode == "days"  # nothing saved
    assert len(files_under(tmp_path)) == 9
    assert (
        "Fill in the retention numbers"
        in admin_client.post("/plans/retention-preview/", {**form, "keep_last": "-1"}).content.decode()
    )
    assert f"#{backups[0].pk}" in page


def test_pinning_and_unpinning_from_the_backup_page(small_database, tmp_path, admin_client):
    backup = run(make_plan(pg_source(small_database), [local_destination(tmp_path)]))

    response = admin_client.post(f"/backups/{backup.pk}/pin/", {"reason": ""}, follow=True)
    assert "Say why this backup must be kept." in response.content.decode()
    page = admin_client.post(
        f"/backups/{backup.pk}/pin/", {"reason": "Quarter-end close"}, follow=True
    ).content.decode()
    assert "Pinned:</strong> Quarter-end close" in page
    backup.refresh_from_db()
    assert backup.pinned and not backup.legal_hold
    event = AuditEvent.objects.get(action="backup.pin", object_id=str(backup.pk))
    assert event.actor.username == "alice"

    page = admin_client.post(f"/backups/{backup.pk}/unpin/", follow=True).content.decode()
    assert "no longer pinned" in page
    backup.refresh_from_db()
    assert not backup.pinned and backup.hold_reason == ""
