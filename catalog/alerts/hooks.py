"""Where the rest of Strongroom tells monitoring that something happened.

Each hook runs after the job's own outcome is stored and never raises: a bug
or a database hiccup in monitoring is logged, and the backup, verification or
restore that called it is not affected. Each step runs in its own savepoint,
so a failure also leaves the caller's transaction usable."""

import logging
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from django.db import transaction

from catalog import registry
from catalog.alerts import conditions, health
from catalog.models import Backup, BackupPlan, Job, Source, Verification

if TYPE_CHECKING:
    # catalog.lifecycle imports this module (inside a function, as catalog.services does at its top).
    from catalog.lifecycle import PruneReport

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def quietly(function: Callable[P, R], savepoint: bool = True) -> Callable[P, R | None]:
    @wraps(function)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R | None:
        try:
            if not savepoint:
                return function(*args, **kwargs)
            with transaction.atomic():
                return function(*args, **kwargs)
        except Exception:
            log.exception("Monitoring step %s failed; the job itself is not affected.", function.__name__)
            return None

    return wrapped


refresh_source = quietly(health.refresh_source)


def judge_three_two_one() -> None:
    quietly(conditions.check_three_two_one)(opening=False)


def source_changed(source: Source) -> None:
    """A source was saved (its grace or pause may have changed; a paused
    source's plans are left out of 3-2-1)."""
    refresh_source(source)
    judge_three_two_one()


def plan_changed(plan: BackupPlan) -> None:
    """A plan was saved, enabled, disabled or deleted: the source's expected
    interval and deadlines follow its enabled plans, and 3-2-1 its destinations."""
    refresh_source(plan.source)
    judge_three_two_one()


def backup_finished(backup: Backup) -> None:
    """A backup ended (succeeded, partial, failed, cancelled, or swept)."""
    refresh_source(backup.source)
    quietly(judge_backup)(backup.pk)


def judge_backup(backup_id: int) -> None:
    conditions.backup_finished(Backup.objects.select_related("source", "plan").get(pk=backup_id))


def verification_finished(verification: Verification) -> None:
    quietly(judge_verification)(verification.pk)


def judge_verification(verification_id: int) -> None:
    conditions.verification_finished(Verification.objects.select_related("source").get(pk=verification_id))


def restore_finished(job: Job) -> None:
    """A restore job (restore.models.RestoreJob) ended; its row is read again
    through the job's own model, which the catalog does not import."""
    quietly(judge_restore)(job)


def judge_restore(job: Any) -> None:
    # Any: a restore.models.RestoreJob, whose `source` the catalog's abstract Job does not have.
    conditions.restore_finished(type(job)._default_manager.select_related("source").get(pk=job.pk))


def retention_finished(plan: BackupPlan, report: "PruneReport") -> None:
    """A plan's retention rule was applied, or failed to be (catalog.lifecycle)."""
    quietly(conditions.retention_finished)(plan, report)


def periodic_checks(now: datetime | None = None) -> dict[str, Any]:
    """The one-minute tick's monitoring: deadlines, storage, stuck jobs, then
    the checks other apps registered (registry.periodic_checks: overdue drills,
    WAL protection). Each check runs on its own, so one failing does not hide
    the others."""
    # No savepoint around a whole check: each change inside is its own
    # transaction, so that one source's trouble does not undo the others'.
    result: dict[str, Any] = {
        "refreshed": quietly(health.refresh_misjudged, savepoint=False)(now),
        "late_or_down": quietly(health.check_deadlines, savepoint=False)(now),
        "storage_full": quietly(conditions.check_storage, savepoint=False)(),
        "stuck": quietly(conditions.check_stuck_jobs, savepoint=False)(now),
        "key_rotation_due": quietly(conditions.check_key_rotation, savepoint=False)(now),
    }
    for name, check in registry.periodic_checks.items():
        result[name] = quietly(check, savepoint=False)(now)
    return result
