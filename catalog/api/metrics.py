"""GET /metrics in the Prometheus text format.

Several processes serve requests, so nothing is counted in memory: each
scrape builds a fresh registry whose one collector reads the catalog. The
"totals" are counts of rows, which only grow as backups and verifications
are recorded, so Prometheus may treat them as counters."""

import ipaddress
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import overload

from django.conf import settings
from django.db.models import Count, OuterRef, Q, Subquery, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import Metric

from catalog import registry as app_registry
from catalog.alerts.models import Alert
from catalog.api import tokens
from catalog.api.auth import error, token_from_request
from catalog.models import HEALTH_CHOICES, Backup, BackupPlan, Copy, Destination, Source, Verification

# A scraper uses its token every few seconds; one audit event an hour says
# that it does without burying everything else in the trail.
AUDIT_METRICS_USE_EVERY = timedelta(hours=1)


@overload
def timestamp(moment: datetime) -> float: ...
@overload
def timestamp(moment: datetime | None) -> float | None: ...
def timestamp(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment else None


class CatalogCollector:
    """Reads the catalog when the registry is collected: one query per family."""

    def collect(self) -> Iterator[Metric]:
        yield from self.plan_metrics()
        yield from self.backup_counts()
        yield from self.verification_counts()
        yield from self.destination_metrics()
        yield from self.queue_metrics()
        yield from self.source_metrics()
        yield from self.alert_metrics()

    def plan_metrics(self) -> Iterator[Metric]:
        last_good = Backup.objects.good().filter(plan=OuterRef("pk")).order_by("-finished_at", "-pk")
        plans = list(
            BackupPlan.objects.select_related("source").annotate(last_good_id=Subquery(last_good.values("pk")[:1]))
        )
        backups = Backup.objects.in_bulk([p.last_good_id for p in plans if p.last_good_id])
        success = GaugeMetricFamily(
            "strongroom_plan_last_success_timestamp_seconds",
            "When the plan's last successful backup finished (Unix time).",
            labels=["plan", "source"],
        )
        duration = GaugeMetricFamily(
            "strongroom_plan_last_duration_seconds",
            "How long the plan's last successful backup took.",
            labels=["plan", "source"],
        )
        size = GaugeMetricFamily(
            "strongroom_plan_last_size_bytes",
            "Stored size of the plan's last successful backup.",
            labels=["plan", "source"],
        )
        enabled = GaugeMetricFamily(
            "strongroom_plan_enabled", "1 when the plan's schedule is on.", labels=["plan", "source"]
        )
        for plan in plans:
            labels = [plan.name, plan.source.name]
            enabled.add_metric(labels, int(plan.enabled))
            backup = backups.get(plan.last_good_id)
            if backup is None or backup.finished_at is None:
                continue
            success.add_metric(labels, timestamp(backup.finished_at))
            # A backup the catalog rebuild imported from a manifest without started_at has no duration.
            if (took := backup.duration()) is not None:
                duration.add_metric(labels, took.total_seconds())
            size.add_metric(labels, backup.stored_bytes)
        yield from (success, duration, size, enabled)

    def backup_counts(self) -> Iterator[Metric]:
        rows = Backup.objects.values("source__name", "status").annotate(n=Count("pk")).order_by()
        by_status = dict.fromkeys(dict(Backup.STATUS_CHOICES), 0)
        failures = {name: 0 for name in Source.objects.values_list("name", flat=True)}
        for row in rows:
            by_status[row["status"]] += row["n"]
            if row["status"] == Backup.FAILED:
                failures[row["source__name"]] = row["n"]
        total = CounterMetricFamily("strongroom_backups", "Backups in the catalog by status.", labels=["status"])
        for status, count in by_status.items():
            total.add_metric([status], count)
        failed = CounterMetricFamily("strongroom_backup_failures", "Failed backups by source.", labels=["source"])
        for source, count in failures.items():
            failed.add_metric([source], count)
        yield from (total, failed)

    def verification_counts(self) -> Iterator[Metric]:
        counts = {
            (kind, status): 0 for kind, _ in Verification.KIND_CHOICES for status, _ in Verification.STATUS_CHOICES
        }
        for row in Verification.objects.values("kind", "status").annotate(n=Count("pk")).order_by():
            counts[row["kind"], row["status"]] = row["n"]
        family = CounterMetricFamily(
            "strongroom_verifications", "Verifications by kind and result.", labels=["kind", "result"]
        )
        for (kind, status), count in counts.items():
            family.add_metric([kind, status], count)
        yield family

    def destination_metrics(self) -> Iterator[Metric]:
        destinations = Destination.objects.annotate(
            used=Sum("copies__size", filter=Q(copies__status=Copy.DURABLE)),
            copy_count=Count("copies", filter=Q(copies__status=Copy.DURABLE)),
        )
        used = GaugeMetricFamily(
            "strongroom_destination_used_bytes",
            "Bytes of durable copies in the destination.",
            labels=["destination", "kind"],
        )
        copies = GaugeMetricFamily(
            "strongroom_destination_copies", "Durable copies in the destination.", labels=["destination", "kind"]
        )
        quota = GaugeMetricFamily(
            "strongroom_destination_quota_bytes",
            "The destination's quota, where it has one.",
            labels=["destination", "kind"],
        )
        for destination in destinations:
            labels = [destination.name, destination.kind]
            used.add_metric(labels, destination.used or 0)
            copies.add_metric(labels, destination.copy_count)
            if quota_bytes := destination.quota_bytes():
                quota.add_metric(labels, quota_bytes)
        yield from (used, copies, quota)

    def queue_metrics(self) -> Iterator[Metric]:
        queued = GaugeMetricFamily("strongroom_queue_depth", "Jobs waiting for a worker.", labels=["job"])
        running = GaugeMetricFamily("strongroom_jobs_running", "Jobs a worker is running now.", labels=["job"])
        # Other apps' jobs (restore's) are registered by those apps (catalog/registry.py).
        jobs: dict[str, type[Backup] | type[Verification]] = {
            "backup": Backup,
            "verification": Verification,
            **app_registry.queued_jobs,
        }
        for name, model in jobs.items():
            counts = model.objects.aggregate(
                queued=Count("pk", filter=Q(status=model.QUEUED)), running=Count("pk", filter=Q(status=model.RUNNING))
            )
            queued.add_metric([name], counts["queued"])
            running.add_metric([name], counts["running"])
        yield from (queued, running)

    def source_metrics(self) -> Iterator[Metric]:
        status = GaugeMetricFamily(
            "strongroom_source_status",
            "1 for the source's current health, 0 for the others.",
            labels=["source", "status"],
        )
        last_good = GaugeMetricFamily(
            "strongroom_source_last_good_backup_timestamp_seconds",
            "When the source's last good backup finished (Unix time).",
            labels=["source"],
        )
        since = GaugeMetricFamily(
            "strongroom_source_status_since_timestamp_seconds",
            "Since when the source has its current health (Unix time).",
            labels=["source"],
        )
        for source in Source.objects.all():
            for value, _ in HEALTH_CHOICES:
                status.add_metric([source.name, value], int(source.status == value))
            if source.last_good_at:
                last_good.add_metric([source.name], timestamp(source.last_good_at))
            if source.status_since:
                since.add_metric([source.name], timestamp(source.status_since))
        yield from (status, last_good, since)

    def alert_metrics(self) -> Iterator[Metric]:
        counts = {(kind, severity): 0 for kind, _ in Alert.KIND_CHOICES for severity, _ in Alert.SEVERITY_CHOICES}
        for row in (
            Alert.objects.filter(resolved_at__isnull=True).values("kind", "severity").annotate(n=Count("pk")).order_by()
        ):
            counts[row["kind"], row["severity"]] = row["n"]
        family = GaugeMetricFamily("strongroom_open_alerts", "Problems open now.", labels=["kind", "severity"])
        for (kind, severity), count in counts.items():
            family.add_metric([kind, severity], count)
        yield family


def client_allowed(request: HttpRequest) -> bool:
    """Whether the client's address is in METRICS_ALLOWED_IPS (addresses or networks).
    REMOTE_ADDR only: a forwarded-for header is whatever the client says it is."""
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    for allowed in settings.METRICS_ALLOWED_IPS:
        try:
            if address in ipaddress.ip_network(allowed, strict=False):
                return True
        except ValueError:
            continue
    return False


@csrf_exempt  # so that a POST is told 405 by this view, not 403 by the CSRF check
def metrics(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        return error(f"Method {request.method} is not allowed here; use GET.", 405, Allow="GET")
    if not client_allowed(request):
        token, refusal = token_from_request(request)
        if refusal:
            return refusal
        assert token is not None  # token_from_request gives one or the other
        if not token.has_scope("read"):
            return error("This API token does not have the 'read' scope /metrics needs.", 403)
        quiet_since = timezone.now() - AUDIT_METRICS_USE_EVERY
        audited = token.last_used_at is None or token.last_used_at < quiet_since
        tokens.record_use(token, "metrics", {"method": "GET", "path": request.path, "status": 200}, audited=audited)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CatalogCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_PLAIN_0_0_4)  # what generate_latest writes
