"""django-q2 task entry points: each takes ids and calls one service."""

from catalog import services


def run_backup(backup_id):
    backup = services.run_backup(backup_id)
    return backup.status if backup else "skipped"


def run_scheduled_plan(plan_id):
    backup = services.run_scheduled_plan(plan_id)
    return backup.status if backup else "skipped"


def tick():
    """Every minute: declare dead the backups whose worker stopped beating."""
    swept = services.sweep_stale_backups()
    return {"swept": swept}
