"""Channels, alerts and a real local SMTP server for the channel tests."""

import socket
from datetime import timedelta

from aiosmtpd.controller import Controller
from django.utils import timezone

from catalog.alerts import notify
from catalog.alerts.models import Alert, Channel
from tests.factories import recorded_source

ALL_EVENTS = [value for value, _ in Channel.EVENT_CHOICES]


def make_channel(kind, name=None, events=None, secrets=None, **fields):
    channel = Channel(
        name=name or f"{kind} channel", kind=kind, events=ALL_EVENTS if events is None else events, **fields
    )
    notify.save_channel("test", channel, secrets=secrets)
    return channel


def open_alert(source=None, kind=Alert.SOURCE_HEALTH, hours_ago=3, **fields):
    source = source or recorded_source()
    values = {
        "key": f"source:{source.pk}",
        "title": f"{source.name} is down",
        "severity": Alert.CRITICAL,
        "detail": "No good backup for 27 h; expected every 24 h (grace 2 h).",
        "url": source.get_absolute_url(),
        "opened_at": timezone.now() - timedelta(hours=hours_ago),
        **fields,
    }
    return Alert.objects.create(kind=kind, source=source, **values)


def resolve(alert, after_hours=2):
    alert.resolved_at = alert.opened_at + timedelta(hours=after_hours)
    alert.resolution = "A backup succeeded."
    alert.save()
    return alert


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Mailbox:
    """An aiosmtpd handler keeping what it receives; refuses addresses at refused.example."""

    def __init__(self):
        self.envelopes = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith("@refused.example"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted"


def start_smtp():
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    return controller, mailbox
