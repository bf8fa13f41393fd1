"""Opening and resolving alerts. An alert is one problem named by (kind, key);
while it is open, the same problem found again updates it instead of alerting
twice, and channels hear about it once when it opens and once when it clears."""

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from catalog import audit
from catalog.alerts.models import Alert, Notification
from catalog.models import Source

ACTOR = "monitor"


def open_alerts(kind: str, key: str) -> QuerySet[Alert]:
    return Alert.objects.filter(kind=kind, key=key, resolved_at__isnull=True)


def open_alert(
    kind: str,
    key: str,
    *,
    title: str,
    detail: str,
    url: str,
    source: Source | None = None,
    severity: str = Alert.CRITICAL,
) -> tuple[Alert, bool]:
    """Opens the problem (kind, key) unless it is open already; an open one has
    its title, detail, link, severity and source brought up to date (one
    problem about several plans may come to be about another source), without
    a new notification. Returns (alert, created)."""
    fields = {
        "title": title[:200],
        "detail": detail[:1000],
        "url": url[:300],
        "severity": severity,
        "source_id": source.pk if source is not None else None,
    }
    with transaction.atomic():
        alert = open_alerts(kind, key).select_for_update().first()
        if alert is None:
            try:
                # The constraint on open (kind, key) settles a race with another
                # worker finding the same problem at the same moment.
                with transaction.atomic():
                    alert = Alert.objects.create(kind=kind, key=key, **fields)
            except IntegrityError:
                alert = open_alerts(kind, key).select_for_update().get()
            else:
                audit.record(
                    ACTOR, "alert.opened", alert, {"kind": kind, "key": key, "severity": severity, "title": alert.title}
                )
                dispatch(alert, Notification.OPENED)
                return alert, True
        changed = {name: value for name, value in fields.items() if getattr(alert, name) != value}
        if changed:
            for name, value in changed.items():
                setattr(alert, name, value)
            alert.save(update_fields=list(changed))
            audit.record(ACTOR, "alert.updated", alert, {name: changed[name] for name in changed})
        return alert, False


def resolve_alert(kind: str, key: str, resolution: str, *, notify: bool = True) -> Alert | None:
    """Closes the open problem (kind, key), if there is one, and tells the
    channels unless `notify` is False (a paused source is resolved quietly:
    only an open PagerDuty incident is closed).
    Returns the resolved alert or None."""
    with transaction.atomic():
        alert = open_alerts(kind, key).select_for_update().first()
        if alert is None:
            return None
        alert.resolved_at, alert.resolution = timezone.now(), resolution[:500]
        alert.save(update_fields=["resolved_at", "resolution"])
        audit.record(
            ACTOR,
            "alert.resolved",
            alert,
            {"kind": kind, "key": key, "resolution": alert.resolution, "notified": notify},
        )
        dispatch(alert, Notification.RESOLVED, quiet=not notify)
        return alert


def dispatch(alert: Alert, event: str, quiet: bool = False) -> None:
    # notify imports transports and settings helpers; loading it only when an
    # alert changes keeps this module importable from the models' side.
    from catalog.alerts import notify

    notify.dispatch(alert, event, quiet)
