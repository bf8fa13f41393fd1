"""The drills' alert condition, judged by the catalog's one-minute tick
(registered in drills/apps.py) and as a drill ends (drills.services.check_alerts)."""

from collections.abc import Iterable
from datetime import datetime

from django.urls import reverse
from django.utils import timezone

from catalog.alerts import problems
from catalog.alerts.conditions import raise_problem
from catalog.alerts.models import Alert
from catalog.text import moment_text
from drills import schedule as drill_schedule


def check_overdue_drills(now: datetime | None = None, source_ids: Iterable[int] | None = None) -> list[str]:
    """A kind of DR drill (checksum, partial, full) of a source past its due
    date plus a day of grace (see drills.schedule); resolved once a drill of
    that kind passes. Returns the keys found overdue."""
    now = now or timezone.now()
    sources = drill_schedule.sources_with_backups()
    if source_ids is not None:
        sources = sources.filter(pk__in=source_ids)
    overdue = []
    for source in sources:
        for status in drill_schedule.statuses_of(source):
            key = f"drill:{source.pk}:{status.kind}"
            if not status.is_overdue(now):
                passed = status.last_passed
                problems.resolve_alert(
                    Alert.DRILL_OVERDUE,
                    key,
                    (
                        f"{status.label} of {source} passed on {passed.performed_at:%Y-%m-%d}."
                        if passed
                        else f"{status.label} of {source} is no longer overdue."
                    ),
                )
                continue
            overdue.append(key)
            assert status.due_at is not None  # overdue, so due
            last = status.last_passed
            since = f"the last one passed on {last.performed_at:%Y-%m-%d}" if last else "none has passed yet"
            raise_problem(
                Alert.DRILL_OVERDUE,
                key,
                source=source,
                title=f"{status.label} of {source} is overdue",
                detail=f"Due every {status.every_days} days and due since {moment_text(status.due_at)}; {since}. "
                "Run it from the source's drills page, or record a drill done by hand.",
                url=reverse("drill_history", args=[source.pk]),
                severity=Alert.WARNING,
            )
    return overdue
