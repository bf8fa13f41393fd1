"""Two-factor in Chromium: an administrator sets it up from the user menu by
scanning (here: reading) the key, signs out, and signs in again with the
password and a code from the app, then with a recovery code; an auditor sets
it up on a phone. No page breaks the CSP (the QR code is inline SVG)."""

import os
from base64 import b32decode

import pytest
from django.contrib.auth.models import User
from django_otp.oath import TOTP
from playwright.sync_api import expect

from catalog.models import AuditEvent
from tests.support import log_in

pytestmark = pytest.mark.django_db(transaction=True)
SHOTS = os.environ.get("STRONGROOM_SCREENSHOTS")  # a directory, to look at the pages by hand
PASSWORD = "correct horse battery"


def shot(page, name):
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/{name}.png", full_page=True)


def app_code(typed_key, steps_ahead=0):
    """What an authenticator app given the key by hand shows now (or a period later)."""
    totp = TOTP(b32decode(typed_key.replace(" ", "")))
    totp.drift = steps_ahead
    return f"{totp.token():06d}"


def csp_violations(page):
    """Collects what the browser refuses because of the CSP, as it happens."""
    refused = []
    page.on(
        "console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None
    )
    return refused


def set_up(page):
    """On the Two-factor page: reads the key as a person types it into the app, confirms a code, returns the codes."""
    expect(page.locator(".qr svg")).to_be_visible()
    key = page.locator("#totp-key").inner_text()
    page.fill("#id_code", app_code(key))
    page.click("button:has-text('Turn on two-factor')")
    expect(page.locator("h1")).to_have_text("Two-factor is on")
    codes = page.locator("#recovery-codes li").all_inner_texts()
    assert len(codes) == 10
    return key, codes


def sign_in_with_password(page, live_server, username):
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/login/second-factor/")


def test_an_administrator_sets_it_up_and_signs_in_with_a_code_then_a_recovery_code(live_server, page, admin_user):
    refused = csp_violations(page)
    log_in(page, live_server, admin_user)
    page.click(".who >> text=Two-factor")
    page.wait_for_url(f"{live_server.url}/account/two-factor/")
    shot(page, "two-factor-setup-1280")
    key, codes = set_up(page)
    shot(page, "two-factor-codes-1280")
    page.click("text=I have saved them")
    expect(page.locator(".two-factor-state")).to_contain_text("On")
    shot(page, "two-factor-on-1280")
    page.click("button:has-text('Log out')")

    # The password alone leads to the second step, not in.
    sign_in_with_password(page, live_server, "alice")
    page.goto(f"{live_server.url}/backups/")
    assert "/login/" in page.url
    page.goto(f"{live_server.url}/login/second-factor/")
    shot(page, "two-factor-sign-in-1280")
    page.fill("#id_code", app_code(key, steps_ahead=1))  # the set-up spent this period's code
    page.click("button:has-text('Verify and sign in')")
    page.wait_for_url(f"{live_server.url}/")
    page.click("button:has-text('Log out')")

    sign_in_with_password(page, live_server, "alice")
    page.click("text=Lost your phone? Use a recovery code")
    page.fill("#id_recovery_code", codes[0])
    shot(page, "two-factor-recovery-1280")
    page.click("button:has-text('Sign in with a recovery code')")
    page.wait_for_url(f"{live_server.url}/")
    expect(page.locator(".flash")).to_contain_text("Recovery code used; 9 left.")
    page.click("button:has-text('Log out')")

    # The same recovery code does not work twice.
    sign_in_with_password(page, live_server, "alice")
    page.click("text=Lost your phone? Use a recovery code")
    page.fill("#id_recovery_code", codes[0])
    page.click("button:has-text('Sign in with a recovery code')")
    expect(page.locator(".flash-error")).to_contain_text("That code is not right")
    assert page.url == f"{live_server.url}/login/second-factor/"

    assert list(
        AuditEvent.objects.filter(action__in=["auth.sign_in", "two_factor.enrol"])
        .order_by("id")
        .values_list("action", "changes")
    ) == [
        ("auth.sign_in", {"second_factor": None}),  # before it was on
        ("two_factor.enrol", {"recovery_codes": 10}),
        ("auth.sign_in", {"second_factor": "totp"}),
        ("auth.sign_in", {"second_factor": "recovery code"}),
    ]
    assert not refused, refused


def test_an_auditor_sets_it_up_on_a_phone(live_server, browser, auditor_user):
    phone = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
    refused = csp_violations(phone)
    log_in(phone, live_server, auditor_user)
    phone.goto(f"{live_server.url}/account/two-factor/")
    # Nothing wider than the phone: the QR code and the key fit.
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    shot(phone, "two-factor-setup-390")
    key, _ = set_up(phone)
    shot(phone, "two-factor-codes-390")
    phone.goto(f"{live_server.url}/")
    phone.click("summary:has-text('Menu')")
    phone.click("button:has-text('Log out')")

    sign_in_with_password(phone, live_server, "audrey")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    shot(phone, "two-factor-sign-in-390")
    phone.fill("#id_code", app_code(key, steps_ahead=1))
    phone.click("button:has-text('Verify and sign in')")
    phone.wait_for_url(f"{live_server.url}/")
    assert User.objects.get(username="audrey").totpdevice_set.filter(confirmed=True).exists()
    assert not refused, refused
    phone.context.close()
