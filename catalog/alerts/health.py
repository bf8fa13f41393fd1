"""Source health: keeps each source's stored deadlines and status right.

The rules live on the model (Source.health_at); this module reads the
database, stores what the rules need (last good backup, whether the last run
failed, the late and down deadlines) and applies a change of status: first the
StatusChange row and its audit event, then the source, then its alert. The
one-minute tick only asks which sources passed a stored, indexed deadline."""

import logging
from datetime import datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from catalog import audit
from catalog.alerts import problems
from catalog.alerts.models import Alert, StatusChange
from catalog.models import Backup, Source
from catalog.text import moment_text

log = logging.getLogger(__name__)

MONITORING_FIELDS = ["last_good_at", "last_run_failed", "late_at", "down_at"]
# A cancelled backup says nothing about the source's health either way.
FINISHED = (Backup.SUCCEEDED, Backup.PARTIAL, Backup.FAILED)


def refresh_source(source: Source, now: datetime | None = None) -> Source:
    """Recomputes the source's monitoring fields from its plans and backups,
    then applies the status they give. Returns the source as stored."""
    now = now or timezone.now()
    with transaction.atomic():
        # Locked, so that the tick and a finishing backup never both record
        # the same transition. FOR NO KEY UPDATE, not FOR UPDATE: a transaction
        # that inserts a row pointing at this source (a backup, a restore job)
        # and writes its audit event checks that foreign key at commit, while
        # holding the audit chain's lock that apply_health waits for; a FOR
        # UPDATE here would deadlock with it.
        source = Source.objects.select_for_update(no_key=True).get(pk=source.pk)
        plans = [plan for plan in source.plans.all() if plan.enabled]
        # good(): a base backup still waiting for its WAL is not good yet. An
        # imported dump holds data of whenever it was made elsewhere: it says
        # nothing of how recent the source's protection is, nor of its runs.
        runs = source.backups.exclude(trigger=Backup.IMPORT)
        good = runs.good().order_by("-created_at").first()
        latest = runs.filter(status__in=FINISHED).select_related("plan").order_by("-created_at", "-pk").first()
        source.last_good_at = good.created_at if good else None
        source.last_run_failed = latest is not None and latest.status == Backup.FAILED
        reference = source.last_good_at or min((plan.created_at for plan in plans), default=None)
        source.late_at, source.down_at = source.deadlines(reference, source.expected_interval())
        Source.objects.filter(pk=source.pk).update(**{name: getattr(source, name) for name in MONITORING_FIELDS})
        apply_health(
            source,
            now,
            last_failure=latest if source.last_run_failed else None,
            backup_running=source.backups.active().exists(),
        )
    return source


def check_deadlines(now: datetime | None = None) -> list[int]:
    """The tick's part: sources that passed their late or down deadline since
    the last look. Two indexed queries, then work only for those that changed."""
    now = now or timezone.now()
    due = Source.objects.filter(paused=False)
    # A source whose backup is under way is not late yet: that backup ends
    # with a refresh. Down, the breach of the RPO, waits for nothing.
    busy = Backup.objects.active().values("source_id")
    late = due.filter(late_at__lte=now, status__in=["new", "up"]).exclude(pk__in=busy).values_list("pk", flat=True)
    down = due.filter(down_at__lte=now, status__in=["new", "up", "late"]).values_list("pk", flat=True)
    changed = []
    for pk in sorted(set(late) | set(down)):
        with transaction.atomic():
            source = Source.objects.select_for_update(no_key=True).filter(pk=pk).first()  # see refresh_source
            if source is not None and apply_health(source, now):
                changed.append(pk)
    return changed


def refresh_misjudged(now: datetime | None = None) -> list[int]:
    """Sources whose stored status cannot be right: never judged since
    monitoring was installed (new, with an enabled plan but no deadline), up
    without a good backup (judged before a source was new until its first
    one; or its first backup is under way past its deadline, which this
    judges again until it ends), or paused and unpaused behind the services'
    back (the Django admin). One query when all is well. Returns the ids refreshed."""
    misjudged = (
        Source.objects.filter(
            Q(status="new", paused=False, plans__enabled=True, late_at__isnull=True)
            | Q(status="up", paused=False, last_good_at__isnull=True)
            | Q(paused=True) & ~Q(status="paused")
            | Q(paused=False, status="paused")
        )
        .distinct()
        .values_list("pk", flat=True)
    )
    refreshed = []
    for pk in misjudged:
        refresh_source(Source(pk=pk), now)
        refreshed.append(pk)
    return refreshed


def apply_health(
    source: Source, now: datetime, last_failure: Backup | None = None, backup_running: bool = False
) -> bool:
    """Moves `source` (locked by the caller) to the status its stored fields
    give at `now`. Returns True when the status changed."""
    status, reason = source.health_at(now, last_failure, backup_running)
    if status == source.status:
        if reason != source.status_reason:
            # Same status, newer facts (another failure, a newer good backup).
            source.status_reason = reason
            Source.objects.filter(pk=source.pk).update(status_reason=reason)
            if status == "failing":
                sync_alert(source, now)
        return False
    old = source.status
    # The timeline first: it must be complete even if every channel is down.
    StatusChange.objects.create(source=source, created_at=now, old_status=old, new_status=status, reason=reason)
    audit.record(problems.ACTOR, "source.status", source, {"from": old, "to": status, "reason": reason})
    source.status, source.status_since, source.status_reason = status, now, reason
    Source.objects.filter(pk=source.pk).update(status=status, status_since=now, status_reason=reason)
    sync_alert(source, now)
    return True


def alert_key(source: Source) -> str:
    return f"source:{source.pk}"


def sync_alert(source: Source, now: datetime) -> None:
    """Down and failing are one problem: one alert, kept open from one to the
    other. Up resolves it; paused or no plan resolve it quietly; late alone
    never alerts (it is the grace period)."""
    key = alert_key(source)
    if source.status in Source.PROBLEM_STATUSES:
        status_since = source.status_since or now
        reason = source.status_reason.rstrip(".")  # an engine error may end without a full stop
        detail = f"{reason}. {source.get_status_display()} since {moment_text(status_since)}."
        opened = open_problem_since(source)
        if opened and opened < status_since:
            detail += f" This problem has been open since {moment_text(opened)}."
        problems.open_alert(
            Alert.SOURCE_HEALTH,
            key,
            title=f"{source} is {source.status.upper()}",
            detail=detail,
            url=source.get_absolute_url(),
            source=source,
            severity=Alert.CRITICAL,
        )
    elif source.status == "up":
        problems.resolve_alert(Alert.SOURCE_HEALTH, key, f"{source} is up again. {source.status_reason}")
    elif source.status == "late":
        problems.resolve_alert(
            Alert.SOURCE_HEALTH, key, f"{source} is no longer down or failing, but late: {source.status_reason}"
        )
    else:
        problems.resolve_alert(Alert.SOURCE_HEALTH, key, f"{source}: {source.status_reason}", notify=False)


def open_problem_since(source: Source) -> datetime | None:
    alert = problems.open_alerts(Alert.SOURCE_HEALTH, alert_key(source)).only("opened_at").first()
    return alert.opened_at if alert else None
