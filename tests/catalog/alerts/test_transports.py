"""Each channel kind against a real local server (pytest-httpserver, aiosmtpd):
what is sent, the signature, retries, and a permanent failure disabling the channel."""

import email
import hashlib
import hmac
import json
import time
from email import policy

import pytest
from django.conf import settings
from werkzeug import Response

from catalog.alerts import notify
from catalog.alerts.models import Alert, Channel, Notification
from catalog.alerts.transports import Message
from catalog.models import AuditEvent
from tests.catalog.alerts.channel_helpers import make_channel, open_alert, resolve, start_smtp
from tests.factories import recorded_source

pytestmark = pytest.mark.django_db

SLACK_URL_PATH = "/services/T000/B000/XXXXsecretXXXX"
ROUTING_KEY = "R0UT1NGKEY0123456789abcdefabcdef"
WEBHOOK_SECRET = "shh-its-a-webhook-secret"


@pytest.fixture(autouse=True)
def fast_retries(settings):
    settings.NOTIFY_RETRY_DELAYS = (0, 0, 0)
    settings.SITE_URL = "https://strongroom.example"


@pytest.fixture
def pagerduty(httpserver, settings):
    settings.PAGERDUTY_EVENTS_URL = httpserver.url_for("/v2/enqueue")
    return httpserver


def received(httpserver, path):
    return [request for request, _ in httpserver.log if request.path == path]


def slack_channel(httpserver, **fields):
    return make_channel(Channel.SLACK, secrets={"url": httpserver.url_for(SLACK_URL_PATH)}, **fields)


# --- Slack ---------------------------------------------------------------------


def test_it_posts_the_alert_to_slack(httpserver):
    httpserver.expect_request(SLACK_URL_PATH, method="POST").respond_with_data("ok")
    channel = slack_channel(httpserver)
    alert = open_alert()

    outcome = notify.send_for_alert(alert.pk, Notification.OPENED)

    assert outcome == {channel.name: Notification.SENT}
    [request] = received(httpserver, SLACK_URL_PATH)
    body = json.loads(request.get_data())
    assert body["text"].startswith("*DOWN: Inventory DB*")
    assert "<https://strongroom.example/sources/" in body["text"]
    [attachment] = body["attachments"]
    assert attachment["color"] == "#d92d20"
    assert attachment["title"] == "Inventory DB is down"
    assert attachment["title_link"] == f"https://strongroom.example{alert.url}"
    assert attachment["text"] == alert.detail
    assert {field["title"] for field in attachment["fields"]} == {"Source", "Since", "Severity"}
    notification = Notification.objects.get(channel=channel, alert=alert)
    assert (notification.event, notification.status, notification.attempts, notification.error) == (
        Notification.OPENED,
        Notification.SENT,
        1,
        "",
    )


def test_it_retries_slack_after_a_server_error(httpserver):
    httpserver.expect_oneshot_request(SLACK_URL_PATH).respond_with_data("busy", status=500)
    httpserver.expect_request(SLACK_URL_PATH).respond_with_data("ok")
    channel = slack_channel(httpserver)
    alert = open_alert()

    notify.send_for_alert(alert.pk, Notification.OPENED)

    assert len(received(httpserver, SLACK_URL_PATH)) == 2
    notification = Notification.objects.get(channel=channel, alert=alert)
    assert (notification.status, notification.attempts, notification.error) == (Notification.SENT, 2, "")


def test_it_gives_up_after_every_retry_failed(httpserver):
    httpserver.expect_request(SLACK_URL_PATH).respond_with_data("slow down", status=429)
    channel = slack_channel(httpserver)
    alert = open_alert()

    notify.send_for_alert(alert.pk, Notification.OPENED)

    notification = Notification.objects.get(channel=channel, alert=alert)
    assert notification.status == Notification.FAILED
    assert notification.attempts == 1 + len(settings.NOTIFY_RETRY_DELAYS)
    assert notification.error == "Slack answered 429 TOO MANY REQUESTS: slow down"
    channel.refresh_from_db()
    assert channel.enabled  # busy is not broken


