"""Sign-in lockouts (django-axes) go into the audit trail: one event when a
user name and address are locked out, one when that lockout ends, and none
for the attempts refused in between. The trail is append-only, so an event
per refused attempt would let anyone grow it without limit by knocking on a
locked door."""

from datetime import datetime
from typing import Any

from axes.models import AccessAttempt
from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone

from catalog import audit


def record_lockout(
    sender: object,
    request: HttpRequest | None = None,
    username: str | None = None,
    ip_address: str | None = None,
    **kwargs: Any,
) -> None:
    """Axes sends user_locked_out at the failure that reaches the limit, and
    again for each attempt its backend refuses during the lockout. Only the
    first is a new lockout: axes counted that failure (and set how many there
    were since the start); a refused attempt is turned away before it is
    counted, so that number stays unset."""
    if request is not None and getattr(request, "axes_failures_since_start", None) is None:
        return
    # Nobody is signed in: the actor is the user name that was tried, as typed
    # (a name, never the password); the address comes from AuditRequestIP.
    audit.record(
        (username or "?")[:150],
        "auth.lockout",
        changes={"username": username or "", "failure_limit": settings.AXES_FAILURE_LIMIT},
    )


def record_lockout_end(sender: type[AccessAttempt], instance: AccessAttempt, **kwargs: Any) -> None:
    """An AccessAttempt row is deleted when its cool-off has passed (axes
    cleans expired rows at the next sign-in, and end_expired_lockouts within
    a minute), when its user signs in after the cool-off, or when an
    administrator resets it. Only a row that had reached the limit was a
    lockout."""
    if instance.failures_since_start < settings.AXES_FAILURE_LIMIT:
        return
    locked_until = instance.attempt_time + settings.AXES_COOLOFF_TIME
    how = "cool-off passed" if locked_until <= timezone.now() else "reset"
    # The event is about the locked-out address, not about whoever's request
    # happened to clean the row up.
    token = audit.current_ip.set(instance.ip_address or None)
    try:
        audit.record(
            (instance.username or "?")[:150],
            "auth.lockout_end",
            changes={"username": instance.username or "", "locked_until": locked_until.isoformat(), "ended": how},
        )
    finally:
        audit.current_ip.reset(token)


def end_expired_lockouts(now: datetime | None = None) -> int:
    """Deletes the attempts whose cool-off has passed (as axes does at the next
    sign-in), so that each lockout's end is recorded within a minute even if
    nobody tries again. Returns how many rows went."""
    threshold = (now or timezone.now()) - settings.AXES_COOLOFF_TIME
    deleted, _ = AccessAttempt.objects.filter(attempt_time__lte=threshold).delete()
    return deleted
