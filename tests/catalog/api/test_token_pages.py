"""Administrators create tokens (shown once) and revoke them; auditors only look."""

from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.api.models import ApiToken
from catalog.models import AuditEvent
from tests.catalog.api.helpers import bearer, make_token

pytestmark = pytest.mark.django_db


def create(client, **fields):
    data = {"name": "CI migrations", "scopes": ["read", "backup"], "expires_in_days": "30", **fields}
    return client.post("/tokens/new/", data)


def test_it_shows_a_new_token_once_and_keeps_only_its_hash(admin_client, admin_user):
    response = create(admin_client)

    assert response.status_code == 200
    raw = response.context["raw_token"]
    assert raw.startswith("sr_") and raw in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    token = ApiToken.objects.get()
    assert token.token_hash == ApiToken.hash(raw) and token.prefix == raw[:10]
    assert (token.name, token.scopes, token.created_by) == ("CI migrations", ["backup", "read"], admin_user)
    assert timedelta(days=29, hours=23) < token.expires_at - timezone.now() <= timedelta(days=30)
    event = AuditEvent.objects.get(action="token.create")
    assert event.actor == admin_user and event.changes["prefix"] == token.prefix
    every_event = str(list(AuditEvent.objects.values()))
    assert raw not in every_event and raw[10:] not in every_event
    listing = admin_client.get("/tokens/").content.decode()
    assert "CI migrations" in listing and token.prefix in listing and raw not in listing
    assert admin_client.get("/api/v1/status", headers=bearer(raw)).status_code == 200


def test_it_creates_a_token_that_does_not_expire(admin_client):
    create(admin_client, expires_in_days="", scopes=["read"])

    token = ApiToken.objects.get()
    assert token.expires_at is None and token.scopes == ["read"]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"name": ""}, "This field is required"),
        ({"scopes": []}, "Choose at least one scope"),
        ({"scopes": ["admin"]}, "Select a valid choice"),
        ({"expires_in_days": "0"}, "greater than or equal to 1"),
    ],
)
def test_it_refuses_a_bad_token_form(admin_client, fields, message):
    response = create(admin_client, **fields)

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not ApiToken.objects.exists()


def test_it_revokes_a_token(admin_client, admin_user):
    token, raw = make_token()

    response = admin_client.post(f"/tokens/{token.pk}/revoke/", follow=True)

    assert "Revoked" in response.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert AuditEvent.objects.get(action="token.revoke").actor == admin_user
    assert admin_client.get("/api/v1/status", headers=bearer(raw)).status_code == 401
    again = admin_client.post(f"/tokens/{token.pk}/revoke/", follow=True)
    assert "already revoked" in again.content.decode()
    assert AuditEvent.objects.filter(action="token.revoke").count() == 1


def test_it_lists_each_token_with_its_status(admin_client):
    make_token(name="fresh")
    make_token(name="stale", expires_at=timezone.now() - timedelta(days=1))
    make_token(name="gone", revoked_at=timezone.now())

    response = admin_client.get("/tokens/")

    html = response.content.decode()
    assert "token-status-active" in html and "token-status-expired" in html and "token-status-revoked" in html
    assert html.count(">Revoke</button>") == 2  # not for the revoked one


def test_it_lets_auditors_see_the_list_but_not_change_it(auditor_client):
    token, raw = make_token(name="prometheus")

    listing = auditor_client.get("/tokens/")
    assert listing.status_code == 200 and "prometheus" in listing.content.decode()
    assert ">Revoke</button>" not in listing.content.decode()
    assert auditor_client.get("/tokens/new/").status_code == 403
    assert auditor_client.post("/tokens/new/", {"name": "x", "scopes": ["read"]}).status_code == 403
    assert auditor_client.post(f"/tokens/{token.pk}/revoke/").status_code == 403
    token.refresh_from_db()
    assert token.revoked_at is None and ApiToken.objects.count() == 1


def test_it_sends_anonymous_visitors_to_the_login_page(client):
    assert client.get("/tokens/").status_code == 302


def test_it_shows_tokens_to_superusers_in_the_admin_without_their_hash(client, django_user_model):
    token, raw = make_token(name="prometheus")
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.org", "pw"))

    listing = client.get("/admin/catalog/apitoken/")
    detail = client.get(f"/admin/catalog/apitoken/{token.pk}/change/")

    assert listing.status_code == 200 and "prometheus" in listing.content.decode()
    assert detail.status_code == 200 and token.token_hash not in detail.content.decode()
