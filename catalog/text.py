"""Words for messages, alerts and status reasons: durations, moments and sizes
as an on-call engineer reads them. No Django models here, so the models can use it."""

from datetime import datetime, timedelta

from django.template.defaultfilters import filesizeformat
from django.utils import timezone


def duration_text(delta: timedelta) -> str:
    """'45 min', '26 h 3 min', '72 h', '5 d 4 h': hours up to four days,
    because "expected every 72 h" reads better than "3 d" next to "grace 2 h"."""
    minutes = max(0, int(delta.total_seconds() // 60))
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 96:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def moment_text(when: datetime) -> str:
    """A moment in the site's time zone, to the minute, with the zone named."""
    return timezone.localtime(when).strftime("%Y-%m-%d %H:%M %Z")


def size_text(size: int | float) -> str:
    """A size in words (plain spaces, unlike the template filter)."""
    return filesizeformat(size).replace("\xa0", " ")


def count_text(count: int, noun: str) -> str:
    """'1 table', '2 tables'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
