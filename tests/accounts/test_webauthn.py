"""Security keys and passkeys (WebAuthn, accounts/security_keys.py) in a real
Chromium, whose DevTools Protocol gives it a virtual authenticator (a CTAP2
key on USB with user verification): a key is added on the Two-factor page and
signs in after the password; a removed key's answer is refused; an answer
changed on its way, one whose signature count went back, and one posted by
hand are refused and counted by axes like wrong codes, and a locked-out user's
answer is not even checked; the administrators' policy counts a key as
two-factor. No challenge or credential reaches a log record, the axes record
or the audit trail."""

import json
import logging
import os
import re
from base64 import urlsafe_b64decode, urlsafe_b64encode
from urllib.parse import parse_qs, urlencode

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.test import Client
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import expect

from accounts import two_factor
from accounts.models import SecurityKey
from catalog.errors import Refused
from catalog.models import AuditEvent
from tests.accounts.test_two_factor import clock  # noqa: F401 — a fixture
from tests.accounts.test_two_factor_browser import csp_violations
from tests.support import log_in

pytestmark = pytest.mark.django_db(transaction=True)
SHOTS = os.environ.get("STRONGROOM_SCREENSHOTS")  # a directory, to look at the pages by hand
PASSWORD = "correct horse battery"
KEY_OPTIONS = "/login/second-factor/key-options/"
NOT_ACCEPTED = "answer was not accepted"
LOCKED = "Too many failed sign-in attempts"


def shot(page, name):
    if SHOTS:
        page.wait_for_load_state()  # webauthn.js has shown what this browser can use
        page.screenshot(path=f"{SHOTS}/{name}.png", full_page=True)


class Authenticator:
    """A virtual authenticator in the page's browser (Chrome DevTools Protocol's WebAuthn domain)."""

    def __init__(self, page):
        self.cdp = page.context.new_cdp_session(page)
        self.cdp.send("WebAuthn.enable")
        options = {
            "protocol": "ctap2",
            "transport": "usb",
            "hasResidentKey": True,
            "hasUserVerification": True,
            "isUserVerified": True,
        }
        self.id = self.cdp.send("WebAuthn.addVirtualAuthenticator", {"options": options})["authenticatorId"]

    def credentials(self):
        return self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.id})["credentials"]

    def remove(self, credential):
        self.cdp.send(
            "WebAuthn.removeCredential", {"authenticatorId": self.id, "credentialId": credential["credentialId"]}
        )

    def put(self, credential, **changes):
        self.cdp.send("WebAuthn.addCredential", {"authenticatorId": self.id, "credential": {**credential, **changes}})


def b64url(standard_base64):
    """The DevTools Protocol's base64 as WebAuthn's JSON (and SecurityKey.credential_id) writes it."""
    return standard_base64.replace("+", "-").replace("/", "_").rstrip("=")


class Challenges:
    """Every challenge the server hands the browser, read from the options on their way."""

    def __init__(self, page):
        self.made = []
        page.route("**/*options/", self.note)

    def note(self, route):
        answer = route.fetch()
        if answer.ok:
            self.made.append(answer.json()["challenge"])
        route.fulfill(response=answer)


def add_key(page, live_server, name):
    page.goto(f"{live_server.url}/account/two-factor/")
    page.fill("#id_key_name", name)
    page.click("button:has-text('Add a security key or passkey')")


def password_step(page, live_server, username):
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/login/second-factor/")


def sign_in_with_key(page, live_server, username):
    password_step(page, live_server, username)
    page.click("button:has-text('Use your security key')")
    page.wait_for_url(f"{live_server.url}/")


def log_out(page):
    page.click("button:has-text('Log out')")


def failures(username):
    attempt = AccessAttempt.objects.filter(username=username).first()
    return attempt.failures_since_start if attempt else 0


def server_error(page):
    return page.locator(".flash-error:not([data-webauthn-error])")


def events(action):
    return list(AuditEvent.objects.filter(action=action).order_by("id").values_list("changes", flat=True))


