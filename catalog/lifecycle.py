"""What happens to stored backups after they are taken: pins and legal holds,
the retention preview, and pruning.

Losing a backup by mistake is the worst thing Strongroom can do, so pruning
re-reads each backup under a row lock right before deleting anything, never
touches a copy whose Object Lock has not expired, and marks a backup pruned
only once every one of its copies is gone.
"""

import logging
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from catalog import audit, holds, queues, retention
from catalog.engine import manifest
from catalog.engine.errors import EngineError
from catalog.models import Backup, BackupPlan, Copy
from catalog.services import Refused

log = logging.getLogger(__name__)


def local_zone() -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(settings.TIME_ZONE)


# --- pins and legal holds ---------------------------------------------------


def pin_backup(actor: audit.Actor, backup: Backup, reason: str, legal_hold: bool = False) -> list[str]:
    """Pins the backup (or puts it under legal hold). Returns the destinations
    the new state could not be written to, in words (see holds.store_hold_state)."""
    reason = " ".join(reason.split())
    if not reason:
        raise Refused("Say why this backup must be kept.")
    if backup.is_pruned():
        raise Refused("This backup was already pruned; there is nothing left to keep.")
    with transaction.atomic():
        backup.pinned = True
        backup.legal_hold = backup.legal_hold or legal_hold
        backup.hold_reason = reason[:300]
        backup.hold_changed_at = timezone.now()
        backup.save(update_fields=["pinned", "legal_hold", "hold_reason", "hold_changed_at"])
        action = "backup.legal_hold" if legal_hold else "backup.pin"
        audit.record(actor, action, backup, {"reason": backup.hold_reason})
    return holds.store_hold_state(actor, backup.pk)


def unpin_backup(actor: audit.Actor, backup: Backup) -> list[str]:
    """Releases the pin and the legal hold; returns what holds.store_hold_state returns."""
    with transaction.atomic():
        released = backup.hold()
        backup.pinned = backup.legal_hold = False
        backup.hold_reason = ""
        backup.hold_changed_at = timezone.now()
        backup.save(update_fields=["pinned", "legal_hold", "hold_reason", "hold_changed_at"])
        audit.record(actor, "backup.unpin", backup, {"released": released})
    return holds.store_hold_state(actor, backup.pk)


# --- preview ----------------------------------------------------------------


@dataclass
class Row:
    """One line of a retention preview."""

    backup: Backup
    decision: retention.Decision
    locked_until: datetime | None = None  # the latest Object Lock date of its copies, if still locked

    @property
    def keep(self) -> bool:
        return self.decision.keep

    def outcome(self) -> str:
        if self.keep:
            return "keep"
        return "locked" if self.locked_until else "prune"


def preview(plan: BackupPlan, policy: retention.Policy | None = None, now: datetime | None = None) -> list[Row]:
    """Every stored backup of the plan and what retention would do with it."""
    now = now or timezone.now()
    backups = list(plan.stored_backups().without_log().prefetch_related("copies"))
    by_id = {b.pk: b for b in backups}
    decisions = retention.select(
        [b.retention_candidate() for b in backups], policy or plan.retention_policy(), local_zone(), now
    )
    rows: list[Row] = []
    for decision in decisions:
        backup = by_id[decision.candidate.id]
        locks = [
            c.locked_until
            for c in backup.copies.all()
            if c.locked_until is not None and c.status == Copy.DURABLE and c.is_locked(now)
        ]
        rows.append(Row(backup, decision, max(locks) if locks else None))
    return rows


def tally(rows: Iterable[Row]) -> dict[str, int]:
    counts = {"keep": 0, "prune": 0, "locked": 0}
    for row in rows:
        counts[row.outcome()] += 1
    return counts


def preview_as_json(rows: Iterable[Row]) -> list[dict[str, Any]]:
    return [
        {
            "backup": row.backup.pk,
            "created_at": row.backup.created_at.isoformat(),
            "status": row.backup.status,
            "label": row.backup.label,
            "outcome": row.outcome(),
            "reason": row.decision.explain(),
            "locked_until": row.locked_until.isoformat() if row.locked_until else None,
        }
        for row in rows
    ]


