"""The people page in Chromium: an administrator invites an auditor, who
chooses a password from the link and signs in; then the administrator
deactivates them and their open session ends."""

import os
import re

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from catalog.roles import role_of
from tests.support import log_in

pytestmark = pytest.mark.django_db(transaction=True)
SHOTS = os.environ.get("STRONGROOM_SCREENSHOTS")  # a directory, to look at the pages by hand


def shot(page, name):
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/{name}.png", full_page=True)


def test_an_invited_auditor_signs_in_and_is_signed_out_when_deactivated(live_server, page, browser, admin_user):
    log_in(page, live_server, admin_user)
    page.goto(f"{live_server.url}/people/")
    page.click("text=Add a person")
    page.fill("#id_username", "ines")
    page.fill("#id_email", "ines@example.org")
    page.check("input[name=role][value=auditor]")
    shot(page, "person-new")
    page.click("button:has-text('Add')")
    link = page.locator("#set-password-link").inner_text()
    assert re.fullmatch(rf"{re.escape(live_server.url)}/login/reset/\S+/", link)
    shot(page, "person-link")

    ines = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
    ines.goto(link)
    ines.fill("#id_new_password1", "ines chooses a long passphrase")
    ines.fill("#id_new_password2", "ines chooses a long passphrase")
    shot(ines, "password-set-phone")
    ines.click("button:has-text('Set password')")
    expect(ines.locator(".flash")).to_contain_text("Your password is set")
    ines.fill("input[name=username]", "ines")
    ines.fill("input[name=password]", "ines chooses a long passphrase")
    ines.click("button[type=submit]")
    ines.wait_for_url(f"{live_server.url}/")
    assert role_of(User.objects.get(username="ines")) == "auditor"

    page.goto(f"{live_server.url}/people/")
    expect(page.locator("table.people")).to_contain_text("ines@example.org")
    shot(page, "people-list")
    page.click("table.people >> text=ines")
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Deactivate')")
    expect(page.locator(".flash")).to_contain_text("Deactivated ines")
    shot(page, "person-deactivated")

    ines.goto(f"{live_server.url}/backups/")
    assert "/login/" in ines.url
