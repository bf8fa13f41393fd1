"""Small server-rendered SVG charts, so that a trend or an outlier in a plan's
backups is seen rather than read. No chart library and no script: pure
functions take points and return SVG markup with every text escaped.

`plan_charts` is the one place that reads the database."""

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from catalog.models import Backup, BackupPlan, StatusChange
from catalog.templatetags.strongroom import duration as duration_text
from catalog.text import size_text

CHART_BACKUPS = 60  # how many backups with data a chart shows
# Outliers are judged as the size alert judges them (catalog.alerts.conditions.check_size):
# the raw size of a good backup against the median of the previous 7 good ones.
SIZE_WINDOW = 7

WIDTH, HEIGHT = 560, 210
LEFT, RIGHT, TOP, BOTTOM = 64, 14, 12, 26  # room for the axis labels

SIZE_UNITS = [(1024**3, "GB"), (1024**2, "MB"), (1024, "KB"), (1, "bytes")]  # binary, as filesizeformat
DURATION_UNITS = [(3600, "h"), (60, "min"), (1, "s")]

# size_unit or duration_unit: (size of the unit, its name) for the largest value.
Unit = Callable[[float], tuple[int, str]]


@dataclass
class Point:
    at: datetime
    value: float
    title: str  # the tooltip: which backup, when, how big, how long
    href: str = ""
    outlier: bool = False


@dataclass
class Series:
    name: str  # also its CSS class: chart-series-<name>
    points: list[Point] = field(default_factory=list)


@dataclass
class Mark:
    """A run without data (failed), shown as a cross on the time axis."""

    at: datetime
    title: str
    href: str = ""


# --- numbers and words -------------------------------------------------------


def size_unit(largest: float) -> tuple[int, str]:
    return next(((size, name) for size, name in SIZE_UNITS if largest >= size), SIZE_UNITS[-1])


def duration_unit(largest: float) -> tuple[int, str]:
    # Up to two units of the smaller kind read better: "90 s", "100 min".
    return next(((size, name) for size, name in DURATION_UNITS if largest >= 2 * size), DURATION_UNITS[-1])


