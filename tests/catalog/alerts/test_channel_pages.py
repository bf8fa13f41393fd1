"""Channel pages through the test client: an administrator configures each
kind, sends a test to a real local server, edits without retyping the secret,
deletes; an auditor reads only. No secret ever reaches a page."""

import hashlib
import hmac
import json
import re

import pytest
from django.urls import reverse

from catalog.alerts.models import Channel, Notification
from catalog.models import AuditEvent
from tests.catalog.alerts.channel_helpers import ALL_EVENTS, make_channel, open_alert

SLACK_PATH = "/services/T000/B000/pageSECRETpage"
ROUTING_KEY = "PDKEY0123456789abcdefabcdef0pd99"


@pytest.fixture(autouse=True)
def fast_retries(settings):
    settings.NOTIFY_RETRY_DELAYS = (0, 0, 0)


def form_data(kind, name, **fields):
    return {"name": name, "kind": kind, "events": ALL_EVENTS, "enabled": "on", **fields}


def every_page(client, channel):
    """The HTML of every page that shows the channel."""
    urls = [
        reverse("channel_list"),
        reverse("channel_detail", args=[channel.pk]),
        reverse("channel_edit", args=[channel.pk]),
        reverse("audit_list"),
    ]
    return "".join(client.get(url).content.decode() for url in urls)


def test_it_creates_a_slack_channel_tests_it_and_never_shows_the_url(admin_client, httpserver):
    httpserver.expect_request(SLACK_PATH, method="POST").respond_with_data("ok")
    secret_url = httpserver.url_for(SLACK_PATH)

    response = admin_client.post(reverse("channel_new"), form_data("slack", "Ops Slack", slack_url=secret_url))

    channel = Channel.objects.get(name="Ops Slack")
    assert response.status_code == 302 and response["Location"] == channel.get_absolute_url()
    assert channel.secrets() == {"url": secret_url}
    assert channel.events == ALL_EVENTS and channel.enabled
    event = AuditEvent.objects.get(action="channel.created")
    assert event.changes["url"] == "changed" and "pageSECRETpage" not in json.dumps(event.changes)

    response = admin_client.post(reverse("channel_test", args=[channel.pk]), HTTP_HX_REQUEST="true")

    assert response.status_code == 200
    assert "Test message sent" in response.content.decode()
    [(request, _)] = httpserver.log
    assert json.loads(request.get_data())["text"].startswith("*TEST:")
    assert channel.notifications.get().event == Notification.TEST
    html = every_page(admin_client, channel)
    assert "pageSECRETpage" not in html
    assert "localhost/…" in html  # the page says where, without the secret


def test_it_creates_a_webhook_channel_and_shows_the_generated_secret_once(admin_client, httpserver):
    httpserver.expect_request("/hook").respond_with_data("", status=204)

    response = admin_client.post(reverse("channel_new"), form_data("webhook", "Hook", url=httpserver.url_for("/hook")))

    channel = Channel.objects.get(name="Hook")
    secret = channel.secrets()["secret"]
    assert response.status_code == 200
    assert secret in response.content.decode() and "not shown again" in response.content.decode()
    assert secret not in every_page(admin_client, channel)

    admin_client.post(reverse("channel_test", args=[channel.pk]))

    [(request, _)] = httpserver.log
    expected = "sha256=" + hmac.new(secret.encode(), request.get_data(), hashlib.sha256).hexdigest()
    assert request.headers["X-Strongroom-Signature"] == expected
    assert json.loads(request.get_data())["event"] == "test"


def test_it_creates_a_pagerduty_channel_and_keeps_the_key_on_edit(admin_client, httpserver, settings):
    settings.PAGERDUTY_EVENTS_URL = httpserver.url_for("/v2/enqueue")
    httpserver.expect_request("/v2/enqueue").respond_with_json({"status": "success"}, status=202)
    admin_client.post(reverse("channel_new"), form_data("pagerduty", "On-call", routing_key=ROUTING_KEY))
    channel = Channel.objects.get(name="On-call")

    response = admin_client.post(
        reverse("channel_edit", args=[channel.pk]),
        form_data("pagerduty", "On-call night", routing_key="", events=["source_health"]),
    )

    assert response.status_code == 302
    channel.refresh_from_db()
    assert (channel.name, channel.events) == ("On-call night", ["source_health"])
    assert channel.secrets() == {"routing_key": ROUTING_KEY}
    changed = AuditEvent.objects.get(action="channel.changed")
    assert set(changed.changes) == {"name", "events"}
    admin_client.post(reverse("channel_test", args=[channel.pk]))
    [(request, _)] = httpserver.log
    assert json.loads(request.get_data())["routing_key"] == ROUTING_KEY
    assert ROUTING_KEY not in every_page(admin_client, channel)


