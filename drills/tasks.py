"""django-q2 entry point for drills (work cluster): takes an id, calls one service."""

from catalog.alerts import hooks
from drills import services


def run_drill(drill_id: int) -> str:
    drill = services.run_drill(drill_id)
    return drill.status if drill else "not claimed"


def run_drill_checks() -> dict[str, object]:
    """The drills' step of the catalog's one-minute tick (registered in drills/apps.py)."""
    # Quietly: a drill that cannot be queued must not stop the rest of the tick.
    return {
        "swept": hooks.quietly(services.sweep_stale_drills, savepoint=False)(),
        "queued": hooks.quietly(services.queue_due_drills, savepoint=False)(),
    }
