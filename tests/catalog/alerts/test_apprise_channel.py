"""The Apprise channel against a real local HTTP server (pytest-httpserver):
Apprise URLs that post over plain HTTP (json://, ntfy://) deliver the alert,
the test button works, a 500, 429, timeout or refused connection is retried, a
401/403/404 disables the channel, and the secret URL reaches no page, no
Notification, no audit event, no log record and no error text."""

import json
import logging
import time

import pytest
from django.urls import reverse
from werkzeug import Response

from catalog.alerts import notify
from catalog.alerts.models import Channel, Notification
from catalog.alerts.transports import transport_for
from catalog.models import AuditEvent
from tests.catalog.alerts.channel_helpers import ALL_EVENTS, free_port, make_channel, open_alert, resolve
from tests.support import wait_for

pytestmark = pytest.mark.django_db

# Secrets inside the URLs: a token in a JSON hook's path, an ntfy topic and its access token.
HOOK_TOKEN = "hookTOKENs3cr3t0123456789"
TOPIC = "alerts-TOPICs3cr3t"
NTFY_TOKEN = "tk_NTFYs3cr3t0123456789abcdef"
SECRETS = (HOOK_TOKEN, TOPIC, NTFY_TOKEN)


@pytest.fixture(autouse=True)
def fast_retries(settings):
    settings.NOTIFY_RETRY_DELAYS = (0, 0, 0)
    settings.SITE_URL = "https://strongroom.example"


def address(httpserver):
    return f"{httpserver.host}:{httpserver.port}"


def json_url(httpserver):
    """Apprise's JSON service: POSTs {"title", "message", "type"} to the path."""
    return f"json://{address(httpserver)}/hook/{HOOK_TOKEN}"


def ntfy_url(httpserver):
    """ntfy on a server of one's own: POSTs {"topic", "title", "message"} to /, with the token as Bearer."""
    return f"ntfy://{address(httpserver)}/{TOPIC}?token={NTFY_TOKEN}"


def apprise_channel(url, **fields):
    return make_channel(Channel.APPRISE, secrets={"url": url}, **fields)


def bodies(httpserver, path):
    return [json.loads(request.get_data()) for request, _ in httpserver.log if request.path == path]


def without_secrets(text):
    return not any(secret in text for secret in SECRETS)


# --- delivering ------------------------------------------------------------------


def test_it_delivers_an_alert_through_ntfy_with_its_headline_and_text(httpserver):
    httpserver.expect_request("/", method="POST").respond_with_json({"id": "x1", "event": "message"})
    channel = apprise_channel(ntfy_url(httpserver))
    alert = open_alert()

    outcome = notify.send_for_alert(alert.pk, Notification.OPENED)

    assert outcome == {channel.name: Notification.SENT}
    [(request, _)] = httpserver.log
    assert request.headers["Authorization"] == f"Bearer {NTFY_TOKEN}"
    body = json.loads(request.get_data())
    assert (body["topic"], body["title"]) == (TOPIC, "DOWN: Inventory DB")
    assert "Inventory DB is down" in body["message"]
    assert f"What is wrong: {alert.detail}" in body["message"]
    assert f"Details: https://strongroom.example{alert.url}" in body["message"]
    notification = Notification.objects.get(channel=channel, alert=alert)
    assert (notification.event, notification.status, notification.attempts, notification.error) == (
        Notification.OPENED,
        Notification.SENT,
        1,
        "",
    )


def test_it_sends_the_problem_and_its_recovery_with_their_kinds(httpserver):
    httpserver.expect_request(f"/hook/{HOOK_TOKEN}", method="POST").respond_with_data("ok")
    apprise_channel(json_url(httpserver))
    alert = open_alert()
    notify.send_for_alert(alert.pk, Notification.OPENED)

    resolve(alert)
    notify.send_for_alert(alert.pk, Notification.RESOLVED)

    problem, recovery = bodies(httpserver, f"/hook/{HOOK_TOKEN}")
    assert (problem["title"], problem["type"]) == ("DOWN: Inventory DB", "failure")
    assert (recovery["title"], recovery["type"]) == ("RECOVERED: Inventory DB", "success")
    assert "How: A backup succeeded." in recovery["message"]


