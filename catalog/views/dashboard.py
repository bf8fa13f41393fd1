"""The front page: are we safe? And the liveness probe."""

from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypedDict

from django.db.models import F, OuterRef, Subquery, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone

from catalog import charts, queues, readiness
from catalog.decorators import viewer_required
from catalog.models import (
    HEALTH_CHOICES,
    Alert,
    Backup,
    BackupPlan,
    Copy,
    Destination,
    Source,
    StatusChange,
    Usage,
    Verification,
)

if TYPE_CHECKING:  # a typing helper of django-stubs, installed for development only (requirements-test.txt)
    from django_stubs_ext import WithAnnotations


class LatestIds(TypedDict):
    """What `dashboard` annotates each source with."""

    last_backup_id: int | None
    last_restore_id: int | None


def healthz(request: HttpRequest) -> HttpResponse:
    """The web process answers (for a liveness probe); /readyz says whether it can work."""
    return JsonResponse({"alive": True})


def readyz(request: HttpRequest) -> HttpResponse:
    """For load balancers and orchestrators: 503 while any check fails."""
    answer = readiness.report()
    return JsonResponse(answer, status=200 if answer["ready"] else 503)


@viewer_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """Are we safe? Each source's health, its last good backup against its RPO
    and its last verified restore against its RTO; then running jobs, next
    runs, storage and recent backups. A fixed number of queries, however many
    backups there are."""
    sources = list(
        Source.objects.prefetch_related("plans").annotate(
            last_backup_id=Subquery(
                Backup.objects.filter(source=OuterRef("pk")).order_by("-created_at").values("pk")[:1]
            ),
            last_restore_id=Subquery(
                Verification.objects.filter(source=OuterRef("pk"), kind="restore", status="passed")
                .order_by(F("finished_at").desc(nulls_last=True))
                .values("pk")[:1]
            ),
        )
    )
    ctx = {
        "rows": dashboard_rows(sources, timezone.now()),
        "verdict": Counter(source.status for source in sources),
        "open_alerts": Alert.objects.filter(resolved_at__isnull=True).count(),
        "monitor_silent_since": queues.monitor_silent_since(),
        "next_runs": next_scheduled_runs(sources, 8),
        "active": Backup.objects.active().select_related("source", "plan").without_log(),
        "recent": Backup.objects.for_rows()[:10],
        "storage": storage_usage(),
        "has_destinations": Destination.objects.exists(),
        "has_plans": BackupPlan.objects.exists(),
    }
    return render(request, "catalog/dashboard.html", ctx)


class StorageRow(TypedDict):
    """A destination and what it holds, for the dashboard's storage table."""

    destination: Destination
    usage: Usage


def storage_usage() -> list[StorageRow]:
    """Every destination's usage from one grouped sum over the copies, not
    one scan of the copies per destination."""
    used = dict(
        Copy.objects.filter(status=Copy.DURABLE)
        .order_by()
        .values_list("destination")
        .annotate(total=Sum("size"))
        .values_list("destination", "total")
    )
    return [{"destination": d, "usage": d.usage(used.get(d.pk) or 0)} for d in Destination.objects.all()]


HEALTH_STRIP_DAYS = 7  # how far back the dashboard draws each source's health


def dashboard_rows(sources: "list[WithAnnotations[Source, LatestIds]]", now: datetime) -> list[dict[str, object]]:
    """One row per source, from what `dashboard` annotated: three queries in all."""
    last_ids = [s.last_backup_id for s in sources if s.last_backup_id]
    backups = Backup.objects.without_log().in_bulk(last_ids)
    restores = Verification.objects.in_bulk([s.last_restore_id for s in sources if s.last_restore_id])
    window = now - timedelta(days=HEALTH_STRIP_DAYS)
    changes = defaultdict(list)
    for change in StatusChange.objects.filter(created_at__gte=window).order_by("created_at", "id"):
        changes[change.source_id].append(change)
    labels = dict(HEALTH_CHOICES)
    rows: list[dict[str, object]] = []
    for source in sources:
        restore = restores.get(source.last_restore_id)
        segments = charts.health_segments(changes[source.pk], source.status, max(window, source.created_at), now)
        last_good_at = source.last_good_at
        age = (now - last_good_at).total_seconds() if last_good_at else None
        rpo = source.rpo_minutes * 60 if source.rpo_minutes else None
        rows.append(
            {
                "source": source,
                "last": backups.get(source.last_backup_id),
                "restore": restore,
                "last_good_at": last_good_at,
                "good_age": charts.span_text(age) if age is not None else "",
                "rpo": charts.span_text(rpo) if rpo else "",
                "rpo_breached": bool(rpo and age is not None and age > rpo),
                "restore_overdue": source.restore_test_overdue(
                    restore, has_good_backup=last_good_at is not None, now=now
                ),
                "slower_than_rto": source.restore_slower_than_rto(restore),
                "status_for": charts.span_text((now - source.status_since).total_seconds())
                if source.status_since
                else "",
                "late_in": charts.span_until(source.late_at, now),
                "down_in": charts.span_until(source.down_at, now),
                # Up and on time, the reason would only repeat the last good backup beside it and the deadlines below.
                "says_reason": not (source.status == "up" and source.late_at and source.late_at > now),
                "health_strip": charts.health_strip(segments, labels, frame=(window, now)),
            }
        )
    return rows


class ScheduledRun(TypedDict):
    """One of the next scheduled runs the dashboard lists."""

    at: datetime
    plan: BackupPlan
    source: Source


def next_scheduled_runs(sources: Iterable[Source], count: int) -> list[ScheduledRun]:
    """The next `count` runs of all enabled plans, soonest first."""
    runs: list[ScheduledRun] = [
        {"at": at, "plan": plan, "source": source}
        for source in sources
        for plan in source.plans.all()
        if plan.enabled
        for at in plan.next_runs(1)
    ]
    return sorted(runs, key=lambda run: run["at"])[:count]
