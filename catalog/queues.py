"""The django-q2 clusters, and which of them are alive on which host.

"strongroom" runs the work: backups, verifications and restores, which can
take hours; any host's workers may take it. "strongroom-monitor" runs the
one-minute tick and the sending of alerts on a worker of its own, so that an
alert never waits behind a long backup, and a queue that stopped moving is
still noticed by someone. "strongroom-host-<host>" is one host's own queue,
for work that can only run there: a point-in-time restore writes its data
directory on, and starts its server from, the host the user chose, and work
that reads or writes a local destination's folder on one host's disk
(Destination.host) runs there (enqueue_for).

Every task names its cluster: a task queued from inside the monitor cluster
(the tick queues verifications) would otherwise land in the monitor's queue.

Each cluster's sentinel records a heartbeat (catalog/brokers.py): a work
cluster silent for WORKER_SILENCE_SECONDS makes /readyz answer 503, and only
hosts whose own queue is alive are offered for a point-in-time restore."""

import logging
import os
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from catalog.models import WorkerHeartbeat

log = logging.getLogger(__name__)

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


def enqueue_on_host(host: str, func: str, *args: Any, task_name: str) -> str:
    """Queues work that can only run on `host`, for that host's own cluster."""
    from django_q.tasks import async_task

    return async_task(func, *args, task_name=task_name, cluster=settings.HOST_CLUSTER_PREFIX + host)


def enqueue_for(host: str, func: str, *args: Any, task_name: str) -> str:
    """Work that only `host` can do (it reads or writes a folder on that
    host's disk) goes to that host's own queue; with no host ("" : every host
    can), to the work cluster, where any host's free worker takes it."""
    if host:
        return enqueue_on_host(host, func, *args, task_name=task_name)
    return enqueue_work(func, *args, task_name=task_name)


def record_heartbeat(queue: str) -> None:
    """Says that the cluster of `queue` runs on this host now. Called by the
    cluster's sentinel (catalog/brokers.py, which closes the connection after
    each beat, so none goes stale between them); a metadata database that
    does not answer is logged, and the sentinel goes on guarding its workers."""
    try:
        WorkerHeartbeat.objects.update_or_create(
            host=settings.HOST_NAME, queue=queue, defaults={"pid": os.getpid(), "last_seen": timezone.now()}
        )
    except DatabaseError:
        log.warning("Could not record the heartbeat of queue %s: the metadata database did not answer", queue)


def alive_heartbeats(now: datetime | None = None) -> list[WorkerHeartbeat]:
    """The clusters that beat within WORKER_SILENCE_SECONDS, by host."""
    since = (now or timezone.now()) - timedelta(seconds=settings.WORKER_SILENCE_SECONDS)
    return list(WorkerHeartbeat.objects.filter(last_seen__gt=since).order_by("host", "queue"))


def work_hosts(now: datetime | None = None) -> list[str]:
    """The hosts whose work cluster is alive."""
    return sorted({beat.host for beat in alive_heartbeats(now) if beat.queue == settings.WORK_CLUSTER})


def hosts_with_own_queue(now: datetime | None = None) -> list[str]:
    """The hosts whose own queue's cluster is alive: where host-bound work can go."""
    prefix = settings.HOST_CLUSTER_PREFIX
    return sorted({beat.host for beat in alive_heartbeats(now) if beat.queue == prefix + beat.host})


def last_work_heartbeat() -> datetime | None:
    return (
        WorkerHeartbeat.objects.filter(queue=settings.WORK_CLUSTER)
        .order_by("-last_seen")
        .values_list("last_seen", flat=True)
        .first()
    )
