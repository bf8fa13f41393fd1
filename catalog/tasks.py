"""django-q2 task entry points: each takes ids and calls one service."""

from typing import Any

from catalog import backup_runs, holds, imports, lifecycle, lockouts, registry, verification
from catalog.alerts import hooks as monitor
from catalog.models import Backup, BackupPlan, Verification


def run_backup(backup_id: int) -> str:
    backup = backup_runs.run_backup(backup_id)
    if backup and backup.status == Backup.SUCCEEDED and backup.plan:
        if backup.plan.verify_new_backups:
            verification.queue_quietly(backup, Verification.CHECKSUM)
        # A new good backup may push older ones out of the plan's retention rule.
        lifecycle.prune_plan_checked("retention", backup.plan)
    return backup.status if backup else "skipped"


def run_verification(verification_id: int) -> str:
    result = verification.run_verification(verification_id)
    return result.status if result else "not claimed"


def run_key_rotation(rotation_id: int) -> str:
    from catalog import keys

    rotation = keys.run_rotation(rotation_id)
    return rotation.status if rotation else "not claimed"


def send_alert_notifications(alert_id: int, event: str, quiet: bool = False) -> dict[str, str]:
    """Tells the channels about an alert that opened or resolved (see catalog.alerts.notify)."""
    from catalog.alerts import notify

    return notify.send_for_alert(alert_id, event, quiet=quiet)


def run_pitr_restore(job_id: int) -> Any:
    """Moved to pitr.tasks.run_pitr_restore: a task queued before an upgrade
    still names this path, which passes it on (pitr registers it)."""
    return registry.moved_tasks["run_pitr_restore"](job_id)


def prune_plan_on_host(plan_id: int) -> str:
    """A plan's retention rule on the host whose disk holds some of its
    copies, queued by a run on another host (lifecycle.prune_plan_checked)."""
    plan = BackupPlan.objects.select_related("source").filter(pk=plan_id).first()
    if plan is None:
        return "no such plan"
    return lifecycle.prune_plan_checked("retention", plan, pass_on=False).summary()


def store_hold_state(backup_id: int) -> list[str]:
    """A backup's pin and hold, written to its copies in folders on this
    host's disk for a change made on another host (catalog.holds)."""
    return holds.store_hold_state("worker", backup_id, pass_on=False)


def clean_up_dead_backup(backup_id: int) -> None:
    """What a dead worker's backup left on this host (its spool, its copies
    in folders on this host's disk), for a sweep run on another host."""
    backup_runs.remove_leftovers(Backup.objects.get(pk=backup_id))


def run_scheduled_plan(plan_id: int) -> str:
    backup = backup_runs.run_scheduled_plan(plan_id)
    return backup.status if backup else "skipped"


def tick() -> dict[str, Any]:
    """Every minute: declare dead the jobs whose worker stopped beating, and
    queue the verifications the plans' policies ask for. The apps above the
    catalog add their own steps (registry.tick_steps: their sweeps, drills due,
    base backups' WAL) in their AppConfig.ready()."""
    result: dict[str, Any] = {
        "swept": backup_runs.sweep_stale_backups(),
        "swept_verifications": verification.sweep_stale_verifications(),
        "queued_verifications": verification.queue_due_verifications(),
        "redispatched": verification.redispatch_waiting(),
    }
    for name, step in registry.tick_steps.items():
        result[name] = step()
    result["lockouts_ended"] = monitor.quietly(lockouts.end_expired_lockouts, savepoint=False)()
    result["abandoned_imports"] = imports.sweep_abandoned_staging()
    result["monitoring"] = monitor.periodic_checks()  # after the sweeps, so dead jobs count as failed
    return result


def prune_nightly() -> dict[int | str, Any]:
    """Applies every plan's retention rule, also for plans that stopped running."""
    reports = lifecycle.prune_all("retention")
    result: dict[int | str, Any] = {plan_id: report.summary() for plan_id, report in reports.items()}
    for name, step in registry.nightly_steps.items():  # e.g. pitr's "wal": {source id: segments pruned}
        if outcome := step():
            result[name] = outcome
    return result