def test_an_administrator_adds_a_key_and_signs_in_with_it(live_server, page, admin_user, caplog):
    caplog.set_level(logging.DEBUG)
    assert live_server.url.startswith("http://localhost:")  # a secure context, and the RP ID "localhost"
    refused = csp_violations(page)
    challenges = Challenges(page)
    authenticator = Authenticator(page)
    log_in(page, live_server, admin_user)
    page.goto(f"{live_server.url}/account/two-factor/")
    expect(page.locator("button:has-text('Add a security key or passkey')")).to_be_visible()
    shot(page, "webauthn-off-1280")
    add_key(page, live_server, "YubiKey on my key ring")
    # The first second factor: two-factor is on, with recovery codes shown once.
    expect(page.locator("h1")).to_have_text("Two-factor is on")
    codes = page.locator("#recovery-codes li").all_inner_texts()
    assert len(codes) == 10
    key = SecurityKey.objects.get(user=admin_user)
    assert key.name == "YubiKey on my key ring" and key.transports == ["usb"]
    assert [b64url(c["credentialId"]) for c in authenticator.credentials()] == [key.credential_id]
    assert two_factor.has_two_factor(admin_user) and not two_factor.authenticator(admin_user)
    page.click("text=I have saved them")
    expect(page.locator(".key-row")).to_contain_text("YubiKey on my key ring")
    expect(page.locator(".key-row")).to_contain_text("not used yet")
    shot(page, "webauthn-on-1280")
    log_out(page)

    # The password alone leads to the second step; the key finishes it.
    password_step(page, live_server, "alice")
    expect(page.locator("#id_code")).to_have_count(0)  # no authenticator app: no box for its code
    shot(page, "webauthn-sign-in-1280")
    page.click("button:has-text('Use your security key')")
    page.wait_for_url(f"{live_server.url}/")
    key.refresh_from_db()
    assert key.sign_count > 0 and key.last_used_at is not None
    counted = key.sign_count
    page.goto(f"{live_server.url}/account/two-factor/")
    expect(page.locator(".key-row")).to_contain_text("last used")
    log_out(page)
    sign_in_with_key(page, live_server, "alice")
    key.refresh_from_db()
    assert key.sign_count > counted

    assert events("two_factor.key_added") == [
        {"name": "YubiKey on my key ring", "transports": ["usb"], "recovery_codes": 10}
    ]
    assert events("auth.sign_in") == [
        {"second_factor": None},
        {"second_factor": "security key"},
        {"second_factor": "security key"},
    ]
    # Nothing of the ceremonies in a log record or the trail: the challenges, the credential, its public key.
    trail = json.dumps([[e.object_repr, e.changes] for e in AuditEvent.objects.all()])
    made = challenges.made
    assert len(made) == 3
    for secret in [*made, key.credential_id, urlsafe_b64encode(bytes(key.public_key)).decode().rstrip("=")]:
        assert secret not in caplog.text and secret not in trail
    assert not refused, refused


