"""Every endpoint with a valid, missing, malformed, unknown, expired, revoked
and wrong-scope token: the right code, a JSON message, and for every
authenticated use an audit event and a fresh last_used_at."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from accounts import people
from catalog.api import tokens
from catalog.api.models import ApiToken
from catalog.errors import Refused
from catalog.models import AuditEvent, Backup, Verification
from tests.catalog.api.helpers import bearer, make_token
from tests.conftest import make_user
from tests.factories import recorded_backup, sqlite_plan

pytestmark = pytest.mark.django_db

# (method, url, JSON body, scope needed, audit action, success code)
ENDPOINTS = [
    ("get", "/api/v1/status", None, "read", "api.status", 200),
    ("get", "/api/v1/backups", None, "read", "api.backup_list", 200),
    ("get", "/api/v1/backups/{backup}", None, "read", "api.backup_detail", 200),
    ("post", "/api/v1/backups", {"plan": "{plan}", "label": "pre-migration-backup"}, "backup", "api.backup_start", 202),
    ("post", "/api/v1/backups/{backup}/verify", {"kind": "checksum"}, "backup", "api.backup_verify", 202),
]
IDS = [f"{method} {url}" for method, url, *_ in ENDPOINTS]


@pytest.fixture
def world(tmp_path):
    plan = sqlite_plan(tmp_path)
    return {"plan": plan, "backup": recorded_backup(plan)}


def call(client, endpoint, world, headers=None):
    method, url, body, *_ = endpoint
    url = url.format(plan=world["plan"].pk, backup=world["backup"].pk)
    if body is not None:
        body = {k: world["plan"].pk if v == "{plan}" else v for k, v in body.items()}
        return getattr(client, method)(url, body, content_type="application/json", headers=headers or {})
    return getattr(client, method)(url, headers=headers or {})


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
def test_it_answers_a_valid_token_and_audits_the_use(client, world, endpoint):
    token, raw = make_token(scopes=["read", "backup"])
    response = call(client, endpoint, world, bearer(raw))

    assert response.status_code == endpoint[5], response.content
    assert response["Content-Type"] == "application/json"
    token.refresh_from_db()
    assert token.last_used_at is not None and timezone.now() - token.last_used_at < timedelta(minutes=1)
    event = AuditEvent.objects.get(action=endpoint[4])
    assert event.actor_label == "api token CI job"
    assert event.object_type == "apitoken" and event.object_id == str(token.pk)
    assert event.changes["status"] == endpoint[5]
    assert raw not in str(AuditEvent.objects.values_list("changes", "object_repr", "actor_label"))
    if endpoint[4] == "api.backup_start":
        # The backup's page names the person the token belongs to; the trail names the token.
        backup = Backup.objects.get(trigger="api")
        assert backup.triggered_by == token.created_by
        assert AuditEvent.objects.get(action="backup.queue").actor_label == "api token CI job"


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
def test_it_asks_for_a_token_when_there_is_none(client, world, endpoint):
    response = call(client, endpoint, world)

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in response.json()["error"]
    assert not AuditEvent.objects.filter(action__startswith="api.").exists()


@pytest.mark.parametrize("header", ["Token abc", "Bearer", "Bearer two words", "Basic dXNlcjpwYXNz"])
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
def test_it_refuses_a_malformed_header(client, world, endpoint, header):
    response = call(client, endpoint, world, {"Authorization": header})

    assert response.status_code == 401
    assert 'error="invalid_request"' in response["WWW-Authenticate"]
    assert "Malformed Authorization header" in response.json()["error"]


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
def test_it_refuses_an_unknown_token(client, world, endpoint):
    make_token(scopes=["read", "backup"])
    response = call(client, endpoint, world, bearer("sr_not-a-token-we-made"))

    assert response.status_code == 401
    assert 'error="invalid_token"' in response["WWW-Authenticate"]
    assert response.json() == {"error": "Unknown API token."}


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
def test_it_refuses_an_expired_token(client, world, endpoint):
    token, raw = make_token(scopes=["read", "backup"], expires_at=timezone.now() + timedelta(days=1))

    with time_machine.travel(timezone.now() + timedelta(days=1, seconds=1)):
        response = call(client, endpoint, world, bearer(raw))

    assert response.status_code == 401
    assert "expired" in response.json()["error"]
    token.refresh_from_db()
    assert token.last_used_at is None


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
def test_it_refuses_a_revoked_token(client, world, endpoint):
    token, raw = make_token(scopes=["read", "backup"], revoked_at=timezone.now())

    response = call(client, endpoint, world, bearer(raw))

    assert response.status_code == 401
    assert "revoked" in response.json()["error"]


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
def test_it_refuses_the_token_of_a_deactivated_user(client, world, endpoint, admin_user):
    token, raw = make_token(scopes=["read", "backup"], created_by=admin_user)
    assert call(client, ENDPOINTS[0], world, bearer(raw)).status_code == 200
    admin_user.is_active = False
    admin_user.save()

    response = call(client, endpoint, world, bearer(raw))

    assert response.status_code == 401
    assert response.json() == {
        "error": f"This API token belongs to {admin_user.username}, whose account is deactivated."
    }


def test_a_token_whose_owner_is_no_longer_an_administrator_only_reads(client, world, admin_user):
    make_user("second", "Administrators")  # so that alice may be demoted
    token, raw = make_token(scopes=["read", "backup"], created_by=admin_user)
    backup = next(e for e in ENDPOINTS if e[3] == "backup")
    people.set_role("test", admin_user, people.AUDITOR)

    assert client.get("/api/v1/status", headers=bearer(raw)).status_code == 200
    refused = call(client, backup, world, bearer(raw))
    assert refused.status_code == 403
    assert "belongs to alice, who is no longer an administrator" in refused.json()["error"]
    assert not Verification.objects.exists() and Backup.objects.count() == 1

    people.set_role("test", admin_user, people.ADMINISTRATOR)
    assert call(client, backup, world, bearer(raw)).status_code == backup[5]


def test_a_token_made_before_tokens_had_owners_keeps_working(client, world, auditor_client):
    token, raw = make_token(scopes=["read", "backup"], created_by=None)
    assert client.get("/api/v1/status", headers=bearer(raw)).status_code == 200
    assert "belongs to nobody" in auditor_client.get("/tokens/").content.decode()


def test_a_token_needs_an_owner(db):
    with pytest.raises(Refused, match="belongs to a person"):
        tokens.create_token("cron", "orphan", ["read"])


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
def test_it_refuses_a_token_without_the_scope(client, world, endpoint):
    other_scope = "backup" if endpoint[3] == "read" else "read"
    token, raw = make_token(scopes=[other_scope])

    response = call(client, endpoint, world, bearer(raw))

    assert response.status_code == 403
    assert f"'{endpoint[3]}' scope" in response.json()["error"]
    assert Backup.objects.count() == 1 and not Verification.objects.exists()  # nothing was started
    event = AuditEvent.objects.get(action=endpoint[4])  # a refused use is still a use
    assert event.changes["status"] == 403


def test_it_accepts_a_token_until_the_moment_it_expires(client, world):
    token, raw = make_token(expires_at=timezone.now() + timedelta(hours=1))

    with time_machine.travel(timezone.now() + timedelta(minutes=59)):
        assert client.get("/api/v1/status", headers=bearer(raw)).status_code == 200
    with time_machine.travel(timezone.now() + timedelta(minutes=61)):
        assert client.get("/api/v1/status", headers=bearer(raw)).status_code == 401


def test_it_keeps_only_a_hash_of_the_token(world):
    token, raw = make_token()

    stored = ApiToken.objects.get(pk=token.pk)
    assert stored.token_hash == ApiToken.hash(raw) and raw not in stored.token_hash
    assert raw.startswith(stored.prefix) and len(stored.prefix) < len(raw) // 3


def test_it_needs_no_csrf_token_for_token_requests(world):
    from django.test import Client

    token, raw = make_token(scopes=["backup"])
    strict = Client(enforce_csrf_checks=True)
    response = strict.post(
        "/api/v1/backups", {"plan": world["plan"].pk}, content_type="application/json", headers=bearer(raw)
    )

    assert response.status_code == 202
