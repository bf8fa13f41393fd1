"""Apprise URLs (tgram://, discord://, workflows://, ntfy://, matrix://,
gotify:// and the rest): which service one names, where it sends, and one
message sent through it, with none of the URL reaching a page, a log record or
an error text.

An Apprise URL is a secret as a whole: bot tokens, webhook tokens, passwords
and ntfy topics sit in its host, path, user or query, in a different place for
each service. Apprise logs such things (its debug records hold request URLs,
headers and bodies, some of its warnings the URL it posted to). So while
Strongroom hands Apprise a URL (see `private`), the records of Apprise and of
urllib3 under it pass through a filter: those below INFO are dropped (all of
them while a URL is only read), the others have every piece of the URL
replaced by "…", and all of them are kept, redacted, for the one call, to tell
a refused connection or a 503 from a 401.

Apprise is used as a library with nothing of its own around it: no
configuration file, no plugin directory, no persistent storage, no
environment, only the one URL given."""

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import unquote, unquote_plus

from apprise import Apprise, AppriseAsset, NotifyFormat, NotifyType
from apprise.manager_plugins import NotificationManager
from apprise.plugins.base import NotifyBase
from apprise.result import AppriseResultStatus
from apprise.utils.parse import parse_urls

from catalog.endpoints import endpoint_problem

# Schemes to name when a URL is refused: the services people ask for most.
EXAMPLES = (
    "tgram://bot-token/chat-id (Telegram)",
    "discord://webhook-id/webhook-token",
    "workflows://… (Microsoft Teams)",
    "ntfy://host/topic",
    "matrix://user:password@host/#room",
    "gotify://host/token",
)
FORMATS_URL = "https://appriseit.com/services/"

# Loggers whose records may carry the URL while Apprise works: Apprise's own
# and those of urllib3, which requests uses and which logs each request line.
LOGGERS = (
    "apprise",
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.poolmanager",
    "urllib3.response",
    "urllib3.util.retry",
)

# Shorter pieces of a URL ("yes", "api") are not worth hiding and would garble every record.
MIN_SECRET_LENGTH = 4


def plugins() -> NotificationManager:
    """Apprise's registry of services (the same one whatever the call)."""
    return NotificationManager()  # type: ignore[no-untyped-call]  # apprise leaves its __init__ unannotated


def asset() -> AppriseAsset:
    """Apprise's settings for Strongroom: English, no storage on disk, no
    redirects (a public service must not bounce a request on to a metadata
    address, see catalog/endpoints.py), one message at a time."""
    return AppriseAsset(
        async_mode=False,
        http_redirects=False,
        language="en",
        storage_mode="memory",
        allow_templates=False,
        secure_logging=True,
    )


def scheme_of(url: str) -> str:
    scheme, found, _ = url.partition("://")
    return scheme.lower() if found else ""


def one_url(url: str) -> bool:
    """Apprise reads "a://…, b://…" as two services; a channel sends to one."""
    return len(parse_urls(url)) == 1  # type: ignore[no-untyped-call]


# --- keeping the URL out of log records -------------------------------------------


class Redaction:
    """The pieces of one URL to hide, and the records logged while it was in use."""

    def __init__(self, url: str, shown: frozenset[str] = frozenset(), quiet: bool = False) -> None:
        # `shown`: what the page shows anyway (a server's host and port).
        # `quiet`: keep the records for the caller only (reading a URL: its outcome is said on the page).
        self.quiet = quiet
        pieces = {url, unquote(url)}
        _, _, rest = url.partition("://")
        for piece in re.split(r"[/:@?&=#,;\s]+", rest):
            pieces.update(form for form in (piece, unquote(piece), unquote_plus(piece)) if form not in shown)
        # Longest first: the whole URL goes before the pieces inside it.
        self.pieces = sorted((p for p in pieces if len(p) >= MIN_SECRET_LENGTH), key=len, reverse=True)
        self.records: list[tuple[int, str]] = []

    def redact(self, text: str) -> str:
        for piece in self.pieces:
            text = text.replace(piece, "…")
        return text

    def messages(self, level: int = logging.NOTSET) -> list[str]:
        return [text for levelno, text in self.records if levelno >= level]


# Set while Strongroom hands Apprise a URL; Apprise copies it into its worker threads.
IN_USE: ContextVar[Redaction | None] = ContextVar("apprise_url_in_use", default=None)


