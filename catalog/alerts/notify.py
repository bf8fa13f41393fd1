"""Telling channels about alerts, and configuring the channels.

The monitoring code calls dispatch(alert, event) with event one of
Notification.OPENED / Notification.RESOLVED, inside or after the transaction
that opened or resolved the alert. The sending is queued (a django-q task
taking the alert id) on commit, so a slow channel never holds up a backup or
the tick; the task calls send_for_alert."""

import logging
import secrets as random_secrets
import time
import traceback
from collections.abc import Collection, Iterable, Mapping

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from catalog import audit, queues
from catalog.alerts.models import Alert, Channel, Notification
from catalog.alerts.transports import DeliveryError, Message, PermanentError, TransientError, transport_for, when

log = logging.getLogger(__name__)

# Who disables a channel that failed for good while sending an alert.
MONITOR = "monitor"

# A test send has someone waiting for its answer: one attempt, and no longer
# than this for the far end (alerts retry, with the settings' timeouts).
TEST_TIMEOUT_SECONDS = 5


def dispatch(alert: Alert, event: str, quiet: bool = False) -> None:
    """Queues notifications about `alert` for every channel that wants them.
    A quiet resolve (the source was paused) tells only the PagerDuty channels
    that opened an incident for it, which would otherwise stay open."""
    alert_id = alert.pk
    transaction.on_commit(
        lambda: queues.enqueue_monitoring(
            "catalog.tasks.send_alert_notifications", alert_id, event, quiet, task_name=f"notify-{alert_id}-{event}"
        )
    )


def recipients(alert: Alert, event: str, quiet: bool = False) -> list[Channel]:
    """The enabled channels to tell about `alert` for `event`.

    A problem goes to the channels subscribed to its kind. A recovery goes to
    the channels subscribed to recoveries that were told of the problem (one
    added or subscribed since is not told that something it never heard of is
    over), and always to a PagerDuty channel that opened an incident for it,
    or the incident would stay open."""
    channels = Channel.objects.filter(enabled=True)
    if event == Notification.OPENED:
        return [channel for channel in channels if channel.wants(alert.kind)]
    told = alert.notifications.filter(event=Notification.OPENED)
    told_ids = set(told.values_list("channel_id", flat=True))
    triggered = set(
        told.filter(status=Notification.SENT, channel__kind=Channel.PAGERDUTY).values_list("channel_id", flat=True)
    )
    return [
        channel
        for channel in channels
        if channel.pk in triggered or (not quiet and channel.wants(Channel.RECOVERY) and channel.pk in told_ids)
    ]


def send_for_alert(alert_id: int, event: str, quiet: bool = False) -> dict[str, str]:
    """Sends `event` about the alert to each channel that wants it, once.

    The Notification row is written before sending: its unique (channel,
    alert, event) makes a task delivered twice a no-op for the channels already
    done. A channel that fails never stops the others. Returns {channel name:
    status}."""
    alert = Alert.objects.select_related("source").filter(pk=alert_id).first()
    if alert is None:
        return {}
    message = Message.from_alert(alert, event)
    outcome = {}
    for channel in recipients(alert, event, quiet):
        notification = claim(channel, alert, event)
        if notification is None:
            continue
        deliver(channel, message, notification, actor=MONITOR)
        outcome[channel.name] = notification.status
    return outcome


def claim(channel: Channel, alert: Alert, event: str) -> Notification | None:
    """The new Notification for (channel, alert, event), or None when another
    delivery of the task already has it."""
    try:
        with transaction.atomic():
            return Notification.objects.create(
                channel=channel,
                alert=alert,
                event=event,
                status=Notification.FAILED,
                attempts=0,
                error="Not sent yet: sending, or the worker stopped before an answer came.",
            )
    except IntegrityError:
        return None


def send_test(actor: audit.Actor, channel: Channel) -> Notification:
    """Sends a clearly labelled test message now; returns its Notification.
    Works on a disabled channel too, to check it before enabling it again."""
    notification = Notification.objects.create(
        channel=channel, event=Notification.TEST, status=Notification.FAILED, attempts=0
    )
    deliver(
        channel, Message.for_test(channel), notification, actor=actor, retry_delays=(), timeout=TEST_TIMEOUT_SECONDS
    )
    audit.record(actor, "channel.tested", channel, {"status": notification.status, "error": notification.error})
    return notification


