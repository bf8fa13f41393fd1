"""The channel form and "Send test" as an administrator uses them, in Chromium."""

import json
import os

import pytest

from catalog.alerts.models import Channel
from tests.support import log_in

pytestmark = pytest.mark.django_db(transaction=True)
SHOTS = os.environ.get("STRONGROOM_SCREENSHOTS")  # a directory, to look at the pages by hand


def test_the_channel_form_shows_the_fields_of_its_kind_and_the_test_reports_back(
    live_server, page, admin_user, httpserver, settings
):
    settings.NOTIFY_RETRY_DELAYS = (0, 0, 0)
    httpserver.expect_request("/hook").respond_with_data("ok")
    log_in(page, live_server, admin_user)

    page.goto(f"{live_server.url}/channels/new/")
    page.select_option("#id_kind", "slack")
    assert page.locator("[data-field=slack_url]").is_visible()
    assert page.locator("[data-field=url]").is_hidden() and page.locator("[data-field=email_to]").is_hidden()
    page.select_option("#id_kind", "apprise")
    assert page.locator("[data-field=apprise_url]").is_visible() and page.locator("[data-field=slack_url]").is_hidden()
    page.select_option("#id_kind", "webhook")
    assert page.locator("[data-field=url]").is_visible() and page.locator("[data-field=slack_url]").is_hidden()
    page.fill("#id_name", "Ops hook")
    page.fill("#id_url", httpserver.url_for("/hook"))
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/channel-form.png", full_page=True)
    page.click("button[type=submit].primary")

    page.get_by_text("not shown again").wait_for()
    secret = Channel.objects.get(name="Ops hook").secrets()["secret"]
    assert page.locator(".secret-value").inner_text() == secret
    page.click("text=Send test")
    page.locator("#test-result").get_by_text("Test message sent").wait_for()
    page.locator("#channel-notifications").get_by_text("test message").wait_for()  # swapped in out of band
    [(request, _)] = httpserver.log
    assert json.loads(request.get_data())["event"] == "test"
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/channel-detail.png", full_page=True)

    page.goto(f"{live_server.url}/channels/{Channel.objects.get(name='Ops hook').pk}/")
    assert "Ops hook" in page.content() and secret not in page.content()