def test_it_disables_a_slack_channel_that_answers_404(httpserver):
    httpserver.expect_request(SLACK_URL_PATH).respond_with_data("no_team", status=404)
    channel = slack_channel(httpserver)
    alert = open_alert()

    notify.send_for_alert(alert.pk, Notification.OPENED)

    assert len(received(httpserver, SLACK_URL_PATH)) == 1  # not retried
    notification = Notification.objects.get(channel=channel, alert=alert)
    assert (notification.status, notification.attempts) == (Notification.FAILED, 1)
    assert notification.error == "Slack answered 404 NOT FOUND: no_team"
    channel.refresh_from_db()
    assert not channel.enabled
    assert channel.disabled_at is not None
    assert channel.disabled_reason.startswith("Slack answered 404 NOT FOUND: no_team on ")
    assert channel.disabled_reason.endswith("; fix the webhook URL and enable the channel again.")
    event = AuditEvent.objects.get(action="channel.disabled")
    assert (event.actor_label, event.object_id) == ("monitor", str(channel.pk))
    assert "XXXXsecretXXXX" not in json.dumps(event.changes)


def test_it_keeps_the_secret_url_out_of_errors(httpserver):
    channel = make_channel(Channel.SLACK, secrets={"url": "http://127.0.0.1:9/hooks/XXXXsecretXXXX"})
    alert = open_alert()

    notify.send_for_alert(alert.pk, Notification.OPENED)

    notification = Notification.objects.get(channel=channel, alert=alert)
    assert notification.status == Notification.FAILED
    assert notification.error.startswith("Could not reach Slack: ")
    assert "XXXXsecretXXXX" not in notification.error and "127.0.0.1" not in notification.error


# --- generic webhook ---------------------------------------------------------


def test_it_signs_the_webhook_body_with_the_channel_secret(httpserver):
    httpserver.expect_request("/hook", method="POST").respond_with_data("", status=204)
    channel = make_channel(Channel.WEBHOOK, url=httpserver.url_for("/hook"), secrets={"secret": WEBHOOK_SECRET})
    alert = open_alert()

    notify.send_for_alert(alert.pk, Notification.OPENED)

    [request] = received(httpserver, "/hook")
    raw = request.get_data()
    expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-Strongroom-Signature"], expected)
    assert request.headers["X-Strongroom-Event"] == "opened"
    assert request.headers["Content-Type"] == "application/json"
    body = json.loads(raw)
    assert body == {
        "event": "opened",
        "alert_id": alert.pk,
        "kind": "source_health",
        "key": alert.key,
        "severity": "critical",
        "title": "Inventory DB is down",
        "detail": alert.detail,
        "source": {"id": alert.source_id, "name": "Inventory DB"},
        "opened_at": alert.opened_at.isoformat(),
        "resolved_at": None,
        "resolution": "",
        "url": f"https://strongroom.example{alert.url}",
        "sent_at": body["sent_at"],
    }
    assert Notification.objects.get(channel=channel).status == Notification.SENT


def test_it_generates_a_webhook_secret_when_none_is_given(httpserver):
    channel = Channel(name="Hook", kind=Channel.WEBHOOK, url=httpserver.url_for("/hook"), events=["source_health"])

    generated = notify.save_channel("test", channel)

    assert len(generated) >= 32
    assert channel.secrets() == {"secret": generated}
    event = AuditEvent.objects.get(action="channel.created")
    assert event.changes == {"secret": "changed"}
    # Saved again without a secret: the stored one is kept and not shown again.
    assert notify.save_channel("test", channel) == ""
    assert channel.secrets() == {"secret": generated}


