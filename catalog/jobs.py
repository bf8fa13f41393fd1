"""The life of a job, the same for every kind: backups, verifications,
restores, point-in-time restores, drills and key rotations.

    queued ──claim──▶ running ──finish──▶ succeeded / passed / partial / failed / cancelled
      │                  │
      └──cancel          └──sweep (the worker stopped beating)──▶ failed

- claim: a queue may deliver a task twice (design rule 5), so a worker starts
  by moving the row from queued to running with one conditional UPDATE; only
  one delivery gets it. The start is audited in the same transaction.
- heartbeat: while the work runs, JobWatch beats the row's heartbeat_at once a
  second from a thread and turns a cancel request into an Event.
- finish: the outcome is written only while the job is still running (the
  sweep may have declared it dead meanwhile), with its audit event in the same
  transaction (design rule 7).
- sweep: the tick fails the running jobs whose heartbeat is older than
  HEARTBEAT_TIMEOUT, each kind passing a clean-up for what its dead worker left
  outside the catalog (a scratch database, a spool directory, a server).

A drill has no heartbeat of its own: the verification or restore it runs has
one, and the drills' sweep looks at that.
"""

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Self, TypeVar

from django.conf import settings
from django.db import DatabaseError, close_old_connections, models, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from catalog import audit, logformat
from catalog.errors import Refused
from catalog.models import Job

log = logging.getLogger(__name__)

# A job's row: a Job, or a drill (a plain model with the same statuses).
M = TypeVar("M", bound=models.Model)


def worker_name() -> str:
    return f"{settings.HOST_NAME}:{os.getpid()}"


def claim(
    model: type[M],
    job_id: int,
    action: str | None = None,
    details: Callable[[M], dict[str, Any]] | None = None,
    *,
    related: Iterable[str] = (),
    **fields: Any,
) -> M | None:
    """Moves a queued job to running and returns it, loaded with `related`;
    None when it is not queued any more (another delivery has it, or it was
    cancelled). A Job also gets its start, first heartbeat and worker; `fields`
    are written with them. With `action`, the start is audited in the same
    transaction, with the changes `details(job)`."""
    table: Any = model  # each job model names its statuses (QUEUED, RUNNING) as class attributes
    if issubclass(model, Job):
        now = timezone.now()
        fields = {"started_at": now, "heartbeat_at": now, "worker": worker_name(), **fields}
    with transaction.atomic():
        if not table.objects.filter(pk=job_id, status=table.QUEUED).update(status=table.RUNNING, **fields):
            return None
        rows = table.objects.select_related(*related) if related else table.objects
        job: M = rows.get(pk=job_id)
        if action:
            audit.record("worker", action, job, details(job) if details else {})
    # This worker's log lines are about this job until it records its end (LOG_FORMAT=json).
    logformat.job_context.set({"job": f"{job._meta.model_name}-{job.pk}", "source": getattr(job, "source_id", None)})
    return job


def finish(
    job: models.Model,
    status: str,
    action: str,
    details: Mapping[str, Any],
    *,
    actor: audit.Actor = "worker",
    from_status: str | None = None,
    **fields: Any,
) -> bool:
    """Records how a job ended: `status` and `fields` (finished_at defaults to
    now) on its row, `action` with `details` in the audit trail, in one
    transaction, and only while the job is still running (or `from_status`):
    one the sweep declared dead, or cancelled while queued, stays as it is.
    Returns whether it was recorded."""
    model: Any = type(job)
    logformat.job_context.set(None)
    fields.setdefault("finished_at", timezone.now())
    with transaction.atomic():
        if not model.objects.filter(pk=job.pk, status=from_status or model.RUNNING).update(status=status, **fields):
            return False
        audit.record(actor, action, job, details)
    return True


