import json
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from django import template
from django.forms import BoundField
from django.template import defaultfilters

from catalog import audit
from catalog.models import Backup

register = template.Library()


@register.filter
def duration(value: timedelta | float | str | None) -> str:
    """A timedelta (or seconds) as 1 h 02 min, 3 min 05 s, 12 s or 4.2 s."""
    if value is None or value == "":
        return "—"
    exact = value.total_seconds() if hasattr(value, "total_seconds") else float(value)
    if exact < 10:
        return f"{exact:.1f} s"  # short restores and backups: the tenths matter
    seconds = int(exact)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {seconds:02d} s"
    return f"{seconds} s"


register.filter("object_type_label", audit.object_type_label)

# Every date and time a page shows, in one place: templates name a style
# (`{{ at|when }}`, `{{ at|when:"second" }}`), they never spell a format out.
DATE_FORMATS = {
    # When something happened: the default, to the minute.
    "minute": "j M Y H:i",
    "second": "j M Y H:i:s",
    "second_zoned": "j M Y H:i:s T",
    "micro_zoned": "j M Y H:i:s.u T",
    "day": "j M Y",
    # When something runs or is due, and which backup to pick: the weekday helps.
    "weekday": "D j M Y H:i",
    "weekday_day": "D j M",
    "run": "D j M Y, H:i",
    "run_zoned": "D j M Y, H:i T",
    "soon": "D j M, H:i",
    # Compact and sortable: tokens, keys, drills, reports.
    "iso_minute": "Y-m-d H:i",
    "iso_zoned": "Y-m-d H:i T",
    "iso_day": "Y-m-d",
    # For machines and title attributes (ISO 8601).
    "iso": "c",
}


@register.filter(expects_localtime=True, is_safe=False)
def when(value: date | None, style: str = "minute") -> str:
    """`value|date` in one of DATE_FORMATS, in the current time zone."""
    return defaultfilters.date(value, DATE_FORMATS[style])


@register.filter
def to_json(value: object) -> str:
    """For a data- attribute that a script reads (autoescaping quotes it)."""
    return json.dumps(value)


@register.filter
def is_single_checkbox(bound_field: BoundField) -> bool:
    """A lone checkbox gets its label beside it; a checkbox list does not."""
    widget = bound_field.field.widget
    return getattr(widget, "input_type", "") == "checkbox" and not getattr(widget, "allow_multiple_selected", False)


@register.inclusion_tag("catalog/partials/status.html")
def status_badge(backup: Backup) -> dict[str, Any]:
    if backup.pruned_at:
        # Its copies are gone: a green "Succeeded" would promise a backup there is not.
        return {
            "status": "pruned",
            "label": "Pruned",
            "title": f"{backup.get_status_display()}, then pruned by retention on {backup.pruned_at:%Y-%m-%d}: "
            "its copies are deleted",
        }
    return {
        "status": backup.status,
        "label": backup.get_status_display(),
        "cancelling": backup.cancel_requested and backup.is_active(),
    }


@register.filter
def get_item(mapping: Mapping[str, Any] | None, key: str) -> Any:
    """mapping[key] in a template, for keys that are not identifiers ("public.orders")."""
    return (mapping or {}).get(key)


@register.filter
def entries(mapping: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    """mapping's (key, value) pairs. `mapping.items` in a template looks the
    key "items" up first, so a database with a table named items (or keys,
    or values) would break a page that lists its tables. In key order: a JSON
    field read back from PostgreSQL (jsonb) keeps its keys in its own order,
    shortest first, which no reader would guess."""
    return sorted((mapping or {}).items())


@register.filter
def cron_words(expression: str) -> str:
    """A plan's cron in words ("At 02:30, only on Monday"); the cron itself if it cannot be read."""
    from catalog.schedules import describe

    return describe(expression) or expression