def nice_step(span: float, count: int = 4) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) that cuts `span` into about `count` parts."""
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if raw <= m * magnitude * 1.0000001)


def number_text(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def span_text(seconds: float) -> str:
    """A length of time in one short unit, for "3 h ago" and "RPO 24 h"."""
    seconds = max(0, seconds)
    for size, name in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= 2 * size or (name == "min" and seconds >= size):
            return f"{round(seconds / size)} {name}"
    return f"{int(seconds)} s"


def span_until(moment: datetime | None, now: datetime) -> str:
    """ "21 h" to a deadline ahead; nothing once it passed (until the next tick changes the status)."""
    return span_text((moment - now).total_seconds()) if moment and moment > now else ""


def time_text(moment: datetime) -> str:
    return date_format(timezone.localtime(moment), "j M H:i")


# --- rendering ---------------------------------------------------------------


class Axis:
    """The value axis: from 0 to a round top, in one unit."""

    def __init__(self, largest: float, unit: Unit) -> None:
        self.unit_size, self.unit_name = unit(largest)
        in_units = largest / self.unit_size
        self.step = nice_step(in_units) if in_units > 0 else 1
        self.top = max(self.step, math.ceil(in_units / self.step - 1e-9) * self.step)

    def y(self, value: float) -> float:
        plot = HEIGHT - TOP - BOTTOM
        return round(HEIGHT - BOTTOM - value / self.unit_size / self.top * plot, 1)

    def ticks(self) -> list[tuple[float, str]]:
        count = round(self.top / self.step)
        return [
            (self.y(i * self.step * self.unit_size), f"{number_text(i * self.step)} {self.unit_name}")
            for i in range(count + 1)
        ]


class TimeScale:
    def __init__(self, moments: Sequence[datetime]) -> None:
        self.start, self.end = min(moments), max(moments)
        self.span = (self.end - self.start).total_seconds()

    def x(self, moment: datetime) -> float:
        plot = WIDTH - LEFT - RIGHT
        if not self.span:
            return LEFT + plot / 2  # a single moment sits in the middle
        return round(LEFT + (moment - self.start).total_seconds() / self.span * plot, 1)

    def ticks(self, count: int = 5) -> list[tuple[float, str]]:
        if not self.span:
            return [(self.x(self.start), time_text(self.start))]
        pattern = "j M" if self.span >= 2 * 86400 else "j M H:i"
        ticks: list[tuple[float, str]] = []
        last = None
        for i in range(count):
            moment = self.start + (self.end - self.start) * i / (count - 1)
            label = date_format(timezone.localtime(moment), pattern)
            if label != last:  # a few days cut in five would repeat a date
                ticks.append((self.x(moment), label))
            last = label
        return ticks


def time_chart(
    series: Sequence[Series],
    unit: Unit,
    marks: Sequence[Mark] = (),
    label: str = "",
    empty: str = "No backups yet.",
) -> SafeString:
    """An SVG chart of values over time: one line per series, a ring around
    each outlier, a cross on the time axis for each mark. `unit` is
    size_unit or duration_unit."""
    points = [p for s in series for p in s.points]
    if not points:
        return format_html('<p class="chart-empty muted">{}</p>', empty)
    axis = Axis(max(p.value for p in points), unit)
    scale = TimeScale([p.at for p in points] + [m.at for m in marks])
    parts = [
        format_html(
            '<svg class="chart" viewBox="0 0 {} {}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">'
            "<title>{}</title>",
            WIDTH,
            HEIGHT,
            label,
            label,
        )
    ]
    for y, text in axis.ticks():
        parts.append(
            format_html('<line class="chart-gridline" x1="{}" x2="{}" y1="{}" y2="{}"/>', LEFT, WIDTH - RIGHT, y, y)
        )
        parts.append(
            format_html('<text class="chart-label" x="{}" y="{}" text-anchor="end">{}</text>', LEFT - 6, y + 4, text)
        )
    for x, text in scale.ticks():
        parts.append(
            format_html('<text class="chart-label" x="{}" y="{}" text-anchor="middle">{}</text>', x, HEIGHT - 6, text)
        )
    for one in series:
        parts.append(series_svg(one, axis, scale))
    for mark in marks:
        parts.append(mark_svg(mark, scale))
    parts.append(mark_safe("</svg>"))
    return mark_safe("".join(parts))


def series_svg(series: Series, axis: Axis, scale: TimeScale) -> SafeString:
    coordinates = [(scale.x(p.at), axis.y(p.value)) for p in sorted(series.points, key=lambda p: p.at)]
    line = format_html(
        '<polyline class="chart-line" fill="none" points="{}"/>', " ".join(f"{x},{y}" for x, y in coordinates)
    )
    dots = format_html_join("", "{}", ((point_svg(p, axis, scale),) for p in series.points))
    return format_html('<g class="chart-series chart-series-{}">{}{}</g>', series.name, line, dots)


def point_svg(point: Point, axis: Axis, scale: TimeScale) -> SafeString:
    kind = "point outlier" if point.outlier else "point"
    dot = format_html(
        '<circle class="{}" cx="{}" cy="{}" r="{}"><title>{}</title></circle>',
        kind,
        scale.x(point.at),
        axis.y(point.value),
        5 if point.outlier else 3,
        point.title,
    )
    return format_html('<a href="{}">{}</a>', point.href, dot) if point.href else dot


def mark_svg(mark: Mark, scale: TimeScale) -> SafeString:
    x, y = scale.x(mark.at), HEIGHT - BOTTOM
    cross = format_html(
        '<path class="mark-failed" d="M{} {}l8 8m0 -8l-8 8"><title>{}</title></path>', x - 4, y - 4, mark.title
    )
    return format_html('<a href="{}">{}</a>', mark.href, cross) if mark.href else cross


# --- a plan's backups ----------------------------------------------------------


def is_outlier(size: float, previous: Sequence[float], tolerance_percent: float) -> bool:
    """Outside ±tolerance of the median of the previous good backups' sizes.
    Needs a few of them to judge; a tolerance of 0 turns this off."""
    if not tolerance_percent or len(previous) < 3:
        return False
    median = statistics.median(previous)
    return median > 0 and abs(size - median) > median * tolerance_percent / 100


def plan_charts(plan: BackupPlan, limit: int = CHART_BACKUPS) -> dict[str, Any]:
    """The plan's stored/raw size and duration charts for its last `limit`
    backups with data, plus its failed runs in that time. Two queries."""
    from catalog.models import Backup

    # A few older ones too, so that the first points have sizes to compare with.
    backups = list(
        plan.backups.filter(status__in=Backup.WITH_DATA).order_by("-created_at").without_log()[: limit + SIZE_WINDOW]
    )[::-1]
    shown = backups[-limit:]
    failed: list[Backup] = []
    if shown:
        failed = list(
            plan.backups.filter(status=Backup.FAILED, created_at__gte=shown[0].created_at)
            .without_log()
            .order_by("created_at")
        )
    stored, raw, durations = Series("stored"), Series("raw"), Series("duration")
    for index in range(len(backups) - len(shown), len(backups)):
        backup = backups[index]
        previous = [b.raw_bytes for b in backups[:index] if b.status == Backup.SUCCEEDED][-SIZE_WINDOW:]
        outlier = backup.status == Backup.SUCCEEDED and is_outlier(
            backup.raw_bytes, previous, plan.size_tolerance_percent
        )
        title = backup_title(backup, previous if outlier else None, plan.size_tolerance_percent)
        href = backup.get_absolute_url()
        stored.points.append(Point(backup.created_at, backup.stored_bytes, title, href, outlier))
        raw.points.append(Point(backup.created_at, backup.raw_bytes, title, href, outlier))
        if backup.started_at and backup.finished_at:
            seconds = (backup.finished_at - backup.started_at).total_seconds()
            durations.points.append(Point(backup.created_at, seconds, title, href))
    marks = [
        Mark(
            b.created_at,
            f"#{b.pk} · {time_text(b.created_at)} · failed{': ' + b.error if b.error else ''}",
            b.get_absolute_url(),
        )
        for b in failed
    ]
    count = len(shown)
    return {
        "count": count,
        "outliers": sum(p.outlier for p in stored.points),
        "failed": len(failed),
        "size": time_chart([raw, stored], size_unit, marks, label=f"Stored and raw size of the last {count} backups"),
        "duration": time_chart(
            [durations],
            duration_unit,
            marks,
            label=f"Duration of the last {count} backups",
            empty="No backups yet." if not count else "No durations recorded.",
        ),
    }


def backup_title(backup: Backup, outlier_previous: Sequence[float] | None, tolerance_percent: float) -> str:
    """#42 · 26 Nov 03:00 · 1.2 GB (raw 3.4 GB) · 4 min 05 s, and why it stands out."""
    parts = [
        f"#{backup.pk}",
        time_text(backup.created_at),
        size_text(backup.stored_bytes) + (f" (raw {size_text(backup.raw_bytes)})" if backup.raw_bytes else ""),
    ]
    if backup.started_at and backup.finished_at:
        parts.append(duration_text(backup.finished_at - backup.started_at).replace("\xa0", " "))
    if backup.status != "succeeded":
        parts.append(backup.status)
    if outlier_previous:
        median = size_text(statistics.median(outlier_previous))
        parts.append(
            f"raw size outside ±{tolerance_percent} % of the median of the previous {len(outlier_previous)} ({median})"
        )
    return " · ".join(parts)


