"""Two-factor sign-in (accounts/two_factor.py): set up with a code from the
app, sign in with password and code or a recovery code, wrong codes locked
out with wrong passwords, no code twice, a pending sign-in that expires, the
policy for administrators, resets by another administrator, and the admin's
login that no longer goes around it."""

import re
from base64 import b32encode
from binascii import unhexlify

import pytest
import time_machine
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts import two_factor
from accounts.models import SignInPolicy
from catalog.errors import Refused
from catalog.models import AuditEvent
from tests.catalog.api.helpers import bearer, make_token

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"
LOCKED = "Too many failed sign-in attempts"


@pytest.fixture
def clock():
    """Time stands still unless a test moves it: codes change every 30 seconds."""
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        yield traveller


def code(key, steps_ahead=0):
    """What the authenticator app shows now (or `steps_ahead` periods of 30 seconds later)."""
    totp = TOTP(unhexlify(key))
    totp.drift = steps_ahead
    return f"{totp.token():06d}"


def wrong(key):
    return f"{(int(code(key)) + 500_000) % 1_000_000:06d}"


def actions():
    return list(AuditEvent.objects.order_by("id").values_list("action", flat=True))


def enrol(user):
    """Sets up two-factor as the user would on their Two-factor page. Returns the key and the recovery codes."""
    client = Client()
    client.force_login(user)
    page = client.get("/account/two-factor/").content.decode()
    key = client.session[two_factor.ENROLMENT_KEY]
    typed = re.search(r'id="totp-key">([A-Z2-7 ]+)<', page).group(1)
    assert two_factor.key_for_typing(key) == typed
    answer = client.post("/account/two-factor/", {"code": code(key)})
    codes = re.findall(r"<li>([a-z2-7]{8})</li>", answer.content.decode())
    assert len(codes) == 10, answer.content.decode()
    return key, codes


def password_step(client, username, password=PASSWORD, path="/login/"):
    return client.post(path, {"username": username, "password": password})


def signed_in(client):
    return "_auth_user_id" in client.session


def second_step(client, typed):
    return client.post("/login/second-factor/", {"code": typed})


# --- setting it up --------------------------------------------------------------


def test_it_sets_up_with_a_qr_code_and_the_key_and_shows_ten_recovery_codes_once(admin_client, admin_user, clock):
    page = admin_client.get("/account/two-factor/")
    html = page.content.decode()
    assert page.status_code == 200 and "<svg" in html and "data:" not in html
    key = admin_client.session[two_factor.ENROLMENT_KEY]
    secret = b32encode(unhexlify(key)).decode()
    # The QR code's URI, also a link for a phone that has the app: the site's name and the user's.
    assert f'href="otpauth://totp/Strongroom%3Aalice?secret={secret}&amp;' in html
    assert not TOTPDevice.objects.exists()  # opening the page writes nothing
    assert admin_client.get("/account/two-factor/").content.decode().count(two_factor.key_for_typing(key)) == 1

    refused = admin_client.post("/account/two-factor/", {"code": wrong(key)})
    assert "does not match" in refused.content.decode() and not TOTPDevice.objects.exists()

    answer = admin_client.post("/account/two-factor/", {"code": code(key)})
    codes = re.findall(r"<li>([a-z2-7]{8})</li>", answer.content.decode())
    assert len(set(codes)) == 10 and "shown only this once" in answer.content.decode()
    assert "no-cache" in answer["Cache-Control"] or "max-age=0" in answer["Cache-Control"]
    device = TOTPDevice.objects.get(user=admin_user)
    assert device.confirmed and device.key == key
    assert sorted(StaticToken.objects.values_list("token", flat=True)) == sorted(codes)
    assert two_factor.ENROLMENT_KEY not in admin_client.session
    # Afterwards the page says it is on, and shows neither the key nor the codes again.
    html = admin_client.get("/account/two-factor/").content.decode()
    assert "Recovery codes left" in html and "10 of 10" in html
    assert two_factor.key_for_typing(key) not in html and not any(c in html for c in codes)
    event = AuditEvent.objects.get(action="two_factor.enrol")
    assert event.actor_label == "alice" and event.changes == {"recovery_codes": 10}


