"""Cron schedules: previews for people, and django-q2 Schedule rows for plans."""

from datetime import datetime

from croniter import croniter
from django.conf import settings
from django.utils import timezone

TICK_SCHEDULE = "strongroom-tick"
PRUNE_SCHEDULE = "strongroom-prune-nightly"


def validate_cron(expression):
    """Returns an error message for a bad cron expression, else None."""
    expression = (expression or "").strip()
    if len(expression.split()) != 5:
        return "Use five fields: minute hour day-of-month month day-of-week, e.g. 0 3 * * *"
    if not croniter.is_valid(expression):
        return f"“{expression}” is not a valid cron expression"
    return None


def next_runs(expression, count=5, start=None):
    if validate_cron(expression):
        return []
    start = timezone.localtime(start or timezone.now())
    runs = croniter(expression, start)
    return [runs.get_next(datetime) for _ in range(count)]


def sync_plan_schedule(plan):
    """Keeps exactly one django-q2 cron Schedule per enabled plan."""
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
            "next_run": next_runs(plan.schedule, 1)[0],
        },
    )
    return schedule


def remove_plan_schedule(plan):
    from django_q.models import Schedule

    Schedule.objects.filter(name=plan.schedule_name()).delete()


def ensure_system_schedules(**kwargs):
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