def test_it_sends_the_webhook_recovery(httpserver):
    httpserver.expect_request("/hook").respond_with_data("ok")
    make_channel(Channel.WEBHOOK, url=httpserver.url_for("/hook"), secrets={"secret": WEBHOOK_SECRET})
    alert = open_alert()
    notify.send_for_alert(alert.pk, Notification.OPENED)

    resolve(alert)
    notify.send_for_alert(alert.pk, Notification.RESOLVED)

    _, request = received(httpserver, "/hook")
    body = json.loads(request.get_data())
    assert (body["event"], body["resolved_at"], body["resolution"]) == (
        "resolved",
        alert.resolved_at.isoformat(),
        "A backup succeeded.",
    )
    assert request.headers["X-Strongroom-Event"] == "resolved"


# --- PagerDuty ---------------------------------------------------------------------


def test_it_triggers_then_resolves_a_pagerduty_incident(pagerduty):
    pagerduty.expect_request("/v2/enqueue", method="POST").respond_with_json({"status": "success"}, status=202)
    channel = make_channel(Channel.PAGERDUTY, secrets={"routing_key": ROUTING_KEY})
    alert = open_alert()

    notify.send_for_alert(alert.pk, Notification.OPENED)
    resolve(alert)
    notify.send_for_alert(alert.pk, Notification.RESOLVED)

    trigger, resolution = [json.loads(r.get_data()) for r in received(pagerduty, "/v2/enqueue")]
    dedup_key = f"strongroom-source_health-{alert.key}-{alert.pk}"
    assert trigger["routing_key"] == ROUTING_KEY
    assert trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == dedup_key
    assert trigger["payload"]["summary"] == f"DOWN: Inventory DB — {alert.detail}"
    assert trigger["payload"]["source"] == "Inventory DB"
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["timestamp"] == alert.opened_at.isoformat()
    assert trigger["payload"]["custom_details"]["title"] == "Inventory DB is down"
    assert trigger["links"] == [{"href": f"https://strongroom.example{alert.url}", "text": "Open in Strongroom"}]
    assert resolution == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": dedup_key}
    assert list(channel.notifications.order_by("id").values_list("event", "status")) == [
        ("opened", "sent"),
        ("resolved", "sent"),
    ]


def test_it_resolves_the_pagerduty_incident_even_without_the_recovery_event(pagerduty):
    pagerduty.expect_request("/v2/enqueue").respond_with_json({"status": "success"}, status=202)
    channel = make_channel(Channel.PAGERDUTY, events=["source_health"], secrets={"routing_key": ROUTING_KEY})
    alert = open_alert()
    notify.send_for_alert(alert.pk, Notification.OPENED)

    resolve(alert)
    notify.send_for_alert(alert.pk, Notification.RESOLVED)

    actions = [json.loads(r.get_data())["event_action"] for r in received(pagerduty, "/v2/enqueue")]
    assert actions == ["trigger", "resolve"]
    assert channel.notifications.filter(event=Notification.RESOLVED, status=Notification.SENT).exists()


def test_a_quiet_resolve_closes_the_pagerduty_incident_and_tells_no_one_else(pagerduty, httpserver):
    """Pausing a down source resolves its problem quietly; the incident it opened must not stay open."""
    pagerduty.expect_request("/v2/enqueue").respond_with_json({"status": "success"}, status=202)
    httpserver.expect_request(SLACK_URL_PATH).respond_with_data("ok")
    pager = make_channel(Channel.PAGERDUTY, secrets={"routing_key": ROUTING_KEY})
    slack = slack_channel(httpserver, name="Slack")
    alert = open_alert()
    notify.send_for_alert(alert.pk, Notification.OPENED)

    resolve(alert)
    notify.send_for_alert(alert.pk, Notification.RESOLVED, quiet=True)

    actions = [json.loads(r.get_data())["event_action"] for r in received(pagerduty, "/v2/enqueue")]
    assert actions == ["trigger", "resolve"]
    assert list(slack.notifications.values_list("event", flat=True)) == [Notification.OPENED]
    assert pager.notifications.filter(event=Notification.RESOLVED, status=Notification.SENT).exists()