def test_auditors_set_up_two_factor_for_their_own_account(auditor_client, auditor_user, clock):
    auditor_client.get("/account/two-factor/")
    key = auditor_client.session[two_factor.ENROLMENT_KEY]
    answer = auditor_client.post("/account/two-factor/", {"code": code(key)})
    assert answer.status_code == 200 and two_factor.has_two_factor(auditor_user)
    # Their read-only rule still holds everywhere else.
    assert auditor_client.post("/sources/new/", {"name": "x"}).status_code == 403


# --- signing in -----------------------------------------------------------------


def test_a_password_alone_no_longer_signs_in_but_the_code_does_and_next_survives(client, admin_user, clock):
    key, _ = enrol(admin_user)
    clock.shift(30)
    answer = client.post("/login/?next=/backups/", {"username": "alice", "password": PASSWORD})
    assert answer.status_code == 302 and answer["Location"] == "/login/second-factor/"
    assert not signed_in(client)
    assert client.get("/backups/")["Location"].startswith("/login/")
    page = client.get("/login/second-factor/").content.decode()
    assert "Signing in as <strong>alice</strong>" in page

    answer = second_step(client, code(key))
    assert answer.status_code == 302 and answer["Location"] == "/backups/"
    assert signed_in(client) and client.get("/backups/").status_code == 200
    event = AuditEvent.objects.filter(action="auth.sign_in").get()
    assert event.actor_label == "alice" and event.changes == {"second_factor": "totp"} and event.ip == "127.0.0.1"
    assert client.session[two_factor.SIGNED_IN_WITH] == "password"


def test_without_two_factor_the_password_signs_in_as_before(client, admin_user):
    answer = client.post("/login/?next=/plans/", {"username": "alice", "password": PASSWORD, "next": "/plans/"})
    assert answer.status_code == 302 and answer["Location"] == "/plans/" and signed_in(client)
    assert AuditEvent.objects.get(action="auth.sign_in").changes == {"second_factor": None}


def test_next_may_not_lead_off_the_site(client, admin_user, clock):
    key, _ = enrol(admin_user)
    clock.shift(30)
    client.post("/login/?next=https://evil.example/", {"username": "alice", "password": PASSWORD})
    assert second_step(client, code(key))["Location"] == "/"
    assert 'value="https://evil.example/"' not in Client().get("/login/?next=https://evil.example/").content.decode()


def test_a_wrong_password_never_reaches_the_second_step(client, admin_user):
    enrol(admin_user)
    answer = password_step(client, "alice", "wrong")
    assert answer.status_code == 200 and "do not match" in answer.content.decode()
    assert client.get("/login/second-factor/")["Location"] == "/login/"


def test_a_recovery_code_signs_in_once(client, admin_user, clock):
    _, codes = enrol(admin_user)
    password_step(client, "alice")
    answer = second_step(client, f"  {codes[3].upper()[:4]}-{codes[3][4:]} ")  # as people copy them
    assert answer["Location"] == "/" and signed_in(client)
    assert AuditEvent.objects.get(action="auth.sign_in").changes == {"second_factor": "recovery code"}
    assert AuditEvent.objects.get(action="two_factor.recovery_code_used").changes == {"recovery_codes_left": 9}
    assert "Recovery code used; 9 left." in client.get("/").content.decode()

    client.post("/logout/")
    clock.shift(60)
    password_step(client, "alice")
    answer = second_step(client, codes[3])
    assert answer.status_code == 200 and "not right" in answer.content.decode() and not signed_in(client)
    clock.shift(1)  # django-otp's slow-down after a wrong code
    assert second_step(client, codes[4])["Location"] == "/"
    assert StaticToken.objects.count() == 8


def test_a_code_is_never_accepted_twice(client, admin_user, clock):
    key, _ = enrol(admin_user)
    # The code that confirmed the set-up is spent too.
    password_step(client, "alice")
    assert "not right" in second_step(client, code(key)).content.decode()
    clock.shift(30)
    used = code(key)
    assert second_step(client, used)["Location"] == "/"
    client.post("/logout/")

    clock.shift(2)  # same 30 seconds: the same code still shows in the app
    password_step(client, "alice")
    answer = second_step(client, used)
    assert answer.status_code == 200 and not signed_in(client)
    clock.shift(30)
    assert second_step(client, code(key))["Location"] == "/"


