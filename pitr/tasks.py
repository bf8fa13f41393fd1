"""django-q2 entry points of the pitr app, and its steps of the catalog's tick
and nightly prune (registered in pitr/apps.py)."""

from catalog.alerts import hooks as monitor
from pitr import restores, wal


def run_pitr_restore(job_id: int) -> str:
    job = restores.run_pitr_restore(job_id)
    return job.status if job else "not claimed"


def sweep_stale_pitr_restores() -> list[int] | None:
    # Quietly: a restored server that will not stop must not stop the rest of the tick.
    return monitor.quietly(restores.sweep_stale_pitr_restores, savepoint=False)()


def mark_base_backups_wal() -> list[int] | None:
    # A base backup may finish after the last WAL it needs was stored: check here too.
    return monitor.quietly(wal.mark_all_base_backups_wal, savepoint=False)()


def prune_wal() -> dict[int, int] | None:
    """The nightly prune's WAL part: {source id: segments pruned}."""
    # Quietly: a WAL destination that cannot be reached must not undo the plans' pruning.
    return monitor.quietly(wal.prune_all_wal, savepoint=False)()
