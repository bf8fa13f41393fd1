"""How each kind of channel is told: one transport class per kind, all with
the same interface, `Transport(channel).notify(message)`.

A transport makes one attempt and raises:
- TransientError when trying again later may work (connection refused,
  timeout, 429, 5xx, a 4xx from the mail server): notify.deliver retries;
- PermanentError when the channel itself is wrong (400/401/403/404/410, the
  mail server refusing the recipients): notify.deliver disables the channel;
- DeliveryError for anything else that failed.

Error messages are written for the channel page and never contain the secret
URL or key (Slack, PagerDuty and Apprise URLs and keys are secrets)."""

import hashlib
import hmac
import json
import smtplib
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from http.client import HTTPMessage
from typing import IO, Any, Self
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.urls import reverse
from django.utils import timezone

from catalog.alerts import apprise_urls
from catalog.alerts.models import Alert, Channel, Notification
from catalog.endpoints import endpoint_problem
from catalog.text import duration_text, moment_text


class DeliveryError(Exception):
    """The channel was not told."""


class TransientError(DeliveryError):
    """Worth another attempt after a pause."""


class PermanentError(DeliveryError):
    """The channel's configuration is wrong; more attempts will not help."""


# --- what is said ------------------------------------------------------------

# What the on-call engineer reads first, by alert kind.
HEADLINES = {
    Alert.SOURCE_HEALTH: "DOWN",
    Alert.BACKUP_PARTIAL: "PARTIAL BACKUP",
    Alert.VERIFICATION_FAILED: "VERIFICATION FAILED",
    Alert.RESTORE_FAILED: "RESTORE FAILED",
    Alert.STORAGE_FULL: "STORAGE FULL",
    Alert.SIZE_ANOMALY: "UNUSUAL BACKUP SIZE",
    Alert.THREE_TWO_ONE: "3-2-1 NOT MET",
    Alert.STUCK_JOB: "STUCK JOB",
    Alert.RETENTION_FAILED: "RETENTION FAILED",
}


def when(moment: datetime | None) -> str:
    """A moment as the rest of Strongroom says it, e.g. 2026-11-26 03:12 UTC."""
    return moment_text(moment) if moment else ""


@dataclass(frozen=True)
class Message:
    """Everything a transport needs to say, with no secret and no model: made
    from an Alert (or for a test) before any transport sees it."""

    event: str  # Notification.OPENED / RESOLVED / TEST
    kind: str  # an Alert kind, or "test"
    key: str
    severity: str  # Alert.CRITICAL / WARNING
    title: str
    detail: str
    source_id: int | None
    source_name: str
    opened_at: datetime
    resolved_at: datetime | None
    resolution: str
    link: str  # absolute
    alert_id: int | None = None
    problem: str = "PROBLEM"  # DOWN, FAILING, STORAGE FULL …

    @classmethod
    def from_alert(cls, alert: Alert, event: str) -> Self:
        source = alert.source
        problem = HEADLINES.get(alert.kind, "PROBLEM")
        if alert.kind == Alert.SOURCE_HEALTH and source and source.status == "failing":
            problem = "FAILING"
        return cls(
            event=event,
            kind=alert.kind,
            key=alert.key,
            severity=alert.severity,
            title=alert.title,
            detail=alert.detail,
            source_id=source.pk if source else None,
            source_name=source.name if source else "",
            opened_at=alert.opened_at,
            resolved_at=alert.resolved_at,
            resolution=alert.resolution,
            link=absolute(alert.url or (source.get_absolute_url() if source else reverse("alert_list"))),
            alert_id=alert.pk,
            problem=problem,
        )

    @classmethod
    def for_test(cls, channel: Channel) -> Self:
        now = timezone.now()
        return cls(
            event=Notification.TEST,
            kind="test",
            key=f"channel:{channel.pk}",
            severity=Alert.WARNING,
            title=f"Test message for the channel “{channel.name}”",
            detail=f"Someone pressed “Send test” in {settings.SITE_NAME}. Nothing is wrong; no action is needed.",
            source_id=None,
            source_name="",
            opened_at=now,
            resolved_at=None,
            resolution="",
            link=absolute(channel.get_absolute_url()),
        )

    @property
    def is_recovery(self) -> bool:
        return self.event == Notification.RESOLVED

    @property
    def is_test(self) -> bool:
        return self.event == Notification.TEST

    def headline(self) -> str:
        """DOWN, RECOVERED, TEST …: the first word of a subject or a Slack message."""
        if self.is_test:
            return "TEST"
        if self.is_recovery:
            return "RECOVERED"
        return self.problem

    def subject(self) -> str:
        """E.g. "DOWN: Inventory DB", "RECOVERED: Inventory DB"."""
        about = self.source_name or self.title
        if self.is_test:
            about = self.title
        return f"{self.headline()}: {about}"

    def open_for(self) -> str:
        return duration_text((self.resolved_at or timezone.now()) - self.opened_at)

    def lines(self) -> list[str]:
        """The plain-text body shared by email and webhook-like channels."""
        if self.is_test:
            return [self.title, self.detail, "", f"Channel page: {self.link}"]
        lines = [self.title]
        if self.source_name:
            lines.append(f"Source: {self.source_name}")
        if self.is_recovery:
            lines.append(
                f"Recovered: {when(self.resolved_at)}, after {self.open_for()} "
                f"(the problem started {when(self.opened_at)})"
            )
            if self.resolution:
                lines.append(f"How: {self.resolution}")
            lines.append(f"The problem was: {self.detail or self.title}")
        else:
            lines.append(f"What is wrong: {self.detail or self.title}")
            lines.append(f"Since: {when(self.opened_at)} ({self.open_for()} ago)")
            lines.append(f"Severity: {self.severity}")
        lines += ["", f"Details: {self.link}"]
        return lines

    def text(self) -> str:
        return "\n".join(self.lines())