class KeepTheURLOut(logging.Filter):
    """On the loggers above: while a URL is in use, drops records below INFO
    and redacts the others, keeping a redacted copy of each."""

    def filter(self, record: logging.LogRecord) -> bool:
        redaction = IN_USE.get()
        if redaction is None:
            return record.levelno >= passing_level(record)
        try:
            text = redaction.redact(record.getMessage())
        except Exception:  # a record that cannot be formatted is not worth a secret
            return False
        redaction.records.append((record.levelno, text))
        if redaction.quiet or record.levelno < max(logging.INFO, passing_level(record)):
            return False
        # A traceback would print the exception's text, which may hold the URL.
        record.msg, record.args, record.exc_info, record.exc_text, record.stack_info = text, None, None, None, None
        return True


def passing_level(record: logging.LogRecord) -> int:
    """The level a record must reach to go on to Strongroom's log. Apprise's
    logger is set to DEBUG (below) so that its debug records exist for the
    call that uses a URL, which alone tell a refused connection from a
    timeout; the others still go only as far as the root logger's level says."""
    if record.name == "apprise":
        return max(logging.INFO, logging.getLogger().getEffectiveLevel())
    return logging.NOTSET  # urllib3's loggers keep their own levels


FILTER = KeepTheURLOut()
for name in LOGGERS:
    logging.getLogger(name).addFilter(FILTER)  # the same filter once: addFilter skips it the second time
logging.getLogger("apprise").setLevel(logging.DEBUG)


@contextmanager
def private(url: str, shown: frozenset[str] = frozenset(), quiet: bool = False) -> Iterator[Redaction]:
    redaction = Redaction(url, shown, quiet)
    token = IN_USE.set(redaction)
    try:
        yield redaction
    finally:
        IN_USE.reset(token)


# --- reading a URL ----------------------------------------------------------------


def read(url: str) -> NotifyBase | None:
    """The Apprise service `url` names, or None when Apprise cannot read it
    (which the form or the channel page says: Apprise's records stay quiet,
    or each page showing a bad URL would log an error)."""
    with private(url, quiet=True):
        if scheme_of(url) not in plugins() or not one_url(url):
            return None
        return Apprise.instantiate(url, asset=asset())


def server_address(service: NotifyBase) -> tuple[str, int | None] | None:
    """(host, port) when the service posts to a server the URL names (ntfy,
    Gotify, Matrix, JSON …); None when the URL holds only tokens for a
    service's own public API (Telegram, Discord), whose "host" is a token."""
    if "host" not in type(service).template_tokens or not service.host:
        return None
    port = service.port if isinstance(service.port, int) else None
    return service.host, port


def shown_parts(service: NotifyBase) -> frozenset[str]:
    address = server_address(service)
    if address is None:
        return frozenset()
    host, port = address
    return frozenset({host, str(port)} if port else {host})


def display(service: NotifyBase) -> str:
    """E.g. "Telegram", "ntfy at ntfy.example.com": the service and where it
    posts, no token, password, topic or path."""
    name = str(service.service_name)
    address = server_address(service)
    if address is None:
        return name
    host, port = address
    host = f"[{host}]" if ":" in host else host
    return f"{name} at {host}:{port}" if port else f"{name} at {host}"


def address_problem(service: NotifyBase) -> str | None:
    """Why Strongroom must not send to the server the URL names (a cloud
    metadata address, or a private one when ALLOW_PRIVATE_ENDPOINTS is off)."""
    address = server_address(service)
    if address is None:
        return None
    host = address[0]
    return endpoint_problem(f"http://[{host}]/" if ":" in host else f"http://{host}/")


def url_problem(url: str) -> str | None:
    """None when `url` is one Apprise URL Strongroom may send to; else why
    not, in words that never repeat the URL."""
    examples = ", ".join(EXAMPLES)
    scheme = scheme_of(url)
    if not scheme:
        return f"This is not an Apprise URL. Give one such as {examples}."
    if scheme in ("http", "https"):
        return (
            f"An Apprise URL starts with the service, not {scheme}://: {examples}. "
            "To POST to a web address, choose the kind Webhook (or Apprise's json://host/path)."
        )
    if scheme not in plugins():
        return f"Apprise knows no service called {scheme}://. Known ones include {examples}."
    with private(url, quiet=True):
        several = not one_url(url)
    if several:
        return "Give one Apprise URL; for several services, make a channel for each."
    if not plugins()[scheme].enabled:
        # A desktop notifier, or a service whose Python package is not installed (XMPP, MQTT …).
        return f"Apprise cannot send to {scheme}:// from this server: it lacks what that service needs."
    service = read(url)
    if service is None:
        setup = getattr(plugins()[scheme], "setup_url", "") or FORMATS_URL
        return f"Apprise cannot read this {scheme}:// URL: a part is missing or malformed. Its format: {setup}"
    return address_problem(service)