def test_it_disables_pagerduty_on_a_bad_routing_key_without_telling_it(pagerduty):
    pagerduty.expect_request("/v2/enqueue").respond_with_json(
        {"status": "invalid event", "message": "Event object is invalid"}, status=400
    )
    channel = make_channel(Channel.PAGERDUTY, secrets={"routing_key": ROUTING_KEY})
    alert = open_alert()

    notify.send_for_alert(alert.pk, Notification.OPENED)

    notification = channel.notifications.get()
    assert notification.error.startswith("PagerDuty answered 400 BAD REQUEST: ")
    channel.refresh_from_db()
    assert not channel.enabled and "fix the routing key" in channel.disabled_reason
    assert ROUTING_KEY not in notification.error + channel.disabled_reason


# --- who is told -------------------------------------------------------------------


def test_it_sends_nothing_twice_when_the_task_is_delivered_again(httpserver):
    httpserver.expect_request(SLACK_URL_PATH).respond_with_data("ok")
    channel = slack_channel(httpserver)
    alert = open_alert()

    notify.send_for_alert(alert.pk, Notification.OPENED)
    again = notify.send_for_alert(alert.pk, Notification.OPENED)

    assert again == {}
    assert len(received(httpserver, SLACK_URL_PATH)) == 1
    assert channel.notifications.count() == 1


def test_it_sends_only_to_channels_subscribed_to_the_kind(httpserver):
    httpserver.expect_request("/storage").respond_with_data("ok")
    httpserver.expect_request("/health").respond_with_data("ok")
    storage_only = make_channel(
        Channel.WEBHOOK, name="Storage", events=["storage_full"], url=httpserver.url_for("/storage")
    )
    health = make_channel(Channel.WEBHOOK, name="Health", events=["source_health"], url=httpserver.url_for("/health"))
    alert = open_alert()

    outcome = notify.send_for_alert(alert.pk, Notification.OPENED)

    assert outcome == {"Health": "sent"}
    assert received(httpserver, "/storage") == []
    assert not storage_only.notifications.exists()
    assert health.notifications.count() == 1


def test_it_sends_recoveries_only_to_channels_subscribed_to_them(httpserver):
    for path in ("/problems", "/recoveries"):
        httpserver.expect_request(path).respond_with_data("ok")
    make_channel(Channel.WEBHOOK, name="Problems", events=["source_health"], url=httpserver.url_for("/problems"))
    make_channel(
        Channel.WEBHOOK, name="Recoveries", events=["source_health", "recovery"], url=httpserver.url_for("/recoveries")
    )
    make_channel(
        Channel.WEBHOOK, name="Other recoveries", events=["storage_full", "recovery"], url=httpserver.url_for("/other")
    )
    alert = open_alert()
    notify.send_for_alert(alert.pk, Notification.OPENED)
    # Added after the problem was sent: it is not told that something it never heard of is over.
    make_channel(Channel.WEBHOOK, name="Newcomer", url=httpserver.url_for("/newcomer"))

    resolve(alert)
    outcome = notify.send_for_alert(alert.pk, Notification.RESOLVED)

    assert outcome == {"Recoveries": "sent"}
    assert received(httpserver, "/newcomer") == []
    assert [json.loads(r.get_data())["event"] for r in received(httpserver, "/recoveries")] == ["opened", "resolved"]
    assert [json.loads(r.get_data())["event"] for r in received(httpserver, "/problems")] == ["opened"]


def test_it_skips_disabled_channels_and_carries_on_after_a_failing_one(httpserver):
    httpserver.expect_request("/broken").respond_with_data("gone", status=410)
    httpserver.expect_request("/fine").respond_with_data("ok")
    make_channel(Channel.WEBHOOK, name="A broken", url=httpserver.url_for("/broken"))
    make_channel(Channel.WEBHOOK, name="B fine", url=httpserver.url_for("/fine"))
    make_channel(Channel.WEBHOOK, name="C off", url=httpserver.url_for("/off"), enabled=False)
    alert = open_alert()

    outcome = notify.send_for_alert(alert.pk, Notification.OPENED)

    assert outcome == {"A broken": "failed", "B fine": "sent"}
    assert received(httpserver, "/off") == []