def test_a_removed_key_no_longer_signs_in(live_server, page, admin_user):
    authenticator = Authenticator(page)
    log_in(page, live_server, admin_user)
    add_key(page, live_server, "Old key")
    page.click("text=I have saved them")
    # A second key on the same authenticator: the first is taken out for a moment,
    # as the browser will not register a key it already holds (excludeCredentials).
    [old] = authenticator.credentials()
    authenticator.remove(old)
    add_key(page, live_server, "New key")
    expect(page.locator(".flash-success")).to_contain_text("Security key added")
    authenticator.put(old)
    assert list(SecurityKey.objects.values_list("name", flat=True)) == ["Old key", "New key"]

    # Removing needs a current second factor: here a key's touch.
    row = page.locator(".key-row", has_text="Old key")
    row.locator("summary:has-text('Remove')").click()
    shot(page, "webauthn-remove-1280")
    row.locator("button:has-text('Confirm with a security key and remove')").click()
    expect(page.locator(".flash-success")).to_contain_text("“Old key” removed")
    assert list(SecurityKey.objects.values_list("name", flat=True)) == ["New key"]
    assert events("two_factor.key_removed") == [{"name": "Old key", "confirmed_with": "security key"}]
    log_out(page)

    # The old key's answer, to a challenge that now allows it again on its way to the browser, is refused.
    old_id = b64url(old["credentialId"])

    def allow_the_old_key(route):
        answer = route.fetch()
        options = answer.json()
        options["allowCredentials"] = [{"type": "public-key", "id": old_id}]
        route.fulfill(response=answer, json=options)

    password_step(page, live_server, "alice")
    page.route(f"**{KEY_OPTIONS}", allow_the_old_key)
    page.click("button:has-text('Use your security key')")
    expect(server_error(page)).to_contain_text(NOT_ACCEPTED)
    assert page.url == f"{live_server.url}/login/second-factor/" and failures("alice") == 1
    page.unroute(f"**{KEY_OPTIONS}")
    # The key that stays still works.
    page.click("button:has-text('Use your security key')")
    page.wait_for_url(f"{live_server.url}/")


def test_an_answer_changed_on_its_way_or_counting_backwards_is_refused_and_counted(
    live_server, page, admin_user, caplog
):
    authenticator = Authenticator(page)
    log_in(page, live_server, admin_user)
    add_key(page, live_server, "Titan")
    page.click("text=I have saved them")
    log_out(page)
    key = SecurityKey.objects.get()

    # One byte of the signature changed between the browser and the server.
    def tamper(route):
        form = parse_qs(route.request.post_data)
        answer = json.loads(form["key_answer"][0])
        signature = bytearray(urlsafe_b64decode(answer["response"]["signature"] + "=="))
        signature[-1] ^= 1
        answer["response"]["signature"] = urlsafe_b64encode(bytes(signature)).decode().rstrip("=")
        form["key_answer"] = [json.dumps(answer)]
        route.continue_(post_data=urlencode(form, doseq=True))

    password_step(page, live_server, "alice")
    page.route(
        "**/login/second-factor/", lambda route: tamper(route) if route.request.method == "POST" else route.continue_()
    )
    page.click("button:has-text('Use your security key')")
    expect(server_error(page)).to_contain_text(NOT_ACCEPTED)
    assert failures("alice") == 1
    page.unroute("**/login/second-factor/")
    # Nothing of the answer is kept by axes: it holds the challenge it signed.
    assert "key_answer=****" in AccessAttempt.objects.get(username="alice").post_data

    # The key counts on from where the server last saw it: a count that goes back is a cloned key's.
    page.click("button:has-text('Use your security key')")
    page.wait_for_url(f"{live_server.url}/")
    log_out(page)
    key.refresh_from_db()
    [credential] = authenticator.credentials()
    assert credential["signCount"] == key.sign_count > 0
    authenticator.remove(credential)
    authenticator.put(credential, signCount=0)
    password_step(page, live_server, "alice")
    page.click("button:has-text('Use your security key')")
    expect(server_error(page)).to_contain_text(NOT_ACCEPTED)
    assert failures("alice") == 1  # the right key cleared the count; this one adds to it again
    assert "signed with count 1 after" in caplog.text and "may have been cloned" in caplog.text
    assert SecurityKey.objects.get().sign_count == key.sign_count
    assert events("auth.sign_in")[-1] == {"second_factor": "security key"}  # the one before