# --- pruning ----------------------------------------------------------------


@dataclass
class PruneReport:
    # (backup id, detail) pairs, by what became of each backup the rule does not keep.
    pruned: list[tuple[int, str]] = field(default_factory=list)
    waiting: list[tuple[int, str]] = field(default_factory=list)  # kept for now by an Object Lock
    skipped: list[tuple[int, str]] = field(default_factory=list)  # pinned or changed since the preview
    errors: list[tuple[int, str]] = field(default_factory=list)
    # (backup id, host): copies in a folder on another host's disk, left for that host's run
    elsewhere: list[tuple[int, str]] = field(default_factory=list)
    queued_for: list[str] = field(default_factory=list)  # the hosts whose own queue now runs the plan's rule
    failure: str = ""  # the rule itself could not be applied (prune_plan_checked)

    def summary(self) -> str:
        if self.failure:
            return f"not applied: {self.failure}"
        parts = [f"{len(self.pruned)} pruned"]
        if self.waiting:
            parts.append(f"{len(self.waiting)} waiting for Object Lock")
        if self.errors:
            parts.append(f"{len(self.errors)} could not be removed")
        for host in self.elsewhere_hosts():
            count = sum(1 for _, on in self.elsewhere if on == host)
            then = "queued there" if host in self.queued_for else "left for its own run"
            parts.append(f"{count} with copies on {host}'s disk ({then})")
        return ", ".join(parts)

    def elsewhere_hosts(self) -> list[str]:
        return sorted({host for _, host in self.elsewhere})


def prune_plan(actor: audit.Actor, plan: BackupPlan, now: datetime | None = None) -> PruneReport:
    """Applies the plan's retention rule: removes what it does not keep."""
    now = now or timezone.now()
    report = PruneReport()
    for row in preview(plan, now=now):
        if row.keep:
            continue
        outcome = prune_backup(actor, row.backup.pk, row.decision.explain(), now)
        getattr(report, outcome[0]).append((row.backup.pk, outcome[1]))
    if report.pruned or report.errors or report.elsewhere:
        log.info("Retention of plan %s: %s", plan, report.summary())
    return report


def prune_plan_checked(
    actor: audit.Actor, plan: BackupPlan, now: datetime | None = None, pass_on: bool = True
) -> PruneReport:
    """prune_plan for callers that go on to other work (every plan at night,
    the task after a backup, the command, the page's button): whatever goes
    wrong is in the report and in an alert about the plan, never an exception
    that would stop the plans after it and leave only a line in the worker log.
    The alert clears when the plan's rule next applies cleanly.

    Copies in a folder on another host's disk are left alone here: the rule
    is queued for that host's own queue (`pass_on`; that run passes on no
    further), and the alert is left to its run when nothing else went wrong."""
    from catalog.alerts import hooks as monitor  # monitoring builds on this module's models

    try:
        report = prune_plan(actor, plan, now)
    except Exception as exc:
        log.exception("Retention of plan %s could not be applied", plan)
        report = PruneReport(failure=failure_text(exc))
    for host in report.elsewhere_hosts() if pass_on else []:
        queues.enqueue_on_host(host, "catalog.tasks.prune_plan_on_host", plan.pk, task_name=f"prune-{plan.pk}-{host}")
        report.queued_for.append(host)
    if report.elsewhere and not (report.errors or report.failure):
        log.info("Retention of plan %s: %s", plan, report.summary())
    else:
        monitor.retention_finished(plan, report)
    return report


def failure_text(exc: BaseException) -> str:
    """What went wrong, in words where we know them, with Python's own words after."""
    text = " ".join(str(exc).split())[:300]
    if isinstance(exc, OverflowError):  # a rule stored before its numbers were bounded
        return f"a number in its retention rule is too large to count days with ({text})"
    return f"{text} ({type(exc).__name__})" if text else type(exc).__name__