def test_it_uses_only_the_channels_url_not_one_from_home_or_the_environment(httpserver, tmp_path, monkeypatch):
    """Apprise's command line reads ~/.apprise and APPRISE_URLS; Strongroom must not."""
    httpserver.expect_request(f"/hook/{HOOK_TOKEN}").respond_with_data("ok")
    httpserver.expect_request("/elsewhere").respond_with_data("ok")
    elsewhere = f"json://{address(httpserver)}/elsewhere"
    (tmp_path / ".apprise").write_text(elsewhere + "\n")
    (tmp_path / ".apprise.yml").write_text(f"urls:\n  - {elsewhere}\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("APPRISE_URLS", elsewhere)
    apprise_channel(json_url(httpserver))

    notify.send_for_alert(open_alert().pk, Notification.OPENED)

    assert [request.path for request, _ in httpserver.log] == [f"/hook/{HOOK_TOKEN}"]


def test_the_test_button_sends_a_test_message(admin_client, httpserver):
    httpserver.expect_request(f"/hook/{HOOK_TOKEN}", method="POST").respond_with_data("ok")
    channel = apprise_channel(json_url(httpserver), name="Team chat")

    response = admin_client.post(reverse("channel_test", args=[channel.pk]), HTTP_HX_REQUEST="true")

    assert "Test message sent" in response.content.decode()
    [body] = bodies(httpserver, f"/hook/{HOOK_TOKEN}")
    assert body["title"] == "TEST: Test message for the channel “Team chat”"
    assert "Nothing is wrong; no action is needed." in body["message"]
    assert (body["type"]) == "info"
    assert channel.notifications.get().event == Notification.TEST
    event = AuditEvent.objects.get(action="channel.tested")
    assert (event.actor_label, event.changes["status"]) == ("alice", "sent")


# --- failures that may pass: retried -------------------------------------------------


def test_it_retries_after_a_server_error(httpserver):
    path = f"/hook/{HOOK_TOKEN}"
    httpserver.expect_oneshot_request(path).respond_with_data("busy", status=500)
    httpserver.expect_request(path).respond_with_data("ok")
    channel = apprise_channel(json_url(httpserver))
    alert = open_alert()

    notify.send_for_alert(alert.pk, Notification.OPENED)

    assert len(bodies(httpserver, path)) == 2
    notification = channel.notifications.get()
    assert (notification.status, notification.attempts, notification.error) == (Notification.SENT, 2, "")


def test_it_gives_up_on_429_after_every_retry_and_keeps_the_channel(httpserver, settings):
    httpserver.expect_request(f"/hook/{HOOK_TOKEN}").respond_with_data("slow down", status=429)
    channel = apprise_channel(json_url(httpserver))
    alert = open_alert()

    notify.send_for_alert(alert.pk, Notification.OPENED)

    attempts = 1 + len(settings.NOTIFY_RETRY_DELAYS)
    assert len(httpserver.log) == attempts
    notification = channel.notifications.get()
    assert (notification.status, notification.attempts) == (Notification.FAILED, attempts)
    assert notification.error == f"JSON at {address(httpserver)} answered 429 Too Many Requests"
    channel.refresh_from_db()
    assert channel.enabled  # busy is not broken


def test_it_retries_a_refused_connection_and_says_so(settings):
    port = free_port()
    channel = apprise_channel(f"json://127.0.0.1:{port}/hook/{HOOK_TOKEN}")
    alert = open_alert()

    notify.send_for_alert(alert.pk, Notification.OPENED)

    notification = channel.notifications.get()
    assert (notification.status, notification.attempts) == (Notification.FAILED, 1 + len(settings.NOTIFY_RETRY_DELAYS))
    assert notification.error == f"Could not reach JSON at 127.0.0.1:{port}: connection refused"
    channel.refresh_from_db()
    assert channel.enabled


def test_it_retries_a_server_that_does_not_answer_in_time(httpserver, settings):
    settings.NOTIFY_HTTP_TIMEOUT = 1
    path = f"/hook/{HOOK_TOKEN}"
    httpserver.expect_oneshot_request(path).respond_with_handler(lambda request: time.sleep(1.5) or Response("late"))
    httpserver.expect_request(path).respond_with_data("ok")
    channel = apprise_channel(json_url(httpserver))

    started = time.monotonic()
    notify.send_for_alert(open_alert().pk, Notification.OPENED)

    notification = channel.notifications.get()
    assert (notification.status, notification.attempts) == (Notification.SENT, 2)
    assert time.monotonic() - started < 1.5 + 1  # the first attempt gave up after the timeout
    wait_for(lambda: len(httpserver.log) == 2)  # the late answer, before the next test's log starts


def test_a_test_send_that_times_out_says_how_long_it_waited(admin_client, httpserver, monkeypatch):
    monkeypatch.setattr(notify, "TEST_TIMEOUT_SECONDS", 1)
    httpserver.expect_request(f"/hook/{HOOK_TOKEN}").respond_with_handler(
        lambda request: time.sleep(1.5) or Response("late")
    )
    channel = apprise_channel(json_url(httpserver))

    response = admin_client.post(reverse("channel_test", args=[channel.pk]), HTTP_HX_REQUEST="true")

    assert f"JSON at {address(httpserver)} did not answer within 1 s" in response.content.decode()
    assert channel.notifications.get().attempts == 1
    wait_for(lambda: len(httpserver.log) == 1)  # the late answer, before the next test's log starts


# --- failures that will not pass: the channel is disabled ------------------------------


@pytest.mark.parametrize(("status", "phrase"), [(401, "Unauthorized"), (403, "Forbidden"), (404, "Not Found")])
def test_it_disables_the_channel_when_the_service_refuses_the_url(httpserver, status, phrase):
    httpserver.expect_request(f"/hook/{HOOK_TOKEN}").respond_with_data("no such hook", status=status)
    channel = apprise_channel(json_url(httpserver))
    alert = open_alert()

    notify.send_for_alert(alert.pk, Notification.OPENED)

    assert len(httpserver.log) == 1  # not retried
    notification = channel.notifications.get()
    assert (notification.status, notification.attempts) == (Notification.FAILED, 1)
    assert notification.error.startswith(f"JSON at {address(httpserver)} answered {status} {phrase}")
    channel.refresh_from_db()
    assert not channel.enabled and channel.disabled_at is not None
    assert channel.disabled_reason.startswith(f"JSON at {address(httpserver)} answered {status} {phrase}")
    assert channel.disabled_reason.endswith("; fix the Apprise URL and enable the channel again.")
    event = AuditEvent.objects.get(action="channel.disabled")
    assert (event.actor_label, event.object_id) == ("monitor", str(channel.pk))


def test_it_keeps_the_services_short_reason(httpserver):
    httpserver.expect_request("/").respond_with_json({"code": 40301, "http": 403, "error": "forbidden"}, status=403)
    channel = apprise_channel(ntfy_url(httpserver))

    notify.send_for_alert(open_alert().pk, Notification.OPENED)

    assert channel.notifications.get().error == f"ntfy at {address(httpserver)} answered 403 Forbidden"
    channel.refresh_from_db()
    assert not channel.enabled


def test_it_does_not_follow_a_redirect(httpserver):
    """Whatever the URL says (?redirect=yes): a service must not bounce the request on to another address."""
    httpserver.expect_request(f"/hook/{HOOK_TOKEN}").respond_with_data(
        "", status=302, headers={"Location": f"http://{address(httpserver)}/moved"}
    )
    httpserver.expect_request("/moved").respond_with_data("ok")
    channel = apprise_channel(json_url(httpserver) + "?redirect=yes")

    notify.send_for_alert(open_alert().pk, Notification.OPENED)

    assert [request.path for request, _ in httpserver.log] == [f"/hook/{HOOK_TOKEN}"]
    notification = channel.notifications.get()
    assert (notification.status, notification.attempts) == (Notification.FAILED, 1)
    assert notification.error == f"JSON at {address(httpserver)} answered 302 Found"


def test_it_sends_nothing_to_a_private_address_when_those_are_off(httpserver, settings):
    httpserver.expect_request(f"/hook/{HOOK_TOKEN}").respond_with_data("ok")
    channel = apprise_channel(f"json://127.0.0.1:{httpserver.port}/hook/{HOOK_TOKEN}")
    settings.ALLOW_PRIVATE_ENDPOINTS = False

    notify.send_for_alert(open_alert().pk, Notification.OPENED)

    assert httpserver.log == []
    notification = channel.notifications.get()
    assert notification.error.startswith(f"Not sent to JSON at 127.0.0.1:{httpserver.port}: 127.0.0.1 is a loopback")
    channel.refresh_from_db()
    assert not channel.enabled


# --- the secret URL stays secret --------------------------------------------------------


def every_page(client, channel):
    urls = [
        reverse("channel_list"),
        reverse("channel_detail", args=[channel.pk]),
        reverse("channel_edit", args=[channel.pk]),
        reverse("audit_list"),
    ]
    return "".join(client.get(url).content.decode() for url in urls)


def test_the_url_reaches_no_page_record_event_or_log(admin_client, httpserver, caplog):
    caplog.set_level(logging.DEBUG)  # Apprise's and urllib3's debug records hold URLs, headers and bodies
    httpserver.expect_oneshot_request("/").respond_with_json({"id": "x1"})
    httpserver.expect_request("/").respond_with_json({"error": f"no topic {TOPIC}"}, status=403)
    form = {"name": "On-call ntfy", "kind": "apprise", "events": ALL_EVENTS, "enabled": "on"}

    response = admin_client.post(reverse("channel_new"), {**form, "apprise_url": ntfy_url(httpserver)})

    channel = Channel.objects.get(name="On-call ntfy")
    assert response.status_code == 302
    assert channel.secrets() == {"url": ntfy_url(httpserver)}
    assert without_secrets(channel.secret_token)
    admin_client.post(reverse("channel_test", args=[channel.pk]), HTTP_HX_REQUEST="true")  # sent
    notify.send_for_alert(open_alert().pk, Notification.OPENED)  # 403: disabled
    channel.refresh_from_db()
    assert not channel.enabled
    assert [body["topic"] for body in bodies(httpserver, "/")] == [TOPIC, TOPIC]  # the URL did work

    html = every_page(admin_client, channel)
    assert f"ntfy at {address(httpserver)}" in html  # where it sends, without the topic or token
    assert without_secrets(html)
    assert all(without_secrets(n.error) for n in Notification.objects.all())
    assert without_secrets(channel.disabled_reason)
    assert without_secrets(json.dumps([event.changes for event in AuditEvent.objects.all()]))
    # The far end's own server (werkzeug) logs the request it received: that is not Strongroom's log.
    ours = [record for record in caplog.records if not record.name.startswith("werkzeug")]
    assert any(record.name == "apprise" for record in ours)  # Apprise did log, redacted
    assert all(without_secrets(caplog.handler.format(record)) for record in ours)


def test_a_failed_connection_leaves_the_url_out_of_the_error_and_the_log(caplog):
    caplog.set_level(logging.DEBUG)
    channel = apprise_channel(f"ntfy://127.0.0.1:{free_port()}/{TOPIC}?token={NTFY_TOKEN}")

    notify.send_for_alert(open_alert().pk, Notification.OPENED)

    notification = channel.notifications.get()
    assert notification.error.startswith("Could not reach ntfy at 127.0.0.1:")
    assert without_secrets(notification.error)
    assert all(without_secrets(caplog.handler.format(record)) for record in caplog.records)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("tgram://123456789:AAHbotTOKENs3cr3t/987654321", "Telegram"),
        ("discord://1234567890/DISCORDwebhookTOKEN", "Discord"),
        ("ntfys://user:pa55word@ntfy.example.com/topic-s3cr3t", "ntfy at ntfy.example.com"),
        ("ntfy://topic-s3cr3t", "ntfy"),  # on ntfy.sh, where the topic is the secret
        ("gotify://gotify.example.com:8443/AbCdEfGh123", "Gotify at gotify.example.com:8443"),
        ("matrix://bot:pa55word@matrix.example.org/#ops", "Matrix at matrix.example.org"),
    ],
)
def test_the_target_names_the_service_and_its_host_only(url, shown):
    channel = apprise_channel(url)

    assert transport_for(channel).target_display() == shown


