"""/metrics: Prometheus text read from the catalog, for a read token or an allowed address."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from catalog.alerts.models import Alert
from catalog.models import AuditEvent, Backup, Source, Verification
from tests.catalog.api.helpers import bearer, make_token
from tests.factories import recorded_backup, sqlite_plan

pytestmark = pytest.mark.django_db


def samples(response):
    """{(name, frozenset(labels)): value} for every sample on the page."""
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def test_it_exposes_the_catalog_as_metrics(client, tmp_path):
    plan = sqlite_plan(tmp_path)
    recorded_backup(plan, minutes_ago=30, size=500)
    good = recorded_backup(plan, minutes_ago=5, size=2000)
    recorded_backup(plan, status=Backup.FAILED, minutes_ago=1)
    Backup.objects.create(source=plan.source, plan=plan, format="sqlite", compression="zstd")  # queued
    Verification.objects.create(backup=good, source=plan.source, kind="checksum", status="passed")
    Verification.objects.create(backup=good, source=plan.source, kind="restore", status="failed")
    Source.objects.filter(pk=plan.source.pk).update(status="failing", last_good_at=good.finished_at)
    Alert.objects.create(kind=Alert.SOURCE_HEALTH, key=f"source:{plan.source.pk}", source=plan.source, title="down")
    token, raw = make_token(scopes=["read"], name="prometheus")

    found = samples(client.get("/metrics", headers=bearer(raw)))

    plan_labels = frozenset({("plan", "Hourly"), ("source", "Shop")})
    assert found["strongroom_plan_last_success_timestamp_seconds", plan_labels] == good.finished_at.timestamp()
    assert found["strongroom_plan_last_duration_seconds", plan_labels] == 42
    assert found["strongroom_plan_last_size_bytes", plan_labels] == 2000
    assert found["strongroom_backups_total", frozenset({("status", "succeeded")})] == 2
    assert found["strongroom_backups_total", frozenset({("status", "failed")})] == 1
    assert found["strongroom_backups_total", frozenset({("status", "cancelled")})] == 0
    assert found["strongroom_backup_failures_total", frozenset({("source", "Shop")})] == 1
    assert found["strongroom_verifications_total", frozenset({("kind", "checksum"), ("result", "passed")})] == 1
    assert found["strongroom_verifications_total", frozenset({("kind", "restore"), ("result", "failed")})] == 1
    disk = frozenset({("destination", "Disk Hourly"), ("kind", "local")})
    assert found["strongroom_destination_used_bytes", disk] == 2500
    assert found["strongroom_queue_depth", frozenset({("job", "backup")})] == 1
    assert found["strongroom_queue_depth", frozenset({("job", "restore")})] == 0
    assert found["strongroom_source_status", frozenset({("source", "Shop"), ("status", "failing")})] == 1
    assert found["strongroom_source_status", frozenset({("source", "Shop"), ("status", "up")})] == 0
    assert (
        found["strongroom_source_last_good_backup_timestamp_seconds", frozenset({("source", "Shop")})]
        == good.finished_at.timestamp()
    )
    assert found["strongroom_open_alerts", frozenset({("kind", "source_health"), ("severity", "critical")})] == 1
    assert found["strongroom_open_alerts", frozenset({("kind", "stuck_job"), ("severity", "warning")})] == 0


def test_it_reports_quotas(client, tmp_path, settings):
    settings.METRICS_ALLOWED_IPS = ["127.0.0.1"]
    plan = sqlite_plan(tmp_path)
    plan.destinations.update(quota_gb=2)

    found = samples(client.get("/metrics"))

    assert (
        found["strongroom_destination_quota_bytes", frozenset({("destination", "Disk Hourly"), ("kind", "local")})]
        == 2 * 2**30
    )


def test_it_asks_for_a_token(client):
    response = client.get("/metrics")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in response.json()["error"]


def test_it_refuses_a_token_without_the_read_scope(client):
    token, raw = make_token(scopes=["backup"])

    response = client.get("/metrics", headers=bearer(raw))

    assert response.status_code == 403
    assert "'read' scope" in response.json()["error"]


def test_it_refuses_revoked_tokens(client):
    token, raw = make_token(revoked_at=timezone.now())

    assert client.get("/metrics", headers=bearer(raw)).status_code == 401


@pytest.mark.parametrize("allowed", [["127.0.0.1"], ["10.0.0.1", "127.0.0.0/8"]])
def test_it_lets_allowed_addresses_in_without_a_token(client, settings, allowed):
    settings.METRICS_ALLOWED_IPS = allowed

    assert client.get("/metrics").status_code == 200


def test_it_does_not_trust_forwarded_addresses(client, settings):
    settings.METRICS_ALLOWED_IPS = ["10.1.2.3"]

    response = client.get("/metrics", headers={"X-Forwarded-For": "10.1.2.3"})

    assert response.status_code == 401


def test_it_notes_scrapes_without_burying_the_audit_trail(client):
    token, raw = make_token(name="prometheus")

    for _ in range(3):
        assert client.get("/metrics", headers=bearer(raw)).status_code == 200
    assert AuditEvent.objects.filter(action="api.metrics").count() == 1
    with time_machine.travel(timezone.now() + timedelta(hours=1, minutes=1)):
        assert client.get("/metrics", headers=bearer(raw)).status_code == 200
        token.refresh_from_db()
        assert timezone.now() - token.last_used_at < timedelta(minutes=1)
    assert AuditEvent.objects.filter(action="api.metrics").count() == 2


def test_it_only_answers_get(client, settings):
    settings.METRICS_ALLOWED_IPS = ["127.0.0.1"]

    response = client.post("/metrics")

    assert response.status_code == 405 and response["Allow"] == "GET"
