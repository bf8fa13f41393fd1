"""The source page's DR drill lines: `{% load drill_tags %}{% drill_summary source %}`."""

from typing import Any

from django import template
from django.utils import timezone

from catalog.models import Source
from drills import schedule as drill_schedule
from drills.models import Drill
from drills.services import rto_text, seconds_text

register = template.Library()

SHORT_NAMES = {"checksum": "checksum drill", "partial": "partial drill", "full": "full drill"}


def last_drill_text(status: drill_schedule.KindStatus, rto_minutes: int | None) -> str:
    """'Last full drill: 2026-08-02, 41 min (RTO 4 h)', the line auditors look for."""
    name = SHORT_NAMES[status.kind]
    drill = status.last
    if drill is None:
        return f"Last {name}: none yet"
    when = timezone.localtime(drill.performed_at).strftime("%Y-%m-%d")
    rto = drill.rto_minutes if drill.rto_minutes is not None else rto_minutes
    # A checksum drill restores nothing: its time says nothing about the RTO.
    target = f" (RTO {rto_text(rto)})" if rto and status.kind != "checksum" else ""
    return f"Last {name}: {when}, {seconds_text(drill.seconds)}{target}"


@register.simple_tag
def drill_time(drill: Drill) -> str:
    return seconds_text(drill.seconds)


@register.filter
def rto(minutes: int | None) -> str:
    """240 → '4 h'."""
    return rto_text(minutes) or "—"


@register.inclusion_tag("drills/partials/source_summary.html")
def drill_summary(source: Source) -> dict[str, Any]:
    now = timezone.now()
    lines = [
        {"status": status, "text": last_drill_text(status, source.rto_minutes)}
        for status in drill_schedule.statuses_of(source)
    ]
    return {"source": source, "lines": list(reversed(lines)), "now": now}  # full drill first: it answers the RTO