# --- a source's health over the last days ------------------------------------------

STRIP_WIDTH, STRIP_HEIGHT = 700, 10  # stretched to the cell's width


@dataclass
class Segment:
    status: str
    start: datetime
    end: datetime


def health_segments(
    changes: Sequence[StatusChange], current_status: str, start: datetime, end: datetime
) -> list[Segment]:
    """A source's statuses from `start` to `end`, from its status changes in
    that time (oldest first): before the first change it had that change's old status."""
    status = changes[0].old_status if changes else current_status
    segments: list[Segment] = []
    since = start
    for change in changes:
        if change.created_at > since:
            segments.append(Segment(status, since, change.created_at))
        status, since = change.new_status, max(since, change.created_at)
    segments.append(Segment(status, since, end))
    return segments


def health_strip(
    segments: Sequence[Segment],
    labels: Mapping[str, str] | None = None,
    frame: tuple[datetime, datetime] | None = None,
) -> SafeString:
    """A thin bar coloured by status over time; each stretch says what and when.
    `frame` (start, end) is the time the bar spans: a source younger than
    that leaves the bar's beginning empty."""
    start, end = frame or (segments[0].start, segments[-1].end)
    span = (end - start).total_seconds() or 1
    parts: list[str] = []
    for segment in segments:
        x = (segment.start - start).total_seconds() / span * STRIP_WIDTH
        width = max(1.0, (segment.end - segment.start).total_seconds() / span * STRIP_WIDTH)
        name = (labels or {}).get(segment.status, segment.status)
        title = (
            f"{name} from {time_text(segment.start)} to {time_text(segment.end)} "
            f"({span_text((segment.end - segment.start).total_seconds())})"
        )
        parts.append(
            format_html(
                '<rect class="strip-{}" x="{}" y="0" width="{}" height="{}"><title>{}</title></rect>',
                segment.status,
                round(x, 1),
                round(width, 1),
                STRIP_HEIGHT,
                title,
            )
        )
    return format_html(
        '<svg class="health-strip" viewBox="0 0 {} {}" preserveAspectRatio="none" role="img" aria-label="{}" '
        'xmlns="http://www.w3.org/2000/svg">{}</svg>',
        STRIP_WIDTH,
        STRIP_HEIGHT,
        f"Health since {time_text(start)}",
        mark_safe("".join(parts)),
    )