def test_a_pending_sign_in_expires_after_five_minutes(client, admin_user, clock):
    key, _ = enrol(admin_user)
    clock.shift(30)
    password_step(client, "alice")
    clock.shift(two_factor.PENDING_SECONDS + 1)
    answer = second_step(client, code(key))
    assert answer["Location"] == "/login/" and not signed_in(client)
    assert "waited more than five minutes" in client.get("/login/").content.decode()
    assert two_factor.PENDING_KEY not in client.session


def test_a_user_deactivated_meanwhile_cannot_finish(client, admin_user, clock):
    key, _ = enrol(admin_user)
    clock.shift(30)
    password_step(client, "alice")
    User.objects.filter(pk=admin_user.pk).update(is_active=False)
    assert second_step(client, code(key))["Location"] == "/login/" and not signed_in(client)


# --- lockouts -------------------------------------------------------------------


def test_wrong_codes_lock_out_like_wrong_passwords(client, admin_user, clock):
    key, _ = enrol(admin_user)
    password_step(client, "alice")
    answers = []
    for _ in range(settings.AXES_FAILURE_LIMIT):
        clock.shift(20)  # past django-otp's slow-down (1, 2, 4, 8 s) so that each code is checked
        answers.append(second_step(client, wrong(key)))
    assert [a.status_code for a in answers] == [200] * (settings.AXES_FAILURE_LIMIT - 1) + [429]
    assert "not right" in answers[0].content.decode() and LOCKED in answers[-1].content.decode()
    assert "wrong passwords or two-factor codes" in answers[-1].content.decode()
    assert not signed_in(client)
    # The right password and the right code are refused too until the cool-off has passed.
    assert password_step(client, "alice").status_code == 429
    clock.shift(60)
    assert second_step(client, code(key))["Location"] == "/login/"  # the pending sign-in went with the lockout

    events = AuditEvent.objects.filter(action="auth.lockout")
    assert events.count() == 1 and events.get().changes == {"username": "alice", "failure_limit": 5}
    attempt = AccessAttempt.objects.get(username="alice")
    assert attempt.path_info == "/login/second-factor/" and "code=****" in attempt.post_data
    assert wrong(key) not in attempt.post_data

    clock.shift(settings.AXES_COOLOFF_TIME.total_seconds())
    password_step(client, "alice")
    assert second_step(client, code(key))["Location"] == "/" and signed_in(client)


def test_wrong_passwords_and_wrong_codes_share_one_count(client, admin_user, clock):
    key, _ = enrol(admin_user)
    for n in range(3):
        assert password_step(client, "alice", f"wrong-{n}").status_code == 200
    password_step(client, "alice")
    clock.shift(30)
    assert second_step(client, wrong(key)).status_code == 200
    clock.shift(30)
    assert second_step(client, wrong(key)).status_code == 429


def test_a_code_typed_during_django_otps_slow_down_is_not_checked_nor_counted(client, admin_user, clock):
    key, _ = enrol(admin_user)
    clock.shift(30)
    password_step(client, "alice")
    second_step(client, wrong(key))
    answer = second_step(client, code(key))  # at once: the device waits a second after a wrong code
    assert "wait 1 second," in answer.content.decode() and not signed_in(client)
    assert AccessAttempt.objects.get(username="alice").failures_since_start == 1
    clock.shift(1)
    assert second_step(client, code(key))["Location"] == "/"


def test_a_locked_out_user_name_is_refused_before_any_code_is_checked(client, admin_user, clock):
    key, _ = enrol(admin_user)
    clock.shift(30)
    password_step(client, "alice")
    other = Client()
    for n in range(settings.AXES_FAILURE_LIMIT):
        password_step(other, "alice", f"wrong-{n}")  # the same address
    answer = second_step(client, code(key))
    assert answer.status_code == 429 and not signed_in(client)
    assert TOTPDevice.objects.get().last_t < TOTP(unhexlify(key)).t()  # the code was not used up


# --- changing it ----------------------------------------------------------------