def test_it_creates_an_email_channel_and_sends_a_test(admin_client, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    from django.core import mail

    response = admin_client.post(
        reverse("channel_new"), form_data("email", "DBA mail", email_to=" dba@example.org ,oncall@example.org")
    )
    channel = Channel.objects.get(name="DBA mail")
    assert response.status_code == 302
    assert channel.email_to == "dba@example.org, oncall@example.org"

    response = admin_client.post(reverse("channel_test", args=[channel.pk]), follow=True)

    assert "Test message sent to DBA mail" in response.content.decode()
    [message] = mail.outbox
    assert message.subject == "[Strongroom] TEST: Test message for the channel “DBA mail”"
    assert message.to == ["dba@example.org", "oncall@example.org"]


def test_it_refuses_a_channel_without_its_target(admin_client):
    response = admin_client.post(reverse("channel_new"), {"name": "Nothing", "kind": "slack", "events": []})

    assert response.status_code == 200
    html = response.content.decode()
    assert "Pick at least one event to send." in html and "Required." in html
    response = admin_client.post(reverse("channel_new"), form_data("email", "Bad", email_to="not-an-address"))
    assert "“not-an-address” is not an email address." in response.content.decode()
    assert not Channel.objects.exists()


def test_it_ticks_every_event_for_a_new_channel(admin_client):
    html = admin_client.get(reverse("channel_new")).content.decode()

    boxes = re.findall(r'<input type="checkbox" name="events"[^>]*>', html)
    assert len(boxes) == len(ALL_EVENTS) and all("checked" in box for box in boxes)


def test_it_shows_a_disabled_channel_and_enables_it_again(admin_client, httpserver):
    httpserver.expect_request("/gone").respond_with_data("gone", status=410)
    channel = make_channel(Channel.WEBHOOK, name="Old hook", url=httpserver.url_for("/gone"))
    response = admin_client.post(reverse("channel_test", args=[channel.pk]), HTTP_HX_REQUEST="true")
    assert "The channel is disabled until it is fixed." in response.content.decode()
    channel.refresh_from_db()
    assert not channel.enabled

    listing = admin_client.get(reverse("channel_list")).content.decode()
    page = admin_client.get(reverse("channel_detail", args=[channel.pk])).content.decode()
    for html in (listing, page):
        assert "Disabled" in html and "The webhook answered 410 GONE" in html and "Enable again" in html
    form = admin_client.get(reverse("channel_edit", args=[channel.pk]) + "?enable=1").content.decode()
    assert re.search(r'<input type="checkbox" name="enabled"[^>]*checked', form)

    httpserver.clear()
    admin_client.post(
        reverse("channel_edit", args=[channel.pk]), form_data("webhook", "Old hook", url=httpserver.url_for("/new"))
    )

    channel.refresh_from_db()
    assert channel.enabled and channel.disabled_reason == "" and channel.disabled_at is None


def test_it_lists_the_latest_messages_of_a_channel(admin_client, httpserver):
    httpserver.expect_request("/hook").respond_with_data("ok")
    channel = make_channel(Channel.WEBHOOK, url=httpserver.url_for("/hook"))
    alert = open_alert()
    from catalog.alerts import notify

    notify.send_for_alert(alert.pk, Notification.OPENED)

    html = admin_client.get(reverse("channel_detail", args=[channel.pk])).content.decode()
    assert f'<a href="{alert.url}">Inventory DB is down</a>' in html
    assert "notification-sent" in html


def test_it_deletes_a_channel(admin_client):
    channel = make_channel(Channel.EMAIL, email_to="dba@example.org")

    assert admin_client.get(reverse("channel_delete", args=[channel.pk])).status_code == 200
    response = admin_client.post(reverse("channel_delete", args=[channel.pk]))

    assert response.status_code == 302 and response["Location"] == reverse("channel_list")
    assert not Channel.objects.exists()
    assert AuditEvent.objects.get(action="channel.deleted").object_repr == "email channel"


def test_it_lets_an_auditor_read_but_not_change(auditor_client, httpserver):
    channel = make_channel(Channel.SLACK, secrets={"url": httpserver.url_for(SLACK_PATH)})

    assert auditor_client.get(reverse("channel_list")).status_code == 200
    page = auditor_client.get(reverse("channel_detail", args=[channel.pk]))
    assert page.status_code == 200 and "Send test" not in page.content.decode()
    assert auditor_client.get(reverse("channel_new")).status_code == 403
    assert auditor_client.post(reverse("channel_new"), form_data("email", "X", email_to="a@b.org")).status_code == 403
    assert auditor_client.get(reverse("channel_edit", args=[channel.pk])).status_code == 403
    assert auditor_client.post(reverse("channel_delete", args=[channel.pk])).status_code == 403
    assert auditor_client.post(reverse("channel_test", args=[channel.pk])).status_code == 403
    assert httpserver.log == [] and Channel.objects.count() == 1
