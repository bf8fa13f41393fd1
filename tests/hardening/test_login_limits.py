"""Sign-in is rate-limited per user name and address (django-axes), lockouts
are audited, the API's tokens and the admin's own login keep working as they
should, and a session ends SESSION_COOKIE_AGE after sign-in."""

from datetime import timedelta

import pytest
import time_machine
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from catalog.models import AuditEvent
from tests.catalog.api.helpers import bearer, make_token

pytestmark = pytest.mark.django_db

GOOD = "correct horse battery"
LOCKED = "Too many failed sign-in attempts; try again in 15 minutes."


def sign_in(client, username, password, path="/login/"):
    return client.post(path, {"username": username, "password": password})


def signed_in(client):
    return "_auth_user_id" in client.session


def fail_until_locked(client, username):
    """LOGIN_FAILURE_LIMIT (5) wrong passwords: the last one already answers 429."""
    answers = [sign_in(client, username, f"wrong-{n}") for n in range(settings.AXES_FAILURE_LIMIT)]
    assert [a.status_code for a in answers] == [200] * (settings.AXES_FAILURE_LIMIT - 1) + [429]
    assert b"do not match" in answers[0].content  # the form's own message until then


def test_it_locks_a_user_name_out_after_five_wrong_passwords_for_fifteen_minutes(client, admin_user):
    assert settings.AXES_FAILURE_LIMIT == 5 and timedelta(minutes=15) == settings.AXES_COOLOFF_TIME
    fail_until_locked(client, "alice")

    refused = sign_in(client, "alice", GOOD)
    assert refused.status_code == 429
    assert LOCKED in refused.content.decode()
    assert b"Back to sign-in" in refused.content  # the site's own page, not a bare text
    assert not signed_in(client)
    assert client.get("/").status_code == 302

    with time_machine.travel(timezone.now() + timedelta(minutes=14), tick=False):
        assert sign_in(client, "alice", GOOD).status_code == 429
    with time_machine.travel(timezone.now() + timedelta(minutes=15, seconds=5), tick=False):
        response = sign_in(client, "alice", GOOD)
        assert response.status_code == 302 and response["Location"] == "/"
        assert signed_in(client)


def test_another_user_name_or_address_is_not_affected(client, admin_user, auditor_user):
    fail_until_locked(client, "alice")
    response = sign_in(client, "audrey", GOOD)
    assert response.status_code == 302 and signed_in(client)

    elsewhere = Client(REMOTE_ADDR="192.0.2.7")
    assert sign_in(elsewhere, "alice", GOOD).status_code == 302 and signed_in(elsewhere)
    assert sign_in(Client(), "alice", GOOD).status_code == 429  # same address as the attacker's


def test_a_lockout_is_audited_with_the_name_and_address_but_no_password(client, admin_user):
    fail_until_locked(client, "alice")
    sign_in(client, "alice", GOOD)
    events = list(AuditEvent.objects.filter(action="auth.lockout").order_by("id"))
    assert len(events) == 1  # the lockout; the attempt it refused adds none (tests/hardening/test_bad_input_day_one.py)
    assert {e.actor_label for e in events} == {"alice"} and {e.ip for e in events} == {"127.0.0.1"}
    assert events[0].changes == {"username": "alice", "failure_limit": 5}
    assert not any("wrong-" in str(e.changes) or GOOD in str(e.changes) for e in events)
    # Axes keeps the failed attempts' form data: with the passwords masked.
    attempt = AccessAttempt.objects.get(username="alice")
    assert "wrong-" not in attempt.post_data and GOOD not in attempt.post_data and "password=****" in attempt.post_data


def test_the_admin_login_shares_the_limit(client, admin_user):
    User.objects.filter(pk=admin_user.pk).update(is_staff=True, is_superuser=True)
    fail_until_locked(client, "alice")
    response = sign_in(client, "alice", GOOD, path="/admin/login/?next=/admin/")
    assert response.status_code == 429 and not signed_in(client)


def test_a_success_before_the_limit_starts_the_count_again(client, admin_user):
    for n in range(settings.AXES_FAILURE_LIMIT - 1):
        sign_in(client, "alice", f"wrong-{n}")
    assert sign_in(client, "alice", GOOD).status_code == 302
    client.post("/logout/")
    assert [sign_in(client, "alice", "wrong").status_code for _ in range(4)] == [200] * 4


def test_api_tokens_work_while_their_owner_is_locked_out(client, admin_user):
    _, raw = make_token(["read"])
    fail_until_locked(client, "alice")
    response = Client().get("/api/v1/status", headers=bearer(raw))
    assert response.status_code == 200 and "sources" in response.json()


def test_a_session_older_than_the_cookie_age_is_sent_to_log_in(client, admin_user):
    assert settings.SESSION_COOKIE_AGE == 12 * 3600
    assert sign_in(client, "alice", GOOD).status_code == 302
    with time_machine.travel(timezone.now() + timedelta(hours=11, minutes=59), tick=False):
        assert client.get("/").status_code == 200  # polling pages keep it open no longer…
    with time_machine.travel(timezone.now() + timedelta(hours=12, minutes=1), tick=False):
        response = client.get("/backups/")
        assert response.status_code == 302 and response["Location"] == "/login/?next=/backups/"


def test_the_test_clients_login_still_works_and_form_sign_ins_are_still_counted(client, admin_user):
    """tests/harness/auth.py: Client.login() has no request for axes; real sign-ins are counted all the same."""
    assert client.login(username="alice", password=GOOD) and signed_in(client)
    assert not Client().login(username="alice", password="wrong")
    client.post("/logout/")
    fail_until_locked(client, "alice")
    assert sign_in(client, "alice", GOOD).status_code == 429
