"""Send test, when the channel does not work: someone is waiting for the
answer, so it makes one attempt with a short timeout (no retry pauses) and
says why it failed; the channels list then shows that the last message failed."""

import socket
import threading
import time
from types import SimpleNamespace

import pytest
from django.urls import reverse

from catalog.alerts import notify
from catalog.alerts.models import Channel, Notification
from tests.catalog.alerts.channel_helpers import free_port, make_channel

pytestmark = pytest.mark.django_db


@pytest.fixture
def silent_mail_server(settings):
    """A mail server that accepts the connection and then never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    accepted = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", listener.getsockname()[1]
    yield
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


@pytest.fixture
def pauses(monkeypatch):
    """The pauses between attempts that delivery took (it sleeps through notify.time)."""
    taken = []
    monkeypatch.setattr(notify, "time", SimpleNamespace(**{**vars(time), "sleep": taken.append}))
    return taken


def send_test(client, channel):
    return client.post(reverse("channel_test", args=[channel.pk]), HTTP_HX_REQUEST="true")


def test_a_test_send_to_a_silent_server_gives_up_within_seconds_and_says_why(admin_client, silent_mail_server, pauses):
    channel = make_channel(Channel.EMAIL, name="On-call mail", email_to="oncall@example.org")

    response = send_test(admin_client, channel)

    # One attempt with the short timeout and no pause: not 4 attempts of 10 s with 20 s of pauses between them.
    assert pauses == []
    page = response.content.decode()
    assert "The test message was not sent" in page
    assert f"did not answer within {notify.TEST_TIMEOUT_SECONDS} s" in page
    notification = channel.notifications.get()
    assert (notification.status, notification.attempts) == (Notification.FAILED, 1)


def test_a_test_send_to_a_closed_port_is_not_retried(admin_client, settings, pauses):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()
    settings.NOTIFY_RETRY_DELAYS = (1, 4, 15)  # what alerts wait between attempts
    channel = make_channel(Channel.EMAIL, name="On-call mail", email_to="oncall@example.org")

    response = send_test(admin_client, channel)

    assert pauses == []
    assert f"Could not reach the mail server 127.0.0.1:{settings.EMAIL_PORT}" in response.content.decode()
    assert channel.notifications.get().attempts == 1


def test_a_test_send_to_a_webhook_that_fails_says_its_answer(admin_client, httpserver, settings, pauses):
    settings.NOTIFY_RETRY_DELAYS = (1, 4, 15)
    httpserver.expect_request("/hook", method="POST").respond_with_data("busy", status=503)
    channel = make_channel(Channel.WEBHOOK, name="Ops hook", url=httpserver.url_for("/hook"))

    response = send_test(admin_client, channel)

    assert pauses == []
    assert "The webhook answered 503 SERVICE UNAVAILABLE: busy" in response.content.decode()
    assert len(httpserver.log) == 1


def test_alerts_are_still_retried_with_the_full_timeout(settings, httpserver):
    """Only a person's test skips the retries: an alert keeps trying."""
    settings.NOTIFY_RETRY_DELAYS = (0, 0)
    httpserver.expect_request("/hook", method="POST").respond_with_data("busy", status=503)
    channel = make_channel(Channel.WEBHOOK, name="Ops hook", url=httpserver.url_for("/hook"))
    notification = Notification.objects.create(channel=channel, event=Notification.TEST, status=Notification.FAILED)

    notify.deliver(channel, notify.Message.for_test(channel), notification, actor="monitor")

    assert notification.attempts == 3 and len(httpserver.log) == 3


def test_the_channels_list_shows_a_channel_whose_last_test_failed(admin_client, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()
    failing = make_channel(Channel.EMAIL, name="On-call mail", email_to="oncall@example.org")
    make_channel(Channel.EMAIL, name="Quiet mail", email_to="quiet@example.org")
    send_test(admin_client, failing)

    page = admin_client.get(reverse("channel_list")).content.decode()

    row = page[page.index("On-call mail") : page.index("Quiet mail")]
    assert "Test message failed" in row
    assert f"Could not reach the mail server 127.0.0.1:{settings.EMAIL_PORT}" in row
    assert "failed" not in page[page.index("Quiet mail") :]

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    send_test(admin_client, failing)  # fixed: the failure is no longer the news
    page = admin_client.get(reverse("channel_list")).content.decode()
    assert "Test message failed" not in page