# --- the form ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("not a url at all", "This is not an Apprise URL. Give one such as tgram://"),
        ("nosuchservice://host/SECRETpart", "Apprise knows no service called nosuchservice://"),
        ("https://hooks.example.com/SECRETpart", "choose the kind Webhook"),
        ("tgram://", "Apprise cannot read this tgram:// URL"),
        ("windows://", "Apprise cannot send to windows:// from this server"),
        ("json://a.example/x, json://b.example/y", "Give one Apprise URL"),
        ("json://169.254.169.254/latest/SECRETpart", "169.254.169.254 is a link-local address"),
    ],
)
def test_the_form_refuses_a_url_apprise_cannot_use(admin_client, url, says):
    form = {"name": "Chat", "kind": "apprise", "events": ALL_EVENTS, "enabled": "on", "apprise_url": url}

    response = admin_client.post(reverse("channel_new"), form)

    assert response.status_code == 200
    page = response.content.decode()
    assert says in page
    assert "Required." not in page  # the refusal says what is wrong
    assert "SECRETpart" not in page and "not a url at all" not in page
    assert not Channel.objects.exists()


def test_the_form_names_a_few_services_when_it_refuses(admin_client):
    form = {"name": "Chat", "kind": "apprise", "events": ALL_EVENTS, "apprise_url": "https://chat.example/x"}

    page = admin_client.post(reverse("channel_new"), form).content.decode()

    for example in ("tgram://", "discord://", "Microsoft Teams", "ntfy://", "matrix://", "gotify://"):
        assert example in page


