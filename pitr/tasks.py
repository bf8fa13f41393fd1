"""django-q2 entry points of the pitr app, and its steps of the catalog's tick
and nightly prune (registered in pitr/apps.py)."""

from catalog.alerts import hooks as monitor
from pitr import restores, wal
from pitr.models import PitrRestore


def run_pitr_restore(job_id: int) -> str:
    job = restores.run_pitr_restore(job_id)
    return job.status if job else "not claimed"


def stop_restored_server(job_id: int) -> None:
    """Queued on the restore's host by a stop asked for on another host."""
    restores.stop_here("worker", PitrRestore.objects.get(pk=job_id))


def remove_restored_cluster(job_id: int) -> None:
    """Queued on the restore's host by the sweep on another host."""
    restores.remove_restored_cluster(PitrRestore.objects.get(pk=job_id))


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