def absolute(path: str) -> str:
    return path if path.startswith(("http://", "https://")) else settings.SITE_URL + path


# --- transports ----------------------------------------------------------------


class Transport:
    # Secrets this kind keeps sealed, by name in Channel.secrets().
    secret_names: tuple[str, ...] = ()
    # What to fix when the channel is disabled, e.g. "webhook URL".
    fix_what = "settings"

    def __init__(self, channel: Channel, timeout: float | None = None) -> None:
        self.channel = channel
        # Seconds to wait for the far end; None: the settings' (a test send waits less, see notify.send_test).
        self.timeout = timeout

    def notify(self, message: Message) -> None:
        raise NotImplementedError

    def target_display(self) -> str:
        """Where messages go, fit for a page: secrets left out."""
        raise NotImplementedError

    def secrets(self) -> dict[str, str]:
        return self.channel.secrets()

    def secret(self, name: str) -> str:
        value = self.secrets().get(name)
        if not value:
            raise PermanentError(f"No {self.fix_what} is stored for this channel")
        return value


class Email(Transport):
    fix_what = "addresses"

    def recipients(self) -> list[str]:
        return [address.strip() for address in self.channel.email_to.split(",") if address.strip()]

    def target_display(self) -> str:
        return ", ".join(self.recipients())

    def notify(self, message: Message) -> None:
        email = EmailMessage(
            subject=f"[{settings.SITE_NAME}] {message.subject()}",
            body=message.text() + f"\n\n-- \nSent by {settings.SITE_NAME} to the channel “{self.channel.name}”.\n",
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=self.recipients(),
            headers=self.thread_headers(message),
            connection=get_connection(fail_silently=False, timeout=self.timeout or settings.EMAIL_TIMEOUT),
        )
        try:
            email.send()
        except smtplib.SMTPRecipientsRefused as exc:
            refused = ", ".join(
                f"{address} ({code} {reason_text(reason)})" for address, (code, reason) in exc.recipients.items()
            )
            raise PermanentError(f"The mail server refused {refused}") from None
        except smtplib.SMTPResponseException as exc:
            # 4xx: try again later; 5xx (sender refused, message rejected, bad
            # login): the mail settings are wrong, not this channel.
            error = TransientError if 400 <= exc.smtp_code < 500 else DeliveryError
            raise error(f"The mail server answered {exc.smtp_code} {reason_text(exc.smtp_error)}") from None
        except (smtplib.SMTPException, OSError) as exc:
            # smtplib reports a read that timed out as "Connection unexpectedly closed: timed out".
            if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
                raise TransientError(
                    f"The mail server {settings.EMAIL_HOST}:{settings.EMAIL_PORT} did not answer "
                    f"within {self.timeout or settings.EMAIL_TIMEOUT} s"
                ) from None
            raise TransientError(
                f"Could not reach the mail server {settings.EMAIL_HOST}:{settings.EMAIL_PORT}: "
                f"{exc or type(exc).__name__}"
            ) from None

    @staticmethod
    def thread_headers(message: Message) -> dict[str, str]:
        """A recovery answers its problem's email, so mail clients show them
        as one thread."""
        if message.alert_id is None:
            return {}
        domain = settings.DEFAULT_FROM_EMAIL.rpartition("@")[2].strip(">") or "strongroom.local"
        problem_id = f"<strongroom-alert-{message.alert_id}-opened@{domain}>"
        if message.is_recovery:
            return {
                "Message-ID": f"<strongroom-alert-{message.alert_id}-resolved@{domain}>",
                "In-Reply-To": problem_id,
                "References": problem_id,
            }
        return {"Message-ID": problem_id}


