"""What the API says about catalog objects: plain dicts for JsonResponse.

Kept apart from the views so that the OpenAPI schemas in catalog.api.openapi
can be checked against one place. No secret is ever part of these."""

from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypedDict

from django.http import HttpRequest
from django.urls import reverse

from catalog.alerts.models import Alert
from catalog.models import Backup, Copy, Destination, Source, Verification

if TYPE_CHECKING:
    # Only here: django-stubs-ext is installed for type checking (requirements-test.txt), not in production.
    from django_stubs_ext import WithAnnotations

# How bad a source's health is, for the overall status: the worst one wins.
# New and paused sources expect nothing, so they count as up.
SEVERITY = {"new": 0, "paused": 0, "up": 0, "late": 1, "failing": 2, "down": 3}


def overall_status(sources: Iterable[Source]) -> str:
    """ "up" unless an unpaused source is late, failing or down."""
    watched = [s.status for s in sources if not s.paused and s.status != "paused"]
    worst = max(watched, key=lambda status: SEVERITY.get(status, 0), default="up")
    return worst if SEVERITY.get(worst, 0) else "up"


def seconds(duration: timedelta | None) -> float | None:
    return round(duration.total_seconds(), 3) if duration is not None else None


def backup_summary(backup: Backup | None) -> dict[str, Any] | None:
    if backup is None:
        return None
    return {
        "id": backup.pk,
        "status": backup.status,
        "created_at": backup.created_at,
        "finished_at": backup.finished_at,
    }


def verification_summary(verification: Verification | None) -> dict[str, Any] | None:
    if verification is None:
        return None
    return {
        "id": verification.pk,
        "kind": verification.kind,
        "status": verification.status,
        "finished_at": verification.finished_at,
    }


def source_health(source: Source, last_backup: Backup | None, last_verification: Verification | None) -> dict[str, Any]:
    return {
        "id": source.pk,
        "name": source.name,
        "status": source.status,
        "status_since": source.status_since,
        "reason": source.status_reason,
        "paused": source.paused,
        "last_good_backup_at": source.last_good_at,
        "late_at": source.late_at,
        "down_at": source.down_at,
        "rpo_minutes": source.rpo_minutes,
        "rto_minutes": source.rto_minutes,
        "last_backup": backup_summary(last_backup),
        "last_verification": verification_summary(last_verification),
    }


def open_alert(request: HttpRequest, alert: Alert) -> dict[str, Any]:
    """An open problem, as the on-call engineer needs it: what, since when, where to look."""
    return {
        "id": alert.pk,
        "kind": alert.kind,
        "severity": alert.severity,
        "title": alert.title,
        "detail": alert.detail,
        "source": {"id": alert.source_id, "name": alert.source.name} if alert.source is not None else None,
        "opened_at": alert.opened_at,
        "url": request.build_absolute_uri(alert.url) if alert.url else None,
    }


class Usage(TypedDict):
    used: int | None  # Sum() of the destination's durable copies' sizes


def destination_usage(destination: "WithAnnotations[Destination, Usage]") -> dict[str, Any]:
    """`destination.used` is annotated by the caller (one query for all)."""
    used, quota = destination.used or 0, destination.quota_bytes()
    return {
        "id": destination.pk,
        "name": destination.name,
        "kind": destination.kind,
        "offsite": destination.offsite,
        "used_bytes": used,
        "quota_bytes": quota,
        "share": round(used / quota, 4) if quota else None,
    }


def backup_list_item(request: HttpRequest, backup: Backup) -> dict[str, Any]:
    """A backup as listed; needs source and plan selected with it."""
    return {**backup_fields(backup), "links": backup_links(request, backup)}


def backup_fields(backup: Backup) -> dict[str, Any]:
    """A backup as the API lists it, without links (also printed by `manage.py backups --json`)."""
    return {
        "id": backup.pk,
        "source": {"id": backup.source_id, "name": backup.source.name},
        "plan": {"id": backup.plan_id, "name": backup.plan.name} if backup.plan is not None else None,
        "status": backup.status,
        "label": backup.label,
        "trigger": backup.trigger,
        "format": backup.format,
        "compression": backup.compression,
        "compression_level": backup.compression_level,
        "encrypted": backup.encrypted,
        "created_at": backup.created_at,
        "started_at": backup.started_at,
        "finished_at": backup.finished_at,
        "duration_seconds": seconds(backup.duration()) if backup.finished_at else None,
        "raw_bytes": backup.raw_bytes,
        "stored_bytes": backup.stored_bytes,
        "sha256": backup.sha256,
        "pinned": backup.pinned,
        "legal_hold": backup.legal_hold,
        "pruned_at": backup.pruned_at,
        "error": backup.error,
        "imported": imported(backup),
    }


def imported(backup: Backup) -> dict[str, Any] | None:
    """For a dump made elsewhere and imported: who brought it, from where, as what."""
    if not backup.is_imported():
        return None
    by = backup.imported_by.get_username() if backup.imported_by is not None else None
    return {"by": by, "from": backup.imported_from, "format": backup.imported_format}


def backup_links(request: HttpRequest, backup: Backup) -> dict[str, str]:
    return {
        "self": request.build_absolute_uri(reverse("api_backup", args=[backup.pk])),
        "page": request.build_absolute_uri(backup.get_absolute_url()),
    }


def copy_detail(copy: Copy) -> dict[str, Any]:
    return {
        "id": copy.pk,
        "destination": {"id": copy.destination_id, "name": copy.destination.name, "kind": copy.destination.kind},
        "status": copy.status,
        "size": copy.size,
        "sha256": copy.sha256,
        "durable_at": copy.durable_at,
        "verified_at": copy.verified_at,
        "pruned_at": copy.pruned_at,
        "locked_until": copy.locked_until,
    }


def backup_detail(request: HttpRequest, backup: Backup, copies: Iterable[Copy]) -> dict[str, Any]:
    return {
        **backup_list_item(request, backup),
        "phase": backup.phase,
        "server_version": backup.server_version,
        "tool_version": backup.tool_version,
        "table_counts": backup.table_counts,
        "hold_reason": backup.hold_reason,
        "copies": [copy_detail(copy) for copy in copies],
    }


def verification_detail(request: HttpRequest, verification: Verification) -> dict[str, Any]:
    return {
        "id": verification.pk,
        "backup": verification.backup_id,
        "kind": verification.kind,
        "status": verification.status,
        "created_at": verification.created_at,
        "finished_at": verification.finished_at,
        "summary": verification.summary,
        "links": {"page": request.build_absolute_uri(verification.get_absolute_url())},
    }