def test_a_locked_out_users_answer_is_not_checked(live_server, page, admin_user):
    Authenticator(page)
    log_in(page, live_server, admin_user)
    add_key(page, live_server, "Titan")
    page.click("text=I have saved them")
    log_out(page)
    registered = SecurityKey.objects.get().sign_count

    # The key's answer is caught on its way and held back.
    held = []
    password_step(page, live_server, "alice")
    page.route("**/login/second-factor/", lambda route: (held.append(route.request.post_data), route.abort()))
    with page.expect_event("requestfailed"):
        page.click("button:has-text('Use your security key')")
    page.unroute("**/login/second-factor/")
    page.goto(f"{live_server.url}/login/second-factor/")  # still pending: nothing reached the server

    # Meanwhile someone at the same address tries passwords until alice is locked out.
    other = Client(REMOTE_ADDR="127.0.0.1")  # the live server's loopback address
    for n in range(settings.AXES_FAILURE_LIMIT):
        other.post("/login/", {"username": "alice", "password": f"wrong-{n}"})
    # The button says so without asking the key...
    page.click("button:has-text('Use your security key')")
    expect(page.locator("[data-webauthn-error]")).to_contain_text(LOCKED)
    # ...and the answer, sent now, is not checked: the lockout page, the key unused.
    answer = page.evaluate(
        """body => fetch("/login/second-factor/", {method: "POST", body: new URLSearchParams(body),
                          headers: {"Content-Type": "application/x-www-form-urlencoded"}})
                  .then(r => r.status)""",
        held[0],
    )
    assert answer == 429
    key = SecurityKey.objects.get()
    assert key.sign_count == registered and key.last_used_at is None
    assert events("auth.sign_in") == [{"second_factor": None}]


def test_the_policy_counts_a_key_as_two_factor(live_server, page, admin_user):
    two_factor.set_two_factor_required("test", True)
    Authenticator(page)
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/account/two-factor/")  # sent to the set-up page, nothing else opens
    page.goto(f"{live_server.url}/backups/")
    page.wait_for_url(f"{live_server.url}/account/two-factor/")
    expect(page.locator(".flash-warning")).to_contain_text("Administrators must use two-factor")
    add_key(page, live_server, "Only key")
    expect(page.locator("h1")).to_have_text("Two-factor is on")
    page.goto(f"{live_server.url}/backups/")
    assert page.url == f"{live_server.url}/backups/"
    # The only second factor of an administrator under the policy stays until another is added.
    page.goto(f"{live_server.url}/account/two-factor/")
    page.locator(".key-row summary:has-text('Remove')").click()
    expect(page.locator(".key-remove")).to_contain_text("add another key or an authenticator app first")
    expect(page.locator(".key-remove form")).to_have_count(0)
    page.goto(f"{live_server.url}/people/")
    expect(page.locator("tr", has_text="alice")).to_contain_text("+ two-factor")


def test_an_auditor_adds_a_passkey_on_a_phone(live_server, browser, auditor_user):
    phone = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
    refused = csp_violations(phone)
    Authenticator(phone)
    log_in(phone, live_server, auditor_user)
    phone.goto(f"{live_server.url}/account/two-factor/")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    shot(phone, "webauthn-off-390")
    add_key(phone, live_server, "Phone passkey with a rather long name to see it wrap")
    phone.click("text=I have saved them")
    phone.locator(".key-row summary:has-text('Remove')").click()
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    shot(phone, "webauthn-on-390")
    phone.click("summary:has-text('Menu')")
    phone.click("button:has-text('Log out')")
    password_step(phone, live_server, "audrey")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    shot(phone, "webauthn-sign-in-390")
    phone.click("button:has-text('Use your security key')")
    phone.wait_for_url(f"{live_server.url}/")
    assert not refused, refused
    phone.context.close()


# --- without a browser: answers posted by hand, and keys beside the other factors ---------


def a_key(user, name="Desk key", credential_id="AAAAAAAAAAAAAAAAAAAAAA"):
    """A key as if registered: its public key is no key's, so no answer of it checks out."""
    return SecurityKey.objects.create(user=user, name=name, credential_id=credential_id, public_key=b"\xa0")


