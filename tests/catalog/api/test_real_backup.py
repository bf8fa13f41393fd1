"""The guide's case end to end: a CI job asks for a labelled backup of a real
PostgreSQL database before a migration, polls it, and has it verified."""

import pytest

from catalog.models import AuditEvent, Backup, Copy, Verification
from tests.catalog.api.helpers import bearer, make_token
from tests.factories import local_destination, make_plan, pg_source
from tests.harness.sample_db import create_tricky_database

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_backs_up_and_verifies_a_real_database_through_the_api(client, pg_database, tmp_path):
    create_tricky_database(pg_database, big_rows=500)
    plan = make_plan(pg_source(pg_database), [local_destination(tmp_path / "backups")], format="custom")
    token, raw = make_token(scopes=["read", "backup"], name="ci")

    started = client.post(
        "/api/v1/backups",
        {"plan": plan.pk, "label": "pre-migration-backup"},
        content_type="application/json",
        headers=bearer(raw),
    )

    assert started.status_code == 202, started.content
    polled = client.get(started.json()["url"], headers=bearer(raw)).json()
    assert polled["status"] == "succeeded", polled["error"]
    backup = Backup.objects.get(pk=started.json()["id"])
    assert (backup.status, backup.trigger, backup.label) == (Backup.SUCCEEDED, "api", "pre-migration-backup")
    assert backup.table_counts["public.big_ledger"] == 500
    assert polled["table_counts"] == backup.table_counts and polled["sha256"] == backup.sha256
    assert (polled["compression"], polled["compression_level"]) == ("zstd", 1)  # the plan's default
    assert [c["status"] for c in polled["copies"]] == [Copy.DURABLE]

    verified = client.post(
        f"/api/v1/backups/{backup.pk}/verify",
        {"kind": "checksum"},
        content_type="application/json",
        headers=bearer(raw),
    )

    assert verified.status_code == 202, verified.content
    job = Verification.objects.get(pk=verified.json()["id"])
    assert (job.backup_id, job.kind, job.status) == (backup.pk, "checksum", Verification.PASSED)
    actions = set(AuditEvent.objects.filter(actor_label="api token ci").values_list("action", flat=True))
    assert {
        "api.backup_start",
        "api.backup_detail",
        "api.backup_verify",
        "backup.queue",
        "verification.queue",
    } <= actions
