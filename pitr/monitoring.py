"""Continuous WAL protection's alert conditions, judged by the catalog's
one-minute tick (registered in pitr/apps.py)."""

from datetime import datetime, timedelta

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from catalog.alerts import problems
from catalog.alerts.conditions import raise_problem
from catalog.alerts.models import Alert
from catalog.text import duration_text, moment_text, size_text
from pitr import wal
from pitr.models import ContinuousProtection


def check_wal_protection(now: datetime | None = None) -> list[str]:
    """Per source under continuous protection: the receiver down for longer
    than WAL_RECEIVER_STALE_SECONDS (streaming), a missing segment in the WAL
    a restore needs, no WAL stored for WAL_LATE_MINUTES while the server has
    WAL Strongroom lacks. Disabling protection clears them. Returns the keys open."""
    now = now or timezone.now()
    found: list[str] = []
    for protection in ContinuousProtection.objects.select_related("source"):
        source, key = protection.source, f"source:{protection.source_id}"
        url = reverse("source_detail", args=[source.pk]) + "#protection"
        checks = (
            (Alert.WAL_RECEIVER, wal_receiver_problem(protection, now)),
            (Alert.WAL_GAP, wal_gap_problem(protection)),
            (Alert.WAL_LATE, wal_late_problem(protection, now)),
        )
        for kind, problem in checks:
            if problem is None:
                problems.resolve_alert(
                    kind,
                    key,
                    f"Continuous protection of {source} is " + ("healthy again." if protection.enabled else "off."),
                )
                continue
            found.append(f"{kind}:{key}")
            title, detail = problem
            raise_problem(kind, key, source=source, title=title, detail=detail, url=url, severity=Alert.CRITICAL)
    return found


def wal_receiver_problem(protection: ContinuousProtection, now: datetime) -> tuple[str, str] | None:
    if not protection.enabled or protection.mode != protection.STREAM or wal.receiver_running(protection, now):
        return None
    seen = protection.receiver_heartbeat_at or protection.created_at
    if now - seen <= timedelta(seconds=settings.WAL_RECEIVER_STALE_SECONDS):
        return None
    error = f" Last error: {protection.receiver_error}" if protection.receiver_error else ""
    return (
        f"The WAL receiver of {protection.source} is not running",
        f"No running pg_receivewal seen since {moment_text(seen)}; WAL piles up in the slot "
        f"{protection.slot_name} on the server and the recovery point ages.{error} Check that "
        "`manage.py wal_receiver` (or `serve`) runs.",
    )


def wal_gap_problem(protection: ContinuousProtection) -> tuple[str, str] | None:
    report = wal.continuity(protection.source)
    if report["ok"]:
        return None
    names = ", ".join(report["missing"][:5]) + (" …" if report["missing_count"] > 5 else "")
    return (
        f"WAL segment {report['missing'][0]} of {protection.source} is missing",
        f"{report['missing_count']} segment(s) missing between {report['from']} and {report['to']}: {names}. "
        "A restore cannot pass the gap; take a new base backup to start a continuous range again.",
    )


def wal_late_problem(protection: ContinuousProtection, now: datetime) -> tuple[str, str] | None:
    if not protection.enabled:
        return None
    newest = protection.last_segment_at or protection.created_at
    if now - newest <= timedelta(minutes=settings.WAL_LATE_MINUTES):
        return None
    # Keep it simple: an idle server writes no WAL, so streaming is only late
    # when the slot holds WAL Strongroom has not stored; a pushing server is
    # judged by age alone.
    if protection.mode == protection.STREAM and not (protection.slot_lag_bytes or 0) > 0:
        return None
    return (
        f"No WAL of {protection.source} stored for {duration_text(now - newest)}",
        f"The last WAL file was stored {moment_text(newest)}, more than {settings.WAL_LATE_MINUTES} min ago"
        + (
            f", while the slot holds {size_text(protection.slot_lag_bytes)} not yet stored."
            if protection.slot_lag_bytes
            else "."
        )
        + " The recovery point is that old.",
    )