def test_new_recovery_codes_need_a_current_code_and_replace_the_old(client, admin_user, clock):
    key, old = enrol(admin_user)
    client.force_login(admin_user)
    refused = client.post("/account/two-factor/recovery-codes/", {"code": wrong(key)}, follow=True)
    assert "not right" in refused.content.decode()
    assert sorted(StaticToken.objects.values_list("token", flat=True)) == sorted(old)
    clock.shift(30)
    answer = client.post("/account/two-factor/recovery-codes/", {"code": code(key)})
    new = re.findall(r"<li>([a-z2-7]{8})</li>", answer.content.decode())
    assert len(new) == 10 and not set(new) & set(old) and "old codes no longer work" in answer.content.decode()
    assert sorted(StaticToken.objects.values_list("token", flat=True)) == sorted(new)
    assert AuditEvent.objects.get(action="two_factor.recovery_codes").changes == {
        "recovery_codes": 10,
        "confirmed_with": "totp",
    }


def test_turning_it_off_needs_a_current_code(client, auditor_user, clock):
    key, codes = enrol(auditor_user)
    client.force_login(auditor_user)
    assert "not right" in client.post("/account/two-factor/disable/", {"code": "nope"}, follow=True).content.decode()
    assert two_factor.has_two_factor(auditor_user)
    clock.shift(1)  # django-otp's slow-down after a wrong code
    answer = client.post("/account/two-factor/disable/", {"code": codes[0]}, follow=True)
    assert "Two-factor is off" in answer.content.decode() and not two_factor.has_two_factor(auditor_user)
    assert not StaticDevice.objects.exists()
    assert AuditEvent.objects.get(action="two_factor.disable").changes == {"confirmed_with": "recovery code"}
    client.post("/logout/")
    assert password_step(client, "audrey")["Location"] == "/" and signed_in(client)


def test_an_administrator_may_not_turn_it_off_while_the_policy_requires_it(client, admin_user, clock):
    key, _ = enrol(admin_user)
    two_factor.set_two_factor_required("test", True)
    client.force_login(admin_user)
    clock.shift(30)
    answer = client.post("/account/two-factor/disable/", {"code": code(key)}, follow=True)
    assert "required for administrators" in answer.content.decode() and two_factor.has_two_factor(admin_user)
    assert "two_factor.disable" not in actions()


# --- the policy -----------------------------------------------------------------


def test_required_for_administrators_an_administrator_must_set_it_up_before_anything_else(
    client, admin_user, auditor_client, clock
):
    answer = Client().get("/people/")  # signed out: the sign-in page as ever
    assert answer["Location"].startswith("/login/")
    admin = Client()
    admin.force_login(admin_user)  # the policy also holds for sessions from before it
    two_factor.set_two_factor_required(admin_user, True)
    assert AuditEvent.objects.get(action="sign_in_policy.change").changes == {
        "require_two_factor_for_administrators": [False, True]
    }
    for path in ("/", "/backups/", "/people/", "/admin/"):
        assert admin.get(path)["Location"] == "/account/two-factor/", path
    assert admin.post("/sources/new/", {"name": "x"})["Location"] == "/account/two-factor/"
    htmx = admin.get("/", headers={"HX-Request": "true"})
    assert htmx["HX-Redirect"] == "/account/two-factor/"
    page = admin.get("/account/two-factor/").content.decode()
    assert "Administrators must use two-factor" in page
    # Still reachable: health checks, static files, the API with a token; and signing out.
    assert admin.get("/healthz").status_code == 200
    assert admin.get("/static/css/strongroom.css").status_code == 200
    _, raw = make_token(["read"])
    assert admin.get("/api/v1/status", headers=bearer(raw)).status_code == 200
    # Auditors are not asked.
    assert auditor_client.get("/backups/").status_code == 200

    key = admin.session[two_factor.ENROLMENT_KEY]
    admin.post("/account/two-factor/", {"code": code(key)})
    assert admin.get("/backups/").status_code == 200
    assert admin.post("/logout/").status_code == 302
    assert password_step(admin, "alice")["Location"] == "/login/second-factor/"


def test_single_sign_on_sessions_are_exempt_from_the_policy(admin_client, admin_user):
    two_factor.set_two_factor_required("test", True)
    assert admin_client.get("/backups/")["Location"] == "/account/two-factor/"
    session = admin_client.session
    session[two_factor.SIGNED_IN_WITH] = two_factor.SSO
    session.save()
    assert admin_client.get("/backups/").status_code == 200