def deliver(
    channel: Channel,
    message: Message,
    notification: Notification,
    *,
    actor: audit.Actor,
    retry_delays: Iterable[float] | None = None,
    timeout: float | None = None,
) -> Notification:
    """Tries the channel's transport, again after each of `retry_delays`
    (NOTIFY_RETRY_DELAYS unless given) when the failure may pass, each attempt
    waiting `timeout` seconds at most (the settings' unless given); records
    the outcome on `notification`; disables the channel when it fails for good."""
    transport = transport_for(channel, timeout)
    attempts, error = 0, ""
    for pause in (0, *(settings.NOTIFY_RETRY_DELAYS if retry_delays is None else retry_delays)):
        if pause:
            time.sleep(pause)
        attempts += 1
        try:
            transport.notify(message)
        except TransientError as exc:
            error = redact(str(exc), channel)
            continue
        except PermanentError as exc:
            error = redact(str(exc), channel)
            record_result(notification, Notification.FAILED, attempts, error)
            disable_channel(actor, channel, error)
            return notification
        except DeliveryError as exc:
            error = redact(str(exc), channel)
            break
        except Exception as exc:  # a bug in one transport must not silence the other channels
            # Only the type is kept: the text of an unexpected error may hold a secret.
            where = traceback.extract_tb(exc.__traceback__)[-1]
            log.error(
                "Sending to channel %s failed unexpectedly: %s at %s:%s",
                channel.pk,
                type(exc).__name__,
                where.filename,
                where.lineno,
            )
            error = f"Internal error while sending ({type(exc).__name__}); the worker's log says where"
            break
        return record_result(notification, Notification.SENT, attempts, "")
    return record_result(notification, Notification.FAILED, attempts, error)


def record_result(notification: Notification, status: str, attempts: int, error: str) -> Notification:
    notification.status, notification.attempts, notification.error = status, attempts, error[:500]
    notification.save(update_fields=["status", "attempts", "error"])
    return notification


def redact(text: str, channel: Channel) -> str:
    """Belt and braces: no stored secret survives in an error text."""
    for value in channel.secrets().values():
        if value and len(value) >= 4:
            text = text.replace(value, "…")
    return text


@transaction.atomic
def disable_channel(actor: audit.Actor, channel: Channel, error: str) -> None:
    """Stops sending to a channel whose URL, key or addresses are wrong, and
    says why on its page until someone fixes it and enables it again."""
    now = timezone.now()
    reason = (
        f"{error.rstrip('.')} on {when(now)}; fix the {transport_for(channel).fix_what} and enable the channel again."
    )
    reason = reason if len(reason) <= 500 else error[:400] + f"… on {when(now)}; fix it and enable the channel again."
    changed = Channel.objects.filter(pk=channel.pk, enabled=True).update(
        enabled=False, disabled_reason=reason, disabled_at=now
    )
    channel.enabled, channel.disabled_reason, channel.disabled_at = False, reason, now
    if changed:
        audit.record(actor, "channel.disabled", channel, {"enabled": False, "disabled_reason": reason})


# --- configuring channels ------------------------------------------------------


@transaction.atomic
def save_channel(
    actor: audit.Actor,
    channel: Channel,
    *,
    changed_fields: Collection[str] = (),
    secrets: Mapping[str, str | None] | None = None,
    new_webhook_secret: bool = False,
) -> str:
    """Saves a channel with its sealed secrets. Returns the webhook secret when
    one was generated (the only time anyone sees it), else ""."""
    created = channel.pk is None
    names = transport_for(channel).secret_names
    given = {name: value for name, value in (secrets or {}).items() if value and name in names}
    kept = {name: value for name, value in channel.secrets().items() if name in names}
    generated = ""
    if channel.kind == Channel.WEBHOOK and not given.get("secret") and (new_webhook_secret or not kept.get("secret")):
        generated = given["secret"] = random_secrets.token_urlsafe(32)
    # Secrets of another kind (the channel changed kind) are dropped, not kept sealed for nothing.
    channel.secret_token = ""
    channel.set_secrets(**{**kept, **given})
    if channel.enabled:
        channel.disabled_reason, channel.disabled_at = "", None
    channel.save()
    changes = audit.describe_changes(channel, [name for name in changed_fields if name not in names])
    changes.update({name: "changed" for name in sorted(given)})
    audit.record(actor, "channel.created" if created else "channel.changed", channel, changes)
    return generated


@transaction.atomic
def delete_channel(actor: audit.Actor, channel: Channel) -> None:
    audit.record(actor, "channel.deleted", channel, {"name": channel.name, "kind": channel.kind})
    channel.delete()