def forged_answer(credential_id, challenge="AAAA"):
    client_data = json.dumps({"type": "webauthn.get", "challenge": challenge, "origin": "http://testserver"})
    encode = lambda data: urlsafe_b64encode(data).decode().rstrip("=")  # noqa: E731
    return json.dumps(
        {
            "id": credential_id,
            "rawId": credential_id,
            "type": "public-key",
            "response": {
                "clientDataJSON": encode(client_data.encode()),
                "authenticatorData": encode(bytes(37)),
                "signature": encode(b"\x30\x06\x02\x01\x01\x02\x01\x01"),
            },
        }
    )


def test_answers_posted_by_hand_are_refused_and_counted(client, admin_user):
    key = a_key(admin_user)
    client.post("/login/", {"username": "alice", "password": PASSWORD})
    # No challenge asked for, a challenge asked for and answered by a forged signature, not JSON at all.
    first = client.post("/login/second-factor/", {"key_answer": forged_answer(key.credential_id)})
    options = client.post(KEY_OPTIONS)
    assert options.status_code == 200 and options.json()["rpId"] == "testserver"
    assert options.json()["allowCredentials"] == [{"type": "public-key", "id": key.credential_id}]
    second = client.post(
        "/login/second-factor/", {"key_answer": forged_answer(key.credential_id, options.json()["challenge"])}
    )
    third = client.post("/login/second-factor/", {"key_answer": "{not json"})
    for answer in (first, second, third):
        assert answer.status_code == 200 and NOT_ACCEPTED in answer.content.decode()
    assert failures("alice") == 3 and "_auth_user_id" not in client.session
    assert not events("auth.sign_in")


def test_the_options_need_a_pending_sign_in_and_a_key(client, admin_user):
    answer = client.post(KEY_OPTIONS)
    assert answer.status_code == 403 and "start again" in answer.json()["error"]
    TOTPDevice.objects.create(user=admin_user, name="Authenticator app", confirmed=True)
    client.post("/login/", {"username": "alice", "password": PASSWORD})
    answer = client.post(KEY_OPTIONS)
    assert answer.status_code == 403 and "No security key" in answer.json()["error"]
    assert two_factor.security_keys.CHALLENGE_KEY not in client.session


def test_the_second_step_offers_the_key_beside_the_code_and_a_recovery_code(client, admin_user):
    TOTPDevice.objects.create(user=admin_user, name="Authenticator app", confirmed=True)
    a_key(admin_user)
    client.post("/login/", {"username": "alice", "password": PASSWORD})
    page = client.get("/login/second-factor/").content.decode()
    assert "Use your security key" in page and 'id="id_code"' in page and 'id="id_recovery_code"' in page


def test_people_reset_and_turning_off_cover_keys(client, rf, admin_user, auditor_user):
    a_key(auditor_user)
    StaticToken.objects.create(
        device=StaticDevice.objects.create(user=auditor_user, name="Recovery codes", confirmed=True), token="abcd2345"
    )
    assert two_factor.has_two_factor(auditor_user)
    assert two_factor.users_with_two_factor() == {auditor_user.pk}
    request = rf.get("/")
    request.session = {}
    auditor_user.groups.set(admin_user.groups.all())  # an administrator, as the policy asks of them
    two_factor.set_two_factor_required("test", True)
    assert not two_factor.needs_enrolment(auditor_user, request)
    two_factor.set_two_factor_required("test", False)
    client.force_login(admin_user)
    assert re.search(r"audrey.*?\+ two-factor", client.get("/people/").content.decode(), re.S)
    client.post(f"/people/{auditor_user.pk}/two-factor/reset/")
    assert not SecurityKey.objects.exists() and not StaticDevice.objects.exists()
    assert events("two_factor.reset") == [{"username": "audrey", "security_keys_removed": 1}]

    # Turning it off removes the keys too (confirmed here with a recovery code).
    a_key(admin_user)
    StaticToken.objects.create(
        device=StaticDevice.objects.create(user=admin_user, name="Recovery codes", confirmed=True), token="efgh2345"
    )
    answer = client.post("/account/two-factor/disable/", {"code": "efgh2345"}, follow=True)
    assert "Two-factor is off" in answer.content.decode()
    assert not SecurityKey.objects.exists()
    assert events("two_factor.disable") == [{"confirmed_with": "recovery code", "security_keys_removed": 1}]