def test_the_policy_form_is_for_administrators(admin_client, auditor_client, admin_user, clock):
    required = {"require_two_factor_for_administrators": "on"}
    assert auditor_client.post("/people/two-factor-policy/", required).status_code == 403
    assert not SignInPolicy.current().require_two_factor_for_administrators
    answer = admin_client.post("/people/two-factor-policy/", required)
    assert answer["Location"] == "/people/" and SignInPolicy.current().require_two_factor_for_administrators
    # Alice has no two-factor herself: from now on she must set it up first, even to turn the policy off.
    assert admin_client.post("/people/two-factor-policy/", {})["Location"] == "/account/two-factor/"
    assert SignInPolicy.current().require_two_factor_for_administrators
    enrol(admin_user)
    admin_client.post("/people/two-factor-policy/", required)  # unchanged: nothing recorded
    admin_client.post("/people/two-factor-policy/", {})
    assert not SignInPolicy.current().require_two_factor_for_administrators
    assert actions().count("sign_in_policy.change") == 2
    assert admin_client.get("/people/two-factor-policy/").status_code == 405


def test_the_policy_partial_renders_a_checkbox_for_administrators_and_words_for_auditors(rf):
    from django.template.loader import render_to_string

    policy = SignInPolicy.current()
    for_admin = render_to_string(
        "accounts/partials/two_factor_policy.html", {"policy": policy, "can_operate": True}, request=rf.get("/")
    )
    assert 'name="require_two_factor_for_administrators"' in for_admin and "Save" in for_admin
    for_auditor = render_to_string("accounts/partials/two_factor_policy.html", {"policy": policy, "can_operate": False})
    assert "<form" not in for_auditor and "Optional" in for_auditor


# --- reset by another administrator ---------------------------------------------


def test_another_administrator_resets_it_and_the_password_alone_signs_in(client, admin_user, auditor_user, clock):
    enrol(auditor_user)
    assert two_factor.has_two_factor(auditor_user)
    client.force_login(admin_user)
    auditor = Client()
    auditor.force_login(auditor_user)
    assert auditor.post(f"/people/{auditor_user.pk}/two-factor/reset/").status_code == 403
    answer = client.post(f"/people/{auditor_user.pk}/two-factor/reset/")
    assert answer["Location"] == f"/people/{auditor_user.pk}/"
    assert not TOTPDevice.objects.filter(user=auditor_user).exists()
    assert not StaticDevice.objects.filter(user=auditor_user).exists()
    event = AuditEvent.objects.get(action="two_factor.reset")
    assert event.actor_label == "alice" and event.object_id == str(auditor_user.pk)

    stranger = Client()
    assert password_step(stranger, "audrey")["Location"] == "/" and signed_in(stranger)


def test_nobody_resets_their_own(admin_user, clock):
    enrol(admin_user)
    with pytest.raises(Refused, match="turn it off"):
        two_factor.reset_two_factor(admin_user, admin_user)
    assert two_factor.has_two_factor(admin_user)


# --- the Django admin -----------------------------------------------------------


def test_the_admin_cannot_be_signed_into_with_a_password_alone(client, admin_user, clock):
    User.objects.filter(pk=admin_user.pk).update(is_staff=True, is_superuser=True)
    key, _ = enrol(admin_user)
    answer = client.get("/admin/")
    assert answer["Location"] == "/admin/login/?next=/admin/"
    answer = client.get(answer["Location"])
    assert answer["Location"] == "/login/?next=%2Fadmin%2F"
    # The admin's own form, posted by hand, is our sign-in: it stops at the second step.
    answer = password_step(client, "alice", path="/admin/login/?next=/admin/")
    assert answer["Location"] == "/login/second-factor/" and not signed_in(client)
    assert client.get("/admin/")["Location"].startswith("/admin/login/")
    clock.shift(30)
    assert second_step(client, code(key))["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_no_code_or_key_reaches_the_audit_trail(client, admin_user, clock):
    key, codes = enrol(admin_user)
    password_step(client, "alice")
    second_step(client, codes[0])
    client.post("/account/two-factor/recovery-codes/", {"code": codes[1]})
    trail = str(list(AuditEvent.objects.values_list("changes", "object_repr")))
    assert key not in trail and two_factor.key_for_typing(key).replace(" ", "") not in trail
    assert not any(c in trail for c in codes)