# --- sending ------------------------------------------------------------------------

# "Failed to send JSON POST notification: Verification Failed., error=401."; ntfy
# reports its own codes, the HTTP status and two digits more ("error=40301").
HTTP_ERROR = re.compile(r"(?:[:]\s*(?P<reason>[^:]*?)[\s.,]*)?\berror=(?P<status>[1-5]\d\d)(?:\d\d)?\b")
# How requests and urllib3 say a connection failed (in Apprise's debug records).
CONNECTION_FAILURES = (
    ("timed out", "no answer in time"),
    ("Connection refused", "connection refused"),
    ("Name or service not known", "host name not found"),
    ("Temporary failure in name resolution", "host name not found"),
    ("No route to host", "no route to host"),
    ("Network is unreachable", "network unreachable"),
    ("Connection reset", "connection reset"),
    ("CERTIFICATE_VERIFY_FAILED", "certificate not trusted"),
)


@dataclass(frozen=True)
class Outcome:
    """What one send came to, with nothing of the URL in it."""

    sent: bool
    status: int | None = None  # the HTTP status the service answered, when Apprise says
    reason: str = ""  # the service's short reason for that status
    timed_out: bool = False
    unreachable: str = ""  # how the connection failed, e.g. "connection refused"
    said: str = ""  # Apprise's last warning, redacted, when nothing above applies

    def answer(self) -> str:
        """E.g. "403 Forbidden: bad token"."""
        if self.status is None:
            return ""
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = ""
        answer = f"{self.status} {phrase}".strip()
        if self.reason and self.reason.lower() != phrase.lower():
            answer += f": {self.reason}"
        return answer


# How Apprise colours a message (and picks its icon); any other problem is a failure.
NOTIFY_TYPES = {"test": NotifyType.INFO, "recovery": NotifyType.SUCCESS, "warning": NotifyType.WARNING}


def send(url: str, service: NotifyBase, *, title: str, body: str, notify_type: str, timeout: float) -> Outcome:
    """Sends one message through `service`, read from `url`, in one attempt
    (retries are notify.deliver's), waiting `timeout` seconds for the
    connection and as long for the answer."""
    service.socket_connect_timeout = service.socket_read_timeout = timeout
    service.retry = 0
    service.redirects = False  # whatever the URL says (?redirect=yes)
    with private(url, shown_parts(service)) as redaction:
        result = Apprise(service, asset=service.asset).notify(
            body=body,
            title=title,
            notify_type=NOTIFY_TYPES.get(notify_type, NotifyType.FAILURE),
            body_format=NotifyFormat.TEXT,
            timeout=2 * timeout,
        )
    if result:
        return Outcome(sent=True)
    return outcome_of(redaction, timed_out=result.status == AppriseResultStatus.TIMEOUT or result.timeout_count > 0)


def outcome_of(redaction: Redaction, timed_out: bool) -> Outcome:
    """A failed send's Outcome from the records Apprise logged, redacted."""
    warnings = redaction.messages(logging.WARNING)
    for text in reversed(warnings):
        if found := HTTP_ERROR.search(text):
            reason = " ".join((found["reason"] or "").split()).strip("'\"")
            return Outcome(sent=False, status=int(found["status"]), reason=reason[:120])
    everything = " ".join(redaction.messages())
    for clue, failure in CONNECTION_FAILURES:
        if clue in everything:
            return Outcome(sent=False, timed_out=timed_out or failure == "no answer in time", unreachable=failure)
    if timed_out:
        return Outcome(sent=False, timed_out=True)
    if any("connection error" in text.lower() for text in warnings):
        return Outcome(sent=False, unreachable="the connection failed")
    said = " ".join(warnings[-1].split())[:200] if warnings else ""
    return Outcome(sent=False, said=said)
