"""Cron schedules: presets and words for people, next runs that keep to the
wall clock across daylight-saving changes, and django-q2 Schedule rows for plans.

A plan's cron is read in TIME_ZONE. On the night the clocks go back a time
such as 02:30 happens twice, and on the night they go forward it does not
happen at all; croniter (as django-q2 calls it) answers the first with the
repeated time, which compares as already past in the same zone, so django-q2's
scheduler would spin until the clock read 02:30 again and then run the plan a
second time. Here a plan runs once a day whatever the clocks do:
  - a time that happens twice runs at its first occurrence only, unless the
    schedule runs every hour (hour field `*`): then each real hour counts;
  - a time the clocks skip runs as long after midnight as on other days
    (02:30 becomes 03:30 summer time: 24 hours after the day before's run).
`install_wall_clock_cron` makes django-q2 ask `next_run_after` for the next
run of every cron Schedule, so the scheduler and the pages agree."""

import calendar
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, cast

from croniter import CroniterBadDateError, CroniterError, croniter
from django.conf import settings
from django.utils import timezone

if TYPE_CHECKING:  # catalog.models uses this module: the plan is imported where it is needed
    from catalog.models import BackupPlan

TICK_SCHEDULE = "strongroom-tick"
PRUNE_SCHEDULE = "strongroom-prune-nightly"

# More than any clock change in the time-zone database (2 h at most): how far
# around a moment to look for one.
NEAR = timedelta(hours=3)


def validate_cron(expression: str | None) -> str | None:
    """Returns an error message for a bad cron expression, else None."""
    expression = (expression or "").strip()
    if len(expression.split()) != 5:
        return "Use five fields: minute hour day-of-month month day-of-week, e.g. 0 3 * * *"
    if not croniter.is_valid(expression):
        return f"“{expression}” is not a valid cron expression"
    try:
        next_run_after(expression, timezone.now())
    except CroniterBadDateError:
        return f"“{expression}” never runs: {why_never(expression)}."
    except CroniterError:
        return f"“{expression}” is not a valid cron expression"
    return None


def why_never(expression: str) -> str:
    """Why a valid expression matches no date, in words (a day no chosen month has)."""
    try:
        fields, _ = croniter.expand(expression)
    except CroniterError:
        return "no date matches it"
    days, months = fields[2], fields[3]
    if "*" in days or "*" in months:
        return "no date matches it"
    names = [calendar.month_name[month] for month in months]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    day_list = " or ".join(str(day) for day in days)
    return f"{listed} {'has' if len(names) == 1 else 'have'} no day {day_list}"


def next_run_after(
    expression: str, after: datetime, zone: tzinfo | None = None, walls: croniter | None = None
) -> datetime:
    """The first run of `expression` strictly after `after`, in UTC, the cron
    read as wall-clock time in `zone` (TIME_ZONE): see the module's doc for
    the nights the clocks change. `walls` is a croniter of the expression to
    reuse (making one is most of the cost). Raises CroniterBadDateError when no date matches."""
    zone = zone or timezone.get_default_timezone()
    every_hour = expression.split()[1] == "*"
    after = after.astimezone(UTC)
    wall_after = after.astimezone(zone).replace(tzinfo=None)
    # A wall time before wall_after can still come after `after` only if the
    # clocks go back near it: start as far back as they go.
    start = wall_after - clock_change_near(after, zone)
    if walls is None:
        walls = croniter(expression, start)
    else:
        walls.set_current(start, force=True)
    best: datetime | None = None
    best_wall: datetime | None = None  # set with best
    while True:
        wall = walls.get_next(datetime)
        # Past this, a later wall time cannot be an earlier instant (only a jump forward near it could make it so).
        if best is not None and best_wall is not None and wall > best_wall + clock_change_near(best, zone):
            return best
        for instant in instants_of(wall, zone, every_hour):
            if instant > after and (best is None or instant < best):
                best, best_wall = instant, wall


def clock_change_near(instant: datetime, zone: tzinfo) -> timedelta:
    """How far the clocks move within NEAR of `instant` (zero most of the year)."""
    # An aware time always has an offset: never None.
    offsets = [cast(timedelta, (instant + NEAR * step / 3).astimezone(zone).utcoffset()) for step in range(-3, 4)]
    return max(offsets) - min(offsets)


def instants_of(wall: datetime, zone: tzinfo, every_hour: bool) -> list[datetime]:
    """The instants (UTC) at which the wall-clock time `wall` runs."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:  # an ordinary time
        return [first]
    if first < second:  # the clocks go back past it: it happens twice
        return [first, second] if every_hour else [first]
    return [first]  # the clocks skip it: read with the offset before the change, as long after midnight as ever


def next_runs(expression: str, count: int = 5, start: datetime | None = None) -> list[datetime]:
    """The next `count` runs ([] for an expression that never runs), in UTC:
    templates show them in local time, and the time between two is real time
    (two local times in one zone subtract as wall-clock times)."""
    if validate_cron(expression):
        return []
    runs, at, walls = [], start or timezone.now(), croniter(expression)
    for _ in range(count):
        at = next_run_after(expression, at, walls=walls)
        runs.append(at)
    return runs


def install_wall_clock_cron() -> None:
    """django-q2 computes a cron Schedule's next run with croniter in the
    scheduler (Schedule.calculate_next_run); this makes it use
    next_run_after, in UTC so that its comparisons are by instant, not by
    wall time. Other schedule types keep django-q2's own arithmetic."""
    from django_q.models import Schedule

    if getattr(Schedule.calculate_next_run, "wall_clock", False):
        return
    original = Schedule.calculate_next_run

    def calculate_next_run(self: Schedule, next_run: datetime | None = None) -> datetime | None:
        if self.schedule_type == Schedule.CRON and self.cron:
            return next_run_after(self.cron, timezone.now())
        return original(self, next_run)

    # The marker the getattr() above reads, so that installing twice wraps once
    # (through __dict__, as mypy knows no attributes on a function).
    calculate_next_run.__dict__["wall_clock"] = True
    Schedule.calculate_next_run = calculate_next_run


