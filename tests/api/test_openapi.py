"""Schemathesis reads /api/v1/openapi.json from the app itself and throws
generated requests, valid and invalid, at every operation: no 500, every
response as the document says, invalid requests refused with a 4xx.

No real backup runs here: the test database transaction is never committed,
so a queued backup is never handed to a worker, and a second start of the
same plan is refused with 409 instead of queueing hundreds."""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings

from catalog.alerts.models import Alert
from catalog.models import Verification
from tests.api.helpers import bearer, make_token, recorded_backup, sqlite_plan


@pytest.fixture
def wsgi_app(db, settings):
    """The real WSGI application, but keeping the test's database connection
    across requests (as Django's test client does): closing it would end
    the test's transaction."""
    settings.ALLOWED_HOSTS = ["localhost"]
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield get_wsgi_application()
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


@pytest.fixture
def api_schema(wsgi_app, tmp_path):
    plan = sqlite_plan(tmp_path)
    backup = recorded_backup(plan, label="pre-migration-backup")
    Verification.objects.create(backup=backup, source=plan.source, kind="checksum", status="passed")
    recorded_backup(plan, status="failed", minutes_ago=5)
    Alert.objects.create(kind=Alert.SOURCE_HEALTH, key=f"source:{plan.source.pk}", source=plan.source,
                         title="Shop is failing", url=plan.source.get_absolute_url())
    Alert.objects.create(kind=Alert.STORAGE_FULL, key="destination:1", severity=Alert.WARNING, title="Disk at 85 %")
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", wsgi_app)


@pytest.fixture
def token_headers(db):
    return bearer(make_token(scopes=["read", "backup"], name="schemathesis")[1])


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_it_answers_generated_requests_as_documented(case, token_headers):
    # All of schemathesis' checks: no 500 (not_a_server_error), responses as
    # documented (status code, content type, headers, schema), and requests
    # outside the document refused with a 4xx while those inside it are not.
    case.call_and_validate(headers=token_headers)


def test_it_serves_the_document_without_a_token(client):
    document = client.get("/api/v1/openapi.json").json()

    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {"/status", "/backups", "/backups/{id}", "/backups/{id}/verify"}
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "an API token"}
    for path in document["paths"].values():
        for operation in path.values():
            assert {"401", "403"} <= set(operation["responses"])