def test_it_queues_the_sending_on_commit(httpserver, django_capture_on_commit_callbacks):
    httpserver.expect_request("/hook").respond_with_data("ok")
    channel = make_channel(Channel.WEBHOOK, url=httpserver.url_for("/hook"))
    alert = open_alert()

    with django_capture_on_commit_callbacks(execute=True):
        notify.dispatch(alert, Notification.OPENED)
        assert received(httpserver, "/hook") == []  # nothing before the commit

    assert len(received(httpserver, "/hook")) == 1
    assert channel.notifications.get().status == Notification.SENT


def test_it_sends_a_test_message_and_records_it(httpserver, admin_user):
    httpserver.expect_request(SLACK_URL_PATH).respond_with_data("ok")
    channel = slack_channel(httpserver)

    notification = notify.send_test(admin_user, channel)

    assert (notification.alert, notification.event, notification.status) == (None, "test", "sent")
    body = json.loads(received(httpserver, SLACK_URL_PATH)[0].get_data())
    assert body["text"].startswith("*TEST: Test message for the channel “slack channel”*")
    event = AuditEvent.objects.get(action="channel.tested")
    assert (event.actor_label, event.changes["status"]) == ("alice", "sent")


# --- email -----------------------------------------------------------------------


@pytest.fixture
def smtp(settings):
    controller, mailbox = start_smtp()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = controller.hostname, controller.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    yield mailbox
    controller.stop()


def test_it_emails_the_alert(smtp):
    make_channel(Channel.EMAIL, email_to="oncall@example.org, dba@example.org")
    alert = open_alert(hours_ago=3)

    notify.send_for_alert(alert.pk, Notification.OPENED)

    [envelope] = smtp.envelopes
    assert envelope.rcpt_tos == ["oncall@example.org", "dba@example.org"]
    message = email.message_from_bytes(envelope.content, policy=policy.default)
    assert message["Subject"] == "[Strongroom] DOWN: Inventory DB"
    body = message.get_content()
    assert "Source: Inventory DB" in body
    assert f"What is wrong: {alert.detail}" in body
    since = alert.opened_at.strftime("%Y-%m-%d %H:%M UTC")
    assert f"Since: {since} (3 h ago)" in body
    assert f"Details: https://strongroom.example{alert.url}" in body


def test_it_emails_the_recovery_with_how_long_it_lasted(smtp):
    make_channel(Channel.EMAIL, email_to="oncall@example.org")
    alert = open_alert()
    notify.send_for_alert(alert.pk, Notification.OPENED)

    resolve(alert, after_hours=2)
    notify.send_for_alert(alert.pk, Notification.RESOLVED)

    problem, message = [email.message_from_bytes(e.content, policy=policy.default) for e in smtp.envelopes]
    assert message["Subject"] == "[Strongroom] RECOVERED: Inventory DB"
    assert message["In-Reply-To"] == problem["Message-ID"]  # one thread in the mail client
    assert "after 2 h (the problem started" in message.get_content()
    assert "How: A backup succeeded." in message.get_content()


def test_it_disables_an_email_channel_whose_recipients_are_refused(smtp):
    channel = make_channel(Channel.EMAIL, email_to="nobody@refused.example")
    alert = open_alert()

    notify.send_for_alert(alert.pk, Notification.OPENED)

    assert smtp.envelopes == []
    notification = channel.notifications.get()
    assert notification.error == "The mail server refused nobody@refused.example (550 5.1.1 No such user here)"
    channel.refresh_from_db()
    assert not channel.enabled and "fix the addresses" in channel.disabled_reason