def test_the_form_needs_a_url_and_keeps_the_stored_one_when_left_blank(admin_client, httpserver):
    form = {"name": "Chat", "kind": "apprise", "events": ALL_EVENTS, "enabled": "on"}
    assert "Required." in admin_client.post(reverse("channel_new"), form).content.decode()
    channel = apprise_channel(json_url(httpserver), name="Chat")

    response = admin_client.post(reverse("channel_edit", args=[channel.pk]), {**form, "name": "Team chat"})

    assert response.status_code == 302
    channel.refresh_from_db()
    assert (channel.name, channel.secrets()) == ("Team chat", {"url": json_url(httpserver)})
    page = admin_client.get(reverse("channel_edit", args=[channel.pk])).content.decode()
    assert "Leave blank to keep the one that is stored." in page


def test_changing_the_url_is_audited_without_it(admin_client, httpserver):
    channel = apprise_channel(json_url(httpserver), name="Chat")
    form = {"name": "Chat", "kind": "apprise", "events": ALL_EVENTS, "enabled": "on"}

    admin_client.post(reverse("channel_edit", args=[channel.pk]), {**form, "apprise_url": ntfy_url(httpserver)})

    channel.refresh_from_db()
    assert channel.secrets() == {"url": ntfy_url(httpserver)}
    event = AuditEvent.objects.filter(action="channel.changed").latest("id")
    assert event.changes == {"url": "changed"}
