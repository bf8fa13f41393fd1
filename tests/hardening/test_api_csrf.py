"""The API and /metrics are exempt from Django's CSRF check because they
authenticate by token alone: a browser never sends a token by itself. That
holds only if a session cookie grants nothing there. Here an administrator's
browser, signed in, is made to send what a forged page could make it send:
every answer is 401, and nothing is queued, changed or audited."""

import json

import pytest
from django.test import Client

from catalog.models import AuditEvent, Backup, Verification
from pitr.models import ContinuousProtection
from tests.catalog.api.helpers import bearer, make_token
from tests.factories import recorded_backup, sqlite_plan


@pytest.fixture
def signed_in_browser(admin_user):
    """An administrator's browser: the session cookie and a CSRF cookie, and
    the CSRF check enforced as in production."""
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin_user)
    browser.get("/")  # sets the csrftoken cookie, as any page would
    return browser


@pytest.fixture
def plan(db, tmp_path):
    return sqlite_plan(tmp_path)


def forged_requests(plan, backup):
    """(method, path, body, content type): what a page elsewhere could make a browser send."""
    start = json.dumps({"plan": plan.pk, "label": "forged"})
    return [
        ("post", "/api/v1/backups", start, "application/json"),
        ("post", "/api/v1/backups", start, "text/plain"),  # a plain <form enctype="text/plain"> needs no preflight
        ("post", "/api/v1/backups", f"plan={plan.pk}", "application/x-www-form-urlencoded"),
        ("post", f"/api/v1/backups/{backup.pk}/verify", json.dumps({"kind": "checksum"}), "application/json"),
        ("post", f"/api/v1/backups/{backup.pk}/verify", "", "application/x-www-form-urlencoded"),
        ("put", f"/api/v1/sources/{plan.source.pk}/wal/000000010000000000000001", "x" * 64, "application/octet-stream"),
        ("get", "/api/v1/status", "", ""),
        ("get", "/api/v1/backups", "", ""),
        ("get", f"/api/v1/backups/{backup.pk}", "", ""),
        ("get", "/metrics", "", ""),
    ]


def test_a_signed_in_browser_without_a_token_gets_nothing_from_the_api(signed_in_browser, plan, settings):
    settings.METRICS_ALLOWED_IPS = []  # only a token opens /metrics
    ContinuousProtection.objects.create(source=plan.source, enabled=True, mode=ContinuousProtection.ARCHIVE)
    backup = recorded_backup(plan)
    backups, verifications, events = Backup.objects.count(), Verification.objects.count(), AuditEvent.objects.count()

    for method, path, body, content_type in forged_requests(plan, backup):
        response = getattr(signed_in_browser, method)(path, body, content_type=content_type)
        assert response.status_code == 401, f"{method.upper()} {path} ({content_type}): {response.status_code}"
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert "Authentication required" in response.json()["error"]

    assert Backup.objects.count() == backups
    assert Verification.objects.count() == verifications
    assert AuditEvent.objects.count() == events


def test_the_csrf_token_does_not_stand_in_for_an_api_token(signed_in_browser, plan):
    """Even a request that carries the page's CSRF token (a same-site script)
    is not authenticated by the session."""
    csrf = signed_in_browser.cookies["csrftoken"].value
    response = signed_in_browser.post(
        "/api/v1/backups", json.dumps({"plan": plan.pk}), content_type="application/json", HTTP_X_CSRFTOKEN=csrf
    )
    assert response.status_code == 401
    assert not Backup.objects.exists()


def test_the_same_request_with_a_token_is_taken(signed_in_browser, plan):
    """The refusals above are for want of a token, not a broken endpoint;
    the token request needs no CSRF token either (no cookie rides on it)."""
    _, raw = make_token(scopes=["read", "backup"])
    response = Client(enforce_csrf_checks=True).post(
        "/api/v1/backups",
        json.dumps({"plan": plan.pk, "label": "from-ci"}),
        content_type="application/json",
        **{f"HTTP_{k.upper()}": v for k, v in bearer(raw).items()},
    )
    assert response.status_code == 202
    backup = Backup.objects.get()
    assert (backup.label, backup.trigger, backup.plan_id) == ("from-ci", "api", plan.pk)
