"""django-q2 task entry points: each takes ids and calls one service."""

from catalog import lifecycle, services
from catalog.models import Backup


def run_backup(backup_id):
    backup = services.run_backup(backup_id)
    if backup and backup.status == Backup.SUCCEEDED and backup.plan:
        # A new good backup may push older ones out of the plan's retention rule.
        lifecycle.prune_plan("retention", backup.plan)
    return backup.status if backup else "skipped"


def run_scheduled_plan(plan_id):
    backup = services.run_scheduled_plan(plan_id)
    return backup.status if backup else "skipped"


def tick():
    """Every minute: declare dead the backups whose worker stopped beating."""
    swept = services.sweep_stale_backups()
    return {"swept": swept}


def prune_nightly():
    """Applies every plan's retention rule, also for plans that stopped running."""
    reports = lifecycle.prune_all("retention")
    return {plan_id: report.summary() for plan_id, report in reports.items()}
