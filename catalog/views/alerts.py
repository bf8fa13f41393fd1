"""The alerts page: what is wrong now, and what was wrong lately."""

from django.db.models import Case, IntegerField, Value, When
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from catalog.alerts.models import Alert
from catalog.decorators import viewer_required
from catalog.views.common import page_of

# What opens each kind of alert, for the page's explanation.
WHAT_OPENS = [
    (
        Alert.SOURCE_HEALTH,
        "a source had no good backup within its expected interval plus grace (down), "
        "or its latest backup failed (failing). Late, inside the grace, does not alert.",
    ),
    (Alert.BACKUP_PARTIAL, "a backup reached some destinations but not all."),
    (Alert.VERIFICATION_FAILED, "a checksum or a test restore of a backup failed."),
    (Alert.RESTORE_FAILED, "a restore failed."),
    (Alert.STORAGE_FULL, "a destination is above the alert share of its quota, or of its local disk."),
    (
        Alert.SIZE_ANOMALY,
        "a good backup is much smaller or larger than the median of the plan's previous 7 (the plan's tolerance).",
    ),
    (
        Alert.THREE_TWO_ONE,
        "an enabled plan's latest backup does not have two copies on two kinds of storage, "
        "one off-site. One alert names every such plan and what to do.",
    ),
    (Alert.STUCK_JOB, "a backup waits in the queue with no worker taking it, or runs three times longer than usual."),
    (
        Alert.RETENTION_FAILED,
        "a plan's retention rule could not be applied, or some of the backups it no longer "
        "keeps could not be removed; the other plans are pruned all the same.",
    ),
]


@viewer_required
def listing(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    severity_first = Case(When(severity=Alert.CRITICAL, then=Value(0)), default=Value(1), output_field=IntegerField())
    open_alerts = (
        Alert.objects.filter(resolved_at__isnull=True)
        .select_related("source")
        .order_by(severity_first, "-opened_at", "-id")
    )
    resolved = Alert.objects.filter(resolved_at__isnull=False).select_related("source").order_by("-resolved_at", "-id")
    labels = dict(Alert.KIND_CHOICES)
    ctx = {
        "open_alerts": open_alerts,
        "page": page_of(request, resolved),
        "what_opens": [(labels[kind], text) for kind, text in WHAT_OPENS],
    }
    return render(request, "catalog/alert_list.html", ctx)