def test_it_retries_when_the_mail_server_is_unreachable(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 9
    channel = make_channel(Channel.EMAIL, email_to="oncall@example.org")
    alert = open_alert()

    notify.send_for_alert(alert.pk, Notification.OPENED)

    notification = channel.notifications.get()
    assert (notification.status, notification.attempts) == (Notification.FAILED, 4)
    assert notification.error.startswith("Could not reach the mail server 127.0.0.1:9")
    channel.refresh_from_db()
    assert channel.enabled


def test_it_names_a_failing_source_as_failing():
    source = recorded_source()
    source.status = "failing"
    source.save()
    alert = open_alert(source=source, title="Inventory DB is failing")

    assert Message.from_alert(alert, Notification.OPENED).subject() == "FAILING: Inventory DB"
    assert Message.from_alert(alert, Notification.RESOLVED).subject() == "RECOVERED: Inventory DB"
    storage = Alert(kind=Alert.STORAGE_FULL, key="destination:1", title="Off-site S3 is 85 % full")
    assert Message.from_alert(storage, Notification.OPENED).subject() == "STORAGE FULL: Off-site S3 is 85 % full"


def test_it_disables_a_channel_with_no_stored_secret(httpserver):
    channel = make_channel(Channel.SLACK)  # e.g. made in the Django admin, where secrets cannot be typed
    alert = open_alert()

    notify.send_for_alert(alert.pk, Notification.OPENED)

    assert channel.notifications.get().error == "No webhook URL is stored for this channel"
    channel.refresh_from_db()
    assert not channel.enabled


def test_it_tells_the_other_channels_when_one_breaks_unexpectedly(httpserver, settings):
    settings.EMAIL_BACKEND = "no.such.EmailBackend"
    httpserver.expect_request("/hook").respond_with_data("ok")
    mail = make_channel(Channel.EMAIL, name="A mail", email_to="oncall@example.org")
    hook = make_channel(Channel.WEBHOOK, name="B hook", url=httpserver.url_for("/hook"))
    alert = open_alert()

    outcome = notify.send_for_alert(alert.pk, Notification.OPENED)

    assert outcome == {"A mail": "failed", "B hook": "sent"}
    assert mail.notifications.get().error.startswith("Internal error while sending (ModuleNotFoundError)")
    assert hook.notifications.get().status == Notification.SENT


def test_it_retries_a_server_that_does_not_answer_in_time(httpserver, settings):
    settings.NOTIFY_HTTP_TIMEOUT = 1
    httpserver.expect_oneshot_request("/slow").respond_with_handler(lambda request: time.sleep(1.3) or Response("late"))
    httpserver.expect_request("/slow").respond_with_data("ok")
    channel = make_channel(Channel.WEBHOOK, url=httpserver.url_for("/slow"))
    alert = open_alert()

    notify.send_for_alert(alert.pk, Notification.OPENED)

    notification = channel.notifications.get()
    assert (notification.status, notification.attempts) == (Notification.SENT, 2)


def test_it_tells_a_channel_when_monitoring_opens_and_resolves_an_alert(httpserver, django_capture_on_commit_callbacks):
    from catalog.alerts import problems

    httpserver.expect_request("/hook").respond_with_data("ok")
    make_channel(Channel.WEBHOOK, url=httpserver.url_for("/hook"))
    source = recorded_source()
    key = f"source:{source.pk}"

    with django_capture_on_commit_callbacks(execute=True):
        problems.open_alert(
            Alert.SOURCE_HEALTH,
            key,
            title="Inventory DB is DOWN",
            detail="No good backup for 27 h.",
            url=source.get_absolute_url(),
            source=source,
        )
    with django_capture_on_commit_callbacks(execute=True):  # found again: no second message
        problems.open_alert(
            Alert.SOURCE_HEALTH,
            key,
            title="Inventory DB is DOWN",
            detail="No good backup for 28 h.",
            url=source.get_absolute_url(),
            source=source,
        )
    with django_capture_on_commit_callbacks(execute=True):
        problems.resolve_alert(Alert.SOURCE_HEALTH, key, "A backup succeeded.")

    bodies = [json.loads(request.get_data()) for request in received(httpserver, "/hook")]
    assert [(body["event"], body["title"]) for body in bodies] == [
        ("opened", "Inventory DB is DOWN"),
        ("resolved", "Inventory DB is DOWN"),
    ]
    assert bodies[1]["resolution"] == "A backup succeeded."