# --- presets and words -------------------------------------------------------------

HOURLY, DAILY, WEEKLY, MONTHLY, CRON = "hourly", "daily", "weekly", "monthly", "cron"
PRESET_CHOICES = [
    (HOURLY, "Every hour"),
    (DAILY, "Every day"),
    (WEEKLY, "Every week"),
    (MONTHLY, "Every month"),
    (CRON, "Custom (cron)"),
]
# Cron's day-of-week numbers (0 is Sunday), listed from Monday.
WEEKDAY_CHOICES = [(str(number), calendar.day_name[(number - 1) % 7]) for number in (1, 2, 3, 4, 5, 6, 0)]
# Every month has days 1 to 28: a monthly run on the 31st would skip seven months a year.
LAST_MONTHLY_DAY = 28


def preset_cron(
    preset: str, minute: int | None = None, at: time | None = None, weekday: str | None = None, day: int | None = None
) -> str:
    """The cron of a preset; `at` is a datetime.time."""
    if preset == HOURLY:
        return f"{minute} * * * *"
    assert at is not None, "the daily, weekly and monthly presets have a time"
    if preset == DAILY:
        return f"{at.minute} {at.hour} * * *"
    if preset == WEEKLY:
        return f"{at.minute} {at.hour} * * {weekday}"
    if preset == MONTHLY:
        return f"{at.minute} {at.hour} {day} * *"
    raise ValueError(f"No preset {preset!r}")


def preset_of(expression: str | None) -> tuple[str, dict[str, Any]]:
    """(preset, its values) when the expression is one a preset makes, else (CRON, {})."""
    fields = (expression or "").split()
    if len(fields) != 5 or not all(field == "*" or field.isdecimal() for field in fields):
        return CRON, {}
    minute, hour, day, month, weekday = fields
    if month != "*" or minute == "*" or int(minute) > 59 or (hour != "*" and int(hour) > 23):
        return CRON, {}
    if hour == "*":
        return (HOURLY, {"minute": int(minute)}) if day == weekday == "*" else (CRON, {})
    at = time(int(hour), int(minute))
    if day == weekday == "*":
        return DAILY, {"at": at}
    if day == "*" and int(weekday) <= 6:
        return WEEKLY, {"at": at, "weekday": weekday}
    if weekday == "*" and 1 <= int(day) <= LAST_MONTHLY_DAY:
        return MONTHLY, {"at": at, "day": int(day)}
    return CRON, {}


def describe(expression: str) -> str:
    """A cron in words ("At 02:30, only on Monday"), "" when it cannot be read."""
    from cron_descriptor import ExpressionDescriptor, Options

    options = Options()
    options.use_24hour_time_format = True
    try:
        return ExpressionDescriptor(expression, options).get_description()
    except Exception:  # cron-descriptor raises its own kinds for what it cannot read; the cron is shown instead
        return ""


# --- django-q2 -------------------------------------------------------------------------


def sync_plan_schedule(plan: "BackupPlan") -> Any:
    """Keeps exactly one django-q2 cron Schedule per enabled plan (returned;
    None for a disabled plan). Any: django-q2 has no type hints."""
    from django_q.models import Schedule

    name = plan.schedule_name()
    if not plan.enabled:
        Schedule.objects.filter(name=name).delete()
        return None
    schedule, _ = Schedule.objects.update_or_create(
        name=name,
        defaults={
            "func": "catalog.tasks.run_scheduled_plan",
            "args": repr(plan.pk),
            "schedule_type": Schedule.CRON,
            "cron": plan.schedule,
            "repeats": -1,
            "next_run": next_run_after(plan.schedule, timezone.now()),
        },
    )
    return schedule


def remove_plan_schedule(plan: "BackupPlan") -> None:
    from django_q.models import Schedule

    Schedule.objects.filter(name=plan.schedule_name()).delete()


def ensure_system_schedules(**kwargs: Any) -> None:
    """The one-minute tick (finds dead jobs, checks health, on the monitor
    cluster: see catalog/queues.py) and the nightly retention run."""
    from django_q.models import Schedule

    tick, _ = Schedule.objects.get_or_create(
        name=TICK_SCHEDULE,
        defaults={
            "func": "catalog.tasks.tick",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
            "cluster": settings.MONITOR_CLUSTER,
        },
    )
    if tick.cluster != settings.MONITOR_CLUSTER:  # made before the monitor cluster existed
        Schedule.objects.filter(pk=tick.pk).update(cluster=settings.MONITOR_CLUSTER)
    Schedule.objects.get_or_create(
        name=PRUNE_SCHEDULE,
        defaults={
            "func": "catalog.tasks.prune_nightly",
            "schedule_type": Schedule.CRON,
            "cron": settings.PRUNE_SCHEDULE,
            "repeats": -1,
        },
    )