def reason_text(reason: bytes | str) -> str:
    return reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)


class Slack(Transport):
    secret_names = ("url",)
    fix_what = "webhook URL"
    COLOURS = {Alert.CRITICAL: "#d92d20", Alert.WARNING: "#f79009", "recovery": "#12b76a", "test": "#2f5fd0"}

    def target_display(self) -> str:
        return secret_url_display(self.secrets().get("url", ""))

    def payload(self, message: Message) -> dict[str, Any]:
        colour = self.COLOURS["test" if message.is_test else "recovery" if message.is_recovery else message.severity]
        fields = []
        if message.source_name:
            fields.append({"title": "Source", "value": slack_escape(message.source_name), "short": True})
        if message.is_recovery:
            fields.append({"title": "Was open for", "value": message.open_for(), "short": True})
        elif not message.is_test:
            fields.append({"title": "Since", "value": when(message.opened_at), "short": True})
            fields.append({"title": "Severity", "value": message.severity, "short": True})
        text = (
            slack_escape(message.resolution or message.detail) if message.is_recovery else slack_escape(message.detail)
        )
        return {
            "text": f"*{slack_escape(message.subject())}*  <{message.link}|Open in {slack_escape(settings.SITE_NAME)}>",
            "attachments": [
                {
                    "color": colour,
                    "fallback": slack_escape(message.text()),
                    "title": slack_escape(message.title),
                    "title_link": message.link,
                    "text": text,
                    "fields": fields,
                    "footer": slack_escape(settings.SITE_NAME),
                    "ts": int(message.opened_at.timestamp()),
                }
            ],
        }

    def notify(self, message: Message) -> None:
        post_json(self.secret("url"), self.payload(message), service="Slack", timeout=self.timeout)


