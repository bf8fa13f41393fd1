"""The two django-q2 clusters.

"strongroom" runs the work: backups, verifications and restores, which can
take hours. "strongroom-monitor" runs the one-minute tick and the sending of
alerts on a worker of its own, so that an alert never waits behind a long
backup, and a queue that stopped moving is still noticed by someone.

Every task names its cluster: a task queued from inside the monitor cluster
(the tick queues verifications) would otherwise land in the monitor's queue."""

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

# The tick runs every minute; this much later, nobody is running it.
MONITOR_SILENCE = timedelta(minutes=5)


def enqueue_work(func: str, *args: Any, task_name: str) -> str:
    from django_q.tasks import async_task

    return async_task(func, *args, task_name=task_name, cluster=settings.WORK_CLUSTER)


def enqueue_monitoring(func: str, *args: Any, task_name: str) -> str:
    from django_q.tasks import async_task

    return async_task(func, *args, task_name=task_name, cluster=settings.MONITOR_CLUSTER)


def monitor_silent_since(now: datetime | None = None) -> datetime | None:
    """When the tick was due but did not run (the monitor cluster is not
    running), or None while it runs on time."""
    from django_q.models import Schedule

    from catalog.schedules import TICK_SCHEDULE

    due = Schedule.objects.filter(name=TICK_SCHEDULE).values_list("next_run", flat=True).first()
    if due is None or due > (now or timezone.now()) - MONITOR_SILENCE:
        return None
    return due