def test_removing_the_last_key_turns_two_factor_off_and_needs_a_current_factor(client, auditor_user, clock):
    key = a_key(auditor_user)
    StaticToken.objects.create(
        device=StaticDevice.objects.create(user=auditor_user, name="Recovery codes", confirmed=True), token="abcd2345"
    )
    client.force_login(auditor_user)
    refused = client.post(f"/account/two-factor/keys/{key.pk}/remove/", {"code": "nope"}, follow=True)
    assert "not right" in refused.content.decode() and SecurityKey.objects.exists()
    refused = client.post(f"/account/two-factor/keys/{key.pk}/remove/", {"key_answer": "{}"}, follow=True)
    assert "answer was not accepted" in refused.content.decode()
    assert SecurityKey.objects.exists() and failures("audrey") == 2
    clock.shift(1)  # django-otp's slow-down after a wrong code
    answer = client.post(f"/account/two-factor/keys/{key.pk}/remove/", {"code": "abcd2345"}, follow=True)
    assert "Two-factor is off" in answer.content.decode()
    assert not SecurityKey.objects.exists() and not StaticDevice.objects.exists()
    assert events("two_factor.key_removed") == [
        {"name": "Desk key", "confirmed_with": "recovery code", "two_factor": "off"}
    ]


def test_someone_elses_key_cannot_be_removed(client, admin_user, auditor_user):
    theirs = a_key(auditor_user)
    a_key(admin_user, credential_id="BBBBBBBBBBBBBBBBBBBBBB")
    client.force_login(admin_user)
    answer = client.post(f"/account/two-factor/keys/{theirs.pk}/remove/", {"code": "abcd2345"}, follow=True)
    assert "not registered to your account" in answer.content.decode()
    assert SecurityKey.objects.filter(pk=theirs.pk).exists()


def test_an_authenticator_app_beside_a_key_keeps_the_recovery_codes(client, admin_user):
    from tests.accounts.test_two_factor import code

    a_key(admin_user)
    StaticToken.objects.create(
        device=StaticDevice.objects.create(user=admin_user, name="Recovery codes", confirmed=True), token="abcd2345"
    )
    client.force_login(admin_user)
    page = client.get("/account/two-factor/").content.decode()
    assert "Add an authenticator app" in page
    key = client.session[two_factor.ENROLMENT_KEY]
    answer = client.post("/account/two-factor/", {"code": code(key)}, follow=True)
    assert "Authenticator app added" in answer.content.decode()
    assert list(StaticToken.objects.values_list("token", flat=True)) == ["abcd2345"]
    assert events("two_factor.enrol") == [{"recovery_codes_kept": 1}]


def test_a_key_needs_a_name_and_a_fresh_challenge(client, rf, admin_user):
    client.force_login(admin_user)
    answer = client.post("/account/two-factor/keys/add/", {"name": "  ", "key_answer": "{}"}, follow=True)
    assert "Give the key a name" in answer.content.decode()
    answer = client.post("/account/two-factor/keys/add/", {"name": "Key", "key_answer": "{}"}, follow=True)
    assert "took too long" in answer.content.decode()
    options = client.post("/account/two-factor/keys/options/").json()
    assert options["rp"] == {"name": settings.SITE_NAME, "id": "testserver"}
    assert options["authenticatorSelection"]["residentKey"] == "discouraged"
    assert options["authenticatorSelection"]["userVerification"] == "preferred"
    answer = client.post("/account/two-factor/keys/add/", {"name": "Key", "key_answer": "{}"}, follow=True)
    assert "could not be checked" in answer.content.decode()
    assert not SecurityKey.objects.exists() and not events("two_factor.key_added")
    with pytest.raises(Refused, match="no security key"):
        two_factor.confirm_options(rf.post("/"), admin_user)