def slack_escape(text: str) -> str:
    """Slack reads &, < and > as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Webhook(Transport):
    secret_names = ("secret",)
    fix_what = "URL"
    SIGNATURE_HEADER = "X-Strongroom-Signature"

    def target_display(self) -> str:
        return public_url_display(self.channel.url)

    @staticmethod
    def payload(message: Message) -> dict[str, Any]:
        return {
            "event": message.event,
            "alert_id": message.alert_id,
            "kind": message.kind,
            "key": message.key,
            "severity": message.severity,
            "title": message.title,
            "detail": message.detail,
            "source": {"id": message.source_id, "name": message.source_name} if message.source_id else None,
            "opened_at": message.opened_at.isoformat(),
            "resolved_at": message.resolved_at.isoformat() if message.resolved_at else None,
            "resolution": message.resolution,
            "url": message.link,
            "sent_at": timezone.now().isoformat(),
        }

    @staticmethod
    def signature(secret: str, body: bytes) -> str:
        return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()

    def notify(self, message: Message) -> None:
        body = json.dumps(self.payload(message)).encode()
        headers = {
            self.SIGNATURE_HEADER: self.signature(self.secret("secret"), body),
            "X-Strongroom-Event": message.event,
        }
        post(self.channel.url, body, headers, service="The webhook", url_is_secret=False, timeout=self.timeout)


class PagerDuty(Transport):
    secret_names = ("routing_key",)
    fix_what = "routing key"

    def target_display(self) -> str:
        return "PagerDuty Events API v2 (routing key stored encrypted)"

    @staticmethod
    def dedup_key(message: Message) -> str:
        """The same for an alert's trigger and resolve, so PagerDuty closes the incident."""
        if message.alert_id is None:
            return f"strongroom-test-{message.key}-{int(message.opened_at.timestamp())}"
        return f"strongroom-{message.kind}-{message.key}-{message.alert_id}"

    def payload(self, message: Message) -> dict[str, Any]:
        event: dict[str, Any] = {
            "routing_key": self.secret("routing_key"),
            "event_action": "resolve" if message.is_recovery else "trigger",
            "dedup_key": self.dedup_key(message),
        }
        if message.is_recovery:
            return event  # PagerDuty reads only the key for a resolve
        event["payload"] = {
            "summary": f"{message.subject()} — {message.detail or message.title}"[:1024],
            "source": message.source_name or settings.SITE_NAME,
            "severity": "info" if message.is_test else message.severity,
            "timestamp": message.opened_at.isoformat(),
            "component": message.source_name or None,
            "class": message.kind,
            "custom_details": {
                "title": message.title,
                "detail": message.detail,
                "key": message.key,
                "opened_at": when(message.opened_at),
            },
        }
        event["links"] = [{"href": message.link, "text": f"Open in {settings.SITE_NAME}"}]
        event["client"] = settings.SITE_NAME
        event["client_url"] = settings.SITE_URL
        return event

    def notify(self, message: Message) -> None:
        post_json(settings.PAGERDUTY_EVENTS_URL, self.payload(message), service="PagerDuty", timeout=self.timeout)


class Apprise(Transport):
    """Any service Apprise knows (Telegram, Discord, Teams, ntfy, Matrix,
    Gotify …) through one Apprise URL, which is a secret as a whole: its title
    is the message's subject, its body the plain text an email has."""

    secret_names = ("url",)
    fix_what = "Apprise URL"

    def target_display(self) -> str:
        url = self.secrets().get("url", "")
        service = apprise_urls.read(url) if url else None
        if service is None:
            return "not set" if not url else "an Apprise URL that Apprise cannot read"
        return apprise_urls.display(service)

    @staticmethod
    def notify_type(message: Message) -> str:
        """How the service colours it: see apprise_urls.NOTIFY_TYPES."""
        if message.is_test:
            return "test"
        return "recovery" if message.is_recovery else message.severity

    def notify(self, message: Message) -> None:
        url = self.secret("url")
        service = apprise_urls.read(url)
        if service is None:
            raise PermanentError("Apprise cannot read the stored URL")
        target = apprise_urls.display(service)
        # Checked at each send too: the host's name may resolve elsewhere by now.
        if problem := apprise_urls.address_problem(service):
            raise PermanentError(f"Not sent to {target}: {problem}")
        timeout = self.timeout or settings.NOTIFY_HTTP_TIMEOUT
        outcome = apprise_urls.send(
            url,
            service,
            title=message.subject(),
            body=message.text(),
            notify_type=self.notify_type(message),
            timeout=timeout,
        )
        if not outcome.sent:
            raise self.error(outcome, target, timeout)

    @staticmethod
    def error(outcome: apprise_urls.Outcome, target: str, timeout: float) -> DeliveryError:
        if outcome.status is not None:
            answer = f"{target} answered {outcome.answer()}"
            if outcome.status in PERMANENT_STATUSES:
                return PermanentError(answer)
            if outcome.status in (408, 429) or outcome.status >= 500:
                return TransientError(answer)
            return DeliveryError(answer)
        if outcome.timed_out:
            return TransientError(f"{target} did not answer within {timeout} s")
        if outcome.unreachable:
            return TransientError(f"Could not reach {target}: {outcome.unreachable}")
        return DeliveryError(f"{target} did not take the message: {outcome.said or 'Apprise gave no reason'}")


