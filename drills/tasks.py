"""django-q2 entry point for drills (work cluster): takes an id, calls one service."""

from drills import services


def run_drill(drill_id):
    drill = services.run_drill(drill_id)
    return drill.status if drill else "not claimed"
