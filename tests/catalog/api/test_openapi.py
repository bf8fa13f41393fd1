"""Schemathesis reads /api/v1/openapi.json from the app itself and throws
generated requests, valid and invalid, at every operation: no 500, every
response as the document says, invalid requests refused with a 4xx.

No real backup runs here: the test database transaction is never committed,
so a queued backup is never handed to a worker, and a second start of the
same plan is refused with 409 instead of queueing hundreds."""

import re

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.urls import reverse
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from catalog.alerts.models import Alert
from catalog.api import urls as api_urls
from catalog.models import Verification
from pitr import urls as pitr_urls
from restore import urls as restore_urls
from tests.catalog.api.helpers import bearer, make_token
from tests.factories import recorded_backup, sqlite_plan


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
    Alert.objects.create(
        kind=Alert.SOURCE_HEALTH,
        key=f"source:{plan.source.pk}",
        source=plan.source,
        title="Shop is failing",
        url=plan.source.get_absolute_url(),
    )
    Alert.objects.create(kind=Alert.STORAGE_FULL, key="destination:1", severity=Alert.WARNING, title="Disk at 85 %")
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", wsgi_app)


@pytest.fixture
def token_headers(db):
    return bearer(make_token(scopes=["read", "backup", "restore"], name="schemathesis")[1])


schema = schemathesis.pytest.from_fixture("api_schema")


# Named rather than left to the defaults, so that none is dropped unnoticed.
CHECKS = [
    not_a_server_error,  # no 500
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,  # answers as documented,
    response_schema_conformance,  # bodies included
    negative_data_rejection,  # a request outside the document is refused with a 4xx,
    positive_data_acceptance,  # one inside it is not
    missing_required_header,
    ignored_auth,  # without the token: 401, whatever else the request says
    unsupported_method,
    allow_header_conformance,  # an undocumented method: 405 with the documented Allow
]


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_it_answers_generated_requests_as_documented(case, token_headers):
    # The WSGI transport sends every request under the document's own server (/api/v1); the guide's
    # aliases name theirs (/api) on their path item, which the operation's base_url has read.
    served_at = case.operation.base_url
    base_url = served_at if served_at != case.operation.schema.get_base_url() else None
    case.call_and_validate(headers=token_headers, checks=CHECKS, base_url=base_url)


def test_it_serves_the_document_without_a_token(client):
    document = client.get("/api/v1/openapi.json").json()

    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/status",
        "/backups",
        "/backups/{id}",
        "/backups/{id}/verify",
        "/sources/{id}/wal/{name}",
        "/sources/{id}/pitr-restores",
        "/pitr-restores/{id}",
        "/restores",
        "/restores/{id}",
        "/hosts",
        "/backup/create",
        "/cron/status",
    }
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "an API token",
    }
    for path in document["paths"].values():
        for method, operation in path.items():
            if method != "servers":  # the guide's aliases say where they are served (/api)
                assert {"401", "403"} <= set(operation["responses"])


def test_it_documents_every_operation_the_api_serves(client, db):
    """Each API URL pattern, with each method it answers (its 405 says which),
    is in the document, so that schemathesis above reaches all of them."""
    document = client.get("/api/v1/openapi.json").json()
    documented = {
        path: {method.upper() for method in operations if method != "servers"}
        for path, operations in document["paths"].items()
    }
    served = {}
    compat = api_urls.compat_urlpatterns
    # All included at /api/v1/ but the guide's aliases, at /api/ (their path item's server says so).
    for pattern in pitr_urls.api_urlpatterns + restore_urls.api_urlpatterns + api_urls.urlpatterns + compat:
        if pattern.name in (None, "api_openapi"):  # the catch-all JSON 404; the document itself
            continue
        path = "/" + re.sub(
            r"<(?:\w+:)?(\w+)>", lambda m: "{" + ("id" if m[1] == "pk" else m[1]) + "}", str(pattern.pattern)
        )
        url = reverse(
            pattern.name,
            kwargs={name: (1 if name == "pk" else "000000010000000000000001") for name in pattern.pattern.converters},
        )
        served[path] = set(client.generic("TRACE", url)["Allow"].split(", "))
    assert served == documented


def test_it_documents_the_guides_endpoints_as_aliases_served_at_api(client, db):
    document = client.get("/api/v1/openapi.json").json()

    for path, method, alias_of in (
        ("/backup/create", "post", "POST /api/v1/backups"),
        ("/cron/status", "get", "GET /api/v1/status"),
    ):
        item = document["paths"][path]
        assert item["servers"][0]["url"] == "/api"
        assert item[method]["deprecated"] is False and item[method]["x-alias-of"] == alias_of
        assert item[method]["summary"].startswith(f"Alias of {alias_of}")