TRANSPORTS: dict[str, type[Transport]] = {
    Channel.EMAIL: Email,
    Channel.SLACK: Slack,
    Channel.WEBHOOK: Webhook,
    Channel.PAGERDUTY: PagerDuty,
    Channel.APPRISE: Apprise,
}


def transport_for(channel: Channel, timeout: float | None = None) -> Transport:
    return TRANSPORTS[channel.kind](channel, timeout)


# --- HTTP ------------------------------------------------------------------------

# Answers that say the URL or key is wrong: the channel is disabled.
PERMANENT_STATUSES = {400, 401, 403, 404, 410}


def post_json(
    url: str, payload: Mapping[str, Any], *, service: str, url_is_secret: bool = True, timeout: float | None = None
) -> int:
    return post(url, json.dumps(payload).encode(), {}, service=service, url_is_secret=url_is_secret, timeout=timeout)


class RefusedRedirect(Exception):
    """A channel's server redirected to an address Strongroom does not send to."""


class CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a host the channel's own URL could name
    (catalog/endpoints.py): a public webhook must not bounce the request on
    to 169.254.169.254."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if problem := endpoint_problem(newurl):
            raise RefusedRedirect(problem)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


OPENER = urllib.request.build_opener(CheckedRedirects)


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    service: str,
    url_is_secret: bool = True,
    timeout: float | None = None,
) -> int:
    """POSTs a JSON body; raises a DeliveryError subclass that names `service`
    and never the URL when it is a secret (urllib puts it in some messages)."""
    # Checked at each send too: the host's name may resolve elsewhere by now.
    if problem := endpoint_problem(url):
        raise PermanentError(f"Not sent to {service_target(service, url, url_is_secret=True)}: {problem}")
    timeout = timeout or settings.NOTIFY_HTTP_TIMEOUT
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": f"{settings.SITE_NAME} alerts", **headers},
    )
    try:
        with OPENER.open(request, timeout=timeout) as response:
            return response.status
    except RefusedRedirect as exc:
        raise PermanentError(f"{service} redirected to an address Strongroom does not send to: {exc}") from None
    except urllib.error.HTTPError as exc:
        answer = f"{service} answered {exc.code} {exc.reason}"
        said = response_excerpt(exc)
        if said:
            answer += f": {said}"
        if exc.code in PERMANENT_STATUSES:
            raise PermanentError(answer) from None
        if exc.code in (408, 429) or exc.code >= 500:
            raise TransientError(answer) from None
        raise DeliveryError(answer) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):  # while connecting
            raise TransientError(f"{service} did not answer within {timeout} s") from None
        raise TransientError(f"Could not reach {service_target(service, url, url_is_secret)}: {exc.reason}") from None
    except TimeoutError:
        raise TransientError(f"{service} did not answer within {timeout} s") from None
    except (ConnectionError, OSError) as exc:
        raise TransientError(f"Could not reach {service_target(service, url, url_is_secret)}: {exc}") from None


def response_excerpt(exc: urllib.error.HTTPError, limit: int = 200) -> str:
    try:
        text = exc.read(limit + 1).decode(errors="replace")
    except Exception:  # the answer is a courtesy: its absence is no error
        return ""
    text = " ".join(text.split())
    return text[:limit] + "…" if len(text) > limit else text


def service_target(service: str, url: str, url_is_secret: bool) -> str:
    name = service[4:] if service.startswith("The ") else service
    return name if url_is_secret else f"{name} at {public_url_display(url)}"


def secret_url_display(url: str) -> str:
    """hooks.slack.com/… : enough to recognise, nothing to abuse."""
    host = urlsplit(url).hostname if url else ""
    return f"{host}/…" if host else "not set"


def public_url_display(url: str) -> str:
    """A URL with any password in it replaced by ***."""
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url