def cancel_job(actor: audit.Actor, job: M, action: str, **queued_fields: Any) -> M:
    """The cancel rule of every job: queued ones end at once (with
    `queued_fields` saying so), running ones are asked to stop."""
    model: Any
    model, now = type(job), timezone.now()
    with transaction.atomic():
        if model.objects.filter(pk=job.pk, status=model.QUEUED).update(
            status=model.CANCELLED, finished_at=now, cancel_requested=True, **queued_fields
        ):
            audit.record(actor, action, job, {"was": "queued"})
        elif model.objects.filter(pk=job.pk, status=model.RUNNING, cancel_requested=False).update(
            cancel_requested=True
        ):
            audit.record(actor, action, job, {"was": "running"})
        else:
            raise Refused(f"This {model._meta.verbose_name} is no longer running, so there is nothing to cancel.")
    job.refresh_from_db()
    return job


# --- the heartbeat ------------------------------------------------------------


class JobWatch:
    """Beats a running job's heartbeat once a second from a thread (writing
    whatever `progress()` returns with it) and turns a cancel request seen in
    the database into `cancel_event` within a quarter of a second. When the
    watched work ends, the worker's connection is checked: the work may have
    taken hours, and a connection the metadata database dropped meanwhile (a
    restart, a failover) is replaced before the job records its outcome."""

    def __init__(self, model: type[models.Model], job_id: int) -> None:
        self.model: Any = model  # a job model, with its statuses as class attributes
        self.job_id = job_id
        self.cancel_event = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"watch-{job_id}", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        close_old_connections()

    def progress(self) -> dict[str, Any]:
        return {}

    def _loop(self) -> None:
        from django.db import connection

        rows = self.model.objects.filter(pk=self.job_id, status=self.model.RUNNING)
        last_beat = 0.0
        try:
            while not self._stop.wait(0.25):
                try:
                    if time.monotonic() - last_beat >= 1.0:
                        rows.update(heartbeat_at=timezone.now(), **self.progress())
                        last_beat = time.monotonic()
                    if rows.filter(cancel_requested=True).exists():
                        self.cancel_event.set()
                except DatabaseError as exc:
                    # The metadata database restarted or is out of reach: the job
                    # itself goes on, and so must its heartbeat once the database is
                    # back, or the sweep would declare a live job dead.
                    log.warning("Heartbeat of %s %s failed: %s", self.model.__name__, self.job_id, exc)
                    close_old_connections()
        finally:
            connection.close()


# --- the sweep ----------------------------------------------------------------


def stale(model: type[M], now: datetime | None = None) -> QuerySet[M]:
    """The running jobs of `model` whose worker has not beaten for
    HEARTBEAT_TIMEOUT (nor started within it, when no beat is recorded)."""
    limit = (now or timezone.now()) - timedelta(seconds=settings.HEARTBEAT_TIMEOUT)
    silent = Q(heartbeat_at__lt=limit) | Q(heartbeat_at__isnull=True, started_at__lt=limit)
    table: Any = model  # a Job model: its statuses are class attributes
    rows: QuerySet[M] = table.objects.filter(silent, status=table.RUNNING)
    return rows


def sweep(
    jobs: Iterable[M],
    action: str,
    details: Mapping[str, Any],
    *,
    actor: audit.Actor = "tick",
    clean_up: Callable[[M], object] | None = None,
    on_failed: Callable[[M], object] | None = None,
    from_status: str | None = None,
    **fields: Any,
) -> list[int]:
    """Fails each of `jobs` (see stale()) whose worker is gone, and returns their ids.

    For each: `clean_up(job)` first removes what the worker left outside the
    catalog (if it raises, the job stays running, the next tick tries
    again, and the other jobs are swept all the same); then the job is marked failed with `fields`, audited as `action`
    with `details` in the same transaction, unless it ended meanwhile; then
    `on_failed(job)` runs for the jobs this sweep failed (what must wait until
    no worker can record an outcome any more, and the alerts)."""
    swept: list[int] = []
    for job in jobs:
        if clean_up is not None:
            try:
                clean_up(job)
            except Exception:
                # One dead job's leftovers that cannot be removed now must not keep
                # the others running: this one waits for the next tick.
                log.exception("Could not clean up after %s %s; trying again next tick", type(job).__name__, job.pk)
                continue
        model: Any = type(job)
        if not finish(job, model.FAILED, action, details, actor=actor, from_status=from_status, **fields):
            continue
        if on_failed is not None:
            on_failed(job)
        swept.append(job.pk)
    return swept