def prune_all(actor: audit.Actor = "retention", now: datetime | None = None) -> dict[int, PruneReport]:
    """Every plan's rule, each on its own (prune_plan_checked)."""
    return {plan.pk: prune_plan_checked(actor, plan, now) for plan in BackupPlan.objects.select_related("source")}


def prune_backup(actor: audit.Actor, backup_id: int, reason: str, now: datetime) -> tuple[str, str]:
    """Removes one backup's copies. Returns (a PruneReport list name, detail)."""
    with transaction.atomic():
        backup = Backup.objects.select_for_update(no_key=True).get(pk=backup_id)
        # Re-checked under the lock: a pin or a new run may have arrived since the preview.
        if backup.hold() or backup.is_pruned() or backup.status not in Backup.WITH_DATA:
            return "skipped", "pinned, pruned or changed since the preview"
        copies = list(backup.copies.select_related("destination").exclude(status__in=[Copy.PRUNED, Copy.FAILED]))
        locked = [c for c in copies if c.is_locked(now)]
        if locked:
            until = max(c.locked_until for c in locked if c.locked_until)  # set on every locked copy
            return "waiting", f"Object Lock until {until:%Y-%m-%d %H:%M}"
    # A folder on another host's disk is pruned by that host's run; the
    # backup is pruned once its last copy is gone.
    away = sorted({c.destination.host for c in copies if not c.destination.reachable_here()})
    failures: list[str] = []
    for copy in copies:
        if not copy.destination.reachable_here():
            continue
        error = prune_copy(actor, backup_id, copy, reason, now)
        if error is None:
            return "skipped", "pinned while it was being pruned"
        if error:
            failures.append(error)
    with transaction.atomic():
        backup = Backup.objects.select_for_update(no_key=True).get(pk=backup_id)
        if failures:
            audit.record(actor, "backup.prune_failed", backup, {"reason": reason, "errors": failures})
            return "errors", "; ".join(failures)
        if away:
            return "elsewhere", away[0]
        backup.pruned_at, backup.prune_reason = now, reason[:300]
        backup.save(update_fields=["pruned_at", "prune_reason"])
        # Every copy, also those an interrupted earlier run already removed.
        gone = [c.location_display() for c in backup.copies.select_related("destination").filter(status=Copy.PRUNED)]
        audit.record(actor, "backup.prune", backup, {"reason": reason, "copies": gone})
    return "pruned", reason


def prune_copy(actor: audit.Actor, backup_id: int, copy: Copy, reason: str, now: datetime) -> str | None:
    """Deletes one copy's objects and records it in one transaction of its
    own, so that a worker killed mid-prune leaves every finished copy recorded.
    The row is marked first and the transaction commits as soon as the objects
    are gone: a crash before the deletion rolls the mark back, and only the
    instant between deletion and commit can leave a row claiming a deleted copy,
    which the next prune deletes again (deleting is idempotent).
    Returns "" when pruned, an error in words, or None when the backup was
    pinned meanwhile."""
    with transaction.atomic():
        backup = Backup.objects.select_for_update(no_key=True).get(pk=backup_id)
        if backup.hold():
            return None
        Copy.objects.filter(pk=copy.pk).update(status=Copy.PRUNED, pruned_at=now, error="")
        error = delete_copy_objects(copy)
        if error:
            transaction.set_rollback(True)
        else:
            audit.record(actor, "backup.prune_copy", backup, {"reason": reason, "copy": copy.location_display()})
    if error:
        Copy.objects.filter(pk=copy.pk).update(error=error[:500])
    return error


def delete_copy_objects(copy: Copy) -> str:
    """Deletes a copy's object, its hold record, then its manifest. Returns an error in words or ""."""
    try:
        storage = copy.destination.storage()
        for key in manifest.stored_keys(copy.key, copy.manifest_key):
            storage.delete(key)
    except EngineError as exc:
        return f"{copy.destination}: {exc}"
    return ""
