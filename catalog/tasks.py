"""django-q2 task entry points: each takes ids and calls one service."""

from catalog import lifecycle, lockouts, services, verification
from catalog.alerts import hooks as monitor
from catalog.models import Backup, Verification


def run_backup(backup_id):
    backup = services.run_backup(backup_id)
    if backup and backup.status == Backup.SUCCEEDED and backup.plan:
        if backup.plan.verify_new_backups:
            verification.queue_quietly(backup, Verification.CHECKSUM)
        # A new good backup may push older ones out of the plan's retention rule.
        lifecycle.prune_plan_checked("retention", backup.plan)
    return backup.status if backup else "skipped"


def run_verification(verification_id):
    result = verification.run_verification(verification_id)
    return result.status if result else "not claimed"


def run_key_rotation(rotation_id):
    from catalog import keys

    rotation = keys.run_rotation(rotation_id)
    return rotation.status if rotation else "not claimed"


def send_alert_notifications(alert_id, event, quiet=False):
    """Tells the channels about an alert that opened or resolved (see catalog.alerts.notify)."""
    from catalog.alerts import notify

    return notify.send_for_alert(alert_id, event, quiet=quiet)


def run_pitr_restore(job_id):
    # The pitr app builds on the catalog, so it is imported here, not at the top.
    from pitr.restores import run_pitr_restore

    job = run_pitr_restore(job_id)
    return job.status if job else "not claimed"


def run_scheduled_plan(plan_id):
    backup = services.run_scheduled_plan(plan_id)
    return backup.status if backup else "skipped"


def tick():
    """Every minute: declare dead the jobs whose worker stopped beating, and
    queue the verifications the plans' policies ask for."""
    return {
        "swept": services.sweep_stale_backups(),
        "swept_verifications": verification.sweep_stale_verifications(),
        "queued_verifications": verification.queue_due_verifications(),
        "redispatched": verification.redispatch_waiting(),
        "swept_restores": sweep_stale_restores(),
        "swept_pitr_restores": sweep_stale_pitr_restores(),
        "drills": run_drill_checks(),
        "base_backups_wal_complete": mark_base_backups_wal(),
        "lockouts_ended": monitor.quietly(lockouts.end_expired_lockouts, savepoint=False)(),
        "monitoring": monitor.periodic_checks(),  # after the sweeps, so dead jobs count as failed
    }


def sweep_stale_restores():
    # The restore app builds on the catalog, so it is imported here, not at the top.
    from restore.services import sweep_stale_restores

    return sweep_stale_restores()


def sweep_stale_pitr_restores():
    # Quietly: a restored server that will not stop must not stop the rest of the tick.
    from pitr.restores import sweep_stale_pitr_restores

    return monitor.quietly(sweep_stale_pitr_restores, savepoint=False)()


def run_drill_checks():
    # The drills app builds on the catalog, so it is imported here, not at the top.
    from drills.services import queue_due_drills, sweep_stale_drills

    # Quietly: a drill that cannot be queued must not stop the rest of the tick.
    return {"swept": monitor.quietly(sweep_stale_drills, savepoint=False)(),
            "queued": monitor.quietly(queue_due_drills, savepoint=False)()}


def prune_nightly():
    """Applies every plan's retention rule, also for plans that stopped running."""
    reports = lifecycle.prune_all("retention")
    result = {plan_id: report.summary() for plan_id, report in reports.items()}
    wal = prune_wal()
    if wal:  # {source id: segments pruned}, only when some source has continuous protection
        result["wal"] = wal
    return result


def mark_base_backups_wal():
    # A base backup may finish after the last WAL it needs was stored: check here too.
    from pitr.wal import mark_all_base_backups_wal

    return monitor.quietly(mark_all_base_backups_wal, savepoint=False)()


def prune_wal():
    # The pitr app builds on the catalog, so it is imported here, not at the top.
    from pitr.wal import prune_all_wal

    # Quietly: a WAL destination that cannot be reached must not undo the plans' pruning.
    return monitor.quietly(prune_all_wal, savepoint=False)()
